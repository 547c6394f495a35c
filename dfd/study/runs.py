"""Where a study's training runs and evaluations live, so that studies share and reuse them.

A run is identified by everything that shapes the model it ends with: the training settings
(seed included) and the data's manifest hash. Its folder under the runs root is named from
that key, so the augmentation study's ``none`` run, the backbone study's ``paper_cnn`` run and
the baseline of the occlusion and split studies are one run when their settings agree, trained
once. A run is finished when its ``study-run.json`` (``dfd.run_dir``) is there; an unfinished
one is handed back to ``dfd train``, which continues it from its last checkpoint.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json

from dfd import config as dfd_config
from dfd import output_tree, storage
from dfd import run_dir as rundir
from dfd.config import TrainConfig
from dfd.errors import DfdError

# Settings that change how a run is executed, not the model it ends with.
OPERATIONAL = ("cpus_per_worker", "gpus_per_worker", "max_failures", "checkpoints_to_keep")


def run_key(cfg: TrainConfig, data_hash: str) -> str:
    settings = {k: v for k, v in dfd_config.to_dict(cfg).items() if k not in OPERATIONAL}
    blob = json.dumps({"train": settings, "data": data_hash}, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def run_dir(runs_root: str, cfg: TrainConfig, data_hash: str) -> str:
    """``<runs>/<model>-<augment>-e<epochs>-s<seed>-<key>``: readable, and unique by key."""
    augment = cfg.augment.replace("+", "_")
    name = f"{cfg.model}-{augment}-e{cfg.epochs}-s{cfg.seed}-{run_key(cfg, data_hash)}"
    return output_tree.join(runs_root, name)


@dataclasses.dataclass(frozen=True)
class FinishedRun:
    run_dir: str
    train: TrainConfig
    history: list[dict]
    reused: bool  # finished by an earlier study or command, not trained now
    seconds: float | None = None  # wall time of the training, start-up included

    @property
    def seed(self) -> int:
        return self.train.seed


def read_finished(run_dir: str) -> FinishedRun | None:
    text = storage.read_text(rundir.study_finished_path(run_dir))
    if not text:
        return None
    record = json.loads(text)
    return FinishedRun(run_dir, dfd_config.from_dict(TrainConfig, record["train"]),
                       record["history"], reused=True, seconds=record.get("seconds"))


def mark_finished(run_dir: str, cfg: TrainConfig, history: list[dict], *, key: str,
                  seconds: float) -> FinishedRun:
    record = {"key": key, "train": dfd_config.to_dict(cfg), "history": history,
              "seconds": round(seconds, 1)}
    storage.write_bytes(rundir.study_finished_path(run_dir),
                        (json.dumps(record, indent=1, sort_keys=True) + "\n").encode())
    return FinishedRun(run_dir, cfg, history, reused=False, seconds=round(seconds, 1))


def trained_elsewhere(run_dir: str) -> FinishedRun:
    """A run dir of `dfd train` given by the user: its settings and history as recorded."""
    text = storage.read_text(rundir.config_path(run_dir))
    if not text:
        raise DfdError(f"{run_dir} has no {rundir.CONFIG}: is it the run dir of `dfd train`?")
    cfg = dfd_config.from_dict(TrainConfig, json.loads(text).get("train", {}))
    history = json.loads(storage.read_text(rundir.history_path(run_dir)) or "[]")
    return FinishedRun(run_dir, cfg, history, reused=True)


def eval_dir(run_dir: str, *, name: str, data_hash: str, aggregation: str,
             faceless: bool) -> str:
    """Where a run's predictions on one evaluation set go: the set's name, its data and how
    videos are scored are in the folder name, so a changed setting never reads stale figures."""
    suffix = "" if faceless else "-facesonly"
    return rundir.eval_dir(run_dir, f"{name}-{aggregation}{suffix}-{data_hash}")
