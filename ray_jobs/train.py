"""Train a face-crop classifier on face shards with Ray Train.

    dfd train --data DATA --run-dir RUN [--preset smoke] [--model paper_cnn] [--workers 2]

``TensorflowTrainer`` runs ``train_loop_per_worker`` on every worker under
MultiWorkerMirroredStrategy. Each worker reads its own equal share of the Parquet shards (see
``dfd.train_input``); every epoch reports train and validation metrics with a checkpoint
(weights and optimizer state) to ``<run>/ray``. A failed worker group is restarted from the last
checkpoint (``FailureConfig``), and running the same command again on the same run dir continues
from there too. The run dir ends up holding:

    <run>/model/               the final model (dfd.models.load_model reads it)
    <run>/history.json         one dict per epoch: loss, accuracy, precision, recall, auc, val_*
    <run>/config.json          TrainConfig, the data URI and the data manifest's hash
    <run>/attempts.json        each (re)start of the worker group and the epoch it started at
    <run>/tensorboard/         TensorBoard scalars (train/ and validation/)
    <run>/plots/*.png          the paper's Figs. 3 and 4 (and the loss)
    <run>/ray/                 Ray Train's checkpoints
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import ray
import ray.train
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.tensorflow import TensorflowTrainer

from dfd import config as dfd_config
from dfd import curves, manifest, models, output_tree, storage, train_input
from dfd.config import TrainConfig
from dfd.errors import DfdError
from ray_jobs import local_ray

log = logging.getLogger(__name__)

RAY_RUN_NAME = "ray"
MODEL_DIR = "model"
HISTORY_JSON = "history.json"
CONFIG_JSON = "config.json"
ATTEMPTS_JSON = "attempts.json"
TENSORBOARD_DIR = "tensorboard"
PLOTS_DIR = "plots"
METRICS = ("loss", "accuracy", "precision", "recall", "auc")
# Settings a continued run may change; any other difference means a different experiment.
RESUMABLE_CHANGES = frozenset({"epochs", "workers", "gpus_per_worker", "cpus_per_worker",
                               "max_failures", "checkpoints_to_keep"})


def model_options(cfg: TrainConfig) -> dict:
    options = {"dropout": cfg.dropout}
    if cfg.model != "paper_cnn":
        options["weights"] = "imagenet" if cfg.pretrained else None
    return options


# ---- on each worker ----------------------------------------------------------------------------

def train_loop_per_worker(loop_config: dict) -> None:
    """One worker's training: build or restore the model, then train, evaluate and report."""
    import tensorflow as tf
    import tf_keras as keras

    cfg = dfd_config.from_dict(TrainConfig, loop_config["train_config"])
    train_index: train_input.FaceIndex = loop_config["train_index"]
    val_index: train_input.FaceIndex = loop_config["validation_index"]
    run_dir = loop_config["run_dir"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    threads = max(1, int(cfg.cpus_per_worker))
    # Before the TF runtime starts: one worker per core must not spawn a thread per core.
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(max(2, threads))
    for gpu in tf.config.list_physical_devices("GPU"):
        # Workers sharing a GPU (--gpus-per-worker 0.5) must not each reserve all its memory.
        tf.config.experimental.set_memory_growth(gpu, True)
    keras.utils.set_random_seed(cfg.seed)

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    options = model_options(cfg)
    with strategy.scope():
        model = models.build_model(cfg.model, **options)
        models.compile_classifier(model, learning_rate=cfg.learning_rate)

    start_epoch, history = 0, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory, strategy.scope():
            trainer_state = models.restore_training_state(model, directory)
        start_epoch, history = trainer_state["epoch"] + 1, trainer_state["history"]
    if rank == 0:
        _record_attempt(run_dir, start_epoch=start_epoch, world=world)

    # batch_size is global; a worker feeds its local replicas (GPUs) one batch each per step.
    replica_batch = cfg.batch_size // strategy.num_replicas_in_sync
    worker_batch = replica_batch * (strategy.num_replicas_in_sync // world)
    augment = None
    if cfg.augment and cfg.augment != "none":
        from dfd.augment import build_augmenter
        augment = build_augmenter(cfg.augment, seed=cfg.seed + rank)

    # Validation is one fixed selection (balanced like the first epoch), the same every epoch.
    val_rows, val_weights = train_input.worker_rows(
        val_index, train_input.epoch_rows(val_index, epoch=0, rebalance=cfg.rebalance),
        rank=rank, world=world, epoch=0, seed=cfg.seed, shuffle=False, pad=True)
    val_steps = -(-len(val_rows) // worker_batch)
    tensorboard = TensorBoardLog(run_dir) if rank == 0 else None

    for epoch in range(start_epoch, cfg.epochs):
        rows, weights = train_input.worker_rows(
            train_index, train_input.epoch_rows(train_index, epoch=epoch, rebalance=cfg.rebalance),
            rank=rank, world=world, epoch=epoch, seed=cfg.seed, shuffle=True, pad=False)
        steps = len(rows) // worker_batch
        train_ds = strategy.distribute_datasets_from_function(
            lambda _: train_input.face_dataset(train_index, rows, weights,
                                               batch_size=replica_batch, training=True,
                                               augment=augment, seed=cfg.seed * 7919 + epoch,
                                               threads=max(2, threads)))
        started = time.perf_counter()
        fit = model.fit(train_ds, steps_per_epoch=steps, epochs=epoch + 1, initial_epoch=epoch,
                        verbose=0)
        seconds = time.perf_counter() - started
        val_ds = strategy.distribute_datasets_from_function(
            lambda _: train_input.face_dataset(val_index, val_rows, val_weights,
                                               batch_size=replica_batch, training=False,
                                               threads=max(2, threads)))
        started = time.perf_counter()
        val = model.evaluate(val_ds, steps=val_steps, verbose=0, return_dict=True)
        record = epoch_record(epoch, {k: v[-1] for k, v in fit.history.items()}, val,
                              seconds=seconds, images=steps * cfg.batch_size,
                              val_seconds=time.perf_counter() - started)
        history = [h for h in history if h["epoch"] < epoch] + [record]

        with tempfile.TemporaryDirectory(prefix="dfd-ckpt-") as directory:
            # Every worker writes (reading some variables is collective); rank 0's is kept.
            models.save_training_state(model, directory, name=cfg.model, options=options,
                                       trainer={"epoch": epoch, "history": history})
            ray.train.report(record, checkpoint=Checkpoint.from_directory(directory)
                             if rank == 0 else None)
        if rank == 0:
            # Ray registers a reported checkpoint asynchronously; once it has, a restart resumes
            # after this epoch, and only then does history.json list it.
            ray.train.get_all_reported_checkpoints()
            _write_progress(run_dir, history, tensorboard)
    if tensorboard is not None:
        tensorboard.close()


def epoch_record(epoch: int, train: dict, validation: dict, *, seconds: float, images: int,
                 val_seconds: float) -> dict:
    """One history entry: the paper's metrics for train and validation, and the speed."""
    def pick(logs: dict) -> dict:
        # 'bce' is the weighted loss; Keras' 'loss' would count validation padding.
        return {name: float(logs["bce" if name == "loss" else name]) for name in METRICS}

    return {"epoch": epoch, **pick(train), **{f"val_{k}": v for k, v in pick(validation).items()},
            "seconds": round(seconds, 3), "val_seconds": round(val_seconds, 3),
            "train_images": images,
            "images_per_s": round(images / seconds, 2) if seconds > 0 else None}


class TensorBoardLog:
    """Per-epoch scalars for TensorBoard, written locally and copied to ``<run>/tensorboard``
    (TensorFlow's own file layer cannot write to s3://)."""

    def __init__(self, run_dir: str):
        import tensorflow as tf

        self.run_dir = run_dir
        self.local = tempfile.mkdtemp(prefix="dfd-tensorboard-")
        self.writers = {kind: tf.summary.create_file_writer(os.path.join(self.local, kind))
                        for kind in ("train", "validation")}

    def write(self, record: dict) -> None:
        import tensorflow as tf

        metadata = _scalar_metadata()
        for kind, prefix in (("train", ""), ("validation", "val_")):
            with self.writers[kind].as_default():
                for name in METRICS:
                    # tf.summary.scalar needs the tensorboard package; this is the same event
                    # (a float32 tensor tagged for the scalars plugin) without it.
                    tf.summary.write(name, tf.constant(record[prefix + name], tf.float32),
                                     step=record["epoch"] + 1, metadata=metadata)
            self.writers[kind].flush()
            for event_file in Path(self.local, kind).iterdir():
                storage.write_bytes(
                    output_tree.join(self.run_dir, TENSORBOARD_DIR, kind, event_file.name),
                    event_file.read_bytes())


    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        shutil.rmtree(self.local, ignore_errors=True)


def _write_progress(run_dir: str, history: list[dict], tensorboard: TensorBoardLog) -> None:
    storage.write_bytes(output_tree.join(run_dir, HISTORY_JSON),
                        (json.dumps(history, indent=1) + "\n").encode())
    tensorboard.write(history[-1])


def _scalar_metadata():
    from tensorflow.core.framework import summary_pb2

    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))


def _record_attempt(run_dir: str, *, start_epoch: int, world: int) -> None:
    uri = output_tree.join(run_dir, ATTEMPTS_JSON)
    attempts = json.loads(storage.read_text(uri) or "[]")
    attempts.append({"attempt": len(attempts) + 1, "start_epoch": start_epoch, "workers": world,
                     "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    storage.write_bytes(uri, (json.dumps(attempts, indent=1) + "\n").encode())


# ---- on the driver -----------------------------------------------------------------------------

def check_config(cfg: TrainConfig) -> None:
    if cfg.model not in models.MODELS:
        raise DfdError(f"unknown model {cfg.model!r}; one of {sorted(models.MODELS)}")
    from dfd.augment import parse_augment

    try:
        parse_augment(cfg.augment)
    except ValueError as exc:
        raise DfdError(str(exc)) from None
    if cfg.workers < 1:
        raise DfdError(f"--workers must be at least 1, got {cfg.workers}")
    if cfg.epochs < 1:
        raise DfdError(f"--epochs must be at least 1, got {cfg.epochs}")
    replicas = cfg.workers * max(1, int(cfg.gpus_per_worker))
    if cfg.batch_size < replicas or cfg.batch_size % replicas:
        raise DfdError(f"--batch-size {cfg.batch_size} is the global batch: it must be a "
                       f"multiple of the {replicas} replicas (--workers x GPUs per worker)")


def load_indexes(data: str, cfg: TrainConfig) -> tuple[train_input.FaceIndex,
                                                       train_input.FaceIndex]:
    train = train_input.build_index(data, "train", seed=cfg.seed)
    validation = train_input.build_index(data, "validation", seed=cfg.seed)
    for index in (train, validation):
        if not len(index):
            raise DfdError(f"{data} has no committed {index.split} face records")
        if len(set(index.label.tolist())) < 2:
            raise DfdError(f"{data}: the {index.split} records are all of one label; "
                           f"training needs REAL and FAKE crops")
    per_worker = len(train_input.epoch_rows(train, epoch=0, rebalance=cfg.rebalance)) \
        // cfg.workers
    if per_worker < cfg.batch_size // cfg.workers:
        raise DfdError(f"{len(train)} train crops are too few for a global batch of "
                       f"{cfg.batch_size} on {cfg.workers} workers")
    return train, validation


def write_run_config(run_dir: str, cfg: TrainConfig, *, data: str, data_hash: str,
                     counts: dict) -> None:
    """Write config.json, refusing to continue a run dir made with other settings or data."""
    uri = output_tree.join(run_dir, CONFIG_JSON)
    previous = storage.read_text(uri)
    if previous:
        before = json.loads(previous)
        changed = sorted(k for k, v in dfd_config.to_dict(cfg).items()
                         if k not in RESUMABLE_CHANGES and before["train"].get(k) != v)
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


def init_ray(address: str | None, cfg: TrainConfig) -> bool:
    """Connect to ``address`` or start a local Ray on 127.0.0.1 (no dashboard); True when
    this call started Ray, so the caller shuts it down."""
    if not local_ray.init(address):
        return False
    if address:
        return True
    # A local Ray never grows: asking for more than it has would wait forever.
    resources = ray.cluster_resources()
    for kind, per_worker, flag in (("CPU", cfg.cpus_per_worker, "--cpus-per-worker"),
                                   ("GPU", cfg.gpus_per_worker, "--gpus-per-worker")):
        need, have = cfg.workers * per_worker, resources.get(kind, 0)
        if need > have:
            ray.shutdown()
            raise DfdError(f"{cfg.workers} workers x {per_worker:g} {kind}s need {need:g} "
                           f"{kind}s; this machine has {have:g} (lower --workers or {flag})")
    return True


def export_model(checkpoint: Checkpoint, run_dir: str) -> None:
    """Copy the last checkpoint's model (model.json + weights.h5) to <run>/model."""
    with checkpoint.as_directory() as directory:
        # Weights first: a reader that sees model.json finds the weights beside it.
        for name in (models.WEIGHTS_H5, models.MODEL_JSON):
            storage.write_bytes(output_tree.join(run_dir, MODEL_DIR, name),
                                (Path(directory) / name).read_bytes())


def write_plots(run_dir: str, history: list[dict]) -> list[str]:
    written = []
    for name, png in curves.training_curves(history).items():
        uri = output_tree.join(run_dir, PLOTS_DIR, name)
        storage.write_bytes(uri, png)
        written.append(uri)
    return written


def _root_cause(exc: BaseException) -> str:
    """The last 'SomeError: message' line of a worker's traceback, for a one-line error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    causes = [line for line in lines if line.split(":", 1)[0].split(".")[-1].endswith("Error")]
    return causes[-1] if causes else (lines[-1] if lines else type(exc).__name__)


def run(data: str, run_dir: str, cfg: TrainConfig, *, address: str | None = None) -> dict:
    """Train (or continue training) into run_dir; return a summary of the finished run."""
    check_config(cfg)
    if storage.is_local(run_dir):
        run_dir = str(storage.local_path(run_dir).absolute())
    train_index, val_index = load_indexes(data, cfg)
    counts = {i.split: train_input.describe(i) for i in (train_index, val_index)}
    data_hash = manifest.content_hash(train_input.read_manifest(data))
    write_run_config(run_dir, cfg, data=data, data_hash=data_hash, counts=counts)
    log.info("training %s on %d train / %d validation crops with %d workers into %s",
             cfg.model, len(train_index), len(val_index), cfg.workers, run_dir)

    started_ray = init_ray(address, cfg)
    try:
        use_gpu = cfg.gpus_per_worker > 0
        resources = {"CPU": cfg.cpus_per_worker}
        if use_gpu:
            resources["GPU"] = cfg.gpus_per_worker
        trainer = TensorflowTrainer(
            train_loop_per_worker,
            train_loop_config={"train_config": dfd_config.to_dict(cfg), "run_dir": run_dir,
                               "train_index": train_index, "validation_index": val_index},
            scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=use_gpu,
                                         resources_per_worker=resources),
            run_config=RunConfig(
                name=RAY_RUN_NAME, storage_path=run_dir,
                failure_config=FailureConfig(max_failures=cfg.max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoints_to_keep),
                worker_runtime_env={"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2"}}))
        try:
            result = trainer.fit()
        except ray.train.TrainingFailedError as exc:
            log.debug("training failed", exc_info=True)
            raise DfdError(f"training failed (after {cfg.max_failures} restarts from the last "
                           f"checkpoint): {_root_cause(exc)}") from exc
    finally:
        if started_ray:
            ray.shutdown()

    if result.checkpoint is None:
        raise DfdError("training finished without a checkpoint")
    export_model(result.checkpoint, run_dir)
    with result.checkpoint.as_directory() as directory:
        history = json.loads((Path(directory) / models.TRAINER_JSON).read_text())["history"]
    storage.write_bytes(output_tree.join(run_dir, HISTORY_JSON),
                        (json.dumps(history, indent=1) + "\n").encode())
    plots = write_plots(run_dir, history)
    return {"run_dir": run_dir, "model_dir": output_tree.join(run_dir, MODEL_DIR),
            "epochs": len(history), "final": history[-1], "plots": plots,
            "attempts": json.loads(storage.read_text(output_tree.join(run_dir, ATTEMPTS_JSON))
                                   or "[]")}
