"""Is the file on disk the one Kaggle lists? Size, advertised checksums, and receipts.

A receipt under ``<dest>/_verified/<name>.json`` records what was checked when a file was
committed, so later runs can skip it without reading it again.
"""
from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import json
from pathlib import Path

from dfd import storage
from dfd.kaggle.errors import Mismatch
from dfd.output_tree import join

RECEIPTS = "_verified"
_HASH_CHUNK = 4 * 2**20


def advertised_checksums(headers) -> dict[str, str]:
    """Hex digests the server vouches for: GCS's x-goog-hash (md5, crc32c) or Content-MD5."""
    found: dict[str, str] = {}
    for item in (headers.get("x-goog-hash") or "").split(","):
        algo, _, value = item.strip().partition("=")
        if algo in ("md5", "crc32c") and value:
            found[algo] = base64.b64decode(value).hex()
    if "md5" not in found and headers.get("Content-MD5"):
        found["md5"] = base64.b64decode(headers["Content-MD5"]).hex()
    if "crc32c" in found and _crc32c_module() is None:
        del found["crc32c"]
    return found


@functools.lru_cache(maxsize=1)
def _crc32c_module():
    try:
        import google_crc32c  # the GCS clients' implementation; optional here
    except ImportError:
        return None
    return google_crc32c


def file_digests(stream, algos: set[str]) -> dict[str, str]:
    """Hex md5 of a binary stream, and crc32c too if asked for."""
    md5 = hashlib.md5()
    crc = _crc32c_module().Checksum() if "crc32c" in algos else None
    while chunk := stream.read(_HASH_CHUNK):
        md5.update(chunk)
        if crc is not None:
            crc.update(chunk)
    out = {"md5": md5.hexdigest()}
    if crc is not None:
        out["crc32c"] = crc.digest().hex()
    return out


def verify(path: Path, size: int, advertised: dict[str, str]) -> dict[str, str]:
    """The file's digests, if it has the listed size and the advertised checksums; else
    raises Mismatch."""
    actual = path.stat().st_size
    if actual != size:
        raise Mismatch(f"size mismatch: {actual} bytes downloaded, Kaggle lists {size}")
    with open(path, "rb") as f:
        found = file_digests(f, set(advertised))
    for algo, expected in advertised.items():
        if found[algo] != expected:
            raise Mismatch(f"{algo} mismatch: got {found[algo]}, server advertised {expected}")
    return found


def receipt_uri(dest_uri: str, name: str) -> str:
    return join(dest_uri, RECEIPTS, f"{name}.json")


def read_receipt(dest_uri: str, name: str) -> dict | None:
    """What was verified about dest_uri/name when it was committed, or None."""
    try:
        text = storage.read_text(receipt_uri(dest_uri, name))
        return json.loads(text) if text else None
    except ValueError:
        return None


def receipt(competition: str, file, found: dict[str, str], advertised: dict[str, str]) -> bytes:
    """The receipt of a verified CompetitionFile, as written beside it."""
    body = {"competition": competition, "file": file.name, "size": file.size,
            "created": file.created, "md5": found["md5"],
            "checked": ["size", *sorted(advertised)],
            "verified_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()
