"""Names in the output tree (DESIGN.md): the one place that spells shard and part paths.

    <out>/manifest.json
    <out>/{parquet,tfrecord}/part-NN/faces-<split>-SSSSS-of-NNNNN.{parquet,tfrecord}
    <out>/errors/part-NN.parquet

Paths are joined with '/' so the same names work for local paths and gs:// or s3:// URIs.
Files being written carry a leading '_' (``staging_name``), which pyarrow and Ray skip.
"""
from __future__ import annotations

import re

FORMATS = {"parquet": "parquet", "tfrecord": "tfrecord"}  # format -> file extension
MANIFEST = "manifest.json"
ERRORS = "errors"
STAGING_PREFIX = "_"

_SHARD_RE = re.compile(
    r"^faces-(?P<split>[a-z]+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.(?P<ext>parquet|tfrecord)$")
_PART_RE = re.compile(r"^part-(?P<part>\d{2,})$")


def join(*pieces: str) -> str:
    """Join URI or path pieces with single slashes."""
    head, *rest = [str(p) for p in pieces]
    out = head.rstrip("/") if head not in ("/", "") else head
    for p in rest:
        p = p.strip("/")
        if p:
            out = f"{out}/{p}" if out not in ("", "/") else f"{out}{p}"
    return out


def part_folder(part: int) -> str:
    if part < 0:
        raise ValueError(f"part must be >= 0, got {part}")
    return f"part-{part:02d}"


def parse_part_folder(name: str) -> int | None:
    m = _PART_RE.match(name)
    return int(m.group("part")) if m else None


def shard_name(split: str, index: int, count: int, fmt: str) -> str:
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} outside 0..{count - 1}")
    return f"faces-{split}-{index:05d}-of-{count:05d}.{FORMATS[fmt]}"


def parse_shard_name(name: str) -> dict | None:
    m = _SHARD_RE.match(name)
    if not m:
        return None
    return {"split": m["split"], "index": int(m["index"]), "count": int(m["count"]),
            "format": m["ext"]}


def format_dir(out: str, fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {sorted(FORMATS)}")
    return join(out, fmt)


def part_dir(out: str, fmt: str, part: int, *, staging: bool = False) -> str:
    folder = part_folder(part)
    return join(format_dir(out, fmt), STAGING_PREFIX + folder if staging else folder)


def shard_path(out: str, fmt: str, part: int, split: str, index: int, count: int,
               *, staging: bool = False) -> str:
    return join(part_dir(out, fmt, part, staging=staging), shard_name(split, index, count, fmt))


def errors_path(out: str, part: int, *, staging: bool = False) -> str:
    name = f"{part_folder(part)}.parquet"
    return join(out, ERRORS, STAGING_PREFIX + name if staging else name)


def manifest_path(out: str) -> str:
    return join(out, MANIFEST)


def shard_glob(out: str, fmt: str, split: str = "*", part: int | None = None) -> str:
    """A glob over committed shards, for tf.data / Ray / DuckDB."""
    folder = part_folder(part) if part is not None else "part-*"
    return join(format_dir(out, fmt), folder, f"faces-{split}-*.{FORMATS[fmt]}")
