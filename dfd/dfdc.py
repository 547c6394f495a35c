"""The DFDC layout: part names and metadata.json.

A source root holds parts, each a zip ``dfdc_train_part_NN.zip`` (two digits) or a folder
``dfdc_train_part_N`` (no padding: what the real zips unpack to). Each part has
``metadata.json``: ``{"<name>.mp4": {"label": "REAL"|"FAKE", "split": "train",
"original": "<name>.mp4"}}``; REAL entries have no ``original`` (or null).
"""
from __future__ import annotations

import re

METADATA = "metadata.json"
_ZIP_RE = re.compile(r"^dfdc_train_part_(\d+)\.zip$")
_FOLDER_RE = re.compile(r"^dfdc_train_part_(\d+)$")


def part_zip_name(part: int) -> str:
    return f"dfdc_train_part_{part:02d}.zip"


def part_folder_name(part: int) -> str:
    return f"dfdc_train_part_{part}"


def parse_part_name(name: str) -> int | None:
    """The part number of a zip or folder name, or None if it is not a DFDC part."""
    m = _ZIP_RE.match(name) or _FOLDER_RE.match(name)
    return int(m.group(1)) if m else None


def parse_part_selection(spec: str | None) -> set[int] | None:
    """'0-9,12' -> {0..9, 12}; None or '' -> None (all parts)."""
    if not spec:
        return None
    parts: set[int] = set()
    for piece in spec.split(","):
        piece = piece.strip()
        if not piece:
            continue
        lo, sep, hi = piece.partition("-")
        try:
            lo_i = int(lo)
            hi_i = int(hi) if sep else lo_i
        except ValueError:
            raise ValueError(f"bad part selection {spec!r}: expected e.g. 0-9,12") from None
        if lo_i < 0 or hi_i < lo_i:
            raise ValueError(f"bad part range {piece!r} in {spec!r}")
        parts.update(range(lo_i, hi_i + 1))
    return parts
