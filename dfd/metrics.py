"""Classification metrics for FAKE-vs-REAL scores, at frame and at video level.

Plain numpy, so the library does not depend on scikit-learn; the tests check every figure
against scikit-learn on the same predictions. Labels follow Kaggle (1 = FAKE), scores are the
probability of FAKE. A score above ``THRESHOLD`` is a FAKE call, as in Keras' binary metrics,
so a video without a face (scored 0.5) counts as a REAL call.

Undefined figures (AUC and AP of a single-class set, anything of an empty set) are ``None``
rather than NaN, so that ``metrics.json`` stays valid JSON.

Video-level figures carry a 95 % interval (``ci95``) from a seeded bootstrap that resamples
videos with replacement within each label (stratified: every resample keeps the set's count
of FAKE and of REAL videos, so AUC is defined in each), and takes the 2.5th and 97.5th
percentiles of each figure over the resamples. The interval says how much the figure could
move on another draw of videos like these; it says nothing about another training run.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

THRESHOLD = 0.5
# Kaggle's DFDC metric clipped probabilities to [1e-15, 1 - 1e-15]: a single confident miss
# costs log(1e15) ~ 34.5 instead of infinity.
LOG_LOSS_EPS = 1e-15

# The label mix of the real DFDC training set (DESIGN.md): 100,000 FAKE of 119,154 videos.
DFDC_FAKE_FRACTION = 100_000 / 119_154

# The bootstrap of the video-level intervals. With 1000 resamples a bound moves between seeds
# by about 5 % of the interval's half-width (measured on 40 and 400 videos: sd 0.007 against a
# half-width of 0.11, 0.002 against 0.04), well below the digits the report prints; one seed
# makes every metrics.json reproducible.
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
CI_LEVEL = 0.95
CI_FIGURES = ("auc", "log_loss", "accuracy")
# A set too small for its figures to mean much: fewer labelled videos than this, or fewer of
# either label than SMALL_PER_LABEL (AUC then moves in steps of 1/(n_fake * n_real) and one
# video shifts accuracy by several points), or a 95 % AUC interval wider than SMALL_AUC_WIDTH.
SMALL_VIDEOS = 30
SMALL_PER_LABEL = 10
SMALL_AUC_WIDTH = 0.2
# Resamples are drawn and scored this many at a time: 50 x 119,154 videos (all of DFDC) is
# 48 MB of indices, and the AUC's per-resample histograms stay as small.
BOOTSTRAP_BLOCK = 50


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


def _index_blocks(y: np.ndarray, resamples: int, seed: int):
    """The stratified resamples, BOOTSTRAP_BLOCK rows at a time, each block from its own
    stream seeded by (seed, first row): memory stays bounded on any set size, and the draws
    do not depend on how they are consumed."""
    fake, real = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    for start in range(0, resamples, BOOTSTRAP_BLOCK):
        b = min(BOOTSTRAP_BLOCK, resamples - start)
        rng = np.random.default_rng([seed, start])
        draws = [group[rng.integers(0, group.size, size=(b, group.size))]
                 for group in (fake, real) if group.size]
        yield np.concatenate(draws, axis=1) if draws else np.zeros((b, 0), dtype=np.int64)


def bootstrap_indices(labels, *, resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """(resamples, n) row indices of a stratified bootstrap: each row draws the FAKE rows with
    replacement as many times as there are FAKEs, then the REAL rows likewise.

    Every row therefore holds exactly ``n_fake`` FAKE and ``n_real`` REAL rows, FAKEs first.
    The same labels and seed give the same indices (those ``bootstrap_intervals`` uses)."""
    y = np.asarray(labels, dtype=np.int64).ravel()
    return np.concatenate(list(_index_blocks(y, resamples, seed)))


def _resampled_auc(y: np.ndarray, rank: np.ndarray, levels: int,
                   idx: np.ndarray) -> np.ndarray:
    """The AUC of each resample (row of ``idx``, FAKEs first), as the Mann-Whitney statistic:
    the share of (FAKE, REAL) pairs the score orders right, ties counting one half. Equal to
    the trapezoidal ROC area; computed from per-resample histograms over the ``levels``
    distinct scores (``rank``: each row's level), not by sorting."""
    n_fake = int(y.sum())
    n_real = y.size - n_fake
    b, k = idx.shape[0], levels
    real_levels = rank[idx[:, n_fake:]] + k * np.arange(b)[:, None]
    equal = np.bincount(real_levels.ravel(), minlength=b * k).reshape(b, k)
    below = np.cumsum(equal, axis=1) - equal  # REALs scored strictly lower, per level
    fake_levels = rank[idx[:, :n_fake]]
    wins = (np.take_along_axis(below, fake_levels, axis=1)
            + 0.5 * np.take_along_axis(equal, fake_levels, axis=1)).sum(axis=1)
    return wins / (n_fake * n_real)


def bootstrap_intervals(labels, scores, *, threshold: float = THRESHOLD,
                        resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                        level: float = CI_LEVEL) -> dict[str, list[float] | None]:
    """``{"auc": [lo, hi], "log_loss": [lo, hi], "accuracy": [lo, hi]}``: percentile
    intervals of a stratified bootstrap over the rows (videos). AUC is None for a one-label
    set, everything None for an empty one."""
    y, p = _as_arrays(labels, scores)
    if not y.size:
        return {name: None for name in CI_FIGURES}
    q = np.clip(p, LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS)
    loss = -(y * np.log(q) + (1 - y) * np.log1p(-q))
    correct = ((p > threshold).astype(np.int64) == y).astype(np.float64)
    both = 0 < y.sum() < y.size
    levels, rank = np.unique(p, return_inverse=True)
    values: dict[str, list[np.ndarray]] = {"log_loss": [], "accuracy": [], "auc": []}
    for idx in _index_blocks(y, resamples, seed):
        values["log_loss"].append(loss[idx].mean(axis=1))
        values["accuracy"].append(correct[idx].mean(axis=1))
        if both:
            values["auc"].append(_resampled_auc(y, rank, levels.size, idx))
    tail = 100 * (1 - level) / 2
    return {name: ([float(v) for v in np.percentile(np.concatenate(values[name]),
                                                    [tail, 100 - tail])]
                   if values[name] else None) for name in CI_FIGURES}


def too_small(block: Mapping[str, Any]) -> str | None:
    """Why a summary block's figures mean little (too few videos, too few of one label, or a
    wide AUC interval), or None when they stand."""
    n = block.get("n") or 0
    few = min(block.get("n_fake") or 0, block.get("n_real") or 0)
    if n < SMALL_VIDEOS:
        return f"only {n} labelled videos (fewer than {SMALL_VIDEOS})"
    if few < SMALL_PER_LABEL:
        return (f"only {few} {'FAKE' if (block.get('n_fake') or 0) == few else 'REAL'} "
                f"videos (fewer than {SMALL_PER_LABEL} of a label)")
    auc = (block.get("ci95") or {}).get("auc")
    if auc is not None and auc[1] - auc[0] > SMALL_AUC_WIDTH:
        return f"its AUC interval is {auc[1] - auc[0]:.2f} wide (over {SMALL_AUC_WIDTH})"
    return None


def interval_digits(interval: Sequence[float] | None, *, n: int | None = None,
                    most: int = 4) -> int:
    """Decimals that an interval supports: two significant digits of its width (width 0.4:
    2 decimals, 0.04: 3), at least 1, at most ``most``. A set of ``n`` videos cannot know a
    figure finer than 1/n, so a narrower interval (all resamples agreeing, as when every
    video is right) counts as 1/n wide; ``most`` without an interval."""
    if not interval:
        return most
    width = max(interval[1] - interval[0], 1 / n if n else 0.0)
    if width <= 0:
        return most
    return int(min(most, max(1, 1 - math.floor(math.log10(width)))))


def format_interval(value: float | None, interval: Sequence[float] | None, *,
                    n: int | None = None, most: int = 4) -> str:
    """'0.81 [0.70, 0.90]': a figure and its interval at the precision the interval supports
    (``interval_digits``); '-' for an undefined figure; the figure alone at ``most`` decimals
    without interval."""
    if value is None:
        return "-"
    d = interval_digits(interval, n=n, most=most)
    text = f"{value:.{d}f}"
    if interval:
        text += f" [{interval[0]:.{d}f}, {interval[1]:.{d}f}]"
    return text


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


def summarize_videos(labels, scores, *, threshold: float = THRESHOLD,
                     resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """``summarize`` plus the bootstrap's ``ci95`` intervals: a video-level block."""
    block = summarize(labels, scores, threshold=threshold)
    block["ci95"] = bootstrap_intervals(labels, scores, threshold=threshold,
                                        resamples=resamples, seed=seed)
    return block


def evaluate(frames: Mapping[str, Any], videos: Mapping[str, Any], *,
             threshold: float = THRESHOLD, resamples: int = BOOTSTRAP_RESAMPLES,
             seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """``metrics.json``: frame level, video level, and video level per part; the video-level
    blocks carry bootstrap intervals (``ci95``), and ``bootstrap`` says how they were drawn.

    Both arguments map column names (``label``, ``p_fake``, ``part``) to sequences; rows
    without a label are left out of the figures. Frames are not resampled: the crops of one
    video are not independent draws, so a crop-level interval would be falsely narrow."""
    f = labelled(frames)
    v = labelled(videos)
    per_part = {}
    for part in sorted({int(x) for x in v.get("part", ())}):
        rows = v["part"] == part
        per_part[str(part)] = summarize_videos(v["label"][rows], v["p_fake"][rows],
                                               threshold=threshold, resamples=resamples,
                                               seed=seed)
    return {
        "frame": summarize(f["label"], f["p_fake"], threshold=threshold),
        "video": summarize_videos(v["label"], v["p_fake"], threshold=threshold,
                                  resamples=resamples, seed=seed),
        "per_part": per_part,
        "bootstrap": {"resamples": resamples, "seed": seed, "level": CI_LEVEL,
                      "unit": "video", "stratified_by": "label", "method": "percentile"},
    }


def format_summary(block: Mapping[str, Any]) -> str:
    """One line for a terminal, with the label balance beside the log loss it qualifies; a
    video-level block shows AUC, log loss and accuracy with their 95 % intervals, at the
    precision the intervals support."""
    ci = block.get("ci95") or {}

    def fmt(x, name=None):
        if name:
            return format_interval(x, ci.get(name), n=block.get("n"))
        return "-" if x is None else f"{x:.4f}"

    return (f"n={block['n']} (fake {block['n_fake']}, real {block['n_real']})  "
            f"acc={fmt(block['accuracy'], 'accuracy')} prec={fmt(block['precision'])} "
            f"rec={fmt(block['recall'])} f1={fmt(block['f1'])} auc={fmt(block['auc'], 'auc')} "
            f"ap={fmt(block['ap'])}  log_loss={fmt(block['log_loss'], 'log_loss')} "
            f"(chance {fmt(block['chance_log_loss'])} at {fmt(block['fake_fraction'])} fake)")
