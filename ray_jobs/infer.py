"""Batch inference over face shards with Ray Data.

    dfd infer --data out/ --run-dir runs/r1 --parts 45-49 --out preds/

Ray Data reads the Parquet face shards of the chosen parts and split, a pool of actors each
loading the model once scores the crops (``map_batches``), and the driver hands the scores to
``dfd.evaluation``, which chooses the shards, counts the faceless videos, builds the frame and
video predictions and the metrics, and writes them (see its docstring for the files).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence

import numpy as np
import ray

from dfd import aggregate, calibration, evaluation, storage
from dfd.config import InferConfig
from dfd.predict import load_model_files, read_model_files, score_crops
from ray_jobs import local_ray

log = logging.getLogger(__name__)


# ---- the model on the actors -------------------------------------------------------------------

class FacePredictor:
    """Scores a batch of face crops; one instance per actor loads the model once."""

    def __init__(self, model_files: dict[str, bytes], model_name: str):
        # By value, not by path: workers on other machines need no access to the run dir.
        self.model = load_model_files(model_files)
        self.model_name = model_name

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["image"])
        p_fake = np.full(n, np.nan)
        good, x, error = evaluation.decode_batch(batch["image"])
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
        # The filesystem from dfd.storage, which follows the standard variables (Ray's own
        # resolution would send gs:// to the real GCS under STORAGE_EMULATOR_HOST).
        remote = files and not storage.is_local(files[0])
        ds = ray.data.read_parquet(list(files), partitioning=None, include_paths=include_paths,
                                   filesystem=storage.filesystem(files[0]) if remote else None) \
            .select_columns([*evaluation.FACE_COLUMNS, *(["path"] if include_paths else [])])
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
                 cfg: InferConfig, *, total_bytes: int | None = None) -> dict[str, np.ndarray]:
    """All crops of the shards scored by a pool of ``cfg.actors`` actors, as columns (in no
    order; ``dfd.evaluation.crop_records`` sorts them)."""
    batches = list(scored_batches(files, model_files, model_name, cfg, total_bytes=total_bytes))
    if not batches:
        return {name: np.zeros(0) for name in ("video", "part", "label", "frame_index",
                                               "face_index", "p_fake")}
    return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}


def run_inference(data: str, run_dir: str, out: str, *, parts: set[int] | None = None,
                  split: str | None = None, cfg: InferConfig = InferConfig(),
                  address: str | None = None, write_report: bool = True) -> dict:
    """Score the selected shards, write predictions, metrics and report; return the metrics."""
    aggregate.get(cfg.aggregation)  # an unknown rule fails before Ray starts
    calibrated = calibration.resolve(run_dir, method=cfg.calibration, threshold=cfg.threshold,
                                     aggregation=cfg.aggregation)
    selection = evaluation.select_shards(data, parts=parts, split=split)
    model_files, name = read_model_files(run_dir)
    rejected = evaluation.rejected_videos(data, selection)
    log.info("scoring %d shards of parts %s (split %s) with %s on %d actors",
             len(selection.files), selection.parts, split or "any", name, cfg.actors)

    started = local_ray.init(address)
    try:
        t0 = time.perf_counter()
        crops = score_shards(selection.files, model_files, name, cfg,
                             total_bytes=selection.total_bytes)
        seconds = time.perf_counter() - t0
    finally:
        if started:
            ray.shutdown()
    frames, bad_crops = evaluation.crop_records(crops, crops["p_fake"], model=name)
    log.info("scored %d crops in %.1f s (%.0f crops/s)", len(frames), seconds,
             len(frames) / seconds if seconds else 0.0)
    videos, evaluated = evaluation.evaluate_model(
        frames, model=name, rule=cfg.aggregation, rejected=rejected, bad_crops=bad_crops,
        fallback_score=cfg.fallback_score, listed=evaluation.listed_parts(data, selection),
        calibration=None if calibrated.is_default else calibrated)
    evaluated["run"] = {"model": name, "run_dir": str(run_dir), "data": str(data),
                        "parts": selection.parts, "split": split,
                        "aggregation": cfg.aggregation, "actors": cfg.actors,
                        "scoring_seconds": round(seconds, 2),  # actor start-up included
                        "rejected_crops": len(bad_crops), "rejected_videos": len(rejected)}
    evaluation.write_evaluation(out, frames, videos, evaluated, rejected=bad_crops)
    if write_report:
        evaluation.write_report(out, run_dir)
    return evaluated
