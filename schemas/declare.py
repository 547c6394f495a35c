"""The declaration language for records: a record is a named, versioned tuple of typed fields.

Everything else (the Arrow schema, the ``tf.train.Example`` feature spec, validation, encoding
and decoding) is derived from these declarations in ``schemas.derive``; nothing restates them.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

Kind = Literal["str", "int", "float", "bytes", "floats"]

# Python types each kind accepts on write. bool is an int subclass but never a valid int here.
PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (float, int),
    "bytes": (bytes,),
    "floats": (list, tuple),
}


@dataclasses.dataclass(frozen=True)
class Field:
    name: str
    kind: Kind
    doc: str
    nullable: bool = False
    length: int | None = None  # fixed length of a "floats" field
    choices: tuple = ()  # allowed values, empty for any

    def __post_init__(self):
        if self.kind not in PYTHON_TYPES:
            raise ValueError(f"field {self.name!r}: unknown kind {self.kind!r}")
        if (self.length is not None) != (self.kind == "floats"):
            raise ValueError(f"field {self.name!r}: length goes with kind 'floats' only")


@dataclasses.dataclass(frozen=True)
class RecordSchema:
    name: str
    version: int
    fields: tuple[Field, ...]
    doc: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)
