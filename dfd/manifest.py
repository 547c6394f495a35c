"""The output manifest: which parts are committed, from what source, with what config.

``<out>/manifest.json`` is ``{"schema_version": N, "parts": {"NN": MANIFEST_PART record}}``.
A part is committed when the manifest lists it; writers replace the file atomically. This module
is text in, text out: the pipeline does the I/O through its own file system layer.
"""
from __future__ import annotations

import json

import schemas

MANIFEST_FORMAT = 1


def empty() -> dict:
    return {"format": MANIFEST_FORMAT, "schema_version": schemas.FACE.version, "parts": {}}


def part_key(part: int) -> str:
    return f"{part:02d}"


def loads(text: str) -> dict:
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("parts"), dict):
        raise ValueError("manifest.json: expected an object with a 'parts' object")
    if data.get("schema_version") != schemas.FACE.version:
        raise ValueError(f"manifest.json: schema_version {data.get('schema_version')!r}, "
                         f"this code reads {schemas.FACE.version}")
    for key, entry in data["parts"].items():
        entry = schemas.validate(entry, schemas.MANIFEST_PART)
        if part_key(entry["part"]) != key:
            raise ValueError(f"manifest.json: entry {key!r} is for part {entry['part']}")
    return data


def dumps(manifest: dict) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


def with_parts(manifest: dict, entries: list[dict]) -> dict:
    """A new manifest with these part entries added or replaced."""
    parts = dict(manifest["parts"])
    for entry in entries:
        entry = schemas.validate(entry, schemas.MANIFEST_PART)
        parts[part_key(entry["part"])] = entry
    return {**manifest, "parts": dict(sorted(parts.items()))}


def is_current(manifest: dict, part: int, *, source_checksum: str, config_hash: str) -> bool:
    entry = manifest["parts"].get(part_key(part))
    return bool(entry) and entry["source_checksum"] == source_checksum \
        and entry["config_hash"] == config_hash


def content_hash(manifest: dict) -> str:
    """A short hash of what the data is (parts, sources, configs), for training run dirs."""
    import hashlib

    ident = {k: {f: v[f] for f in ("source_checksum", "config_hash", "records")}
             for k, v in manifest["parts"].items()}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
