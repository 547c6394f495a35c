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
computes them (``dfd.study.evaluation``) and kept beside the run. ``OUT`` receives::

    table.md, table.csv     mean and spread over seeds of video-level AUC, log loss, accuracy
    <study>.png             the figures per variant, every seed a dot
    study.json              the plan, every run with its figures, the rows of every table
    (backbone) curves.png   validation accuracy per epoch
    (occlusion) heatmap.png, regions.csv, crops.parquet
    (split) inflation.csv
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from dfd import config as dfd_config
from dfd import manifest, output_tree, storage, train_input
from dfd.config import InferConfig, TrainConfig
from dfd.errors import DfdError
from dfd.study import evaluation, occlusion, plots, random_split, runs, summary, variants
from dfd.study.table import Column, csv_text, markdown
from ray_jobs import infer, train

log = logging.getLogger(__name__)

FIGURES = ("video_auc", "video_log_loss", "video_accuracy")
HELD_OUT = "test"  # the split of parts held out whole: folders no model trained on


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
    held_out: infer.ShardSelection


@dataclasses.dataclass
class Table:
    name: str  # file stem of its CSV
    title: str
    columns: list[Column]
    rows: list[dict]


@dataclasses.dataclass
class StudyResult:
    notes: list[str]  # lines above the tables
    tables: list[Table]
    figures: dict[str, bytes]  # PNG file name -> bytes
    record: dict  # what study.json holds besides the plan and the tables
    files: dict[str, bytes] = dataclasses.field(default_factory=dict)  # other outputs


# ---- training and scoring ----------------------------------------------------------------------

def data_hash(data: str) -> str:
    return manifest.content_hash(train_input.read_manifest(data))


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
    history = json.loads(storage.read_text(output_tree.join(summary_["run_dir"],
                                                            train.HISTORY_JSON)))
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
        from dfd.images import decode_crops
        from dfd.predict import score_crops

        images = list(batch["image"])
        n, k = len(images), len(self.models)
        error = np.full(n, "", dtype=object)
        good, arrays = [], []
        for i, image in enumerate(images):  # one bad crop must not cost the batch
            try:
                arrays.append(decode_crops([image]))
                good.append(i)
            except ValueError as exc:
                error[i] = str(exc)
        x = np.concatenate(arrays) if arrays else np.zeros((0, 1, 1, 3), np.float32)
        out = {name: batch[name] for name in ("video", "part", "label", "frame_index",
                                              "face_index", "path")}
        out["error"] = error
        out["p_fake"] = np.full((n, k), np.nan)
        if not self.masking:
            for m, model in enumerate(self.models):
                if good:
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
    ctx = ray.data.DataContext.get_current()
    ceiling = ctx.target_max_block_size
    if ceiling is not None:
        ctx.target_max_block_size = infer.read_block_bytes(total_bytes, cfg.actors, ceiling)
    try:
        ds = ray.data.read_parquet(list(files), partitioning=None, include_paths=True) \
            .select_columns([*infer.FACE_COLUMNS, "path"])
        scored = ds.map_batches(
            CropScorer, fn_constructor_kwargs={"models": models, "regions": tuple(regions),
                                               "patch": patch, "masking": masking},
            batch_size=batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=cfg.actors),
            num_cpus=infer.cpus_per_actor(cfg), num_gpus=cfg.gpus_per_actor or None)
        batches = list(scored.iter_batches(batch_size=None, batch_format="numpy"))
    finally:
        ctx.target_max_block_size = ceiling
    if not batches:
        raise DfdError("the selected shards hold no face crops")
    columns = {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}
    # Actors finish batches in any order; sorting makes every output the same on each run.
    order = np.lexsort((columns["face_index"], columns["frame_index"],
                        columns["video"].astype(str), columns["part"],
                        columns["path"].astype(str)))
    return {name: values[order] for name, values in columns.items()}


def _shard_key(uri: str) -> str:
    """A shard as Ray Data's ``path`` column names it: the path inside its file system."""
    return storage.resolve(uri)[1]


