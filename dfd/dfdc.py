"""The DFDC layout: part names and metadata.json.

A source root holds parts, each a zip ``dfdc_train_part_NN.zip`` (two digits) or a folder
``dfdc_train_part_N`` (no padding: what the real zips unpack to). Each part has
``metadata.json``: ``{"<name>.mp4": {"label": "REAL"|"FAKE", "split": "train",
"original": "<name>.mp4"}}``; REAL entries have no ``original`` (or null).
"""
from __future__ import annotations

import json
import posixpath
import re
import stat
import zipfile
from dataclasses import dataclass

from dfd.errors import DfdError

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


# ---- metadata.json -----------------------------------------------------------------------------

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}\.mp4$")
_LABELS = {"REAL": 0, "FAKE": 1}


class BrokenPart(DfdError):
    """A whole part cannot be read (no or invalid metadata.json, unreadable archive)."""

    def __init__(self, part: int, reason: str, detail: str):
        super().__init__(f"part {part}: {reason}: {detail}")
        self.part, self.reason, self.detail = part, reason, detail


@dataclass(frozen=True)
class Entry:
    """One video listed in a part's metadata.json."""
    name: str
    label: int  # 1 = FAKE, 0 = REAL
    original: str  # itself for REAL


def reject(video: str, part: int, reason: str, detail: str) -> dict:
    """A schemas.REJECT record."""
    return {"video": video, "part": part, "reason": reason, "detail": detail}


def _no_duplicate_keys(pairs):
    seen: dict = {}
    dups = []
    for k, v in pairs:
        if k in seen:
            dups.append(k)
        seen[k] = v
    if dups:
        seen["__duplicate_keys__"] = dups
    return seen


def parse_metadata(raw: bytes, *, part: int) -> tuple[list[Entry], list[dict]]:
    """Parse metadata.json into entries and rejects (one per unusable entry).

    Raises BrokenPart when the file as a whole is unusable."""
    try:
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BrokenPart(part, "bad_metadata", f"metadata.json is not valid JSON ({exc})") \
            from None
    if not isinstance(data, dict):
        raise BrokenPart(part, "bad_metadata",
                         f"metadata.json must be an object, got {type(data).__name__}")
    dups = set(data.pop("__duplicate_keys__", []))
    rejects = [reject(str(k)[:200], part, "duplicate_entry",
                      "listed more than once in metadata.json") for k in sorted(dups)]
    for k in dups:
        data.pop(k, None)
    entries: list[Entry] = []
    for name, meta in data.items():
        if not _NAME_RE.match(name):
            rejects.append(reject(name[:200], part, "bad_name",
                                  "not a plain <name>.mp4 file name"))
            continue
        if not isinstance(meta, dict):
            rejects.append(reject(name, part, "bad_entry", "entry is not an object"))
            continue
        label = _LABELS.get(meta.get("label"))
        if label is None:
            rejects.append(reject(name, part, "unknown_label",
                                  f"label {meta.get('label')!r} is neither REAL nor FAKE"))
            continue
        original = meta.get("original")
        if label == 0:
            original = name
        elif not isinstance(original, str) or not _NAME_RE.match(original):
            rejects.append(reject(name, part, "bad_original",
                                  f"FAKE entry names no valid original ({original!r})"))
            continue
        entries.append(Entry(name, label, original))
    return entries, rejects


# ---- zip members -------------------------------------------------------------------------------

def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


def unsafe_member_reason(name: str) -> str | None:
    """Why a zip member name may not be used, or None if it is safe."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        return "'..' in path"
    if "\x00" in name:
        return "NUL in name"
    return None


@dataclass(frozen=True)
class PartMembers:
    """The usable members of a zipped part: metadata member name and video name -> member."""
    metadata: str | None
    videos: dict[str, str]


def scan_zip(zf: zipfile.ZipFile, *, part: int, max_member_bytes: int
             ) -> tuple[PartMembers, list[dict]]:
    """Check every member of a part's zip; return the usable ones and rejects for the rest.

    A part zip holds ``dfdc_train_part_N/`` (or the files at its root). Members with absolute
    paths, '..', symlinks or an uncompressed size over the limit are rejected, never opened."""
    metadata = None
    videos: dict[str, str] = {}
    rejects: list[dict] = []
    for info in zf.infolist():
        name = info.filename
        if info.is_dir():
            continue
        base = posixpath.basename(name.replace("\\", "/"))
        why = unsafe_member_reason(name)
        if why:
            rejects.append(reject(name[:200], part, "unsafe_member", why))
            continue
        if _is_symlink(info):
            rejects.append(reject(name[:200], part, "unsafe_member", "symbolic link"))
            continue
        depth = name.count("/")
        if depth > 1:
            rejects.append(reject(name[:200], part, "unexpected_member",
                                  "nested deeper than the part folder"))
            continue
        if info.file_size > max_member_bytes:
            rejects.append(reject(base, part, "member_too_large",
                                  f"{info.file_size} bytes uncompressed, limit {max_member_bytes}"))
            continue
        if base == METADATA:
            metadata = name
        elif base.endswith(".mp4"):
            videos[base] = name
        # other files (e.g. synth_truth.json sidecars) are ignored, as the real set has none
    return PartMembers(metadata, videos), rejects


def read_member(zf: zipfile.ZipFile, member: str, *, max_bytes: int) -> bytes:
    """Read one member, refusing to inflate beyond max_bytes whatever its header claims."""
    with zf.open(member) as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{member} inflates past {max_bytes} bytes (zip bomb?)")
    return data
