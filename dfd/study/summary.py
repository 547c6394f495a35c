"""Mean and spread over seeds, and seed-paired differences between variants; and the held-out
set's own uncertainty: each run's bootstrap 95 % interval (``metrics.json``'s ``ci95``),
averaged over seeds."""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

# The figures every study reports per evaluated model, from a ``dfd.metrics.evaluate`` result.
FIGURES = {
    "video_auc": ("video", "auc"),
    "video_log_loss": ("video", "log_loss"),
    "video_accuracy": ("video", "accuracy"),
    "frame_auc": ("frame", "auc"),
    "frame_accuracy": ("frame", "accuracy"),
}


# The figures that carry a bootstrap interval in metrics.json (video level only).
INTERVALS = ("video_auc", "video_log_loss", "video_accuracy")
INTERVAL_NOTE = ("[lo, hi] after a figure: the 95 % bootstrap interval of one run over the "
                 "held-out videos (resampled by video within each label), averaged over the "
                 "runs; it is how far the figure could move on another draw of as many "
                 "videos, on top of the ± spread between runs. Figures are printed to the "
                 "precision that interval supports.")


def interval_key(name: str) -> str:
    return f"{name}_ci95"


def figures(evaluated: Mapping) -> dict[str, float | list[float] | None]:
    """The study's figures from one ``metrics.json`` (None where undefined), with the bootstrap
    interval of each video figure under ``interval_key(name)`` (None when the metrics.json
    predates intervals)."""
    out = {name: evaluated[level][key] for name, (level, key) in FIGURES.items()}
    for name in INTERVALS:
        level, key = FIGURES[name]
        out[interval_key(name)] = (evaluated[level].get("ci95") or {}).get(key)
    return out


def mean_interval(intervals: Iterable[Sequence[float] | None]) -> list[float] | None:
    """The mean lower and mean upper bound of the runs' intervals (None when none has one)."""
    x = np.array([i for i in intervals if i is not None], np.float64)
    if not x.size:
        return None
    return [float(x[:, 0].mean()), float(x[:, 1].mean())]


def spread_with_interval(name: str, runs: Iterable[Mapping]) -> dict:
    """``spread`` of a figure over runs (``figures`` dicts), with ``ci95``: the runs' mean
    bootstrap interval, for the figures that have one."""
    runs = list(runs)
    cell = spread(f[name] for f in runs)
    if name in INTERVALS:
        ci = mean_interval(f.get(interval_key(name)) for f in runs)
        if ci is not None:
            cell["ci95"] = ci
    return cell


def spread(values: Iterable[float | None]) -> dict:
    """n, mean, sample standard deviation (None below 2 values), min and max; None values
    (undefined figures, e.g. the AUC of a one-label set) are left out and not counted."""
    x = np.array([v for v in values if v is not None and not math.isnan(v)], np.float64)
    if not x.size:
        return {"n": 0, "mean": None, "sd": None, "min": None, "max": None}
    return {"n": int(x.size), "mean": float(x.mean()),
            "sd": float(x.std(ddof=1)) if x.size > 1 else None,
            "min": float(x.min()), "max": float(x.max())}


def paired_difference(values: Mapping[int, float | None],
                      baseline: Mapping[int, float | None]) -> dict:
    """The spread of ``values[s] - baseline[s]`` over the seeds both have. Pairing by seed
    removes what the seed does to both (initialisation, data order), so the spread is that of
    the difference itself, smaller than the two spreads combined."""
    seeds = sorted(s for s in values if s in baseline
                   and values[s] is not None and baseline[s] is not None)
    return spread(values[s] - baseline[s] for s in seeds)
