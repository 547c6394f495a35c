"""Batch inference over face shards with Ray Data, then metrics and the report.

    dfd infer --data out/ --run-dir runs/r1 --parts 45-49 --out preds/

Ray Data reads the Parquet face shards of the chosen parts and split, a pool of actors each
loading the model once scores the crops (``map_batches``), and the driver writes::

    <out>/frame_predictions.parquet   one FRAME_PREDICTION per face crop
    <out>/video_predictions.parquet   one VIDEO_PREDICTION per video, faceless videos at 0.5
    <out>/metrics.json                frame, video and per-part figures (dfd.metrics.evaluate)
    <out>/rejected_crops.parquet      REJECT records of crops that did not decode (if any)
    <out>/report/                     report.html, its PNGs, submission.csv

Videos the preprocessing rejected for having no face (``errors/part-NN.parquet``) are scored
0.5 and counted; their labels come from the part's metadata.json, found through the
``source`` the manifest recorded for the part.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import posixpath
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray

import schemas
from dfd import aggregate, dfdc, metrics, report, storage
from dfd import manifest as mf
from dfd import output_tree as ot
from dfd.config import InferConfig
from dfd.errors import DfdError
from dfd.predict import load_model_files, read_model_files, score_crops
from ray_jobs import local_ray

log = logging.getLogger(__name__)

REJECTED_CROPS = "rejected_crops.parquet"
REPORT_SUBDIR = "report"
NO_FACE_REASON = "no_face"  # the reject reason of a video in which no face was found
# Only what scoring and the prediction records need: bbox and the rest stay on disk.
FACE_COLUMNS = ["video", "part", "label", "frame_index", "face_index", "image"]


# ---- choosing the shards -----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ShardSelection:
    files: list[str]  # Parquet shard URIs
    total_bytes: int  # their size on storage
    parts: list[int]  # parts that have at least one selected shard
    whole_parts: frozenset[int]  # parts all of whose shards are selected (every split)


def select_shards(data: str, *, parts: set[int] | None, split: str | None) -> ShardSelection:
    """The committed Parquet face shards of the chosen parts (None: all) and split (None: all).

    Staged folders and files (leading '_' or '.') are not shards and are never listed."""
    if split is not None and split not in schemas.SPLITS:
        raise DfdError(f"unknown split {split!r}; one of {list(schemas.SPLITS)}")
    fs, root = storage.resolve(ot.format_dir(data, "parquet"))
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        raise DfdError(f"{data} has no parquet/ folder of face shards: is it the --out of "
                       f"`dfd preprocess`?")
    found: dict[int, list[tuple[str, str]]] = {}
    sizes: dict[str, int] = {}
    for info in fs.get_file_info(pafs.FileSelector(root)):
        part = ot.parse_part_folder(info.base_name)
        if part is None or info.type != pafs.FileType.Directory:
            continue
        for shard in fs.get_file_info(pafs.FileSelector(info.path)):
            meta = ot.parse_shard_name(shard.base_name)
            if meta and meta["format"] == "parquet":
                found.setdefault(part, []).append((meta["split"], shard.path))
                sizes[shard.path] = shard.size or 0
    files, chosen, whole = [], [], set()
    for part in sorted(found):
        if parts is not None and part not in parts:
            continue
        picked = [p for s, p in sorted(found[part], key=lambda sp: sp[1])
                  if split is None or s == split]
        if picked:
            chosen.append(part)
            files += picked
            if len(picked) == len(found[part]):
                whole.add(part)
    if not files:
        available = {p: sorted({s for s, _ in v}) for p, v in sorted(found.items())}
        raise DfdError(f"no face shards in {data} for parts "
                       f"{'all' if parts is None else sorted(parts)} and split "
                       f"{split or 'any'}; found {available or 'none'}")
    if parts is not None and sorted(parts) != chosen:
        log.warning("parts without shards of split %s: %s", split or "any",
                    sorted(set(parts) - set(chosen)))
    uri_of = (lambda p: p) if storage.is_local(data) else (lambda p: _uri(data, p))
    return ShardSelection([uri_of(f) for f in files], sum(sizes[f] for f in files), chosen,
                          frozenset(whole))


def _uri(data: str, path: str) -> str:
    scheme = data.split("://", 1)[0]
    return f"{scheme}://{path}"


# ---- videos without a face ---------------------------------------------------------------------

def _read_metadata(source: str, part: int) -> dict[str, dfdc.Entry]:
    """The metadata.json entries of a part's zip or folder, by video name."""
    fs, path = storage.resolve(source)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        with fs.open_input_stream(posixpath.join(path, dfdc.METADATA)) as f:
            raw = f.read()
    else:
        with fs.open_input_file(path) as f, zipfile.ZipFile(f) as zf:
            names = [n for n in zf.namelist()
                     if posixpath.basename(n) == dfdc.METADATA and n.count("/") <= 1]
            if not names:
                raise ValueError(f"{source} holds no {dfdc.METADATA}")
            raw = zf.read(names[0])
    entries, _ = dfdc.parse_metadata(raw, part=part)
    return {e.name: e for e in entries}


