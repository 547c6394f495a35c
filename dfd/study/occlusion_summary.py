"""The occlusion tables and maps from a study's scored crops (``ray_jobs.study.CropScorer``):
per region, the held-out figures of every model with that region hidden; the evidence each
region held; left/right and forehead/jaw compared; the occlusion-sensitivity maps."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dfd import storage
from dfd import evaluation
from dfd.study import occlusion, plots, summary
from dfd.study.result import (FIGURE_COLUMNS, PLOTTED, StudyResult, Table, by_figure,
                              describe_set, has_intervals, spread_rows)
from dfd.study.table import Column

REGION_COLUMNS = [
    Column("region", "region hidden", "text"), *FIGURE_COLUMNS[:3],
    Column("delta_video_auc", "Δ video AUC", "delta"),
    Column("delta_video_accuracy", "Δ video accuracy", "delta"),
    Column("drop_fake", "evidence lost, FAKE crops", "delta"),
    Column("drop_real", "evidence lost, REAL crops", "delta"),
    Column("pixels", "share of crop", digits=2)]
ASYMMETRY_COLUMNS = [Column("pair", "regions compared", "text"),
                     Column("delta_fake", "Δ evidence lost, FAKE crops", "delta"),
                     Column("delta_real", "Δ evidence lost, REAL crops", "delta"),
                     Column("delta_video_auc", "Δ video AUC", "delta")]
ASYMMETRY_PAIRS = (("left_half", "right_half"), ("forehead", "jaw"), ("eyes", "mouth"))
MEAN_CROP_LIMIT = 256  # crops per label averaged for the heat map's background


def summarize(crops: Mapping[str, np.ndarray], models: Sequence[str], *,
              regions: Sequence[str], rule: str, rejected: Sequence[Mapping],
              fallback_score: float, parts: Sequence[int], trained: str, patch: int | None,
              backgrounds: Mapping[str, np.ndarray] | None = None) -> StudyResult:
    """``crops``: the scorer's columns, ``p_fake`` (crops, models), ``p_region`` (crops,
    models, regions), ``p_patch`` (crops, models, G, G); ``models`` their labels, in order;
    ``trained`` says how they were trained; ``backgrounds`` the mean crop per label."""
    scored = np.isfinite(crops["p_fake"][:, 0])
    labels = crops["label"].astype(int)
    names = (occlusion.UNMASKED, *regions)
    # Per model (paired by its index) and per region, the same figures as any evaluation.
    per_region: dict[str, dict[int, dict]] = {r: {} for r in names}
    unmasked: dict[int, dict] = {}
    drops = {r: {"fake": {}, "real": {}} for r in regions}
    for m, label in enumerate(models):
        for r, region in enumerate(names):
            p = crops["p_fake"][:, m] if r == 0 else crops["p_region"][:, m, r - 1]
            frames, _ = evaluation.crop_records(crops, p, model=label)
            _, evaluated = evaluation.evaluate_model(frames, model=label, rule=rule,
                                                     rejected=rejected,
                                                     fallback_score=fallback_score)
            per_region[region][m] = summary.figures(evaluated)
            if not r:
                unmasked[m] = evaluated
                continue
            lost = occlusion.evidence_drop(crops["p_fake"][scored, m], p[scored],
                                           labels[scored])
            for kind, value in (("fake", 1), ("real", 0)):
                chosen = lost[labels[scored] == value]
                drops[region][kind][m] = float(chosen.mean()) if chosen.size else None

    layouts = {k: int(np.sum(crops["layout"][scored] == k))
               for k in (occlusion.LANDMARKS, occlusion.CANONICAL)}
    pixels = region_shares(crops, regions)
    spreads = spread_rows(per_region, summary.FIGURES)
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
    asymmetry = [{"pair": f"{a} − {b}",
                  **{f"delta_{kind}": summary.paired_difference(drops[a][kind], drops[b][kind])
                     for kind in ("fake", "real")},
                  "delta_video_auc": summary.paired_difference(
                      {m: f["video_auc"] for m, f in per_region[a].items()},
                      {m: f["video_auc"] for m, f in per_region[b].items()})}
                 for a, b in ASYMMETRY_PAIRS if a in regions and b in regions]

    notes = [f"Held-out {describe_set(unmasked[0], parts)}.",
             f"{len(models)} model(s): {trained}.",
             f"Regions placed from RetinaFace's landmarks on the crop itself for "
             f"{layouts[occlusion.LANDMARKS]} crops, from the canonical layout (no face found) "
             f"for {layouts[occlusion.CANONICAL]}; hidden pixels are mid-grey.",
             "Cells are mean ± sd over models (share of crop: over crops). Δ columns: masked "
             "minus unmasked, paired by model. Evidence lost: mean drop of the true label's "
             "probability when the region is hidden (positive: the region held evidence for "
             "the right answer)."]
    if has_intervals(rows):
        notes.append(summary.INTERVAL_NOTE.replace("runs", "models"))
    pngs = {"occlusion.png": plots.seeds_figure(by_figure(per_region, PLOTTED), PLOTTED,
                                                title="Held-out parts with one face region "
                                                      "hidden")}
    record = {"layouts": layouts, "patch": patch, "fill": occlusion.FILL}
    heat = heatmaps(crops)
    if heat is not None:
        maps, counts = heat
        pngs["heatmap.png"] = plots.heatmap_figure(
            maps, backgrounds or {}, patch=patch, counts=counts,
            title=f"Occlusion sensitivity ({patch} px grey patch, mean over "
                  f"{len(models)} model(s))")
        record["heatmap"] = {k: np.round(v, 5).tolist() for k, v in maps.items()}
    tables = [Table("table", "Face regions hidden on held-out crops", REGION_COLUMNS, rows)]
    if asymmetry:
        tables.append(Table("asymmetry", "Is the evidence spatially asymmetric?",
                            ASYMMETRY_COLUMNS, asymmetry))
    return StudyResult(notes, tables, pngs, record,
                       files={"crops.parquet": crops_table(crops, models, regions)})


def region_shares(crops: Mapping[str, np.ndarray], regions: Sequence[str]) -> dict[str, dict]:
    """The share of the crop each region hid, over the scored crops."""
    shares = {r: [] for r in regions}
    for points in crops["landmarks"]:
        if np.isnan(points).any():
            continue
        for r in regions:
            shares[r].append(float(occlusion.region_mask(r, points).mean()))
    return {r: summary.spread(v) for r, v in shares.items()}


def heatmaps(crops: Mapping[str, np.ndarray]):
    """Per label, the evidence lost with a grey patch at each grid position, averaged over
    the label's crops and over the models; None without a grid."""
    if "p_patch" not in crops or crops["p_patch"].shape[-1] == 0:
        return None
    scored = np.isfinite(crops["p_fake"][:, 0])
    labels = crops["label"].astype(int)[scored]
    base = crops["p_fake"][scored]  # (n, models)
    patches = crops["p_patch"][scored]  # (n, models, G, G)
    lost = occlusion.evidence_drop(base.reshape(-1), patches.reshape(-1, *patches.shape[2:]),
                                   np.repeat(labels, base.shape[1])).reshape(patches.shape)
    maps, counts = {}, {}
    for name, value in (("FAKE", 1), ("REAL", 0)):
        chosen = labels == value
        counts[name] = int(chosen.sum())
        maps[name] = lost[chosen].mean(axis=(0, 1)) if chosen.any() \
            else np.zeros(patches.shape[2:])
    return maps, counts


