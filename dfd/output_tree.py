"""Names in the output tree (DESIGN.md): the one place that spells shard and part paths.

    <out>/manifest.json
    <out>/{parquet,tfrecord}/part-NN/faces-<split>-SSSSS-of-NNNNN.{parquet,tfrecord}
    <out>/errors/part-NN.parquet

Paths are joined with '/' so the same names work for local paths and gs:// or s3:// URIs.
Files being written carry a leading '_' (``staging_name``), which pyarrow and Ray skip.

Every piece joined under a root is checked (``check_relative``): part numbers, splits and file
names can come from input data (metadata.json, a Kaggle listing), and none of them may lead a
write outside the root.
"""
from __future__ import annotations

import operator
import os
import re

FORMATS = {"parquet": "parquet", "tfrecord": "tfrecord"}  # format -> file extension
MANIFEST = "manifest.json"
ERRORS = "errors"
STAGING_PREFIX = "_"

_SHARD_RE = re.compile(
    r"^faces-(?P<split>[a-z]+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.(?P<ext>parquet|tfrecord)$")
_PART_RE = re.compile(r"^part-(?P<part>\d{2,})$")
_SPLIT_RE = re.compile(r"^[a-z]+$")


class UnsafePath(ValueError):
    """A path piece that could lead outside the folder it is joined under."""


def check_relative(piece: str) -> str:
    """piece, if it names something strictly inside a folder: '/'-separated names, none empty,
    '.' or '..', no backslash (a separator on Windows and in some object-store tools), no NUL,
    not absolute. Raises UnsafePath otherwise."""
    if isinstance(piece, os.PathLike):
        piece = os.fspath(piece)
    if not isinstance(piece, str):
        raise UnsafePath(f"path piece must be a string, got {type(piece).__name__}")
    shown = repr(piece[:80])
    if not piece:
        raise UnsafePath("empty path piece")
    if "\x00" in piece:
        raise UnsafePath(f"NUL in path piece {shown}")
    if "\\" in piece:
        raise UnsafePath(f"backslash in path piece {shown}")
    if piece.startswith("/") or re.match(r"^[A-Za-z]:", piece) or "://" in piece:
        raise UnsafePath(f"absolute path piece {shown}")
    for name in piece.split("/"):
        if name in ("", ".", ".."):
            raise UnsafePath(f"path piece {shown} has an empty, '.' or '..' component")
    return piece


def join(root: str, *pieces: str) -> str:
    """root (a path or URI, taken as given) with relative pieces below it, single slashes.

    Raises UnsafePath for a piece that is not strictly relative (``check_relative``)."""
    root = str(root)
    if "\x00" in root:
        raise UnsafePath("NUL in root path")
    out = root.rstrip("/") if root not in ("/", "") else root
    for p in pieces:
        p = check_relative(p)
        out = f"{out}/{p}" if out not in ("", "/") else f"{out}{p}"
    return out


def part_folder(part: int) -> str:
    if isinstance(part, bool):
        raise ValueError(f"part must be an integer, got {part!r}")
    try:
        part = operator.index(part)  # ints and numpy integers; never a string or float
    except TypeError:
        raise ValueError(f"part must be an integer, got {part!r}") from None
    if part < 0:
        raise ValueError(f"part must be >= 0, got {part}")
    return f"part-{part:02d}"


def parse_part_folder(name: str) -> int | None:
    m = _PART_RE.match(name)
    return int(m.group("part")) if m else None


def shard_name(split: str, index: int, count: int, fmt: str) -> str:
    if not isinstance(split, str) or not _SPLIT_RE.match(split):
        raise UnsafePath(f"split must be lowercase letters, got {split!r:.80}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {sorted(FORMATS)}")
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


def retired_part_dir(out: str, fmt: str, part: int) -> str:
    """Where a committed part folder waits, hidden, while its replacement moves in."""
    return join(format_dir(out, fmt), f"{STAGING_PREFIX}retired-{part_folder(part)}")


def commit_journal_path(out: str, part: int) -> str:
    """A hidden note that a part's commit is under way; a run that finds one rolls it back."""
    return join(out, f"{STAGING_PREFIX}committing-{part_folder(part)}.json")


def parse_commit_journal(name: str) -> int | None:
    m = re.match(rf"^{STAGING_PREFIX}committing-(part-\d{{2,}})\.json$", name)
    return parse_part_folder(m.group(1)) if m else None
