"""Reading and writing face shards (Parquet and TFRecord) with the encoders of ``schemas``.

Local paths and ``gs://`` / ``s3://`` URIs both work: Parquet goes through ``pyarrow.fs``,
TFRecord through TensorFlow's file system layer.
"""
from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import google_crc32c
import pyarrow as pa
import pyarrow.parquet as pq

import schemas
from schemas import RecordSchema

PARQUET_COMPRESSION = "zstd"


def write_parquet(records: Iterable[Mapping[str, Any]], path: str,
                  schema: RecordSchema = schemas.FACE) -> int:
    """Validate and write records to one Parquet file; return the row count."""
    table = schemas.to_arrow_table(records, schema)
    pq.write_table(table, path, compression=PARQUET_COMPRESSION)
    return table.num_rows


def parquet_bytes(records: Iterable[Mapping[str, Any]],
                  schema: RecordSchema = schemas.FACE) -> bytes:
    """One Parquet file as bytes, for writers that go through another file system layer."""
    sink = pa.BufferOutputStream()
    pq.write_table(schemas.to_arrow_table(records, schema), sink, compression=PARQUET_COMPRESSION)
    return sink.getvalue().to_pybytes()


def read_parquet(path: str, schema: RecordSchema = schemas.FACE, **kwargs) -> pa.Table:
    """Read a Parquet file or a folder of them, checking the schema and version."""
    table = pq.read_table(path, **kwargs)
    schemas.check_arrow_schema(table.schema, schema)
    return table


def _masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord_frame(payload: bytes) -> bytes:
    """One TFRecord: length, masked CRC32C of the length, payload, masked CRC32C of it."""
    length = struct.pack("<Q", len(payload))
    return b"".join((length, struct.pack("<I", _masked_crc(length)), payload,
                     struct.pack("<I", _masked_crc(payload))))


def tfrecord_bytes(records: Iterable[Mapping[str, Any]],
                   schema: RecordSchema = schemas.FACE) -> bytes:
    """A whole TFRecord file as bytes, without TensorFlow's file layer (works for any URI)."""
    return b"".join(tfrecord_frame(schemas.to_example(r, schema)) for r in records)


def write_tfrecord(records: Iterable[Mapping[str, Any]], path: str,
                   schema: RecordSchema = schemas.FACE) -> int:
    """Validate and write records as serialized tf.train.Examples; return the count."""
    import tensorflow as tf

    n = 0
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(schemas.to_example(record, schema))
            n += 1
    return n


def iter_tfrecord(path: str, schema: RecordSchema = schemas.FACE) -> Iterator[dict[str, Any]]:
    """Records of one TFRecord file, decoded without building a tf.data graph."""
    import tensorflow as tf

    for raw in tf.data.TFRecordDataset(path):
        yield schemas.from_example(raw.numpy(), schema)
