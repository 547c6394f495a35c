"""Classification metrics for FAKE-vs-REAL scores, at frame and at video level.

Plain numpy, so the library does not depend on scikit-learn; the tests check every figure
against scikit-learn on the same predictions. Labels follow Kaggle (1 = FAKE), scores are the
probability of FAKE. A score above ``THRESHOLD`` is a FAKE call, as in Keras' binary metrics,
so a video without a face (scored 0.5) counts as a REAL call.

Undefined figures (AUC and AP of a single-class set, anything of an empty set) are ``None``
rather than NaN, so that ``metrics.json`` stays valid JSON.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import numpy as np

THRESHOLD = 0.5
# Kaggle's DFDC metric clipped probabilities to [1e-15, 1 - 1e-15]: a single confident miss
# costs log(1e15) ~ 34.5 instead of infinity.
LOG_LOSS_EPS = 1e-15

# The label mix of the real DFDC training set (DESIGN.md): 100,000 FAKE of 119,154 videos.
DFDC_FAKE_FRACTION = 100_000 / 119_154


def _as_arrays(labels: Iterable, scores: Iterable) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.int64).ravel()
    p = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"{y.size} labels but {p.size} scores")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (REAL) or 1 (FAKE)")
    if p.size and not (np.isfinite(p).all() and p.min() >= 0.0 and p.max() <= 1.0):
        raise ValueError("scores must be probabilities in [0, 1]")
    return y, p


def confusion_matrix(labels, scores, *, threshold: float = THRESHOLD) -> np.ndarray:
    """2x2 counts, rows = true label, columns = call, index 0 = REAL: [[tn, fp], [fn, tp]]."""
    y, p = _as_arrays(labels, scores)
    called = (p > threshold).astype(np.int64)
    return np.bincount(2 * y + called, minlength=4).reshape(2, 2)


def _ratio(num: float, den: float) -> float:
    # scikit-learn's zero_division=0: an empty denominator scores 0, not NaN.
    return float(num / den) if den else 0.0


def accuracy(labels, scores, *, threshold: float = THRESHOLD) -> float | None:
    cm = confusion_matrix(labels, scores, threshold=threshold)
    n = cm.sum()
    return float(np.trace(cm) / n) if n else None


def precision(labels, scores, *, threshold: float = THRESHOLD) -> float:
    (_, fp), (_, tp) = confusion_matrix(labels, scores, threshold=threshold)
    return _ratio(tp, tp + fp)


def recall(labels, scores, *, threshold: float = THRESHOLD) -> float:
    _, (fn, tp) = confusion_matrix(labels, scores, threshold=threshold)
    return _ratio(tp, tp + fn)


def f1(labels, scores, *, threshold: float = THRESHOLD) -> float:
    (_, fp), (fn, tp) = confusion_matrix(labels, scores, threshold=threshold)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def _cumulative_counts(y: np.ndarray, p: np.ndarray):
    """False and true positives when calling FAKE at each distinct score, highest first."""
    order = np.argsort(-p, kind="mergesort")
    p, y = p[order], y[order]
    # The last index of each run of tied scores: ties enter the curve together.
    last = np.r_[np.flatnonzero(np.diff(p)), y.size - 1]
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    return fps, tps, p[last]


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct score, starting from (0, 0)."""
    y, p = _as_arrays(labels, scores)
    n_fake = int(y.sum())
    n_real = y.size - n_fake
    if not n_fake or not n_real:
        raise ValueError("a ROC curve needs both REAL and FAKE labels")
    fps, tps, thresholds = _cumulative_counts(y, p)
    fpr = np.r_[0.0, fps / n_real]
    tpr = np.r_[0.0, tps / n_fake]
    return fpr, tpr, np.r_[np.inf, thresholds]


def roc_auc(labels, scores) -> float | None:
    y, _ = _as_arrays(labels, scores)
    if y.size == 0 or y.min() == y.max():
        return None
    fpr, tpr, _ = roc_curve(labels, scores)
    # Trapezoids between ROC points; a tie spanning both labels becomes a diagonal step.
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def average_precision(labels, scores) -> float | None:
    """Area under the precision-recall steps: sum over thresholds of (R_k - R_k-1) * P_k."""
    y, p = _as_arrays(labels, scores)
    n_fake = int(y.sum())
    if y.size == 0 or n_fake == 0 or n_fake == y.size:
        return None
    fps, tps, _ = _cumulative_counts(y, p)
    precisions = tps / (tps + fps)
    recall_steps = np.diff(np.r_[0, tps]) / n_fake
    return float(np.sum(recall_steps * precisions))


