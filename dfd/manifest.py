"""The output manifest: which parts are committed, from what source, with what config.

``<out>/manifest.json`` is ``{"schema_version": N, "parts": {"NN": MANIFEST_PART record},
"settings": {config_hash: PreprocessConfig as a dict}}``. A part is committed when the
manifest lists it; writers replace the file atomically. ``settings`` says what each part's
``config_hash`` stands for, so that `dfd predict` can sample and crop raw videos as the
training data was. ``read``/``write`` go through ``dfd.storage`` (local, gs://, s3://); the
Beam pipeline, which does its I/O through Beam's file systems, uses ``loads``/``dumps``.
"""
from __future__ import annotations

import json

import schemas
from dfd import output_tree, storage
from dfd.errors import DfdError

MANIFEST_FORMAT = 1


def empty() -> dict:
    return {"format": MANIFEST_FORMAT, "schema_version": schemas.FACE.version, "parts": {},
            "settings": {}}


def read(out: str, *, required: bool = False) -> dict:
    """The manifest of the face-shard tree ``out``; an empty one when there is none yet, or,
    with ``required``, a DfdError saying that ``out`` is not a face-shard tree."""
    text = storage.read_text(output_tree.manifest_path(out))
    if text is None:
        if required:
            raise DfdError(f"{out} has no {output_tree.MANIFEST}: not a face-shard tree "
                           f"(make one with `dfd preprocess`)")
        return empty()
    try:
        return loads(text)
    except ValueError as exc:
        raise DfdError(f"{output_tree.manifest_path(out)}: {exc}") from None


def write(out: str, manifest: dict) -> None:
    """Replace ``out``'s manifest: readers see the old one or the whole new one."""
    storage.write_bytes(output_tree.manifest_path(out), dumps(manifest).encode())


def accounting_holds(summary: dict) -> bool:
    """The accounting rule of a part: videos in metadata = with records + rejected + fakes
    left out by balancing."""
    return summary["videos_in_metadata"] == (summary["videos_with_records"]
                                             + summary["videos_rejected"]
                                             + summary["fakes_left_out"])


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
    settings = data.setdefault("settings", {})  # manifests written before it was recorded
    if not isinstance(settings, dict) or not all(isinstance(v, dict) for v in settings.values()):
        raise ValueError("manifest.json: 'settings' must map config hashes to objects")
    return data


def dumps(manifest: dict) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


def with_parts(manifest: dict, entries: list[dict], *, settings: dict | None = None) -> dict:
    """A new manifest with these part entries added or replaced; ``settings`` (the
    PreprocessConfig as a dict) is recorded as what their config hashes stand for."""
    parts = dict(manifest["parts"])
    recorded = dict(manifest.get("settings", {}))
    for entry in entries:
        entry = schemas.validate(entry, schemas.MANIFEST_PART)
        parts[part_key(entry["part"])] = entry
        if settings is not None:
            recorded[entry["config_hash"]] = settings
    used = {p["config_hash"] for p in parts.values()}
    return {**manifest, "parts": dict(sorted(parts.items())),
            "settings": {h: v for h, v in sorted(recorded.items()) if h in used}}


def recorded_settings(manifest: dict) -> list[dict]:
    """The distinct preprocessing settings the committed parts were made with (none for
    parts committed before settings were recorded)."""
    found = []
    for entry in manifest["parts"].values():
        settings = manifest.get("settings", {}).get(entry["config_hash"])
        if settings is not None and settings not in found:
            found.append(settings)
    return found


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
