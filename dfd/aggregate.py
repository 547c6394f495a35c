"""Video-level aggregation rules: face-crop scores of one video -> the video's score.

Rules are looked up by name, so comparing them is a flag (``--aggregation``), not a fork:

    mean       the average crop score (default)
    median     robust to a few bad crops
    max        the most suspicious crop decides
    confident  the rule of the DFDC winner (Seferbekov): trust a confident majority

A video with no scored face gets ``NO_FACE_SCORE`` (0.5: no evidence either way) under every
rule, and is still counted in the metrics.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

FALLBACK_SCORE = 0.5  # no evidence either way: what a video the model cannot score gets
NO_FACE_SCORE = FALLBACK_SCORE
DEFAULT = "mean"

Rule = Callable[[np.ndarray], float]
_RULES: dict[str, Rule] = {}


def register(name: str) -> Callable[[Rule], Rule]:
    """Add a rule under ``name``; it receives a non-empty float64 array of crop scores."""
    def add(rule: Rule) -> Rule:
        if name in _RULES:
            raise ValueError(f"aggregation rule {name!r} is already registered")
        _RULES[name] = rule
        return rule
    return add


def names() -> tuple[str, ...]:
    return tuple(_RULES)


def get(name: str) -> Rule:
    try:
        return _RULES[name]
    except KeyError:
        raise ValueError(f"unknown aggregation rule {name!r}; one of {list(_RULES)}") from None


def aggregate(scores: Iterable[float], rule: str = DEFAULT) -> float:
    """The score of one video from the scores of its face crops."""
    fn = get(rule)
    p = np.asarray(list(scores) if not isinstance(scores, np.ndarray) else scores,
                   dtype=np.float64).ravel()
    if p.size == 0:
        return NO_FACE_SCORE
    return float(fn(p))


@register("mean")
def mean(p: np.ndarray) -> float:
    return float(p.mean())


@register("median")
def median(p: np.ndarray) -> float:
    return float(np.median(p))


@register("max")
def maximum(p: np.ndarray) -> float:
    return float(p.max())


# The winner's thresholds. It needs more than 11 confident crops, so with the paper's 5 frames
# per video only the second branch (a large confident-REAL majority) can ever fire.
CONFIDENT_FAKE = 0.8
CONFIDENT_REAL = 0.2
MIN_CONFIDENT_FAKES = 11
FAKE_SHARE_DIVISOR = 2.5
REAL_SHARE = 0.9


@register("confident")
def confident(p: np.ndarray) -> float:
    """If more than 11 crops, and more than n/2.5 of all n, score above 0.8: their mean; else
    if more than 90 % score below 0.2: their mean; else the mean of all.

    A single confident fake region is strong evidence, while real videos rarely look fake
    consistently; averaging only the confident side sharpens the score, which log loss
    rewards when it is right."""
    n = p.size
    fakes = p > CONFIDENT_FAKE
    n_fakes = int(fakes.sum())
    if n_fakes > MIN_CONFIDENT_FAKES and n_fakes > n / FAKE_SHARE_DIVISOR:
        return float(p[fakes].mean())
    reals = p < CONFIDENT_REAL
    if int(reals.sum()) > REAL_SHARE * n:
        return float(p[reals].mean())
    return float(p.mean())


def aggregate_videos(videos: Iterable[str], scores: Iterable[float],
                     rule: str = DEFAULT) -> dict[str, float]:
    """Group crop scores by video and aggregate each group; order of first appearance."""
    grouped: dict[str, list[float]] = {}
    for video, score in zip(videos, scores):
        grouped.setdefault(video, []).append(float(score))
    return {video: aggregate(s, rule) for video, s in grouped.items()}


def video_records(frames: Mapping[str, Sequence], *, model: str, rule: str = DEFAULT,
                  fallback: Iterable[Mapping] = (),
                  fallback_score: float = FALLBACK_SCORE) -> list[dict]:
    """``VIDEO_PREDICTION`` records, one per (part, video), sorted: the model's, from
    ``FRAME_PREDICTION`` columns (``scored_by`` model), and ``fallback_score`` for each
    ``fallback`` video without a scored crop (dicts with video, part, label and the reject
    ``reason``; ``scored_by`` fallback).

    ``frames`` maps column names to sequences, e.g. ``pyarrow.Table.to_pydict()``."""
    get(rule)  # fail on an unknown name before any work
    scores: dict[tuple[int, str], list[float]] = {}
    labels: dict[tuple[int, str], int | None] = {}
    reasons: dict[tuple[int, str], str] = {}
    for video, part, label, p in zip(frames["video"], frames["part"], frames["label"],
                                     frames["p_fake"]):
        key = (int(part), video)
        scores.setdefault(key, []).append(float(p))
        labels.setdefault(key, label)
    for row in fallback:
        key = (int(row["part"]), row["video"])
        if key not in scores and key not in reasons:
            labels[key] = row.get("label")
            reasons[key] = row.get("reason") or "no_face"
    out = []
    for key in sorted(set(scores) | set(reasons)):
        part, video = key
        scored = key in scores
        out.append({"video": video, "part": part, "label": labels[key],
                    "p_fake": aggregate(scores[key], rule) if scored else float(fallback_score),
                    "n_faces": len(scores.get(key, ())), "aggregation": rule, "model": model,
                    "scored_by": "model" if scored else "fallback",
                    "reason": None if scored else reasons[key]})
    return out