def _rejected(crops: dict[str, np.ndarray]) -> list[dict]:
    return [{"video": str(crops["video"][i]), "part": int(crops["part"][i]),
             "frame_index": int(crops["frame_index"][i]), "reason": "bad_crop",
             "detail": str(crops["error"][i])} for i in np.flatnonzero(crops["error"] != "")]


def model_name(run: runs.FinishedRun) -> str:
    return f"{run.train.model}@{Path(run.run_dir).name}"


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One run scored on one split of one face-shard tree."""
    run: runs.FinishedRun
    data: str
    split: str
    name: str  # names its folder beside the run: held-out, validation
    faceless: bool = True  # count videos without a face at 0.5, as dfd infer does


def evaluate(requests: Sequence[Evaluation], cfg: InferConfig) -> list[dict]:
    """Each request's ``metrics.json``. Those not computed before are scored together: the
    union of their shards, read once in one Ray Data pass, scored by every model involved,
    and each model's figures taken over its own set, then written beside its run as
    `dfd infer` writes them.

    Without ``faceless`` only videos with crops count (validation sets, where a random image
    split has no notion of a video without images)."""
    hashes = {r.data: data_hash(r.data) for r in requests}
    dirs = [runs.eval_dir(r.run.run_dir, name=r.name, data_hash=hashes[r.data],
                          aggregation=cfg.aggregation, faceless=r.faceless) for r in requests]
    results = [evaluation.read_evaluation(d) for d in dirs]
    missing = [i for i, r in enumerate(results) if r is None]
    if not missing:
        return results
    from dfd.predict import read_model_files

    sets = {}
    for i in missing:
        key = (requests[i].data, requests[i].split)
        if key not in sets:
            sets[key] = infer.select_shards(requests[i].data, parts=None, split=key[1])
    files = list(dict.fromkeys(f for sel in sets.values() for f in sel.files))
    run_dirs = list(dict.fromkeys(requests[i].run.run_dir for i in missing))
    models = [read_model_files(d)[0] for d in run_dirs]
    log.info("scoring %d shards with %d models", len(files), len(models))
    started = time.perf_counter()
    crops = score_selection(files, models, cfg,
                            total_bytes=sum(sel.total_bytes for sel in sets.values()))
    seconds = time.perf_counter() - started
    paths = crops["path"].astype(str)
    no_face = {}
    for i in missing:
        request = requests[i]
        selection = sets[(request.data, request.split)]
        rows = np.isin(paths, [_shard_key(f) for f in selection.files])
        mine = {name: values[rows] for name, values in crops.items()}
        if request.faceless and (request.data, request.split) not in no_face:
            no_face[(request.data, request.split)] = infer.faceless_videos(request.data,
                                                                           selection)
        faceless = no_face.get((request.data, request.split), []) if request.faceless else []
        label = model_name(request.run)
        p = mine["p_fake"][:, run_dirs.index(request.run.run_dir)]
        frames = evaluation.frame_records(mine, p, model=label)
        videos, evaluated = evaluation.evaluate_model(frames, model=label, rule=cfg.aggregation,
                                                      faceless=faceless)
        rejected = _rejected(mine)
        evaluated["run"] = {"model": label, "run_dir": request.run.run_dir,
                            "data": request.data, "parts": selection.parts,
                            "split": request.split, "aggregation": cfg.aggregation,
                            "faceless_videos": len(faceless), "rejected_crops": len(rejected),
                            "models_scored_together": len(models),
                            "scoring_seconds": round(seconds, 2)}
        evaluation.write_evaluation(dirs[i], frames, videos, evaluated, rejected=rejected)
        results[i] = evaluated
    return results


# ---- the studies -------------------------------------------------------------------------------

def _describe_set(evaluated: dict, parts: Sequence[int]) -> str:
    v, f = evaluated["video"], evaluated["frame"]
    return (f"parts {', '.join(str(p) for p in parts)}: {v['n']} videos ({v['n_fake']} FAKE, "
            f"{v['n_real']} REAL), {f['n']} crops")


def _budget(cfg: TrainConfig) -> str:
    return (f"{cfg.epochs} epochs, global batch {cfg.batch_size}, learning rate "
            f"{cfg.learning_rate:g}, dropout {cfg.dropout:g}, {cfg.workers} worker(s)")


def _spread_rows(values: dict[str, dict[int, dict]], names: Sequence[str]) -> dict[str, dict]:
    """Per row label, each figure's spread over the seeds."""
    return {label: {name: summary.spread(f[name] for f in by_seed.values()) for name in names}
            for label, by_seed in values.items()}