def log_loss(labels, scores, *, eps: float = LOG_LOSS_EPS) -> float | None:
    """Mean binary cross-entropy in nats, probabilities clipped to [eps, 1 - eps]."""
    y, p = _as_arrays(labels, scores)
    if y.size == 0:
        return None
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def chance_log_loss(fake_fraction: float) -> float | None:
    """The log loss of always answering the label prior: what a model must beat.

    0.693 on a balanced set, 0.441 on DFDC's natural mix of about 1 REAL to 5.2 FAKE."""
    if not 0.0 <= fake_fraction <= 1.0 or math.isnan(fake_fraction):
        return None
    if fake_fraction in (0.0, 1.0):
        return 0.0
    q = fake_fraction
    return float(-(q * math.log(q) + (1 - q) * math.log(1 - q)))


def summarize(labels, scores, *, threshold: float = THRESHOLD) -> dict[str, Any]:
    """Every figure of one set of predictions: the block ``metrics.json`` holds per level."""
    y, p = _as_arrays(labels, scores)
    n, n_fake = int(y.size), int(y.sum())
    cm = confusion_matrix(y, p, threshold=threshold)
    fake_fraction = n_fake / n if n else None
    return {
        "n": n,
        "n_fake": n_fake,
        "n_real": n - n_fake,
        "accuracy": accuracy(y, p, threshold=threshold),
        "precision": precision(y, p, threshold=threshold) if n else None,
        "recall": recall(y, p, threshold=threshold) if n else None,
        "f1": f1(y, p, threshold=threshold) if n else None,
        "auc": roc_auc(y, p),
        "ap": average_precision(y, p),
        "log_loss": log_loss(y, p),
        "log_loss_eps": LOG_LOSS_EPS,
        "fake_fraction": fake_fraction,
        "chance_log_loss": chance_log_loss(fake_fraction) if n else None,
        "confusion_matrix": cm.tolist(),
        "threshold": threshold,
    }


def labelled(columns: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The rows of a prediction table whose label is known, as numpy arrays.

    ``columns`` maps column names to sequences (a ``pyarrow.Table.to_pydict()`` or a dict of
    arrays); a label of None marks a video scored without ground truth (``dfd predict``)."""
    labels = list(columns["label"])
    keep = np.array([v is not None for v in labels], dtype=bool)
    out = {"label": np.array([v for v in labels if v is not None], dtype=np.int64)}
    for name in ("p_fake", "part"):
        if name in columns:
            out[name] = np.asarray(columns[name])[keep] if len(labels) else np.asarray([])
    return out


def evaluate(frames: Mapping[str, Any], videos: Mapping[str, Any], *,
             threshold: float = THRESHOLD) -> dict[str, Any]:
    """``metrics.json``: frame level, video level, and video level per part.

    Both arguments map column names (``label``, ``p_fake``, ``part``) to sequences; rows
    without a label are left out of the figures."""
    f = labelled(frames)
    v = labelled(videos)
    per_part = {}
    for part in sorted({int(x) for x in v.get("part", ())}):
        rows = v["part"] == part
        per_part[str(part)] = summarize(v["label"][rows], v["p_fake"][rows],
                                        threshold=threshold)
    return {
        "frame": summarize(f["label"], f["p_fake"], threshold=threshold),
        "video": summarize(v["label"], v["p_fake"], threshold=threshold),
        "per_part": per_part,
    }


def format_summary(block: Mapping[str, Any]) -> str:
    """One line for a terminal, with the label balance beside the log loss it qualifies."""
    def fmt(x):
        return "-" if x is None else f"{x:.4f}"

    return (f"n={block['n']} (fake {block['n_fake']}, real {block['n_real']})  "
            f"acc={fmt(block['accuracy'])} prec={fmt(block['precision'])} "
            f"rec={fmt(block['recall'])} f1={fmt(block['f1'])} auc={fmt(block['auc'])} "
            f"ap={fmt(block['ap'])}  log_loss={fmt(block['log_loss'])} "
            f"(chance {fmt(block['chance_log_loss'])} at {fmt(block['fake_fraction'])} fake)")
