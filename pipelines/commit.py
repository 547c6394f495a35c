"""Committing parts: staged shards become visible, then the manifest lists the part.

Runs once per pipeline run, on a single worker, after every part is summarized, so the manifest
has one writer. Per part, each step leaves the output in a state a reader may trust:

1. write a hidden journal ``_committing-part-NN.json`` (the commit is under way);
2. if the manifest lists the part, replace manifest.json without it: from here until step 4
   the part is uncommitted, so readers of the manifest never see a half-replaced part;
3. move the staged folders (one per format) and the errors file into place; on a local disk
   each folder moves with one rename, so a plain reader of one format sees the old folder or
   the new one, never a mix;
4. replace manifest.json with the part's new entry (write a hidden temp, rename over);
5. delete the journal.

A process killed anywhere in there leaves its journal; the next run calls ``recover`` first,
which removes the visible folders of every journaled part the manifest does not list, so the
part is simply processed again. A part whose source turns out broken keeps what an earlier run
committed of it.
"""
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


def _exists(uri: str) -> bool:
    return FileSystems.exists(uri) or FileSystems.exists(_dir(uri))


def _is_local(uri: str) -> bool:
    return FileSystems.get_scheme(uri) in (None, "file")


def _files_under(directory: str) -> list[str]:
    # An object store has no folders: a "folder" exists only as its objects' common prefix, so
    # listing it is the only way to see what it holds (exists() on it is always False).
    if _is_local(directory) and not _exists(directory):
        return []
    [result] = FileSystems.match([ot.join(directory, "*")])
    return sorted(m.path for m in result.metadata_list)


def _remove(directory: str) -> None:
    files = _files_under(directory)
    if files:
        FileSystems.delete(files)
    if FileSystems.exists(directory):
        FileSystems.delete([directory])


def _remove_file(uri: str) -> None:
    if FileSystems.exists(uri):
        FileSystems.delete([uri])


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


def _without_part(manifest: dict, part: int) -> dict:
    key = mf.part_key(part)
    return {**manifest, "parts": {k: v for k, v in manifest["parts"].items() if k != key}}


def clear_staging(output: str, part: int) -> None:
    """Remove whatever a killed run left hidden for this part (staged and retired folders,
    the staged errors file)."""
    for fmt in ot.FORMATS:
        _remove(ot.part_dir(output, fmt, part, staging=True))
        _remove(ot.retired_part_dir(output, fmt, part))
    _remove_file(ot.errors_path(output, part, staging=True))


def _promote_folder(output: str, fmt: str, part: int) -> None:
    """The staged folder of one format replaces the visible one (or removes it, when this run
    wrote no shards of that format)."""
    staged = ot.part_dir(output, fmt, part, staging=True)
    final = ot.part_dir(output, fmt, part)
    if not _files_under(staged):
        _remove(final)
        _remove(staged)
        return
    if _is_local(output):
        retired = ot.retired_part_dir(output, fmt, part)
        _remove(retired)
        if _exists(final):
            FileSystems.rename([final], [retired])
        FileSystems.rename([staged], [final])
        _remove(retired)
        return
    # Object stores have no folders to rename: the objects move one by one.
    _remove(final)
    sources = _files_under(staged)
    _mkdirs(final)
    FileSystems.rename(sources, [ot.join(final, s.rsplit("/", 1)[-1]) for s in sources])
    _remove(staged)


def _promote_errors(output: str, part: int) -> None:
    staged = ot.errors_path(output, part, staging=True)
    if not FileSystems.exists(staged):
        return
    final = ot.errors_path(output, part)
    if not _is_local(output):
        _remove_file(final)  # a local rename replaces the file in one step
    FileSystems.rename([staged], [final])


def promote_part(output: str, part: int) -> None:
    """Replace the committed folders and errors file of a part with its staged ones."""
    for fmt in ot.FORMATS:
        _promote_folder(output, fmt, part)
    _promote_errors(output, part)