FIGURE_COLUMNS = [Column("video_auc", "video AUC"), Column("video_log_loss", "video log loss"),
                  Column("video_accuracy", "video accuracy"),
                  Column("frame_accuracy", "frame accuracy")]


def compare_variants(study: Study, *, address: str | None) -> StudyResult:
    """augmentation and backbone: each variant trained with every seed, scored on the held-out
    parts; differences to the first variant are paired by seed."""
    plan = study.plan
    chosen = variants.select(plan.kind, plan.variants)
    weights = {}
    for v in chosen:
        if v.changes.get("model", "paper_cnn") != "paper_cnn":
            weights[v.name] = _imagenet_status(v.changes["model"], v.changes.get("pretrained"))
    trained = {(v.name, s): ensure_trained(study.data, dfd_config.override(
        plan.train, seed=s, **v.changes), study.runs, address=address)
        for v in chosen for s in plan.seeds}
    keys = list(trained)
    evaluated = dict(zip(keys, evaluate([Evaluation(trained[k], study.data, HELD_OUT,
                                                    "held-out") for k in keys], plan.infer)))
    figures = {k: summary.figures(e) for k, e in evaluated.items()}
    baseline = chosen[0].name
    by_variant = {v.name: {s: figures[(v.name, s)] for s in plan.seeds} for v in chosen}
    spreads = _spread_rows(by_variant, summary.FIGURES)
    rows = []
    for v in chosen:
        row = {"variant": v.name, **spreads[v.name], "paper": v.paper}
        for name in ("video_accuracy", "video_auc"):
            row[f"delta_{name}"] = None if v.name == baseline else summary.paired_difference(
                {s: f[name] for s, f in by_variant[v.name].items()},
                {s: f[name] for s, f in by_variant[baseline].items()})
        histories = [trained[(v.name, s)].history for s in plan.seeds]
        row.update(_curve_figures(histories))
        row["init"] = weights.get(v.name, "random (trained from scratch)")
        rows.append(row)

    columns = [Column("variant", "variant", "text"), *FIGURE_COLUMNS,
               Column("delta_video_accuracy", f"Δ video accuracy vs {baseline}", "delta"),
               Column("delta_video_auc", f"Δ video AUC vs {baseline}", "delta")]
    if plan.kind == "backbone":
        columns += [Column("val_accuracy_first", "val. accuracy, epoch 1"),
                    Column("val_accuracy_best", "best val. accuracy"),
                    Column("val_accuracy_last", "last val. accuracy"),
                    Column("init", "initialisation", "text")]
    columns.append(Column("paper", "paper", "text"))
    title = {"augmentation": "Training-time augmentation",
             "backbone": "The paper's CNN vs an EfficientNet-B0 backbone"}[plan.kind]
    model = "paper_cnn" if plan.kind == "augmentation" else "the row's model"
    notes = [f"Held-out {_describe_set(evaluated[keys[0]], study.held_out.parts)}.",
             f"Each variant trained with seeds {_seeds(plan.seeds)}: {model}, "
             f"{_budget(plan.train)}; videos scored by the {plan.infer.aggregation} of their "
             f"crops. Cells are mean ± sd over seeds; Δ columns are seed-paired differences."]
    figures_png = {f"{plan.kind}.png": plots.seeds_figure(
        {label: {name: [f[name] for f in by_seed.values()] for name in FIGURES}
         for label, by_seed in by_variant.items()}, FIGURES,
        title=f"{title}: held-out parts")}
    if plan.kind == "backbone":
        figures_png["curves.png"] = plots.curves_figure(
            {v.name: [trained[(v.name, s)].history for s in plan.seeds] for v in chosen},
            "val_accuracy", title="Validation accuracy per epoch")
    record = {"runs": [_run_record(trained[k], variant=k[0], figures=figures[k])
                       for k in keys]}
    return StudyResult(notes, [Table("table", title, columns, rows)], figures_png, record)


