"""The DFDC layout: part names and metadata.json.

A source root holds parts, each a zip ``dfdc_train_part_NN.zip`` (two digits) or a folder
``dfdc_train_part_N`` (no padding: what the real zips unpack to; a padded outer folder
``dfdc_train_part_00/dfdc_train_part_0/`` is read too), and perhaps Kaggle's labelled sample
``train_sample_videos`` (part ``SAMPLE_PART``). Each part has
``metadata.json``: ``{"<name>.mp4": {"label": "REAL"|"FAKE", "split": "train",
"original": "<name>.mp4"}}``; REAL entries have no ``original`` (or null).
"""
from __future__ import annotations

import hashlib
import json
import re
import stat
import zipfile
from dataclasses import dataclass

from dfd.errors import DfdError

METADATA = "metadata.json"
_ZIP_RE = re.compile(r"^dfdc_train_part_(\d+)\.zip$")
_FOLDER_RE = re.compile(r"^dfdc_train_part_(\d+)$")
# Kaggle's API serves a labelled sample of 400 videos (77 REAL, 323 FAKE, many fakes' originals
# outside it) as train_sample_videos/ (or .zip) with its own metadata.json. It is read as a
# part of its own under this number, outside the real parts' 0-49: ``--parts 99`` selects it,
# its shards are part-99, and ``--test-parts 99`` holds it out whole.
SAMPLE_FOLDER = "train_sample_videos"
SAMPLE_PART = 99
# The data page's one-file form of the training set: the 50 part zips, nested.
ALL_PARTS_ZIP = "dfdc_train_all.zip"


def part_zip_name(part: int) -> str:
    return f"dfdc_train_part_{part:02d}.zip"


def part_folder_name(part: int) -> str:
    return f"dfdc_train_part_{part}"


def parse_part_name(name: str) -> int | None:
    """The part number of a zip or folder name (SAMPLE_PART for the labelled sample), or None
    if it is not a DFDC part."""
    if name in (SAMPLE_FOLDER, SAMPLE_FOLDER + ".zip"):
        return SAMPLE_PART
    m = _ZIP_RE.match(name) or _FOLDER_RE.match(name)
    return int(m.group(1)) if m else None


def is_all_parts_zip(uri: str | None) -> bool:
    """Whether uri names dfdc_train_all.zip, whose nested part zips are staged before use."""
    return bool(uri) and uri.rstrip("/").rsplit("/", 1)[-1] == ALL_PARTS_ZIP


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

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,200}\.mp4")  # used with fullmatch
_LABELS = {"REAL": 0, "FAKE": 1}
# Longer names are cut, keeping a digest so distinct names stay distinct; valid names (at most
# 205 characters) are never cut, so a reject names a listed video exactly.
_SHOWN_CHARS = 240
_DETAIL_CHARS = 500


class BrokenPart(DfdError):
    """A whole part cannot be read (no or invalid metadata.json, unreadable archive)."""

    def __init__(self, part: int, reason: str, detail: str):
        detail = _shown(detail, _DETAIL_CHARS)
        super().__init__(f"part {part}: {reason}: {detail}")
        self.part, self.reason, self.detail = part, reason, detail


@dataclass(frozen=True)
class Entry:
    """One video listed in a part's metadata.json."""
    name: str
    label: int  # 1 = FAKE, 0 = REAL
    original: str  # itself for REAL


def is_video_name(name: object) -> bool:
    """A plain DFDC video file name: ``<letters, digits, _.->.mp4``, no path, at most 205
    characters."""
    return isinstance(name, str) and _NAME_RE.fullmatch(name) is not None


def _shown(text: str, limit: int) -> str:
    """Text safe to store as UTF-8 and bounded in length: lone surrogates (legal in JSON
    escapes, illegal in UTF-8) are escaped, and cut names keep a digest of the whole."""
    text = str(text).encode("utf-8", "backslashreplace").decode("utf-8")
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"{text[:limit - 20]}...{digest}"


def reject(video: str, part: int, reason: str, detail: str, *, label: int | None = None,
           original: str | None = None) -> dict:
    """A schemas.REJECT record. Names and details from hostile inputs are made storable:
    printable, valid UTF-8 and bounded in length. ``label`` and ``original`` are the video's
    metadata.json entry, when it has one (``with_entries`` fills them in later)."""
    return {"video": _shown(video, _SHOWN_CHARS), "part": part, "reason": reason,
            "detail": _shown(detail, _DETAIL_CHARS), "label": label,
            "original": None if original is None else _shown(original, _SHOWN_CHARS)}


