"""Reading and writing face shards (Parquet and TFRecord) with the encoders of ``schemas``.

Local paths and ``gs://`` / ``s3://`` URIs both work: Parquet goes through ``pyarrow.fs``,
TFRecord through TensorFlow's file system layer.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping

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


def read_parquet(path: str, schema: RecordSchema = schemas.FACE, **kwargs) -> pa.Table:
    """Read a Parquet file or a folder of them, checking the schema and version."""
    table = pq.read_table(path, **kwargs)
    schemas.check_arrow_schema(table.schema, schema)
    return table


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