def _curve_figures(histories: Sequence[Sequence[dict]]) -> dict:
    """The paper's B0 observation in numbers: validation accuracy after the first epoch, at its
    best, and at the end, each over seeds."""
    series = [[h["val_accuracy"] for h in run if h.get("val_accuracy") is not None]
              for run in histories]
    series = [s for s in series if s]
    return {"val_accuracy_first": summary.spread(s[0] for s in series),
            "val_accuracy_best": summary.spread(max(s) for s in series),
            "val_accuracy_last": summary.spread(s[-1] for s in series)}


def _imagenet_status(model: str, pretrained: bool | None) -> str:
    """Whether the backbone will start from ImageNet weights on this machine, said plainly:
    without them a 'transfer' variant is trained from scratch and must not be read as one."""
    if pretrained is False:
        return "random (pretrained off)"
    from dfd import models

    constructor, filename, _ = models._BACKBONES[model]
    found = models._imagenet_weights(constructor, filename)
    return "ImageNet" if found else "random: no ImageNet weights cached or downloadable"


def _seeds(seeds: Sequence[int]) -> str:
    return ", ".join(str(s) for s in seeds)


def _run_record(run: runs.FinishedRun, **extra) -> dict:
    return {"run_dir": run.run_dir, "seed": run.seed, "model": run.train.model,
            "augment": run.train.augment, "epochs": len(run.history),
            "reused": run.reused, "train_seconds": run.seconds, **extra}


# ---- occlusion ---------------------------------------------------------------------------------

REGION_COLUMNS = [
    Column("region", "region hidden", "text"), *FIGURE_COLUMNS[:3],
    Column("delta_video_auc", "Δ video AUC", "delta"),
    Column("delta_video_accuracy", "Δ video accuracy", "delta"),
    Column("drop_fake", "evidence lost, FAKE crops", "delta"),
    Column("drop_real", "evidence lost, REAL crops", "delta"),
    Column("pixels", "share of crop", digits=2)]
ASYMMETRY_PAIRS = (("left_half", "right_half"), ("forehead", "jaw"), ("eyes", "mouth"))


