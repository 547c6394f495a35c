from dfd import output_tree as ot


def test_names_follow_the_design():
    assert ot.shard_path("gs://b/out", "parquet", 3, "train", 0, 4) == \
        "gs://b/out/parquet/part-03/faces-train-00000-of-00004.parquet"
    assert ot.shard_path("/o", "tfrecord", 123, "test", 2, 3) == \
        "/o/tfrecord/part-123/faces-test-00002-of-00003.tfrecord"
    assert ot.errors_path("/o/", 7) == "/o/errors/part-07.parquet"
    assert ot.manifest_path("s3://x") == "s3://x/manifest.json"


def test_staging_names_are_hidden_from_readers():
    staged = ot.part_dir("/o", "parquet", 1, staging=True)
    assert staged.rsplit("/", 1)[1].startswith("_")
    assert ot.errors_path("/o", 1, staging=True).rsplit("/", 1)[1].startswith("_")


def test_names_parse_back():
    name = ot.shard_name("validation", 1, 2, "parquet")
    assert ot.parse_shard_name(name) == {"split": "validation", "index": 1, "count": 2,
                                         "format": "parquet"}
    assert ot.parse_part_folder("part-42") == 42
    assert ot.parse_part_folder("_part-42") is None
    assert ot.parse_shard_name("_faces-train-00000-of-00001.parquet") is None
