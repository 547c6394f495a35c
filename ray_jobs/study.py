"""The paper's experiments as studies: train every variant over several seeds on one Ray, score
the held-out crops with all the models in one Ray Data pass, write a table and plots.

    dfd study augmentation --data DATA --out OUT [--epochs 6] [--seeds 3] [--runs RUNS]
    dfd study backbone     --data DATA --out OUT ...
    dfd study occlusion    --data DATA --out OUT [--run-dir RUN ...] [--regions jaw,left_half]
    dfd study split        --data DATA --out OUT ...

Ray starts once (or joins ``--address``) for the whole study. Training runs are
``ray_jobs.train.run`` in folders under ``--runs`` named by their settings and data
(``dfd.study.runs``), so studies that train the same baseline share it and an interrupted
study picks up where it stopped. A model's held-out figures are computed exactly as `dfd infer`
computes them (``dfd.evaluation``) and kept beside the run. ``OUT`` receives::

    table.md, table.csv     mean and spread over seeds of video-level AUC, log loss, accuracy
    <study>.png             the figures per variant, every seed a dot
    study.json              the plan, every run with its figures, the rows of every table
    (backbone) curves.png   validation accuracy per epoch
    (occlusion) heatmap.png, asymmetry.csv, crops.parquet
    (split) inflation.csv
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from collections.abc import Callable, Sequence

import numpy as np
import ray

from dfd import config as dfd_config
from dfd import manifest, output_tree, storage
from dfd import run_dir as rundir
from dfd import training_run
from dfd.config import InferConfig, TrainConfig
from dfd.errors import DfdError
from dfd import evaluation
from dfd.study import (HELD_OUT, occlusion, occlusion_summary, random_split, result, runs,
                       split_summary, summary, variant_summary, variants)
from dfd.study.result import StudyResult
from ray_jobs import infer, train

log = logging.getLogger(__name__)



@dataclasses.dataclass(frozen=True)
class StudyPlan:
    """What a study runs. ``variants`` (None: all) applies to augmentation and backbone;
    ``regions``, ``patch`` (side of the sensitivity map's square, None for no map) and
    ``model_runs`` (trained run dirs to evaluate instead of training) to occlusion."""
    kind: str
    seeds: tuple[int, ...]
    train: TrainConfig
    infer: InferConfig
    variants: tuple[str, ...] | None = None
    regions: tuple[str, ...] = occlusion.REGIONS
    patch: int | None = 32
    model_runs: tuple[str, ...] = ()


@dataclasses.dataclass
class Study:
    plan: StudyPlan
    data: str
    data_hash: str
    runs: str
    held_out: evaluation.ShardSelection


# ---- training and scoring ----------------------------------------------------------------------

def data_hash(data: str) -> str:
    return manifest.content_hash(manifest.read(data, required=True))


def ensure_trained(data: str, cfg: TrainConfig, runs_root: str, *, address: str | None = None
                   ) -> runs.FinishedRun:
    """The finished run of these settings on this data: reused when a study or command already
    finished it, else trained now (continuing any checkpoint an interrupted study left)."""
    digest = data_hash(data)
    run_dir = runs.run_dir(runs_root, cfg, digest)
    done = runs.read_finished(run_dir)
    if done is not None:
        log.info("reusing %s", run_dir)
        return done
    started = time.perf_counter()
    summary_ = train.run(data, run_dir, cfg, address=address)
    history = json.loads(storage.read_text(rundir.history_path(summary_["run_dir"])))
    return runs.mark_finished(run_dir, cfg, history, key=runs.run_key(cfg, digest),
                              seconds=time.perf_counter() - started)


class CropScorer:
    """Scores a batch of face crops with every model of a study; with ``regions`` also each
    crop with every region masked and, with ``patch``, a grey patch at every grid position.
    One instance per actor loads the models (and the face detector) once."""

    def __init__(self, models: list[dict[str, bytes]], regions: Sequence[str] = (),
                 patch: int | None = None, masking: bool = False):
        from dfd.predict import load_model_files

        self.models = [load_model_files(files) for files in models]
        self.regions, self.patch, self.masking = tuple(regions), patch, masking
        self.detector = None
        if masking:
            from dfd.config import PreprocessConfig
            from dfd.faces import detector_options, get_detector

            cfg = PreprocessConfig()  # the pipeline's detector, on the crop itself
            self.detector = get_detector(cfg.detector, **detector_options(cfg))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from dfd.predict import score_crops

        n, k = len(batch["image"]), len(self.models)
        good, x, error = evaluation.decode_batch(batch["image"])
        out = {name: batch[name] for name in ("video", "part", "label", "frame_index",
                                              "face_index", "path")}
        out["error"] = error
        out["p_fake"] = np.full((n, k), np.nan)
        if not self.masking:
            for m, model in enumerate(self.models):
                if len(good):
                    out["p_fake"][good, m] = score_crops(model, x)
            return out

        side = occlusion.grid_side(self.patch) if self.patch else 0
        out["p_region"] = np.full((n, k, len(self.regions)), np.nan)
        out["p_patch"] = np.full((n, k, side, side), np.nan)
        out["layout"] = np.full(n, "", dtype=object)
        out["landmarks"] = np.full((n, 5, 2), np.nan)
        marks = occlusion.crop_landmarks(self.detector,
                                         [np.rint(c * 255).astype(np.uint8) for c in x])
        for j, i in enumerate(good):
            points, source = marks[j]
            out["layout"][i], out["landmarks"][i] = source, points
            masks = [occlusion.region_mask(r, points) for r in self.regions]
            views = occlusion.occluded_views(x[j], masks, patch=self.patch)
            for m, model in enumerate(self.models):
                p0, p_region, p_patch = occlusion.score_views(
                    model, views, n_regions=len(masks), patch=self.patch)
                out["p_fake"][i, m] = p0
                out["p_region"][i, m] = p_region
                out["p_patch"][i, m] = p_patch
        return out


def score_selection(files: Sequence[str], models: list[dict[str, bytes]], cfg: InferConfig,
                    *, total_bytes: int, regions: Sequence[str] = (), patch: int | None = None,
                    masking: bool = False) -> dict[str, np.ndarray]:
    """Every crop of the shard files scored by every model, in one Ray Data pass; columns
    sorted by (part, video, frame, face), ``path`` naming each crop's shard. ``p_fake`` is
    (crops, models), NaN for a crop that did not decode (its ``error`` says why)."""
    views = 1 + len(regions) + (occlusion.grid_side(patch) ** 2 if patch else 0)
    # A masked crop is scored `views` times: smaller batches keep every actor busy.
    batch_size = max(1, cfg.batch_size // (views * len(models))) if masking else cfg.batch_size
    batches = list(infer.map_crops(
        files, CropScorer, {"models": models, "regions": tuple(regions), "patch": patch,
                            "masking": masking},
        cfg, total_bytes=total_bytes, batch_size=batch_size, include_paths=True))
    if not batches:
        raise DfdError("the selected shards hold no face crops")
    columns = {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}
    # Actors finish batches in any order; sorting makes every output the same on each run.
    order = np.lexsort((columns["face_index"], columns["frame_index"],
                        columns["video"].astype(str), columns["part"],
                        columns["path"].astype(str)))
    return {name: values[order] for name, values in columns.items()}


def model_name(run: runs.FinishedRun) -> str:
    return f"{run.train.model}@{Path(run.run_dir).name}"


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One run scored on one split of one face-shard tree."""
    run: runs.FinishedRun
    data: str
    split: str
    name: str  # names its folder beside the run: held-out, validation
    fallback: bool = True  # count every video, rejected ones at the fallback, as dfd infer does


def evaluate(requests: Sequence[Evaluation], cfg: InferConfig) -> list[dict]:
    """Each request's ``metrics.json``. Those not computed before are scored together: the
    union of their shards, read once in one Ray Data pass, scored by every model involved,
    and each model's figures taken over its own set, then written beside its run as
    `dfd infer` writes them.

    Without ``fallback`` only videos with crops count (validation sets, where a random image
    split has no notion of a video without images)."""
    hashes = {r.data: data_hash(r.data) for r in requests}
    dirs = [runs.eval_dir(r.run.run_dir, name=r.name, data_hash=hashes[r.data],
                          aggregation=cfg.aggregation, faceless=r.fallback) for r in requests]
    results = [evaluation.read_evaluation(d) for d in dirs]
    missing = [i for i, r in enumerate(results) if r is None]
    if not missing:
        return results
    from dfd.predict import read_model_files

    sets = {}
    for i in missing:
        key = (requests[i].data, requests[i].split)
        if key not in sets:
            sets[key] = evaluation.select_shards(requests[i].data, parts=None, split=key[1])
    files = list(dict.fromkeys(f for sel in sets.values() for f in sel.files))
    run_dirs = list(dict.fromkeys(requests[i].run.run_dir for i in missing))
    models = [read_model_files(d)[0] for d in run_dirs]
    log.info("scoring %d shards with %d models", len(files), len(models))
    started = time.perf_counter()
    crops = score_selection(files, models, cfg,
                            total_bytes=sum(sel.total_bytes for sel in sets.values()))
    seconds = time.perf_counter() - started
    paths = crops["path"].astype(str)
    rejected_of: dict[tuple[str, str], list[dict]] = {}
    for i in missing:
        request = requests[i]
        selection = sets[(request.data, request.split)]
        rows = np.isin(paths, [evaluation.shard_key(f) for f in selection.files])
        mine = {name: values[rows] for name, values in crops.items()}
        key = (request.data, request.split)
        if request.fallback and key not in rejected_of:
            rejected_of[key] = evaluation.rejected_videos(request.data, selection)
        rejected = rejected_of.get(key, []) if request.fallback else []
        label = model_name(request.run)
        p = mine["p_fake"][:, run_dirs.index(request.run.run_dir)]
        frames, bad_crops = evaluation.crop_records(mine, p, model=label)
        videos, evaluated = evaluation.evaluate_model(
            frames, model=label, rule=cfg.aggregation, rejected=rejected,
            bad_crops=bad_crops if request.fallback else (), fallback_score=cfg.fallback_score,
            listed=evaluation.listed_parts(request.data, selection) if request.fallback else None)
        evaluated["run"] = {"model": label, "run_dir": request.run.run_dir,
                            "data": request.data, "parts": selection.parts,
                            "split": request.split, "aggregation": cfg.aggregation,
                            "rejected_videos": len(rejected), "rejected_crops": len(bad_crops),
                            "models_scored_together": len(models),
                            "scoring_seconds": round(seconds, 2)}
        evaluation.write_evaluation(dirs[i], frames, videos, evaluated, rejected=bad_crops)
        results[i] = evaluated
    return results


# ---- the studies -------------------------------------------------------------------------------

def compare_variants(study: Study, *, address: str | None) -> StudyResult:
    """augmentation and backbone: each variant trained with every seed, scored on the held-out
    parts; differences to the first variant are paired by seed."""
    plan = study.plan
    chosen = variants.select(plan.kind, plan.variants)
    init = {v.name: _initialisation(v.changes) for v in chosen}
    trained = {(v.name, s): ensure_trained(study.data, dfd_config.override(
        plan.train, seed=s, **v.changes), study.runs, address=address)
        for v in chosen for s in plan.seeds}
    keys = list(trained)
    evaluated = dict(zip(keys, evaluate([Evaluation(trained[k], study.data, HELD_OUT,
                                                    "held-out") for k in keys], plan.infer)))
    figures = {k: summary.figures(e) for k, e in evaluated.items()}
    model = "paper_cnn" if plan.kind == "augmentation" else "the row's model"
    notes = [f"Held-out {result.describe_set(evaluated[keys[0]], study.held_out.parts)}.",
             f"Each variant trained with seeds {result.seeds_text(plan.seeds)}: {model}, "
             f"{result.budget(plan.train)}; videos scored by the {plan.infer.aggregation} of "
             f"their crops. Cells are mean ± sd over seeds; Δ columns are seed-paired "
             f"differences."]
    out = variant_summary.summarize(
        plan.kind, chosen, {v.name: {s: figures[(v.name, s)] for s in plan.seeds}
                            for v in chosen},
        {v.name: [trained[(v.name, s)].history for s in plan.seeds] for v in chosen},
        init, notes)
    out.record["runs"] = [_run_record(trained[k], variant=k[0], figures=figures[k])
                          for k in keys]
    return out


def _initialisation(changes: dict) -> str:
    """Where a variant's weights start, said plainly: without ImageNet weights a 'transfer'
    variant is trained from scratch and must not be read as transfer."""
    model = changes.get("model", "paper_cnn")
    if model == "paper_cnn":
        return "random (trained from scratch)"
    if changes.get("pretrained") is False:
        return "random (pretrained off)"
    from dfd import models

    # The same lookup the workers make (keras' cache, else a download), so the label is true.
    found = models.imagenet_weights(model)
    return "ImageNet" if found else "random: no ImageNet weights cached or downloadable"


def _run_record(run: runs.FinishedRun, **extra) -> dict:
    return {"run_dir": run.run_dir, "seed": run.seed, "model": run.train.model,
            "augment": run.train.augment, "epochs": len(run.history),
            "reused": run.reused, "train_seconds": run.seconds, **extra}


def occlusion_study(study: Study, *, address: str | None) -> StudyResult:
    """A model trained without rotations (given, or the baseline per seed) on held-out crops
    with each region hidden, and with a grey patch at each grid position."""
    plan = study.plan
    if plan.model_runs:
        models = [runs.trained_elsewhere(r) for r in plan.model_runs]
    else:
        models = [ensure_trained(study.data, dfd_config.override(
            plan.train, seed=s, **variants.BASELINE.changes), study.runs, address=address)
            for s in plan.seeds]
    if any("rotation" in m.train.augment for m in models):
        log.warning("a model was trained with rotations: the paper's question needs one "
                    "trained without them")
    from dfd.predict import read_model_files

    started = time.perf_counter()
    crops = score_selection(study.held_out.files,
                            [read_model_files(m.run_dir)[0] for m in models], plan.infer,
                            total_bytes=study.held_out.total_bytes, regions=plan.regions,
                            patch=plan.patch, masking=True)
    seconds = time.perf_counter() - started
    trained = "; ".join(sorted({f"{m.train.model} (augment {m.train.augment}, "
                                f"{len(m.history)} epochs)" for m in models}))
    if not plan.model_runs:
        trained += f", seeds {result.seeds_text(plan.seeds)}"
    out = occlusion_summary.summarize(
        crops, [model_name(m) for m in models], regions=plan.regions,
        rule=plan.infer.aggregation,
        rejected=evaluation.rejected_videos(study.data, study.held_out),
        fallback_score=plan.infer.fallback_score,
        parts=study.held_out.parts, trained=trained, patch=plan.patch,
        backgrounds=occlusion_summary.mean_crops(study.held_out.files) if plan.patch else None)
    out.record.update(runs=[_run_record(m, variant="occluded") for m in models],
                      scoring_seconds=round(seconds, 1))
    return out


def split_study(study: Study, *, address: str | None) -> StudyResult:
    """The baseline trained per seed on the leak-free split and on a random image split of
    the same crops; both scored on their own validation set and on the held-out parts."""
    plan = study.plan
    cfg = dfd_config.override(plan.train, **variants.BASELINE.changes)
    trees, described, trained = {}, {}, {"leak_free": {}, "random": {}}
    for s in plan.seeds:
        trees[s] = output_tree.join(study.runs, f"random-image-split-s{s}-{study.data_hash}")
        described[s] = random_split.write_random_split(study.data, trees[s], seed=s)
        for arm, data in (("leak_free", study.data), ("random", trees[s])):
            trained[arm][s] = ensure_trained(data, dfd_config.override(cfg, seed=s),
                                             study.runs, address=address)
    # Every model on every set it is measured on, in one pass. Held-out parts are scored as
    # dfd infer scores them; validation sets hold only videos with crops on either side (a
    # random image split has no notion of a video without images).
    requests, where = [], []
    for arm, by_seed in trained.items():
        for s, run in by_seed.items():
            validation = study.data if arm == "leak_free" else trees[s]
            requests += [Evaluation(run, study.data, HELD_OUT, "held-out"),
                         Evaluation(run, validation, "validation", "validation",
                                    fallback=False)]
            where += [(arm, HELD_OUT, s), (arm, "validation", s)]
    results: dict[tuple[str, str], dict[int, dict]] = {}
    for (arm, evaluated_on, s), evaluated in zip(where, evaluate(requests, plan.infer)):
        results.setdefault((arm, evaluated_on), {})[s] = evaluated
    settings = f"paper_cnn, {result.budget(cfg)}, seeds {result.seeds_text(plan.seeds)}"
    out = split_summary.summarize(results, described, parts=study.held_out.parts,
                                  settings=settings)
    out.record.update(
        runs=[_run_record(trained["leak_free"][s], variant="leak_free") for s in plan.seeds] +
        [_run_record(trained["random"][s], variant="random", data=trees[s])
         for s in plan.seeds],
        random_splits=described)
    return out


RUNNERS: dict[str, Callable[..., StudyResult]] = {
    "augmentation": compare_variants, "backbone": compare_variants,
    "occlusion": occlusion_study, "split": split_study}


# ---- the job -----------------------------------------------------------------------------------

def check_plan(plan: StudyPlan) -> None:
    if plan.kind not in RUNNERS:
        raise DfdError(f"unknown study {plan.kind!r}; one of {sorted(RUNNERS)}")
    if not plan.seeds and not plan.model_runs:
        raise DfdError("a study needs at least one seed")
    if plan.patch is not None:
        try:
            occlusion.grid_side(plan.patch)
        except ValueError as exc:
            raise DfdError(str(exc)) from None
    if plan.kind in variants.VARIANTS:
        variants.select(plan.kind, plan.variants)
    training_run.check_config(plan.train)


def run_study(plan: StudyPlan, data: str, out: str, *, runs_root: str | None = None,
              address: str | None = None) -> dict:
    """Run one study and write its outputs to ``out``; return what study.json holds."""
    check_plan(plan)
    started = time.perf_counter()
    runs_root = runs_root or output_tree.join(out, "runs")
    if storage.is_local(runs_root):
        runs_root = str(storage.local_path(runs_root).absolute())
    try:
        held_out = evaluation.select_shards(data, parts=None, split=HELD_OUT)
    except DfdError as exc:
        raise DfdError(f"{data}: a study scores held-out parts (split {HELD_OUT!r}, made by "
                       f"preprocessing with --test-parts); {exc}") from None
    study = Study(plan, data, data_hash(data), runs_root, held_out)
    started_ray = train.init_ray(address, plan.train)
    try:
        outcome = RUNNERS[plan.kind](study, address=address)
    finally:
        if started_ray:
            ray.shutdown()
    record = {"study": plan.kind, "data": data, "data_hash": study.data_hash,
              "held_out_parts": held_out.parts, "runs_root": runs_root,
              "plan": {"seeds": list(plan.seeds), "variants": plan.variants,
                       "regions": list(plan.regions), "patch": plan.patch,
                       "model_runs": list(plan.model_runs),
                       "train": dfd_config.to_dict(plan.train),
                       "infer": dfd_config.to_dict(plan.infer)},
              "notes": outcome.notes,
              "tables": [{"name": t.name, "title": t.title, "rows": t.rows}
                         for t in outcome.tables],
              **outcome.record,
              "wall_seconds": round(time.perf_counter() - started, 1)}
    write_outputs(out, plan.kind, outcome, record)
    return record


def write_outputs(out: str, kind: str, outcome: StudyResult, record: dict) -> None:
    for name, blob in result.output_files(kind, outcome).items():
        storage.write_bytes(output_tree.join(out, name), blob)
    storage.write_bytes(output_tree.join(out, "study.json"),
                        (json.dumps(record, indent=1, sort_keys=True, default=_jsonable)
                         + "\n").encode())


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