def occlusion_study(study: Study, *, address: str | None) -> StudyResult:
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

    files = [read_model_files(m.run_dir)[0] for m in models]
    started = time.perf_counter()
    crops = score_selection(study.held_out.files, files, plan.infer,
                            total_bytes=study.held_out.total_bytes, regions=plan.regions,
                            patch=plan.patch, masking=True)
    seconds = time.perf_counter() - started
    no_face = infer.faceless_videos(study.data, study.held_out)
    scored = np.isfinite(crops["p_fake"][:, 0])
    labels = crops["label"].astype(int)

    # Per model (paired by its index) and per region, the same figures as any evaluation.
    names = (occlusion.UNMASKED, *plan.regions)
    per_region: dict[str, dict[int, dict]] = {r: {} for r in names}
    unmasked: dict[int, dict] = {}  # each model's full metrics on the untouched crops
    drops: dict[str, dict[str, dict[int, float]]] = {r: {"fake": {}, "real": {}}
                                                     for r in plan.regions}
    for m, run in enumerate(models):
        label = model_name(run)
        for r, region in enumerate(names):
            p = crops["p_fake"][:, m] if r == 0 else crops["p_region"][:, m, r - 1]
            frames = evaluation.frame_records(crops, p, model=label)
            _, evaluated = evaluation.evaluate_model(frames, model=label,
                                                     rule=plan.infer.aggregation,
                                                     faceless=no_face)
            per_region[region][m] = summary.figures(evaluated)
            if not r:
                unmasked[m] = evaluated
            else:
                lost = occlusion.evidence_drop(crops["p_fake"][scored, m], p[scored],
                                               labels[scored])
                for kind, value in (("fake", 1), ("real", 0)):
                    chosen = lost[labels[scored] == value]
                    drops[region][kind][m] = float(chosen.mean()) if chosen.size else None

    layouts = {k: int(np.sum(crops["layout"][scored] == k))
               for k in (occlusion.LANDMARKS, occlusion.CANONICAL)}
    pixels = _region_shares(crops, plan.regions)
    spreads = _spread_rows(per_region, summary.FIGURES)
    rows = []
    for region in names:
        row = {"region": region, **spreads[region]}
        if region != occlusion.UNMASKED:
            for name in ("video_auc", "video_accuracy"):
                row[f"delta_{name}"] = summary.paired_difference(
                    {m: f[name] for m, f in per_region[region].items()},
                    {m: f[name] for m, f in per_region[occlusion.UNMASKED].items()})
            row["drop_fake"] = summary.spread(drops[region]["fake"].values())
            row["drop_real"] = summary.spread(drops[region]["real"].values())
            row["pixels"] = pixels[region]
        rows.append(row)

    asymmetry_rows = []
    for a, b in ASYMMETRY_PAIRS:
        if a in plan.regions and b in plan.regions:
            asymmetry_rows.append({
                "pair": f"{a} − {b}",
                **{f"delta_{kind}": summary.paired_difference(drops[a][kind], drops[b][kind])
                   for kind in ("fake", "real")},
                "delta_video_auc": summary.paired_difference(
                    {m: f["video_auc"] for m, f in per_region[a].items()},
                    {m: f["video_auc"] for m, f in per_region[b].items()})})
    asymmetry_columns = [Column("pair", "regions compared", "text"),
                         Column("delta_fake", "Δ evidence lost, FAKE crops", "delta"),
                         Column("delta_real", "Δ evidence lost, REAL crops", "delta"),
                         Column("delta_video_auc", "Δ video AUC", "delta")]

    trained_how = sorted({f"{m.train.model} (augment {m.train.augment}, "
                          f"{len(m.history)} epochs)" for m in models})
    notes = [f"Held-out {_describe_set(unmasked[0], study.held_out.parts)}.",
             f"{len(models)} model(s): {'; '.join(trained_how)}"
             + (f", seeds {_seeds(plan.seeds)}" if not plan.model_runs else "") + ".",
             f"Regions placed from RetinaFace's landmarks on the crop itself for "
             f"{layouts[occlusion.LANDMARKS]} crops, from the canonical layout (no face found) "
             f"for {layouts[occlusion.CANONICAL]}; hidden pixels are mid-grey.",
             "Cells are mean ± sd over models (share of crop: over crops). Δ columns: masked "
             "minus unmasked, paired by model. Evidence lost: mean drop of the true label's "
             "probability when the region is hidden (positive: the region held evidence for "
             "the right answer)."]
    heat = _heatmaps(crops, scored, labels)
    figures_png = {"occlusion.png": plots.seeds_figure(
        {r: {n: [f[n] for f in per_region[r].values()] for n in FIGURES} for r in names},
        FIGURES, title="Held-out parts with one face region hidden")}
    record = {"runs": [_run_record(m, variant="occluded") for m in models],
              "layouts": layouts, "scoring_seconds": round(seconds, 1),
              "patch": plan.patch, "fill": occlusion.FILL}
    if heat is not None:
        maps, counts = heat
        figures_png["heatmap.png"] = plots.heatmap_figure(
            maps, _mean_crops(study.held_out), patch=plan.patch, counts=counts,
            title=f"Occlusion sensitivity ({plan.patch} px grey patch, mean over "
                  f"{len(models)} model(s))")
        record["heatmap"] = {k: np.round(v, 5).tolist() for k, v in maps.items()}
    tables = [Table("table", "Face regions hidden on held-out crops", REGION_COLUMNS, rows)]
    if asymmetry_rows:
        tables.append(Table("asymmetry", "Is the evidence spatially asymmetric?",
                             asymmetry_columns, asymmetry_rows))
    return StudyResult(notes, tables, figures_png, record,
                       files={"crops.parquet": _crops_table(crops, models, plan.regions)})