def with_entries(rejects: list[dict], entries: list[Entry]) -> list[dict]:
    """The rejects with the label and original of their metadata.json entry, where the video
    has one and the reject does not say already."""
    by_name = {e.name: e for e in entries}
    out = []
    for r in rejects:
        entry = by_name.get(r["video"])
        if entry is not None and r.get("label") is None:
            r = {**r, "label": entry.label, "original": _shown(entry.original, _SHOWN_CHARS)}
        out.append(r)
    return out


class _JsonObject(dict):
    """A JSON object that remembers the keys it was given more than once (json keeps the
    last silently; an ambiguous entry must be rejected, not guessed)."""

    def __init__(self, pairs):
        super().__init__()
        self.repeated: list[str] = []
        for key, value in pairs:
            if key in self and key not in self.repeated:
                self.repeated.append(key)
            self[key] = value


def parse_metadata(raw: bytes, *, part: int) -> tuple[list[Entry], list[dict]]:
    """Parse metadata.json into entries and rejects: one of the two for every name it lists.

    Raises BrokenPart (and nothing else) when the file as a whole is unusable: not UTF-8,
    not JSON, too deeply nested, or not an object. Entries come out in file order; a name
    listed twice is rejected (``duplicate_entry``) rather than resolved either way."""
    try:
        # utf-8-sig: a byte-order mark (written by some Windows tools) is not an error.
        data = json.loads(bytes(raw).decode("utf-8-sig"), object_pairs_hook=_JsonObject)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError also covers integers past Python's digit limit; RecursionError covers
        # arrays nested thousands deep.
        raise BrokenPart(part, "bad_metadata",
                         f"metadata.json is not valid JSON ({type(exc).__name__}: {exc})") \
            from None
    if not isinstance(data, dict):
        raise BrokenPart(part, "bad_metadata",
                         f"metadata.json must be an object, got {type(data).__name__}")
    repeated = set(data.repeated)
    rejects = [reject(k, part, "duplicate_entry", "listed more than once in metadata.json")
               for k in data.repeated]
    entries: list[Entry] = []
    for name, meta in data.items():
        if name in repeated:
            continue
        why = _entry_problem(name, meta)
        if why:
            rejects.append(reject(name, part, *why))
            continue
        label = _LABELS[meta["label"]]
        original = name if label == 0 else meta["original"]
        entries.append(Entry(name, label, original))
    return entries, rejects


def _entry_problem(name: str, meta: object) -> tuple[str, str] | None:
    """(reason, detail) when an entry cannot be used, else None."""
    if not is_video_name(name):
        return "bad_name", "not a plain <name>.mp4 file name"
    if not isinstance(meta, dict):
        return "bad_entry", f"entry is a JSON {type(meta).__name__}, not an object"
    if meta.repeated:
        return "bad_entry", f"field {meta.repeated[0]!r} given more than once"
    label = meta.get("label")
    if not isinstance(label, str) or label not in _LABELS:
        return "unknown_label", f"label {_shown(repr(label), 80)} is neither REAL nor FAKE"
    if _LABELS[label] == 1 and not is_video_name(meta.get("original")):
        return "bad_original", \
            f"FAKE entry names no valid original ({_shown(repr(meta.get('original')), 80)})"
    return None


# ---- zip members -------------------------------------------------------------------------------

def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


def _path_pieces(name: str) -> list[str]:
    # Windows tools write backslashes, and extractors on Windows honour them.
    return name.replace("\\", "/").split("/")


def unsafe_member_reason(name: str) -> str | None:
    """Why a zip member name may not be used, or None if it is safe.

    Safe names resolve inside the folder the zip is read into on POSIX and on Windows: no
    leading slash or backslash, no drive letter, no '..' (Windows also reads '.. ' and '...'
    as parent or current folder, so any piece of dots and spaces alone but '.' is refused),
    no NUL."""
    if not name:
        return "empty name"
    if "\x00" in name:
        return "NUL in name"
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if any(piece and piece != "." and not piece.strip(". ")
           for piece in _path_pieces(name)):
        return "'..' in path"
    return None


@dataclass(frozen=True)
class PartMembers:
    """The usable members of a zipped part: metadata member name and video name -> member."""
    metadata: str | None
    videos: dict[str, str]


