"""The Beam preprocessing pipeline, end to end, on the real DirectRunner (multi_processing)
over synthetic DFDC parts: counts, splits, balance, accounting, rejects, idempotence."""
import io
import json
import zipfile
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from PIL import Image

import schemas
from dfd import config, dfdc, splits
from dfd import output_tree as ot
from dfd.synth import generate
from dfd.cli.preprocess import run_argv

pytestmark = pytest.mark.slow

FRAMES = 3
SYNTH = config.SynthConfig(parts=3, originals=4, fakes_per_original=2, width=480, height=272,
                           frames=24, seed=3, zipped=True, portrait_fraction=0.0)


def run_pipeline(src, out, *extra):
    return run_argv(["--input", str(src), "--output", str(out),
                           "--frames-per-video", str(FRAMES), "--test-parts", "2",
                           "--validation-fraction", "0.3", "--shards", "2",
                           "--direct_num_workers", "2", *extra])


def add_broken_part(src: Path, part: int) -> dict:
    """A folder part made from part 0's videos plus planted bad inputs; returns expected
    reasons by video name."""
    with zipfile.ZipFile(src / dfdc.part_zip_name(0)) as zf:
        meta = json.loads(zf.read(f"{dfdc.part_folder_name(0)}/metadata.json"))
        folder = src / dfdc.part_folder_name(part)
        folder.mkdir()
        real = next(n for n, m in meta.items() if m["label"] == "REAL")
        fake = next(n for n, m in meta.items() if m.get("original") == real)
        good = zf.read(f"{dfdc.part_folder_name(0)}/{real}")
        (folder / "goodreal00.mp4").write_bytes(good)
        (folder / "goodfake00.mp4").write_bytes(zf.read(f"{dfdc.part_folder_name(0)}/{fake}"))
    (folder / "truncated0.mp4").write_bytes(good[: len(good) // 3])
    (folder / "zerobytes0.mp4").write_bytes(b"")
    (folder / "notavideo0.mp4").write_bytes(b"this is not an mp4 file at all" * 100)
    (folder / "unlisted00.mp4").write_bytes(good)
    metadata = {
        "goodreal00.mp4": {"label": "REAL", "split": "train"},
        "goodfake00.mp4": {"label": "FAKE", "split": "train", "original": "goodreal00.mp4"},
        "truncated0.mp4": {"label": "REAL", "split": "train"},
        "zerobytes0.mp4": {"label": "REAL", "split": "train"},
        "notavideo0.mp4": {"label": "REAL", "split": "train"},
        "missingfile.mp4": {"label": "REAL", "split": "train"},
        "orphanfake.mp4": {"label": "FAKE", "split": "train", "original": "nowhere000.mp4"},
        "weirdlabel.mp4": {"label": "SORT-OF", "split": "train"},
    }
    (folder / "orphanfake.mp4").write_bytes(good)
    (folder / "weirdlabel.mp4").write_bytes(good)
    (folder / "metadata.json").write_text(json.dumps(metadata))
    return {"truncated0.mp4": None, "zerobytes0.mp4": None, "notavideo0.mp4": None,
            "missingfile.mp4": "no_file", "orphanfake.mp4": "original_missing",
            "weirdlabel.mp4": "unknown_label", "unlisted00.mp4": "not_in_metadata"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("pre")
    src, out = root / "src", root / "out"
    generate(src, SYNTH)
    summary = run_pipeline(src, out)
    return src, out, summary


def metadata_of(src: Path, part: int) -> dict:
    with zipfile.ZipFile(src / dfdc.part_zip_name(part)) as zf:
        return json.loads(zf.read(f"{dfdc.part_folder_name(part)}/metadata.json"))


def test_counts_per_part_split_and_label_follow_the_metadata(dataset):
    src, out, summary = dataset
    assert [s["part"] for s in summary["committed"]] == [0, 1, 2] and not summary["failed"]
    table = pq.read_table(out / "parquet")  # plain pyarrow over the whole format folder
    rows = table.drop_columns(["image"]).to_pylist()
    for part in range(3):
        meta = metadata_of(src, part)
        originals = [n for n, m in meta.items() if m["label"] == "REAL"]
        part_rows = [r for r in rows if r["part"] == part]
        labels = Counter(r["label"] for r in part_rows)
        # one fake kept per original, FRAMES faces per video, one face per frame
        assert labels[0] == labels[1] == len(originals) * FRAMES
        by_video = Counter(r["video"] for r in part_rows)
        assert set(by_video.values()) == {FRAMES}
        for r in part_rows:
            expected_original = r["video"] if r["label"] == 0 else meta[r["video"]]["original"]
            assert r["original"] == expected_original
            # The split rule of DESIGN.md, not the metadata's "split" (always "train" in DFDC).
            assert r["split"] == splits.assign_split(part, r["original"], test_parts=(2,),
                                                     validation_fraction=0.3)
    # The held-out part is test whole; the others hold both train and validation originals.
    assert {r["split"] for r in rows if r["part"] == 2} == {"test"}
    assert {r["split"] for r in rows if r["part"] != 2} == {"train", "validation"}


def test_no_original_lands_in_two_splits(dataset):
    _, out, _ = dataset
    table = pq.read_table(out / "parquet", columns=["original", "split"]).to_pylist()
    splits_of = {}
    for r in table:
        splits_of.setdefault(r["original"], set()).add(r["split"])
    assert all(len(s) == 1 for s in splits_of.values())


def test_fakes_reuse_their_originals_boxes_at_the_same_frames(dataset):
    _, out, _ = dataset
    rows = pq.read_table(out / "parquet").drop_columns(["image"]).to_pylist()
    real = {(r["video"], r["frame_index"]): r["bbox"] for r in rows if r["label"] == 0}
    for r in rows:
        if r["label"] == 1:
            assert (r["original"], r["frame_index"]) in real


def test_every_image_decodes_to_256_square_rgb(dataset):
    _, out, _ = dataset
    for img in pq.read_table(out / "parquet", columns=["image"]).column("image").to_pylist():
        im = Image.open(io.BytesIO(img))
        assert im.size == (256, 256) and im.mode == "RGB"


def test_tfrecord_shards_hold_the_same_records_for_plain_tf_data(dataset):
    _, out, _ = dataset
    spec = schemas.feature_spec(schemas.FACE)
    files = tf.io.gfile.glob(ot.shard_glob(str(out), "tfrecord"))
    assert files and all(ot.parse_shard_name(Path(f).name) for f in files)
    ds = tf.data.TFRecordDataset(files).map(lambda x: tf.io.parse_single_example(x, spec))
    tf_keys = sorted((int(p["part"]), p["video"].numpy().decode(), int(p["frame_index"]))
                     for p in ds)
    pq_keys = sorted((r["part"], r["video"], r["frame_index"]) for r in
                     pq.read_table(out / "parquet", columns=["part", "video", "frame_index"])
                     .to_pylist())
    assert tf_keys == pq_keys


def test_manifest_accounts_for_every_video(dataset):
    src, out, _ = dataset
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["parts"]) == ["00", "01", "02"]
    for key, entry in manifest["parts"].items():
        meta = metadata_of(src, int(key))
        assert entry["videos_in_metadata"] == len(meta)
        assert entry["videos_in_metadata"] == (entry["videos_with_records"]
                                               + entry["videos_rejected"]
                                               + entry["fakes_left_out"])
        assert entry["schema_version"] == schemas.FACE.version
        assert (out / "errors" / f"part-{key}.parquet").exists()
    # nothing staged is left visible
    assert not [p for p in out.rglob("_*") if p.name != "_last_run.json"]


def test_second_run_does_nothing_and_a_new_part_is_processed_alone(dataset, tmp_path):
    src, out, _ = dataset
    before = {p: p.stat().st_mtime_ns for p in (out / "parquet").rglob("*")}
    again = run_pipeline(src, out)
    assert again["committed"] == [] and again["skipped"] == [0, 1, 2]
    assert {p: p.stat().st_mtime_ns for p in (out / "parquet").rglob("*")} == before

    expected = add_broken_part(src, 3)
    third = run_pipeline(src, out)
    assert [s["part"] for s in third["committed"]] == [3] and third["skipped"] == [0, 1, 2]
    assert {p: p.stat().st_mtime_ns for p in (out / "parquet").rglob("*")
            if "part-03" not in str(p)} == before

    # planted bad videos are in the part's errors file with their reason; the rest landed
    errors = {r["video"]: r["reason"] for r in
              pq.read_table(out / "errors" / "part-03.parquet").to_pylist()}
    for video, reason in expected.items():
        assert video in errors, video
        if reason:
            assert errors[video] == reason
    for video in ("truncated0.mp4", "zerobytes0.mp4", "notavideo0.mp4"):
        assert errors[video] != "no_face"
    landed = set(pq.read_table(out / "parquet" / "part-03", columns=["video"])
                 .column("video").to_pylist())
    assert landed == {"goodreal00.mp4", "goodfake00.mp4"}
    entry = json.loads((out / "manifest.json").read_text())["parts"]["03"]
    assert entry["videos_in_metadata"] == 8
    assert entry["videos_in_metadata"] == (entry["videos_with_records"]
                                           + entry["videos_rejected"] + entry["fakes_left_out"])


def test_same_input_and_config_give_the_same_bytes(dataset, tmp_path):
    src, out, _ = dataset
    run_pipeline(src, tmp_path / "again", "--parts", "1")
    for fmt in ("parquet", "tfrecord"):
        mine = sorted((out / fmt / "part-01").iterdir())
        theirs = sorted((tmp_path / "again" / fmt / "part-01").iterdir())
        assert [p.name for p in mine] == [p.name for p in theirs]
        for a, b in zip(mine, theirs):
            assert a.read_bytes() == b.read_bytes(), a.name