def _region_shares(crops: dict, regions: Sequence[str]) -> dict[str, dict]:
    """The share of the crop each region hid, over the scored crops."""
    shares = {r: [] for r in regions}
    for points in crops["landmarks"]:
        if np.isnan(points).any():
            continue
        for r in regions:
            shares[r].append(float(occlusion.region_mask(r, points).mean()))
    return {r: summary.spread(v) for r, v in shares.items()}


def _heatmaps(crops: dict, scored: np.ndarray, labels: np.ndarray):
    if "p_patch" not in crops or crops["p_patch"].shape[-1] == 0:
        return None
    base = crops["p_fake"][scored]  # (n, models)
    patches = crops["p_patch"][scored]  # (n, models, G, G)
    lost = occlusion.evidence_drop(base.reshape(-1), patches.reshape(-1, *patches.shape[2:]),
                                   np.repeat(labels[scored], base.shape[1]))
    lost = lost.reshape(patches.shape)
    maps, counts = {}, {}
    for name, value in (("FAKE", 1), ("REAL", 0)):
        chosen = labels[scored] == value
        counts[name] = int(chosen.sum())
        maps[name] = lost[chosen].mean(axis=(0, 1)) if chosen.any() \
            else np.zeros(patches.shape[2:])
    return maps, counts


MEAN_CROP_LIMIT = 256  # crops per label averaged for the heat map's background


def _mean_crops(selection: infer.ShardSelection) -> dict[str, np.ndarray]:
    from dfd.images import decode_crops

    sums = {"FAKE": None, "REAL": None}
    seen = {"FAKE": 0, "REAL": 0}
    for uri in selection.files:
        if min(seen.values()) >= MEAN_CROP_LIMIT:
            break
        fs, path = storage.resolve(uri)
        table = pq.read_table(path, filesystem=fs, columns=["label", "image"])
        for label, image in zip(table["label"].to_pylist(), table["image"].to_pylist()):
            name = "FAKE" if label == 1 else "REAL"
            if seen[name] >= MEAN_CROP_LIMIT:
                continue
            try:
                x = decode_crops([image])[0]
            except ValueError:
                continue
            sums[name] = x if sums[name] is None else sums[name] + x
            seen[name] += 1
    return {k: (v / seen[k] if v is not None else np.full((256, 256, 3), 0.5))
            for k, v in sums.items()}


def _crops_table(crops: dict, models: Sequence[runs.FinishedRun], regions: Sequence[str]
                 ) -> bytes:
    """Every crop's score per model and hidden region, long format, for anyone re-analysing."""
    n, k = crops["p_fake"].shape
    names = (occlusion.UNMASKED, *regions)
    p = np.concatenate([crops["p_fake"][:, :, None], crops["p_region"]], axis=2)  # (n, k, R+1)
    table = pa.table({
        "video": np.repeat(crops["video"].astype(str), k * len(names)),
        "part": np.repeat(crops["part"].astype(np.int64), k * len(names)),
        "frame_index": np.repeat(crops["frame_index"].astype(np.int64), k * len(names)),
        "label": np.repeat(crops["label"].astype(np.int64), k * len(names)),
        "layout": np.repeat(crops["layout"].astype(str), k * len(names)),
        "model": np.tile(np.repeat([model_name(m) for m in models], len(names)), n),
        "region": np.tile(names, n * k),
        "p_fake": p.reshape(-1)})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


# ---- split -------------------------------------------------------------------------------------

SPLIT_ROWS = (("random", "validation", "random image split", "validation (random images)"),
              ("random", HELD_OUT, "random image split", "held-out parts"),
              ("leak_free", "validation", "leak-free split", "validation (by original)"),
              ("leak_free", HELD_OUT, "leak-free split", "held-out parts"))