def _write_journal(output: str, part: int) -> None:
    with FileSystems.create(ot.commit_journal_path(output, part)) as f:
        f.write(json.dumps({"part": part}).encode())


def recover(output: str) -> list[int]:
    """Roll back the commits a killed run left unfinished; returns their parts.

    A journaled part the manifest lists was committed whole (the run died before deleting the
    journal); one it does not list may have some folders visible, which are removed."""
    [result] = FileSystems.match([ot.join(output, "_committing-*")])
    journaled = {}
    for m in result.metadata_list:
        part = ot.parse_commit_journal(m.path.rstrip("/").rsplit("/", 1)[-1])
        if part is not None:
            journaled[part] = m.path
    if not journaled:
        return []
    manifest = read_manifest(output)
    for part, journal in sorted(journaled.items()):
        if mf.part_key(part) not in manifest["parts"]:
            log.warning("part %02d: a killed run left its commit unfinished; removing what it "
                        "made visible, the part will be processed again", part)
            for fmt in ot.FORMATS:
                _remove(ot.part_dir(output, fmt, part))
            _remove_file(ot.errors_path(output, part))
        clear_staging(output, part)
        FileSystems.delete([journal])
    return sorted(journaled)


def _manifest_entry(s: dict, spec: dict, config_hash: str) -> dict:
    return {
        "part": s["part"], "source": spec["uri"], "source_size": spec["size"],
        "source_checksum": spec["checksum"], "config_hash": config_hash,
        "code_version": dfd.__version__, "schema_version": schemas.FACE.version,
        "videos_in_metadata": s["videos_in_metadata"],
        "videos_with_records": s["videos_with_records"],
        "videos_rejected": s["videos_rejected"], "fakes_left_out": s["fakes_left_out"],
        "records": s["records"],
        "committed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        # What the source's layout made doubtful (pipelines.sources), kept with the part.
        "warnings": "; ".join(spec.get("warnings") or ()) or None,
    }


def commit_parts(summaries, *, output: str, specs: dict, config_hashes: dict,
                 settings: dict | None = None) -> dict:
    """Commit every summarized part that is whole; return the run summary (also written to
    <out>/_last_run.json). ``settings`` (the PreprocessConfig as a dict) is recorded in the
    manifest as what the parts' config hashes stand for."""
    summaries = sorted(summaries, key=lambda s: s["part"])
    manifest = read_manifest(output)
    committed, failed = [], []
    for s in summaries:
        part = s["part"]
        listed = mf.part_key(part) in manifest["parts"]
        if s["broken"]:
            reason, detail = s["broken"]
            if listed:
                # A broken copy of a source never destroys what was committed from a good one.
                clear_staging(output, part)
                detail += f"; part {part:02d} as committed earlier is kept"
            else:
                _promote_errors(output, part)  # the errors file says why; no shards, no entry
                clear_staging(output, part)
            failed.append({"part": part, "reason": reason, "detail": detail})
            continue
        if not mf.accounting_holds(s):
            failed.append({"part": part, "reason": "accounting",
                           "detail": f"counts do not add up: {json.dumps(s)}"})
            log.error("part %d not committed: accounting does not add up", part)
            clear_staging(output, part)
            continue
        _write_journal(output, part)
        if listed:
            manifest = _without_part(manifest, part)
            write_manifest(output, manifest)
        promote_part(output, part)
        manifest = mf.with_parts(manifest, [_manifest_entry(s, specs[part],
                                                            config_hashes[part])],
                                 settings=settings)
        write_manifest(output, manifest)  # one rename per part: a crash loses at most this one
        FileSystems.delete([ot.commit_journal_path(output, part)])
        committed.append(s)
    summary = {"committed": committed, "failed": failed}
    with FileSystems.create(ot.join(output, RUN_SUMMARY)) as f:
        f.write(json.dumps(summary, indent=2, sort_keys=True).encode())
    return summary