def mean_crops(files: Sequence[str]) -> dict[str, np.ndarray]:
    """The mean of up to MEAN_CROP_LIMIT crops per label of these shards: what the heat map
    is drawn over."""
    from dfd.images import decode_crops

    sums = {"FAKE": None, "REAL": None}
    seen = {"FAKE": 0, "REAL": 0}
    for uri in files:
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


def crops_table(crops: Mapping[str, np.ndarray], models: Sequence[str],
                regions: Sequence[str]) -> bytes:
    """Every crop's score per model and hidden region, long format, for anyone re-analysing."""
    n, k = crops["p_fake"].shape
    names = (occlusion.UNMASKED, *regions)
    p = np.concatenate([crops["p_fake"][:, :, None], crops["p_region"]], axis=2)  # (n, k, R+1)
    per_crop = k * len(names)
    table = pa.table({
        "video": np.repeat(crops["video"].astype(str), per_crop),
        "part": np.repeat(crops["part"].astype(np.int64), per_crop),
        "frame_index": np.repeat(crops["frame_index"].astype(np.int64), per_crop),
        "label": np.repeat(crops["label"].astype(np.int64), per_crop),
        "layout": np.repeat(crops["layout"].astype(str), per_crop),
        "model": np.tile(np.repeat(list(models), len(names)), n),
        "region": np.tile(names, n * k),
        "p_fake": p.reshape(-1)})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()