def faceless_videos(data: str, selection: ShardSelection) -> list[dict]:
    """Videos of the selected parts rejected for having no face, with their labels.

    A faceless video belongs to the selection when its whole part is selected, or when its
    original's group has face records in the chosen split (a split never separates a fake
    from its original). Labels come from the source metadata; when it cannot be read the
    video is kept with an unknown label, shown but not counted."""
    manifest_text = storage.read_text(ot.manifest_path(data))
    sources = {}
    if manifest_text:
        sources = {int(k): v["source"] for k, v in mf.loads(manifest_text)["parts"].items()}
    originals_in_split: dict[int, set[str]] | None = None
    out = []
    for part in selection.parts:
        errors = storage.resolve(ot.errors_path(data, part))
        if errors[0].get_file_info(errors[1]).type != pafs.FileType.File:
            continue
        rejects = pq.read_table(errors[1], filesystem=errors[0]).to_pylist()
        names = [r["video"] for r in rejects if r["reason"] == NO_FACE_REASON]
        if not names:
            continue
        try:
            if part not in sources:
                raise ValueError("the manifest lists no source for the part")
            entries = _read_metadata(sources[part], part)
        except Exception as exc:  # any unreadable source: the videos stay, unlabelled
            log.warning("part %d: %d faceless videos left unlabelled, not counted: their "
                        "metadata.json is unreadable (%s)", part, len(names), exc)
            entries = {}
        for name in names:
            entry = entries.get(name)
            if part not in selection.whole_parts:
                if entry is None:
                    continue  # neither split nor label known
                if originals_in_split is None:
                    originals_in_split = _originals(selection)
                if entry.original not in originals_in_split.get(part, set()):
                    continue
            out.append({"video": name, "part": part,
                        "label": entry.label if entry else None})
    return out


def _originals(selection: ShardSelection) -> dict[int, set[str]]:
    found: dict[int, set[str]] = {}
    for uri in selection.files:
        fs, path = storage.resolve(uri)
        table = pq.read_table(path, filesystem=fs, columns=["part", "original"])
        for part, original in zip(table["part"].to_pylist(), table["original"].to_pylist()):
            found.setdefault(part, set()).add(original)
    return found


# ---- the model on the actors -------------------------------------------------------------------