INFLATION = (
    (("random", "validation"), ("random", HELD_OUT),
     "random-split validation − the same model on held-out parts"),
    (("random", "validation"), ("leak_free", "validation"),
     "random-split validation − leak-free validation"),
    (("random", "validation"), ("leak_free", HELD_OUT),
     "random-split validation − leak-free model on held-out parts"),
    (("leak_free", "validation"), ("leak_free", HELD_OUT),
     "leak-free validation − the same model on held-out parts"))


def split_study(study: Study, *, address: str | None) -> StudyResult:
    plan = study.plan
    cfg = dfd_config.override(plan.train, **variants.BASELINE.changes)
    trees, leak_free, random_runs, described = {}, {}, {}, {}
    for s in plan.seeds:
        tree = output_tree.join(study.runs, f"random-image-split-s{s}-{study.data_hash}")
        described[s] = random_split.write_random_split(study.data, tree, seed=s)
        trees[s] = tree
        leak_free[s] = ensure_trained(study.data, dfd_config.override(cfg, seed=s), study.runs,
                                      address=address)
        random_runs[s] = ensure_trained(tree, dfd_config.override(cfg, seed=s), study.runs,
                                        address=address)
    seeds = list(plan.seeds)
    # Every model on every set it is measured on, in one pass. Held-out parts are scored as
    # dfd infer scores them; validation sets hold only videos with crops on either side (a
    # random image split has no notion of a video without images).
    arms = {"leak_free": leak_free, "random": random_runs}
    requests, where = [], []
    for arm, trained_runs in arms.items():
        for s in seeds:
            run = trained_runs[s]
            requests.append(Evaluation(run, study.data, HELD_OUT, "held-out"))
            where.append((arm, HELD_OUT, s))
            tree = study.data if arm == "leak_free" else trees[s]
            requests.append(Evaluation(run, tree, "validation", "validation", faceless=False))
            where.append((arm, "validation", s))
    results: dict[tuple[str, str], dict[int, dict]] = {(a, e): {} for a, e, _, _ in SPLIT_ROWS}
    for (arm, evaluated_on, s), evaluated in zip(where, evaluate(requests, plan.infer)):
        results[(arm, evaluated_on)][s] = evaluated
    figures = {key: {s: summary.figures(e) for s, e in by_seed.items()}
               for key, by_seed in results.items()}
    leaks = {"random": [d["random"] for d in described.values()],
             "leak_free": [d["leak_free"] for d in described.values()]}
    rows = []
    for arm, evaluated_on, arm_title, set_title in SPLIT_ROWS:
        row = {"split": arm_title, "evaluated on": set_title,
               **{n: summary.spread(f[n] for f in figures[(arm, evaluated_on)].values())
                  for n in summary.FIGURES}}
        if evaluated_on == "validation":
            row["seen"] = summary.spread(
                leak["validation_videos_seen_in_train"] / max(1, leak["validation_videos"])
                for leak in leaks[arm])
        rows.append(row)
    inflation_rows = []
    for a, b, title in INFLATION:
        inflation_rows.append({"difference": title, **{
            n: summary.paired_difference({s: f[n] for s, f in figures[a].items()},
                                         {s: f[n] for s, f in figures[b].items()})
            for n in summary.FIGURES}})
    columns = [Column("split", "split", "text"), Column("evaluated on", "evaluated on", "text"),
               *FIGURE_COLUMNS, Column("frame_auc", "frame AUC"),
               Column("seen", "val. videos with frames in train", digits=2)]
    inflation_columns = [Column("difference", "inflation (paired by seed)", "text"),
                         *[Column(c.key, c.title, "delta") for c in FIGURE_COLUMNS],
                         Column("frame_auc", "frame AUC", "delta")]
    notes = _split_notes(study, cfg, results[("leak_free", HELD_OUT)][seeds[0]], described)
    labels = {f"{arm.replace('_', '-')}\n{'held-out' if e == HELD_OUT else e}":
              figures[(arm, e)] for arm, e, _, _ in SPLIT_ROWS}
    figures_png = {"split.png": plots.seeds_figure(
        {label: {n: [f[n] for f in by_seed.values()] for n in FIGURES}
         for label, by_seed in labels.items()}, FIGURES,
        title="Random image split vs leak-free split")}
    record = {"runs": [_run_record(leak_free[s], variant="leak_free") for s in seeds] +
              [_run_record(random_runs[s], variant="random", data=trees[s]) for s in seeds],
              "random_splits": described}
    return StudyResult(notes, [Table("table", "Random image split vs leak-free split", columns,
                                     rows),
                               Table("inflation", "How much the random split inflates",
                                     inflation_columns, inflation_rows)],
                       figures_png, record)


