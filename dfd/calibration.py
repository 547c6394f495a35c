"""Temperature scaling of video scores and the accuracy threshold, fitted on the validation split.

    dfd calibrate --data DATA --run-dir RUN        scores the validation split, writes
                                                   <run>/calibration.json
    dfd infer ... --calibration temperature [--threshold validation]
    dfd predict ... --calibration temperature [--threshold validation]

Temperature scaling (Guo et al., 2017) divides each score's logit by one number T, fitted to
the lowest log loss on the validation videos: ``p' = sigmoid(logit(p) / T)``. T > 1 softens an
over-confident model, T < 1 sharpens a timid one; the order of the scores, and so AUC, stays.
It acts on the model's video scores, after the crops are aggregated (the score Kaggle judged),
identically in ``dfd infer`` and ``dfd predict``; crop scores and fallback scores (a video the
pipeline could not score) are left as they are. The threshold that calls a video FAKE
(p > threshold) is 0.5 unless ``--threshold validation`` takes the one of highest validation
accuracy, which ``calibration.json`` holds for raw and for calibrated scores.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence

import numpy as np

from dfd import metrics, storage
from dfd import run_dir as rundir
from dfd.errors import DfdError

METHODS = ("none", "temperature")
RELIABILITY_BINS = 10
LOG_T_RANGE = (math.log(0.05), math.log(20.0))  # the golden-section search's bracket
THRESHOLD_RULE = "highest validation accuracy; nearest 0.5 among equals"


def apply_temperature(scores, temperature: float) -> np.ndarray:
    """``sigmoid(logit(p) / T)``, with p clipped as the log loss clips it."""
    eps = metrics.LOG_LOSS_EPS
    p = np.clip(np.asarray(scores, np.float64), eps, 1 - eps)
    return 1.0 / (1.0 + np.exp(-np.log(p / (1 - p)) / temperature))


def fit_temperature(labels, scores, *, iterations: int = 80) -> float:
    """The T of least log loss, by golden-section search on log T (the loss is unimodal in
    it for the affine-free scaling fitted here)."""
    y = np.asarray(labels, np.int64)

    def loss(log_t: float) -> float:
        return metrics.log_loss(y, apply_temperature(scores, math.exp(log_t)))

    lo, hi = LOG_T_RANGE
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(iterations):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = loss(b)
    return math.exp((lo + hi) / 2)


def choose_threshold(labels, scores) -> float:
    """The threshold of highest accuracy (FAKE when p > threshold) on these scores: 0.5 or a
    midpoint between two neighbouring scores, the nearest 0.5 among equals."""
    y, p = np.asarray(labels, np.int64), np.asarray(scores, np.float64)
    levels = np.unique(p)
    candidates = np.unique(np.r_[0.5, (levels[1:] + levels[:-1]) / 2, levels[0] - 1e-9])
    accuracy = ((p[None, :] > candidates[:, None]) == y[None, :]).mean(axis=1)
    best = np.flatnonzero(accuracy == accuracy.max())
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


def reliability(labels, scores, *, bins: int = RELIABILITY_BINS) -> list[dict]:
    """Per equal-width score bin: its bounds, how many videos, their mean score and the share
    of them that are FAKE (a calibrated model has the two equal)."""
    y, p = np.asarray(labels, np.float64), np.asarray(scores, np.float64)
    which = np.minimum((p * bins).astype(np.int64), bins - 1)
    out = []
    for b in range(bins):
        rows = which == b
        n = int(rows.sum())
        out.append({"lo": b / bins, "hi": (b + 1) / bins, "n": n,
                    "mean_p_fake": float(p[rows].mean()) if n else None,
                    "fake_rate": float(y[rows].mean()) if n else None})
    return out


def model_fingerprint(run_dir: str) -> str:
    """A hash of the exported weights: calibration.json belongs to that model alone."""
    from dfd.models import WEIGHTS_H5

    with storage.open_read(rundir.model_file(run_dir, WEIGHTS_H5)) as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def fit(videos: Sequence[dict], *, aggregation: str, model: str, data: str) -> dict:
    """``calibration.json`` from the validation split's video predictions: the temperature,
    the log loss and reliability before and after, and the threshold for each method."""
    scored = [v for v in videos if v.get("scored_by", "model") == "model"
              and v["label"] is not None]
    y = np.array([v["label"] for v in scored], np.int64)
    p = np.array([v["p_fake"] for v in scored], np.float64)
    if len(set(y.tolist())) < 2:
        raise DfdError(f"calibration needs REAL and FAKE validation videos scored by the "
                       f"model; there are {int((y == 0).sum())} REAL and {int(y.sum())} FAKE")
    temperature = fit_temperature(y, p)
    calibrated = apply_temperature(p, temperature)
    raw_threshold = choose_threshold(y, p)
    return {
        "method": "temperature", "temperature": temperature,
        "applies_to": "the model's video scores, after aggregation; fallback scores unchanged",
        "aggregation": aggregation, "model": model, "model_fingerprint": None, "data": data,
        "fitted_on": {"split": "validation", "videos": len(y), "n_fake": int(y.sum()),
                      "n_real": int((y == 0).sum())},
        "log_loss": {"before": metrics.log_loss(y, p), "after": metrics.log_loss(y, calibrated)},
        # Temperature scaling keeps the order of the scores: the same calls, mapped.
        "threshold": {"none": raw_threshold,
                      "temperature": float(apply_temperature([raw_threshold], temperature)[0]),
                      "rule": THRESHOLD_RULE,
                      "accuracy": metrics.accuracy(y, p, threshold=raw_threshold)},
        "reliability": {"before": reliability(y, p), "after": reliability(y, calibrated)},
    }


def read_videos(directory: str) -> list[dict]:
    """The video predictions of an evaluation folder (``dfd.evaluation``'s files)."""
    import pyarrow.parquet as pq

    from dfd import output_tree, report

    fs, path = storage.resolve(output_tree.join(directory, report.VIDEO_PREDICTIONS))
    return pq.read_table(path, filesystem=fs).to_pylist()


def write(run_dir: str, fitted: dict) -> dict:
    """``<run>/calibration.json``, tied to the exported model by its weights' hash."""
    fitted = {**fitted, "model_fingerprint": model_fingerprint(run_dir)}
    storage.write_bytes(rundir.calibration_path(run_dir),
                        (json.dumps(fitted, indent=1) + "\n").encode())
    return fitted


@dataclasses.dataclass(frozen=True)
class Calibration:
    """What ``dfd infer`` and ``dfd predict`` apply: a method and the threshold they call at."""
    method: str  # none | temperature
    temperature: float  # 1.0 for none
    threshold: float
    threshold_source: str  # "0.5", or where a validation threshold came from

    def apply(self, scores) -> np.ndarray:
        if self.method == "none":
            return np.asarray(scores, np.float64)
        return apply_temperature(scores, self.temperature)

    @property
    def is_default(self) -> bool:
        """Raw scores called at 0.5: nothing to apply or report."""
        return self.method == "none" and self.threshold == metrics.THRESHOLD

    @property
    def raw_threshold(self) -> float:
        """The same call on uncalibrated scores (crop scores): the threshold mapped back."""
        if self.method == "none":
            return self.threshold
        return float(apply_temperature([self.threshold], 1 / self.temperature)[0])

    def apply_to_videos(self, videos: Sequence[dict]) -> tuple[list[dict], dict]:
        """The video records with the model's scores calibrated (fallback scores kept), and
        ``metrics.json["calibration"]``."""
        model = [i for i, v in enumerate(videos) if v.get("scored_by", "model") == "model"]
        raw = np.array([videos[i]["p_fake"] for i in model], np.float64)
        calibrated = self.apply(raw)
        out = [dict(v) for v in videos]
        for i, p in zip(model, calibrated):
            out[i]["p_fake"] = float(p)
        known = [k for k, i in enumerate(model) if videos[i]["label"] is not None]
        labels = [videos[model[k]]["label"] for k in known]
        return out, metrics_block(labels, raw[known], calibrated[known], self)


def resolve(run_dir: str, *, method: str, threshold: str, aggregation: str) -> Calibration:
    """The calibration ``--calibration`` and ``--threshold`` ask for, from the run's
    calibration.json where they need it; one-line DfdErrors for what cannot be applied."""
    if method not in METHODS:
        raise DfdError(f"unknown --calibration {method!r}; one of {list(METHODS)}")
    fitted = None
    if method != "none" or threshold == "validation":
        text = storage.read_text(rundir.calibration_path(run_dir))
        if not text:
            asked = f"--calibration {method}" if method != "none" else "--threshold validation"
            raise DfdError(f"{asked}: {run_dir} has no {rundir.CALIBRATION}; fit one first "
                           f"with `dfd calibrate --data DATA --run-dir {run_dir}`")
        fitted = json.loads(text)
        if fitted.get("model_fingerprint") != model_fingerprint(run_dir):
            raise DfdError(f"{rundir.calibration_path(run_dir)} was fitted to another model "
                           f"than {rundir.model_dir(run_dir)}; run `dfd calibrate` again")
        if fitted["aggregation"] != aggregation:
            raise DfdError(f"{rundir.calibration_path(run_dir)} was fitted on "
                           f"{fitted['aggregation']}-aggregated scores; use --aggregation "
                           f"{fitted['aggregation']} or calibrate again with {aggregation}")
    if threshold == "validation":
        value = float(fitted["threshold"][method])
        source = f"chosen on validation ({fitted['threshold']['rule']})"
    else:
        try:
            value = float(threshold)
        except ValueError:
            raise DfdError(f"--threshold must be a probability or 'validation', got "
                           f"{threshold!r}") from None
        if not 0 < value < 1:
            raise DfdError(f"--threshold must be between 0 and 1, got {threshold}")
        source = "given"
    return Calibration(method=method,
                       temperature=float(fitted["temperature"]) if method != "none" else 1.0,
                       threshold=value, threshold_source=source)


def metrics_block(labels, raw, calibrated, calibration: Calibration) -> dict:
    """``metrics.json["calibration"]``: the method, temperature and threshold, and the log
    loss and reliability of the evaluated videos (labelled, scored by the model) before and
    after."""
    y = np.asarray(labels, np.int64)
    block = {"method": calibration.method, "temperature": calibration.temperature,
             "threshold": calibration.threshold,
             "threshold_source": calibration.threshold_source,
             "applies_to": "the model's video scores, after aggregation", "videos": len(y)}
    if len(y):
        block["log_loss"] = {"before": metrics.log_loss(y, raw),
                             "after": metrics.log_loss(y, calibrated)}
        block["reliability"] = {"before": reliability(y, raw),
                                "after": reliability(y, calibrated)}
    return block