def _member_problem(info: zipfile.ZipInfo, *, max_member_bytes: int) -> tuple[str, str] | None:
    """(reason, detail) when a member may not be opened, judged on its central-directory
    entry alone: nothing is read or inflated here."""
    name = info.filename
    why = unsafe_member_reason(name)
    if why:
        return "unsafe_member", why
    if _is_symlink(info):
        return "unsafe_member", "symbolic link"
    if info.flag_bits & 0x1:
        return "encrypted_member", "encrypted: it needs a password"
    if len([p for p in _path_pieces(name) if p not in ("", ".")]) > 2:
        return "unexpected_member", "nested deeper than the part folder"
    if info.file_size > max_member_bytes:
        ratio = info.file_size / max(info.compress_size, 1)
        return "member_too_large", (f"{info.file_size} bytes uncompressed from "
                                    f"{info.compress_size} compressed ({ratio:,.0f}:1), "
                                    f"limit {max_member_bytes}")
    if info.file_size == 0:
        return "empty_file", "0 bytes"
    return None


# Rejects a size decides name the video (its file name); the others name the member as stored.
_NAMED_BY_FILE = {"member_too_large", "empty_file", "duplicate_member"}


def member_file_name(member: str) -> str:
    """The file name a member would have in the part folder: what metadata.json names."""
    return _path_pieces(member)[-1]


def scan_zip(zf: zipfile.ZipFile, *, part: int, max_member_bytes: int,
             name_by_file: bool = False) -> tuple[PartMembers, list[dict]]:
    """Check every member of a part's zip; return the usable ones and rejects for the rest.

    A part zip holds ``dfdc_train_part_N/`` (or the files at its root). Members are judged by
    their central-directory entry and never opened here: absolute paths, '..', symlinks,
    encrypted members, deeper folders, empty files and an uncompressed size over the limit (a
    zip bomb) are rejected. A file name held by two members is rejected for both: which one
    was meant is unknowable. Files that are neither videos nor metadata.json are ignored (the
    real set has none).

    A reject names the member as stored, or its file name when a size decided. With
    ``name_by_file`` every reject names the file name (what metadata.json lists), with the
    stored name in the detail, so that a listed video refused for its member says why."""
    by_file: dict[str, list[zipfile.ZipInfo]] = {}
    for info in zf.infolist():
        if info.filename.endswith(("/", "\\")):  # a folder entry
            continue
        by_file.setdefault(member_file_name(info.filename), []).append(info)
    metadata = None
    videos: dict[str, str] = {}
    rejects: list[dict] = []
    for base, infos in sorted(by_file.items()):
        if len(infos) > 1:
            names = ", ".join(repr(i.filename) for i in infos)
            rejects.append(reject(base, part, "duplicate_member",
                                  f"{len(infos)} members have this file name: {names}"))
            continue
        [info] = infos
        why = _member_problem(info, max_member_bytes=max_member_bytes)
        if why:
            reason, detail = why
            if name_by_file or reason in _NAMED_BY_FILE:
                if base != info.filename:
                    detail = f"{detail}: member {info.filename!r}"
                rejects.append(reject(base or info.filename, part, reason, detail))
            else:
                rejects.append(reject(info.filename, part, reason, detail))
        elif base == METADATA:
            metadata = info.filename
        elif base.endswith(".mp4"):
            videos[base] = info.filename
    return PartMembers(metadata, videos), rejects


def read_member(zf: zipfile.ZipFile, member: str, *, max_bytes: int) -> bytes:
    """Read one member, refusing to inflate beyond max_bytes whatever its header claims.

    A declared size over max_bytes raises ValueError before anything is read. zipfile cuts
    its output at the declared size and then checks the CRC, so a member that inflates past
    its declared size (a lying zip bomb) raises zipfile.BadZipFile; it inflates as much as is
    asked for in one read before cutting, so no more than the declared size is asked for."""
    info = zf.getinfo(member)
    if info.file_size > max_bytes:
        raise ValueError(f"{member} declares {info.file_size} bytes, over the limit of "
                         f"{max_bytes} (zip bomb?)")
    with zf.open(info) as f:
        data = f.read(info.file_size + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{member} inflates past {max_bytes} bytes (zip bomb?)")
    return data


def check_part_source(input: str | None, links: str | None, staging: str | None) -> None:
    """One source of parts: a folder or bucket of parts (``input``), or parts to fetch (a
    ``links`` file, a ``kaggle://`` input) that need ``staging`` to be kept in. Checked before
    Beam loads, so a wrong command fails at once."""
    if links and input:
        raise DfdError("--links and --input are two sources of parts: give one")
    if not links and not input:
        raise DfdError("no parts to process: give --input (a folder of parts) or --links FILE")
    fetched = links or input.startswith("kaggle://") or is_all_parts_zip(input)
    if fetched and not staging:
        raise DfdError(f"{'--links' if links else input} needs --staging: a folder or "
                       f"gs:// / s3:// URI where the fetched parts are kept")