def _split_notes(study: Study, cfg: TrainConfig, held_out: dict, described: dict) -> list[str]:
    first = next(iter(described.values()))

    def mean_of(arm: str, key: str) -> str:
        value = float(np.mean([d[arm][key] for d in described.values()]))
        return f"{value:.0f}" if value == round(value) else f"{value:.1f}"

    return [f"Held-out {_describe_set(held_out, study.held_out.parts)}; the same for both "
            f"splits.",
            f"Both splits deal the same {first['images']} train+validation crops, "
            f"{first['validation_images']} of them to validation: by original (leak-free, as "
            f"committed) or image by image at random (the paper's way; seed = training seed). "
            f"paper_cnn, {_budget(cfg)}, seeds {_seeds(study.plan.seeds)}; cells are mean ± "
            f"sd over seeds. Validation figures count only videos with crops.",
            f"Validation videos with frames in train: random split "
            f"{mean_of('random', 'validation_videos_seen_in_train')} of "
            f"{mean_of('random', 'validation_videos')} (originals: "
            f"{mean_of('random', 'validation_originals_seen_in_train')} of "
            f"{mean_of('random', 'validation_originals')}); leak-free split "
            f"{mean_of('leak_free', 'validation_videos_seen_in_train')} of "
            f"{mean_of('leak_free', 'validation_videos')} (originals: "
            f"{mean_of('leak_free', 'validation_originals_seen_in_train')} of "
            f"{mean_of('leak_free', 'validation_originals')})."]


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
    train.check_config(plan.train)


def run_study(plan: StudyPlan, data: str, out: str, *, runs_root: str | None = None,
              address: str | None = None) -> dict:
    """Run one study and write its outputs to ``out``; return what study.json holds."""
    check_plan(plan)
    started = time.perf_counter()
    runs_root = runs_root or output_tree.join(out, "runs")
    if storage.is_local(runs_root):
        runs_root = str(storage.local_path(runs_root).absolute())
    try:
        held_out = infer.select_shards(data, parts=None, split=HELD_OUT)
    except DfdError as exc:
        raise DfdError(f"{data}: a study scores held-out parts (split {HELD_OUT!r}, made by "
                       f"preprocessing with --test-parts); {exc}") from None
    study = Study(plan, data, data_hash(data), runs_root, held_out)
    started_ray = train.init_ray(address, plan.train)
    try:
        result = RUNNERS[plan.kind](study, address=address)
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
              "notes": result.notes,
              "tables": [{"name": t.name, "title": t.title, "rows": t.rows}
                         for t in result.tables],
              **result.record,
              "wall_seconds": round(time.perf_counter() - started, 1)}
    write_outputs(out, plan.kind, result, record)
    return record


def render_markdown(kind: str, result: StudyResult) -> str:
    lines = [f"# dfd study {kind}", ""]
    lines += [f"{note}" for note in result.notes]
    for table in result.tables:
        lines += ["", f"## {table.title}", "", markdown(table.rows, table.columns).rstrip()]
    return "\n".join(lines) + "\n"


def write_outputs(out: str, kind: str, result: StudyResult, record: dict) -> None:
    text = {"table.md": render_markdown(kind, result)}
    for table in result.tables:
        text[f"{table.name}.csv"] = csv_text(table.rows, table.columns)
    for name, body in text.items():
        storage.write_bytes(output_tree.join(out, name), body.encode())
    for name, blob in {**result.figures, **result.files}.items():
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
