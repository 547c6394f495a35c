"""The generalization report that `dfd sync --score-with RUN_DIR` appends new parts to.

Every part a sync commits is one the model has never seen, so its scores say how the model
generalizes to new folders. The report folder (default ``<RUN_DIR>/generalization``) keeps::

    scored.json                                   which parts are scored (and from which
                                                  commit), which are still pending
    parts/part-NN/{frame,video}_predictions.parquet   one part's predictions
    frame_predictions.parquet, video_predictions.parquet, metrics.json
                                                  every scored part together (a `dfd infer`
                                                  predictions folder, readable by dfd.report)
    report/report.html (+ PNGs, submission.csv)   rendered from all of them

A part is marked pending before it is scored, so a sync that commits parts but dies while
scoring scores them on its next run. A part that is re-committed (a new config or source)
replaces its own predictions. The report folder may be local, gs:// or s3://.
"""
from __future__ import annotations

import datetime as dt
import json
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from dfd import manifest as mf
from dfd import evaluation, report, storage
from dfd.errors import DfdError
from dfd.output_tree import join, part_folder

LEDGER = "scored.json"
PARTS = "parts"
BATCHES = "_batches"  # run_inference's output for one sync, before it is split by part
DEFAULT_REPORT_DIR = "generalization"  # inside the run dir
_TABLES = (report.FRAME_PREDICTIONS, report.VIDEO_PREDICTIONS)


def default_report_dir(run_dir: str) -> str:
    return join(run_dir, DEFAULT_REPORT_DIR)


def read_ledger(report_dir: str) -> dict:
    text = storage.read_text(join(report_dir, LEDGER))
    if text is None:
        return {"model": None, "pending": [], "parts": {}}
    return json.loads(text)


def _write_ledger(report_dir: str, ledger: dict) -> None:
    storage.write_bytes(join(report_dir, LEDGER),
                        (json.dumps(ledger, indent=2, sort_keys=True) + "\n").encode())


def mark_pending(report_dir: str, parts: list[int]) -> list[int]:
    """Record parts as awaiting scores; return every pending part (these and earlier ones)."""
    ledger = read_ledger(report_dir)
    pending = sorted(set(ledger["pending"]) | set(parts))
    if pending != ledger["pending"]:
        _write_ledger(report_dir, {**ledger, "pending": pending})
    return pending


def drop_pending(report_dir: str, parts: list[int]) -> None:
    """Parts that need no scores (no face records) leave the pending list."""
    ledger = read_ledger(report_dir)
    _write_ledger(report_dir, {**ledger, "pending": sorted(set(ledger["pending"]) - set(parts))})


def report_path(report_dir: str) -> str:
    return join(report_dir, evaluation.REPORT_SUBDIR, report.REPORT)


def scorable(parts: list[int], manifest: dict) -> tuple[list[int], list[int]]:
    """(parts with face records to score, committed parts without any)."""
    with_records, empty = [], []
    for part in parts:
        entry = manifest["parts"].get(mf.part_key(part))
        if entry is None:
            raise DfdError(f"part {part:02d} is pending scores but not committed in the output")
        (with_records if entry["records"] else empty).append(part)
    return with_records, empty


def batch_dir(report_dir: str) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return join(report_dir, BATCHES, stamp)


def append_scores(report_dir: str, batch: str, *, parts: list[int], manifest: dict,
                  model: str, run_dir: str | None = None, done_without_scores=()) -> dict:
    """Move the scores of `parts` from a `run_inference` output folder into the report, then
    rebuild the combined predictions, metrics.json and the report over every scored part.

    Returns the combined metrics. Parts in done_without_scores (committed, but with no face
    record to score) leave the pending list too."""
    ledger = read_ledger(report_dir)
    if ledger["model"] not in (None, model):
        raise DfdError(f"{report_dir} holds scores of {ledger['model']}, not {model}: give "
                       f"this model its own --report-dir")
    tables = {name: _read_table(join(batch, name)) for name in _TABLES}
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    scored = dict(ledger["parts"])
    for part in parts:
        for name, table in tables.items():
            _write_table(table.filter(pc.equal(table["part"], part)),
                         join(report_dir, PARTS, part_folder(part), name))
        entry = manifest["parts"][mf.part_key(part)]
        rows = tables[report.VIDEO_PREDICTIONS].filter(pc.equal(
            tables[report.VIDEO_PREDICTIONS]["part"], part))
        scored[mf.part_key(part)] = {
            "part": part, "source_checksum": entry["source_checksum"],
            "config_hash": entry["config_hash"], "committed_at": entry["committed_at"],
            "videos": rows.num_rows,
            "crops": int(pc.sum(pc.equal(tables[report.FRAME_PREDICTIONS]["part"], part))
                         .as_py() or 0),
            "scored_at": now}
    evaluated = _rebuild(report_dir, sorted(int(k) for k in scored), model=model,
                         run_dir=run_dir)
    done = set(parts) | set(done_without_scores)
    _write_ledger(report_dir, {"model": model, "run_dir": str(run_dir) if run_dir else None,
                               "pending": sorted(set(ledger["pending"]) - done),
                               "parts": dict(sorted(scored.items())), "updated_at": now})
    _remove_tree(batch)
    return evaluated


def _rebuild(report_dir: str, parts: list[int], *, model: str, run_dir: str | None) -> dict:
    combined = {name: pa.concat_tables([
        _read_table(join(report_dir, PARTS, part_folder(p), name)) for p in parts])
        for name in _TABLES}
    evaluated = evaluation.evaluate_predictions(combined[report.FRAME_PREDICTIONS].to_pydict(),
                                                combined[report.VIDEO_PREDICTIONS].to_pydict())
    evaluated["run"] = {"model": model, "run_dir": str(run_dir) if run_dir else None,
                        "parts": parts, "split": None, "report": "generalization"}
    with tempfile.TemporaryDirectory(prefix="dfd-generalization-") as tmp:
        for name, table in combined.items():
            pq.write_table(table, Path(tmp, name), compression="zstd")
            storage.commit_file(Path(tmp, name), join(report_dir, name))
    storage.write_bytes(join(report_dir, report.METRICS),
                        (json.dumps(evaluated, indent=2, sort_keys=True) + "\n").encode())
    evaluation.write_report(report_dir, run_dir)
    return evaluated


def _read_table(uri: str) -> pa.Table:
    fs, path = storage.resolve(uri)
    return pq.read_table(path, filesystem=fs)


def _write_table(table: pa.Table, uri: str) -> None:
    with tempfile.TemporaryDirectory(prefix="dfd-generalization-") as tmp:
        local = Path(tmp) / "table.parquet"
        pq.write_table(table, local, compression="zstd")
        storage.commit_file(local, uri)


def _remove_tree(uri: str) -> None:
    fs, path = storage.resolve(uri)
    if fs.get_file_info(path).type == pafs.FileType.Directory:
        fs.delete_dir(path)
