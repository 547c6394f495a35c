"""Everything derived from a ``RecordSchema``: validation, Arrow schema, tf.train.Example spec,
encoders and decoders. TensorFlow is imported only by the functions that need it."""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

from schemas.declare import PYTHON_TYPES, Field, RecordSchema

_ARROW_TYPES = {
    "str": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bytes": pa.binary(),
}

META_SCHEMA = b"dfd.schema"
META_VERSION = b"dfd.schema_version"


class SchemaError(ValueError):
    """A record does not match its schema; the message names the field."""

    def __init__(self, schema: RecordSchema, field: str, problem: str):
        super().__init__(f"{schema.name} record: field {field!r} {problem}")
        self.field = field


def _check_value(schema: RecordSchema, f: Field, value: Any) -> None:
    if value is None:
        if not f.nullable:
            raise SchemaError(schema, f.name, "is null but not nullable")
        return
    types = PYTHON_TYPES[f.kind]
    if isinstance(value, bool) or not isinstance(value, types):
        raise SchemaError(schema, f.name,
                          f"must be {f.kind}, got {type(value).__name__}")
    if f.kind == "floats":
        if len(value) != f.length:
            raise SchemaError(schema, f.name, f"must hold {f.length} floats, got {len(value)}")
        for v in value:
            if isinstance(v, bool) or not isinstance(v, (float, int)) or not math.isfinite(v):
                raise SchemaError(schema, f.name, f"must hold finite floats, got {v!r}")
    elif f.kind == "float" and not math.isfinite(value):
        raise SchemaError(schema, f.name, f"must be finite, got {value!r}")
    if f.choices and value not in f.choices:
        raise SchemaError(schema, f.name, f"must be one of {list(f.choices)}, got {value!r}")


def validate(record: Mapping[str, Any], schema: RecordSchema) -> dict[str, Any]:
    """Return the record as a plain dict in field order, or raise SchemaError naming the field."""
    extra = set(record) - set(schema.names)
    if extra:
        raise SchemaError(schema, sorted(extra)[0], "is not in the schema")
    out = {}
    for f in schema.fields:
        if f.name not in record:
            if f.nullable:
                out[f.name] = None
                continue
            raise SchemaError(schema, f.name, "is missing")
        value = record[f.name]
        _check_value(schema, f, value)
        if value is not None and f.kind == "float":
            value = float(value)
        elif value is not None and f.kind == "floats":
            value = [float(v) for v in value]
        out[f.name] = value
    return out


# ---- Arrow / Parquet ---------------------------------------------------------------------------

def arrow_schema(schema: RecordSchema) -> pa.Schema:
    fields = []
    for f in schema.fields:
        typ = pa.list_(pa.float64(), f.length) if f.kind == "floats" else _ARROW_TYPES[f.kind]
        fields.append(pa.field(f.name, typ, nullable=f.nullable,
                               metadata={b"doc": f.doc.encode()}))
    return pa.schema(fields, metadata={META_SCHEMA: schema.name.encode(),
                                       META_VERSION: str(schema.version).encode()})


def to_arrow_table(records: Iterable[Mapping[str, Any]], schema: RecordSchema) -> pa.Table:
    rows = [validate(r, schema) for r in records]
    columns = {name: [r[name] for r in rows] for name in schema.names}
    return pa.Table.from_pydict(columns, schema=arrow_schema(schema))


def check_arrow_schema(actual: pa.Schema, schema: RecordSchema) -> None:
    """Raise SchemaError if a table read back is not of this schema (names, types, version)."""
    expected = arrow_schema(schema)
    for f in expected:
        if f.name not in actual.names:
            raise SchemaError(schema, f.name, "is missing from the table")
        if not actual.field(f.name).type.equals(f.type):
            raise SchemaError(schema, f.name,
                              f"has type {actual.field(f.name).type}, expected {f.type}")
    meta = actual.metadata or {}
    version = meta.get(META_VERSION)
    if version is not None and int(version) != schema.version:
        raise SchemaError(schema, "schema_version",
                          f"is {int(version)}, this code reads {schema.version}")


# ---- tf.train.Example / TFRecord --------------------------------------------------------------

def feature_spec(schema: RecordSchema) -> dict:
    """The spec for ``tf.io.parse_example``; nullable fields are variable-length (0 or 1 value)."""
    import tensorflow as tf

    dtypes = {"str": tf.string, "bytes": tf.string, "int": tf.int64, "float": tf.float32,
              "floats": tf.float32}
    spec = {}
    for f in schema.fields:
        if f.nullable:
            spec[f.name] = tf.io.VarLenFeature(dtypes[f.kind])
        else:
            shape = [f.length] if f.kind == "floats" else []
            spec[f.name] = tf.io.FixedLenFeature(shape, dtypes[f.kind])
    return spec


def to_example(record: Mapping[str, Any], schema: RecordSchema) -> bytes:
    """Validate and serialize one record as a tf.train.Example."""
    from tensorflow.core.example import example_pb2, feature_pb2

    row = validate(record, schema)
    features = {}
    for f in schema.fields:
        value = row[f.name]
        values = [] if value is None else (value if f.kind == "floats" else [value])
        if f.kind in ("str", "bytes"):
            feat = feature_pb2.Feature(bytes_list=feature_pb2.BytesList(
                value=[v.encode() if isinstance(v, str) else v for v in values]))
        elif f.kind == "int":
            feat = feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=values))
        else:
            feat = feature_pb2.Feature(float_list=feature_pb2.FloatList(value=values))
        features[f.name] = feat
    return example_pb2.Example(
        features=feature_pb2.Features(feature=features)).SerializeToString(deterministic=True)


def from_example(serialized: bytes, schema: RecordSchema) -> dict[str, Any]:
    """Parse one serialized Example into a record (without TensorFlow ops). Floats come back
    at float32 precision, which is what the TFRecord format stores."""
    from tensorflow.core.example import example_pb2

    ex = example_pb2.Example.FromString(serialized)
    feats = ex.features.feature
    out = {}
    for f in schema.fields:
        if f.name not in feats:
            if f.nullable:
                out[f.name] = None
                continue
            raise SchemaError(schema, f.name, "is missing from the Example")
        feat = feats[f.name]
        if f.kind in ("str", "bytes"):
            values = list(feat.bytes_list.value)
            if f.kind == "str":
                values = [v.decode() for v in values]
        elif f.kind == "int":
            values = list(feat.int64_list.value)
        else:
            values = list(feat.float_list.value)
        if f.kind == "floats":
            out[f.name] = values
        elif not values and f.nullable:
            out[f.name] = None
        elif len(values) != 1:
            raise SchemaError(schema, f.name, f"holds {len(values)} values, expected 1")
        else:
            out[f.name] = values[0]
    return validate(out, schema)


def decode_parsed(parsed: Mapping[str, Any], schema: RecordSchema) -> dict[str, Any]:
    """Turn one element of ``tf.io.parse_single_example(…, feature_spec(schema))`` (eager
    tensors) into a plain record."""
    out = {}
    for f in schema.fields:
        t = parsed[f.name]
        if f.nullable:
            vals = t.values.numpy().tolist()
            value = vals[0] if vals else None
        else:
            value = t.numpy()
            if f.kind == "floats":
                value = value.tolist()
            elif hasattr(value, "item"):
                value = value.item()
        if isinstance(value, bytes) and f.kind == "str":
            value = value.decode()
        out[f.name] = value
    return out
