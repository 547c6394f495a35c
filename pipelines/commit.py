"""Committing parts: staged shards become visible, then the manifest lists the part.

Runs once per pipeline run, on a single worker, after every part is summarized, so the manifest
has one writer. Order per part: drop the old committed folder, move staged files in place, move
the errors file, then replace manifest.json atomically (write a hidden temp, rename over)."""
from __future__ import annotations

import datetime as dt
import json
import logging

from apache_beam.io.filesystems import FileSystems

import dfd
import schemas
from dfd import manifest as mf
from dfd import output_tree as ot

log = logging.getLogger(__name__)

RUN_SUMMARY = "_last_run.json"


def _dir(uri: str) -> str:
    return uri.rstrip("/") + "/"


def _files_under(directory: str) -> list[str]:
    if not FileSystems.exists(directory) and not FileSystems.exists(_dir(directory)):
        return []
    [result] = FileSystems.match([ot.join(directory, "*")])
    return sorted(m.path for m in result.metadata_list)


def _remove(directory: str) -> None:
    files = _files_under(directory)
    if files:
        FileSystems.delete(files)
    if FileSystems.exists(directory):
        FileSystems.delete([directory])


def _mkdirs(directory: str) -> None:
    try:
        FileSystems.mkdirs(directory)
    except OSError:  # exists already (local); object stores have no folders to make
        pass


def read_manifest(output: str) -> dict:
    path = ot.manifest_path(output)
    if not FileSystems.exists(path):
        return mf.empty()
    with FileSystems.open(path) as f:
        return mf.loads(f.read().decode())


def write_manifest(output: str, manifest: dict) -> None:
    tmp = ot.join(output, "_manifest.json.tmp")
    with FileSystems.create(tmp) as f:
        f.write(mf.dumps(manifest).encode())
    FileSystems.rename([tmp], [ot.manifest_path(output)])


def promote_part(output: str, part: int) -> None:
    """Replace the committed folders of a part with its staged ones."""
    for fmt in ot.FORMATS:
        staged = ot.part_dir(output, fmt, part, staging=True)
        final = ot.part_dir(output, fmt, part)
        _remove(final)
        sources = _files_under(staged)
        if sources:
            _mkdirs(final)
            FileSystems.rename(sources, [ot.join(final, s.rsplit("/", 1)[-1]) for s in sources])
        _remove(staged)
    staged_err = ot.errors_path(output, part, staging=True)
    if FileSystems.exists(staged_err):
        final_err = ot.errors_path(output, part)
        if FileSystems.exists(final_err):
            FileSystems.delete([final_err])
        FileSystems.rename([staged_err], [final_err])


def commit_parts(summaries, *, output: str, specs: dict, config_hashes: dict) -> dict:
    """Commit every summarized part that is whole; return the run summary (also written to
    <out>/_last_run.json)."""
    summaries = sorted(summaries, key=lambda s: s["part"])
    manifest = read_manifest(output)
    committed, failed = [], []
    for s in summaries:
        part = s["part"]
        if s["broken"]:
            promote_part(output, part)  # the errors file says why; no shards, no manifest entry
            failed.append({"part": part, "reason": s["broken"][0], "detail": s["broken"][1]})
            continue
        from pipelines.transforms import accounting_holds

        if not accounting_holds(s):
            failed.append({"part": part, "reason": "accounting",
                           "detail": f"counts do not add up: {json.dumps(s)}"})
            log.error("part %d not committed: accounting does not add up", part)
            continue
        promote_part(output, part)
        spec = specs[part]
        entry = {
            "part": part, "source": spec["uri"], "source_size": spec["size"],
            "source_checksum": spec["checksum"], "config_hash": config_hashes[part],
            "code_version": dfd.__version__, "schema_version": schemas.FACE.version,
            "videos_in_metadata": s["videos_in_metadata"],
            "videos_with_records": s["videos_with_records"],
            "videos_rejected": s["videos_rejected"], "fakes_left_out": s["fakes_left_out"],
            "records": s["records"],
            "committed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        manifest = mf.with_parts(manifest, [entry])
        write_manifest(output, manifest)  # one rename per part: a crash loses at most this one
        committed.append(s)
    summary = {"committed": committed, "failed": failed}
    with FileSystems.create(ot.join(output, RUN_SUMMARY)) as f:
        f.write(json.dumps(summary, indent=2, sort_keys=True).encode())
    return summary
