"""The record schemas: one declaration drives Arrow, tf.train.Example, validation."""
import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from PIL import Image

import schemas
from dfd import shards


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def face_record(i: int = 0, **changes):
    rec = {
        "video": f"abcdefghi{i % 10}.mp4", "part": 3, "original": "zyxwvutsrq.mp4",
        "label": i % 2, "split": "train", "frame_index": 10 * i, "frame_count": 300,
        "face_index": 0, "bbox": [10.5, 20.25, 110.0, 140.0], "det_score": 0.99,
        "frame_width": 1920, "frame_height": 1080, "image": _jpeg(i), "image_format": "jpeg",
    }
    rec.update(changes)
    return rec


def test_arrow_schema_has_every_declared_field_in_order():
    arrow = schemas.arrow_schema(schemas.FACE)
    assert arrow.names == list(schemas.FACE.names)
    assert arrow.field("bbox").type == pa.list_(pa.float64(), 4)
    assert arrow.metadata[b"dfd.schema_version"] == b"1"


def test_round_trip_parquet_and_tfrecord(tmp_path):
    records = [face_record(i) for i in range(5)]
    shards.write_parquet(records, str(tmp_path / "f.parquet"))
    shards.write_tfrecord(records, str(tmp_path / "f.tfrecord"))

    # plain pyarrow reads exactly what was written
    table = pq.read_table(tmp_path / "f.parquet")
    assert table.to_pylist() == [schemas.validate(r, schemas.FACE) for r in records]

    # plain tf.data with the derived spec reads the same values (floats at float32)
    spec = schemas.feature_spec(schemas.FACE)
    ds = tf.data.TFRecordDataset(str(tmp_path / "f.tfrecord")).map(
        lambda x: tf.io.parse_single_example(x, spec))
    back = [schemas.decode_parsed(p, schemas.FACE) for p in ds]
    assert len(back) == len(records)
    for got, want in zip(back, records):
        for name in schemas.FACE.names:
            if name in ("bbox", "det_score"):
                np.testing.assert_allclose(got[name], want[name], rtol=1e-6)
            else:
                assert got[name] == want[name], name
        assert Image.open(io.BytesIO(got["image"])).size == (256, 256)


def test_nullable_label_round_trips_as_none(tmp_path):
    rec = {"video": "a.mp4", "part": 0, "label": None, "p_fake": 0.25, "n_faces": 0,
           "aggregation": "mean", "model": "m", "scored_by": "fallback", "reason": "no_face"}
    path = str(tmp_path / "v.tfrecord")
    shards.write_tfrecord([rec], path, schemas.VIDEO_PREDICTION)
    assert list(shards.iter_tfrecord(path, schemas.VIDEO_PREDICTION))[0]["label"] is None
    table = schemas.to_arrow_table([rec], schemas.VIDEO_PREDICTION)
    assert table.column("label").to_pylist() == [None]


@pytest.mark.parametrize("field,value,problem", [
    ("label", "FAKE", "must be int"),
    ("label", 7, "must be one of"),
    ("bbox", [1.0, 2.0], "must hold 4 floats"),
    ("image", "not bytes", "must be bytes"),
    ("split", "dev", "must be one of"),
    ("frame_index", True, "must be int"),
    ("det_score", float("nan"), "must be finite"),
])
def test_wrong_type_is_rejected_naming_the_field(field, value, problem):
    with pytest.raises(schemas.SchemaError, match=f"field '{field}' {problem}") as err:
        schemas.to_example(face_record(**{field: value}), schemas.FACE)
    assert err.value.field == field


def test_missing_field_is_rejected_naming_the_field(tmp_path):
    rec = face_record()
    del rec["original"]
    with pytest.raises(schemas.SchemaError, match="field 'original' is missing"):
        shards.write_parquet([rec], str(tmp_path / "x.parquet"))
    with pytest.raises(schemas.SchemaError, match="field 'original' is missing"):
        shards.write_tfrecord([rec], str(tmp_path / "x.tfrecord"))


def test_unknown_field_is_rejected():
    with pytest.raises(schemas.SchemaError, match="field 'labl' is not in the schema"):
        schemas.validate(face_record(labl=1), schemas.FACE)


def test_reader_refuses_another_schema_version(tmp_path):
    table = schemas.to_arrow_table([face_record()], schemas.FACE)
    meta = dict(table.schema.metadata)
    meta[b"dfd.schema_version"] = b"99"
    pq.write_table(table.replace_schema_metadata(meta), tmp_path / "old.parquet")
    with pytest.raises(schemas.SchemaError, match="schema_version"):
        shards.read_parquet(str(tmp_path / "old.parquet"))


def test_tfrecord_framing_is_read_by_tensorflow(tmp_path):
    records = [face_record(i) for i in range(3)]
    path = tmp_path / "framed.tfrecord"
    path.write_bytes(shards.tfrecord_bytes(records))
    assert [r["frame_index"] for r in shards.iter_tfrecord(str(path))] == [0, 10, 20]
    # same bytes as TensorFlow's own writer
    shards.write_tfrecord(records, str(tmp_path / "tf.tfrecord"))
    assert path.read_bytes() == (tmp_path / "tf.tfrecord").read_bytes()


def test_parquet_bytes_read_by_pyarrow():
    import pyarrow as pa
    data = shards.parquet_bytes([face_record(1)])
    table = pq.read_table(pa.BufferReader(data))
    assert table.column("video").to_pylist() == ["abcdefghi1.mp4"]
