"""Mean and spread over seeds, and seed-paired differences between variants."""
from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np

# The figures every study reports per evaluated model, from a ``dfd.metrics.evaluate`` result.
FIGURES = {
    "video_auc": ("video", "auc"),
    "video_log_loss": ("video", "log_loss"),
    "video_accuracy": ("video", "accuracy"),
    "frame_auc": ("frame", "auc"),
    "frame_accuracy": ("frame", "accuracy"),
}


def figures(evaluated: Mapping) -> dict[str, float | None]:
    """The study's figures from one ``metrics.json`` (None where undefined)."""
    return {name: evaluated[level][key] for name, (level, key) in FIGURES.items()}


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
