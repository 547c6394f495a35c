"""A training run's settings check and its records in the run dir (``dfd.run_dir`` names them),
without Ray: what ``ray_jobs.train`` writes before, during and after training.

    check_config        settings that cannot train, refused before anything starts
    write_run_config    config.json, refusing to continue a run made with other settings or data
    record_attempt      attempts.json: each (re)start of the worker group
    epoch_record        one history.json entry; write_history writes them all
    TensorBoardLog      per-epoch scalars for TensorBoard (tensorboardX)
    write_plots         the training curves as PNGs
    keep_selected       the chosen epoch's model files, carried from checkpoint to checkpoint
    export_selected     the chosen epoch's model copied to <run>/model, and selection.json
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from dfd import config as dfd_config
from dfd import curves, model_selection, storage
from dfd import run_dir as rundir
from dfd.config import TrainConfig
from dfd.errors import DfdError

METRICS = ("loss", "accuracy", "precision", "recall", "auc")
# Settings a continued run may change; any other difference means a different experiment.
RESUMABLE_CHANGES = frozenset({"epochs", "workers", "gpus_per_worker", "cpus_per_worker",
                               "max_failures", "checkpoints_to_keep"})


def model_options(cfg: TrainConfig) -> dict:
    """The options ``dfd.models.build_model`` gets for cfg's model."""
    options = {"dropout": cfg.dropout}
    if cfg.model != "paper_cnn":
        options["weights"] = "imagenet" if cfg.pretrained else None
    return options


def check_config(cfg: TrainConfig) -> None:
    """Raise DfdError for settings that cannot train, before any data is read."""
    from dfd import models
    from dfd.augment import parse_augment

    if cfg.model not in models.MODELS:
        raise DfdError(f"unknown model {cfg.model!r}; one of {sorted(models.MODELS)}")
    try:
        parse_augment(cfg.augment)
    except ValueError as exc:
        raise DfdError(str(exc)) from None
    if cfg.workers < 1:
        raise DfdError(f"--workers must be at least 1, got {cfg.workers}")
    if cfg.epochs < 1:
        raise DfdError(f"--epochs must be at least 1, got {cfg.epochs}")
    try:
        model_selection.check(cfg)
    except ValueError as exc:
        raise DfdError(str(exc)) from None
    gpus = cfg.gpus_per_worker
    if cfg.workers > 1 and 0 < gpus < 1:
        # Collective all-reduce on GPUs goes through NCCL, which runs one rank per GPU.
        raise DfdError(f"--gpus-per-worker {gpus:g} with {cfg.workers} workers: workers "
                       f"sharing a GPU cannot all-reduce (NCCL runs one rank per GPU); give "
                       f"each worker whole GPUs or train on one worker")
    if gpus > 1 and gpus != int(gpus):
        raise DfdError(f"--gpus-per-worker {gpus:g}: above 1 it must be a whole number")
    replicas = cfg.workers * max(1, int(cfg.gpus_per_worker))
    if cfg.batch_size < replicas or cfg.batch_size % replicas:
        raise DfdError(f"--batch-size {cfg.batch_size} is the global batch: it must be a "
                       f"multiple of the {replicas} replicas (--workers x GPUs per worker)")


def write_run_config(run_dir: str, cfg: TrainConfig, *, data: str, data_hash: str,
                     counts: dict) -> None:
    """Write config.json, refusing to continue a run dir made with other settings or data."""
    uri = rundir.config_path(run_dir)
    previous = storage.read_text(uri)
    if previous:
        before = json.loads(previous)
        # A field added since the run was made counts as its default.
        defaults = dfd_config.to_dict(TrainConfig())
        changed = sorted(k for k, v in dfd_config.to_dict(cfg).items()
                         if k not in RESUMABLE_CHANGES
                         and before["train"].get(k, defaults[k]) != v)
        if before.get("data_manifest_hash") != data_hash:
            changed.append("data")
        if changed:
            raise DfdError(f"{run_dir} holds a run with other settings ({', '.join(changed)}); "
                           f"continue it with the same ones or choose a new --run-dir")
    text = json.dumps({"train": dfd_config.to_dict(cfg), "model_options": model_options(cfg),
                       "config_hash": dfd_config.config_hash(cfg, exclude=tuple(RESUMABLE_CHANGES)),
                       "data": data, "data_manifest_hash": data_hash, "data_counts": counts},
                      indent=2, sort_keys=True) + "\n"
    storage.write_bytes(uri, text.encode())