def decode_batch(images: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indices of the crops that decode, their arrays, an error per crop: '' when it decoded).
    One bad crop must not cost the batch: on a failure the crops are decoded one by one."""
    from dfd.images import decode_crops

    images = list(images)
    error = np.full(len(images), "", dtype=object)
    try:
        return np.arange(len(images)), decode_crops(images), error
    except ValueError:
        good, arrays = [], []
        for i, image in enumerate(images):
            try:
                arrays.append(decode_crops([image]))
                good.append(i)
            except ValueError as exc:
                error[i] = str(exc)
    x = np.concatenate(arrays) if arrays else np.zeros((0, 1, 1, 3), np.float32)
    return np.asarray(good, dtype=np.int64), x, error


class FacePredictor:
    """Scores a batch of face crops; one instance per actor loads the model once."""

    def __init__(self, model_files: dict[str, bytes], model_name: str):
        # By value, not by path: workers on other machines need no access to the run dir.
        self.model = load_model_files(model_files)
        self.model_name = model_name

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["image"])
        p_fake = np.full(n, np.nan)
        good, x, error = decode_batch(batch["image"])
        if len(good):
            p_fake[good] = score_crops(self.model, x)
        return {"video": batch["video"], "part": batch["part"], "label": batch["label"],
                "frame_index": batch["frame_index"], "face_index": batch["face_index"],
                "p_fake": p_fake, "model": np.full(n, self.model_name, dtype=object),
                "error": error}


# ---- the job -----------------------------------------------------------------------------------

def cpus_per_actor(cfg: InferConfig) -> float:
    """The CPUs each actor reserves: ``cfg.cpus_per_actor``, less when the pool would
    otherwise hold every CPU of the cluster and leave none for reading the shards."""
    total = ray.cluster_resources().get("CPU", 1.0)
    spare = max(total - 1.0, total / 2)
    if cfg.actors * cfg.cpus_per_actor <= spare:
        return cfg.cpus_per_actor
    share = spare / cfg.actors
    if share >= 1:
        # Whole CPUs: fractional shares above one leave every node a fraction of a CPU (two
        # 2-CPU nodes, two actors of 1.5), and the reads, which need a whole CPU, never start.
        share = float(int(share))
    log.info("%d actors x %g CPUs would leave no CPU for reading on %g CPUs: "
             "reserving %.2f CPUs per actor", cfg.actors, cfg.cpus_per_actor, total, share)
    return share


# Ray Data packs files into read blocks of up to DataContext.target_max_block_size (128 MiB):
# a few hundred MB of crops would reach a single actor. Blocks this much smaller spread the
# work over the pool; the floor keeps per-block overhead negligible.
BLOCKS_PER_ACTOR = 4
MIN_READ_BLOCK_BYTES = 1 << 20


def read_block_bytes(total_bytes: int, actors: int, ceiling: int) -> int:
    """The largest read block that still gives every actor ``BLOCKS_PER_ACTOR`` blocks."""
    wanted = total_bytes // max(1, actors * BLOCKS_PER_ACTOR)
    return int(min(ceiling, max(MIN_READ_BLOCK_BYTES, wanted)))


def map_crops(files: Sequence[str], scorer: type, scorer_kwargs: dict, cfg: InferConfig, *,
              total_bytes: int | None = None, batch_size: int | None = None,
              include_paths: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """The face crops of the shards through a pool of ``cfg.actors`` ``scorer`` actors (built
    once each with ``scorer_kwargs``); batches as the pool finishes them, in no order."""
    ctx = ray.data.DataContext.get_current()
    ceiling = ctx.target_max_block_size
    if total_bytes is not None and ceiling is not None:
        ctx.target_max_block_size = read_block_bytes(total_bytes, cfg.actors, ceiling)
    try:
        ds = ray.data.read_parquet(list(files), partitioning=None, include_paths=include_paths) \
            .select_columns([*FACE_COLUMNS, *(["path"] if include_paths else [])])
        scored = ds.map_batches(
            scorer,
            fn_constructor_kwargs=scorer_kwargs,
            batch_size=batch_size or cfg.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=cfg.actors),
            num_cpus=cpus_per_actor(cfg),
            num_gpus=cfg.gpus_per_actor or None,
        )
        yield from scored.iter_batches(batch_size=None, batch_format="numpy")
    finally:
        ctx.target_max_block_size = ceiling


def scored_batches(files: list[str], model_files: dict[str, bytes], model_name: str,
                   cfg: InferConfig, *, total_bytes: int | None = None
                   ) -> Iterator[dict[str, np.ndarray]]:
    """Batches of scored crops as the actor pool finishes them: frame-prediction columns
    plus ``error`` (empty for a scored crop), in no particular order."""
    return map_crops(files, FacePredictor, {"model_files": model_files,
                                            "model_name": model_name},
                     cfg, total_bytes=total_bytes)


def score_shards(files: list[str], model_files: dict[str, bytes], model_name: str,
                 cfg: InferConfig, *, total_bytes: int | None = None) -> pa.Table:
    """All crops of the shards scored by a pool of ``cfg.actors`` actors, as one table."""
    tables = [pa.Table.from_pydict(b) for b in scored_batches(
        files, model_files, model_name, cfg, total_bytes=total_bytes)]
    if not tables:
        return pa.table({"video": pa.array([], pa.string())})
    return pa.concat_tables(tables, promote_options="permissive")


def _frame_records(scored: pa.Table) -> tuple[list[dict], list[dict]]:
    """Sorted FRAME_PREDICTION records and REJECT records of crops that did not decode."""
    rows = scored.to_pylist()
    frames, rejected = [], []
    for r in rows:
        err = r.pop("error", "")
        label = r["label"]
        r["label"] = None if label is None else int(label)
        if err:
            rejected.append({"video": r["video"], "part": int(r["part"]),
                             "reason": "bad_crop",
                             "detail": f"frame {r['frame_index']} face {r['face_index']}: "
                                       f"{err}"})
            continue
        frames.append(r)
    # Actor pools finish batches in any order; sorting makes the output the same every run.
    frames.sort(key=lambda r: (r["part"], r["video"], r["frame_index"], r["face_index"]))
    return frames, rejected


def _write_table(records: Iterable[dict], schema: schemas.RecordSchema, uri: str) -> int:
    table = schemas.to_arrow_table(records, schema)
    with tempfile.TemporaryDirectory(prefix="dfd-infer-") as tmp:
        local = Path(tmp) / "table.parquet"
        pq.write_table(table, local, compression="zstd")
        storage.commit_file(local, uri)
    return table.num_rows


def run_inference(data: str, run_dir: str, out: str, *, parts: set[int] | None = None,
                  split: str | None = None, cfg: InferConfig = InferConfig(),
                  address: str | None = None, write_report: bool = True) -> dict:
    """Score the selected shards, write predictions, metrics and report; return the metrics."""
    aggregate.get(cfg.aggregation)  # an unknown rule fails before Ray starts
    selection = select_shards(data, parts=parts, split=split)
    model_files, name = read_model_files(run_dir)
    faceless = faceless_videos(data, selection)
    log.info("scoring %d shards of parts %s (split %s) with %s on %d actors",
             len(selection.files), selection.parts, split or "any", name, cfg.actors)

    started = local_ray.init(address)
    try:
        t0 = time.perf_counter()
        scored = score_shards(selection.files, model_files, name, cfg,
                              total_bytes=selection.total_bytes)
        seconds = time.perf_counter() - t0
    finally:
        if started:
            ray.shutdown()
    frames, rejected = _frame_records(scored)
    log.info("scored %d crops in %.1f s (%.0f crops/s)", len(frames), seconds,
             len(frames) / seconds if seconds else 0.0)
    frame_cols = {k: [r[k] for r in frames] for k in ("video", "part", "label", "p_fake")}
    videos = aggregate.video_records(frame_cols, model=name, rule=cfg.aggregation,
                                     faceless=faceless)
    evaluated = metrics.evaluate(frame_cols, {k: [v[k] for v in videos]
                                              for k in ("label", "p_fake", "part")})
    evaluated["run"] = {"model": name, "run_dir": str(run_dir), "data": str(data),
                        "parts": selection.parts, "split": split,
                        "aggregation": cfg.aggregation, "actors": cfg.actors,
                        "scoring_seconds": round(seconds, 2),  # actor start-up included
                        "rejected_crops": len(rejected), "faceless_videos": len(faceless)}

    _write_table(frames, schemas.FRAME_PREDICTION, ot.join(out, report.FRAME_PREDICTIONS))
    _write_table(videos, schemas.VIDEO_PREDICTION, ot.join(out, report.VIDEO_PREDICTIONS))
    if rejected:
        _write_table(rejected, schemas.REJECT, ot.join(out, REJECTED_CROPS))
    else:
        storage.remove(ot.join(out, REJECTED_CROPS))  # a previous run's, into the same --out
    storage.write_bytes(ot.join(out, report.METRICS),
                        (json.dumps(evaluated, indent=2, sort_keys=True) + "\n").encode())
    if write_report:
        _write_report(out, run_dir)
    return evaluated


def _write_report(out: str, run_dir: str) -> None:
    with tempfile.TemporaryDirectory(prefix="dfd-report-") as tmp:
        run_local = _local_run_files(run_dir, Path(tmp, "run"))
        if storage.is_local(out):
            local = storage.local_path(out)
            report.render_report(local, local / REPORT_SUBDIR, run_dir=run_local)
            return
        fs, path = storage.resolve(out)
        preds = Path(tmp, "predictions")
        preds.mkdir()
        for name in (report.FRAME_PREDICTIONS, report.VIDEO_PREDICTIONS, report.METRICS):
            with fs.open_input_stream(posixpath.join(path, name)) as f:
                (preds / name).write_bytes(f.read())
        report.render_report(preds, preds / REPORT_SUBDIR, run_dir=run_local)
        for f in sorted((preds / REPORT_SUBDIR).iterdir()):
            storage.commit_file(f, ot.join(out, REPORT_SUBDIR, f.name))


def _local_run_files(run_dir: str, scratch: Path) -> Path:
    """A local folder holding the run's history.json and config.json, for the report."""
    if storage.is_local(run_dir):
        return storage.local_path(run_dir)
    scratch.mkdir(parents=True, exist_ok=True)
    for name in (report.HISTORY, "config.json"):
        text = storage.read_text(ot.join(run_dir, name))
        if text is not None:
            (scratch / name).write_text(text)
    return scratch
