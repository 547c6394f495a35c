"""From a study's scored crops to what ``dfd infer`` writes for one model: frame and video
predictions and ``metrics.json``, computed the same way (``dfd.aggregate``, ``dfd.metrics``).

A study scores the held-out crops once with every model it compares (``ray_jobs.study``);
this module turns one model's column of scores into that model's evaluation folder.
"""
from __future__ import annotations

import json
from typing import Mapping, Sequence

import numpy as np

import schemas
from dfd import aggregate, metrics, output_tree, report, shards, storage

REJECTED_CROPS = "rejected_crops.json"


def frame_records(crops: Mapping[str, np.ndarray], p_fake: np.ndarray, *, model: str
                  ) -> list[dict]:
    """FRAME_PREDICTION records of the crops that were scored (a NaN score is a crop that did
    not decode), in the order of ``crops`` (sorted by the caller)."""
    out = []
    for i in np.flatnonzero(np.isfinite(p_fake)):
        out.append({"video": str(crops["video"][i]), "part": int(crops["part"][i]),
                    "frame_index": int(crops["frame_index"][i]),
                    "face_index": int(crops["face_index"][i]), "label": int(crops["label"][i]),
                    "p_fake": float(p_fake[i]), "model": model})
    return out


def evaluate_model(frames: Sequence[dict], *, model: str, rule: str,
                   faceless: Sequence[Mapping] = ()) -> tuple[list[dict], dict]:
    """Video records and ``metrics.evaluate`` of one model's frame records; ``faceless``
    videos (no face found by the preprocessing) are scored 0.5 and counted, as by dfd infer."""
    columns = {k: [f[k] for f in frames] for k in ("video", "part", "label", "p_fake")}
    videos = aggregate.video_records(columns, model=model, rule=rule, faceless=faceless)
    evaluated = metrics.evaluate(columns, {k: [v[k] for v in videos]
                                           for k in ("label", "p_fake", "part")})
    return videos, evaluated


def write_evaluation(directory: str, frames: Sequence[dict], videos: Sequence[dict],
                     evaluated: dict, *, rejected: Sequence[dict] = ()) -> None:
    """The files of a ``dfd infer`` output folder; ``metrics.json`` last, since its presence
    is what marks the folder complete."""
    for name, records, schema in ((report.FRAME_PREDICTIONS, frames, schemas.FRAME_PREDICTION),
                                  (report.VIDEO_PREDICTIONS, videos, schemas.VIDEO_PREDICTION)):
        storage.write_bytes(output_tree.join(directory, name),
                            shards.parquet_bytes(records, schema))
    if rejected:
        storage.write_bytes(output_tree.join(directory, REJECTED_CROPS),
                            (json.dumps(list(rejected), indent=1) + "\n").encode())
    storage.write_bytes(output_tree.join(directory, report.METRICS),
                        (json.dumps(evaluated, indent=2, sort_keys=True) + "\n").encode())


def read_evaluation(directory: str) -> dict | None:
    text = storage.read_text(output_tree.join(directory, report.METRICS))
    return json.loads(text) if text else None
