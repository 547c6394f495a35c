"""Is the file on disk the one the server lists? Size, advertised checksums, and receipts.

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


class Digests:
    """md5 (always) and crc32c (if asked for) of bytes fed in order, e.g. while they are
    written, so that a download is verified without reading the file again."""

    def __init__(self, algos=()):
        self._md5 = hashlib.md5()
        self._crc = _crc32c_module().Checksum() if "crc32c" in algos else None

    def update(self, chunk: bytes) -> None:
        self._md5.update(chunk)
        if self._crc is not None:
            self._crc.update(chunk)

    def feed(self, stream) -> Digests:
        while chunk := stream.read(_HASH_CHUNK):
            self.update(chunk)
        return self

    def hexdigests(self) -> dict[str, str]:
        out = {"md5": self._md5.hexdigest()}
        if self._crc is not None:
            out["crc32c"] = self._crc.digest().hex()
        return out


def file_digests(stream, algos: set[str]) -> dict[str, str]:
    """Hex md5 of a binary stream, and crc32c too if asked for."""
    return Digests(algos).feed(stream).hexdigests()


def check_digests(found: dict[str, str], advertised: dict[str, str]) -> None:
    """Raises Mismatch unless every advertised checksum is among the digests found."""
    for algo, expected in advertised.items():
        if found.get(algo) != expected:
            raise Mismatch(f"{algo} mismatch: got {found.get(algo)}, server advertised "
                           f"{expected}")


def verify(path: Path, size: int, advertised: dict[str, str]) -> dict[str, str]:
    """The file's digests, if it has the listed size and the advertised checksums; else
    raises Mismatch."""
    actual = path.stat().st_size
    if actual != size:
        raise Mismatch(f"size mismatch: {actual} bytes downloaded, Kaggle lists {size}")
    with open(path, "rb") as f:
        found = file_digests(f, set(advertised))
    check_digests(found, advertised)
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


def receipt(competition: str | None, file, found: dict[str, str], advertised: dict[str, str],
            **extra) -> bytes:
    """The receipt of a verified file (anything with name, size, created), as written beside
    it; extra fields (e.g. where a link pointed, without its signature) are kept too."""
    body = {"competition": competition, "file": file.name, "size": file.size,
            "created": file.created, "md5": found["md5"],
            "checked": ["size", *sorted(advertised)],
            "verified_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            **extra}
    return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()