def record_attempt(run_dir: str, *, start_epoch: int, world: int) -> None:
    """Add this (re)start of the worker group to attempts.json."""
    attempts = read_attempts(run_dir)
    attempts.append({"attempt": len(attempts) + 1, "start_epoch": start_epoch, "workers": world,
                     "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    storage.write_bytes(rundir.attempts_path(run_dir),
                        (json.dumps(attempts, indent=1) + "\n").encode())


def read_attempts(run_dir: str) -> list[dict]:
    return json.loads(storage.read_text(rundir.attempts_path(run_dir)) or "[]")


def epoch_record(epoch: int, train: dict, validation: dict, *, seconds: float, images: int,
                 val_seconds: float, learning_rate: float | None = None,
                 steps: int | None = None, replicas: int | None = None) -> dict:
    """One history entry: the paper's metrics for train and validation, the epoch's learning
    rate, its steps and replicas (each step is one global batch over all replicas), the speed."""
    def pick(logs: dict) -> dict:
        # 'bce' is the weighted loss; Keras' 'loss' would count validation padding.
        return {name: float(logs["bce" if name == "loss" else name]) for name in METRICS}

    return {"epoch": epoch, **pick(train), **{f"val_{k}": v for k, v in pick(validation).items()},
            "lr": learning_rate, "steps": steps, "replicas": replicas,
            "seconds": round(seconds, 3), "val_seconds": round(val_seconds, 3),
            "train_images": images,
            "images_per_s": round(images / seconds, 2) if seconds > 0 else None}


def write_history(run_dir: str, history: list[dict]) -> None:
    storage.write_bytes(rundir.history_path(run_dir),
                        (json.dumps(history, indent=1) + "\n").encode())


class TensorBoardLog:
    """Per-epoch scalars for TensorBoard (``<run>/tensorboard/{train,validation}``), written by
    tensorboardX into a local folder and copied to the run dir, so that an s3:// or gs:// run
    dir gets them too. Each epoch is its own event file: tensorboardX writes from a background
    queue that only ``close`` drains, and the epoch must be on disk before it is copied."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.local = tempfile.mkdtemp(prefix="dfd-tensorboard-")

    def write(self, record: dict) -> None:
        """Add one history entry's metrics at step epoch + 1, and copy its event files."""
        from tensorboardX import SummaryWriter

        step = record["epoch"] + 1
        for kind, prefix in zip(rundir.TENSORBOARD_KINDS, ("", "val_")):
            folder = Path(self.local, kind, f"epoch-{step}")
            with SummaryWriter(str(folder), filename_suffix=f".epoch-{step:05d}") as writer:
                for name in METRICS:
                    writer.add_scalar(name, record[prefix + name], global_step=step)
                if kind == "train" and record.get("lr") is not None:
                    writer.add_scalar("learning_rate", record["lr"], global_step=step)
            for event_file in sorted(folder.iterdir()):
                storage.write_bytes(rundir.tensorboard_file(self.run_dir, kind, event_file.name),
                                    event_file.read_bytes())
            shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.local, ignore_errors=True)


def write_plots(run_dir: str, history: list[dict]) -> list[str]:
    """The training curves as PNGs under <run>/plots; their URIs."""
    written = []
    for name, png in curves.training_curves(history).items():
        uri = rundir.plot_path(run_dir, name)
        storage.write_bytes(uri, png)
        written.append(uri)
    return written


def export_model(directory: str | Path, run_dir: str) -> None:
    """Copy a checkpoint folder's model (model.json + weights.h5) to <run>/model."""
    from dfd.models import MODEL_JSON, WEIGHTS_H5

    # Weights first: a reader that sees model.json finds the weights beside it.
    for name in (WEIGHTS_H5, MODEL_JSON):
        storage.write_bytes(rundir.model_file(run_dir, name), (Path(directory) / name).read_bytes())


def keep_selected(directory: str | Path, *, epoch: int) -> dict:
    """The model a checkpoint folder holds, in memory, as the epoch chosen so far: every later
    checkpoint carries it (``write_selected``), so a resumed run can still export it."""
    from dfd.models import MODEL_JSON, WEIGHTS_H5

    return {"epoch": epoch,
            "files": {n: (Path(directory) / n).read_bytes() for n in (MODEL_JSON, WEIGHTS_H5)}}


def write_selected(directory: str | Path, kept: dict) -> None:
    """Put the chosen epoch's model into a checkpoint folder (its ``selected/``)."""
    from dfd.models import SELECTED

    folder = Path(directory) / SELECTED
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in kept["files"].items():
        (folder / name).write_bytes(data)
    (folder / "epoch.json").write_text(json.dumps({"epoch": kept["epoch"]}) + "\n")


def read_selected(directory: str | Path) -> dict | None:
    """What ``write_selected`` put into a checkpoint folder; None for a checkpoint without it."""
    from dfd.models import SELECTED

    folder = Path(directory) / SELECTED
    if not (folder / "epoch.json").is_file():
        return None
    epoch = json.loads((folder / "epoch.json").read_text())["epoch"]
    return keep_selected(folder, epoch=epoch)


def export_selected(directory: str | Path, run_dir: str, cfg: TrainConfig,
                    history: list[dict]) -> dict:
    """Export the chosen epoch's model from the final checkpoint folder to <run>/model and say
    which epoch it is and why in <run>/selection.json; that record."""
    from dfd.models import SELECTED, TRAINER_JSON

    kept = read_selected(directory)
    if kept is None:  # a checkpoint written before model selection: its own, last, model
        export_model(directory, run_dir)
        exported = json.loads((Path(directory) / TRAINER_JSON).read_text())["epoch"]
    else:
        export_model(Path(directory) / SELECTED, run_dir)
        exported = kept["epoch"]
    record = model_selection.selection_record(cfg, history, exported_epoch=exported)
    storage.write_bytes(rundir.selection_path(run_dir),
                        (json.dumps(record, indent=1) + "\n").encode())
    return record
