"""Train a face-crop classifier on face shards with Ray Train.

    dfd train --data DATA --run-dir RUN [--preset smoke] [--model paper_cnn] [--workers 2]

``TensorflowTrainer`` runs ``train_loop_per_worker`` on every worker under
MultiWorkerMirroredStrategy. Each worker reads its own equal share of the Parquet shards (see
``dfd.train_input``); every epoch reports train and validation metrics with a checkpoint
(weights and optimizer state) to ``<run>/ray``. A failed worker group is restarted from the last
checkpoint (``FailureConfig``), and running the same command again on the same run dir continues
from there too. The run dir ends up holding (``dfd.run_dir`` names every file):

    <run>/model/               the chosen epoch's model (dfd.models.load_model reads it)
    <run>/selection.json       which epoch that is (--select: lowest val_loss by default,
                               highest val_auc, or the last) and whether training stopped early
    <run>/history.json         one dict per epoch: loss, accuracy, precision, recall, auc, val_*,
                               lr (the epoch's learning rate), steps, replicas
    <run>/config.json          TrainConfig, the data URI and the data manifest's hash
    <run>/attempts.json        each (re)start of the worker group and the epoch it started at
    <run>/tensorboard/         TensorBoard scalars (train/ and validation/)
    <run>/plots/*.png          the paper's Figs. 3 and 4 (and the loss)
    <run>/ray/                 Ray Train's checkpoints

Every checkpoint also carries the chosen epoch's model (``selected/``), and the learning-rate
schedule and early stopping are functions of the history it holds (``dfd.model_selection``), so
a resumed run exports, schedules and stops as it would have without the restart.

Only the Ray mechanism lives here; the checks, the run's records, model selection and the input
pipeline are Ray-free (``dfd.training_run``, ``dfd.model_selection``, ``dfd.train_input``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import ray
import ray.train
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.collective import broadcast_from_rank_zero
from ray.train.tensorflow import TensorflowTrainer

from dfd import config as dfd_config
from dfd import manifest, model_selection, models, storage, train_input, training_run
from dfd import run_dir as rundir
from dfd.config import TrainConfig
from dfd.errors import DfdError
from ray_jobs import local_ray

log = logging.getLogger(__name__)

# Test-only: this many logical CPUs per worker, each one replica, so that the multi-replica
# batch arithmetic a worker with several GPUs runs also runs on a CPU-only machine.
CPU_REPLICAS_ENV = "DFD_CPU_REPLICAS_PER_WORKER"


# ---- on each worker ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Worker:
    """This worker's place in the group and how it batches."""
    rank: int
    world: int
    strategy: object  # tf.distribute.MultiWorkerMirroredStrategy
    threads: int
    replica_batch: int  # examples per replica (GPU) per step
    worker_batch: int  # examples per worker per step: its replicas' batches together


def setup_worker(cfg: TrainConfig) -> Worker:
    """Threads, GPU memory, seeds and the distribution strategy, before the TF runtime starts."""
    import tensorflow as tf
    import tf_keras as keras

    ctx = ray.train.get_context()
    threads = max(1, int(cfg.cpus_per_worker))
    # One worker per core must not spawn a thread per core.
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(max(2, threads))
    for gpu in tf.config.list_physical_devices("GPU"):
        # A worker on one GPU (--workers 1 --gpus-per-worker 0.5) must not reserve all of it.
        tf.config.experimental.set_memory_growth(gpu, True)
    cpu_replicas = int(os.environ.get(CPU_REPLICAS_ENV, "0"))
    if cpu_replicas > 1:
        _replicate_on_cpus(cpu_replicas)
    keras.utils.set_random_seed(cfg.seed)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    world = ctx.get_world_size()
    # batch_size is global; a worker feeds its local replicas (GPUs) one batch each per step.
    replica_batch = cfg.batch_size // strategy.num_replicas_in_sync
    return Worker(rank=ctx.get_world_rank(), world=world, strategy=strategy, threads=threads,
                  replica_batch=replica_batch,
                  worker_batch=replica_batch * (strategy.num_replicas_in_sync // world))


def _replicate_on_cpus(replicas: int) -> None:
    """Split this worker's CPU into ``replicas`` logical devices and have
    MultiWorkerMirroredStrategy mirror onto them as it does onto a worker's GPUs (on CPUs it
    always takes one device per worker). Only the strategy's choice of local devices changes:
    the collectives, the per-replica batches and the input distribution are TF's own."""
    import tensorflow as tf
    from tensorflow.python.distribute import collective_all_reduce_strategy as collective

    [cpu] = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    extended = collective.CollectiveAllReduceExtended
    one_per_worker = extended._initialize_local_devices

    def local_devices(self, cluster_resolver, worker_device):
        devices, kind = one_per_worker(self, cluster_resolver, worker_device)
        if kind != "CPU":
            return devices, kind
        return tuple(f"{worker_device}/device:CPU:{i}" for i in range(replicas)), kind

    extended._initialize_local_devices = local_devices


def build_model(cfg: TrainConfig, worker: Worker):
    """The compiled model, restored from Ray's last checkpoint if there is one; returns
    (model, first epoch to train, history so far, the chosen epoch's model kept so far)."""
    with worker.strategy.scope():
        model = models.build_model(cfg.model, **training_run.model_options(cfg))
        models.compile_classifier(model, learning_rate=cfg.learning_rate)
    checkpoint = ray.train.get_checkpoint()
    if not checkpoint:
        return model, 0, [], None
    with checkpoint.as_directory() as directory, worker.strategy.scope():
        state = models.restore_training_state(model, directory)
        kept = training_run.read_selected(directory)
    return model, state["epoch"] + 1, state["history"], kept


def build_dataset(index: train_input.FaceIndex, rows, weights, worker: Worker, *,
                  training: bool, augment=None, seed: int = 0):
    """This worker's rows as a distributed dataset, one batch per replica per step."""
    return worker.strategy.distribute_datasets_from_function(
        lambda _: train_input.face_dataset(index, rows, weights,
                                           batch_size=worker.replica_batch, training=training,
                                           augment=augment, seed=seed,
                                           threads=max(2, worker.threads)))


def train_epoch(model, dataset, *, steps: int, epoch: int) -> tuple[dict, float]:
    """One epoch of training; (the epoch's metrics, seconds)."""
    started = time.perf_counter()
    fit = model.fit(dataset, steps_per_epoch=steps, epochs=epoch + 1, initial_epoch=epoch,
                    verbose=0)
    return {k: v[-1] for k, v in fit.history.items()}, time.perf_counter() - started


def evaluate(model, dataset, *, steps: int) -> tuple[dict, float]:
    """The metrics on the validation rows; (metrics, seconds)."""
    started = time.perf_counter()
    logs = model.evaluate(dataset, steps=steps, verbose=0, return_dict=True)
    return logs, time.perf_counter() - started


def report_epoch(model, cfg: TrainConfig, worker: Worker, record: dict, history: list[dict],
                 kept: dict | None, *, run_dir: str,
                 tensorboard: training_run.TensorBoardLog | None) -> dict:
    """Report the epoch's metrics with a checkpoint to Ray; rank 0 then writes the side files.
    Returns the chosen epoch's model as kept from now on (this epoch's, if it is chosen)."""
    with tempfile.TemporaryDirectory(prefix="dfd-ckpt-") as directory:
        # Every worker writes (reading some variables is collective); rank 0's is kept.
        models.save_training_state(model, directory, name=cfg.model,
                                   options=training_run.model_options(cfg),
                                   trainer={"epoch": record["epoch"], "history": history})
        if kept is None or model_selection.selected_epoch(cfg, history) == record["epoch"]:
            kept = training_run.keep_selected(directory, epoch=record["epoch"])
        training_run.write_selected(directory, kept)
        ray.train.report(record, checkpoint=Checkpoint.from_directory(directory)
                         if worker.rank == 0 else None)
    if worker.rank == 0:
        # Ray registers a reported checkpoint asynchronously; once it has, a restart resumes
        # after this epoch, and only then does history.json list it.
        ray.train.get_all_reported_checkpoints()
        training_run.write_history(run_dir, history)
        tensorboard.write(record)
    return kept


def train_loop_per_worker(loop_config: dict) -> None:
    """One worker's training: build or restore the model, then train, evaluate and report."""
    cfg = dfd_config.from_dict(TrainConfig, loop_config["train_config"])
    train_index: train_input.FaceIndex = loop_config["train_index"]
    val_index: train_input.FaceIndex = loop_config["validation_index"]
    run_dir = loop_config["run_dir"]
    worker = setup_worker(cfg)
    model, start_epoch, history, kept = build_model(cfg, worker)
    if worker.rank == 0:
        training_run.record_attempt(run_dir, start_epoch=start_epoch, world=worker.world)

    augment = None
    if cfg.augment and cfg.augment != "none":
        from dfd.augment import build_augmenter
        augment = build_augmenter(cfg.augment, seed=cfg.seed + worker.rank)
    # Validation is one fixed selection (balanced like the first epoch), the same every epoch.
    val_rows, val_weights = train_input.worker_rows(
        val_index, train_input.epoch_rows(val_index, epoch=0, rebalance=cfg.rebalance),
        rank=worker.rank, world=worker.world, epoch=0, seed=cfg.seed, shuffle=False, pad=True,
        multiple=worker.worker_batch)
    val_steps = len(val_rows) // worker.worker_batch
    tensorboard = training_run.TensorBoardLog(run_dir) if worker.rank == 0 else None
    try:
        for epoch in range(start_epoch, cfg.epochs):
            if model_selection.early_stop(cfg, history):
                break
            rate = model_selection.learning_rate(cfg, epoch, history)
            model.optimizer.learning_rate.assign(rate)
            rows, weights = train_input.worker_rows(
                train_index,
                train_input.epoch_rows(train_index, epoch=epoch, rebalance=cfg.rebalance),
                rank=worker.rank, world=worker.world, epoch=epoch, seed=cfg.seed, shuffle=True,
                pad=False)
            steps = len(rows) // worker.worker_batch
            train_logs, seconds = train_epoch(
                model, build_dataset(train_index, rows, weights, worker, training=True,
                                     augment=augment, seed=cfg.seed * 7919 + epoch),
                steps=steps, epoch=epoch)
            val_logs, val_seconds = evaluate(
                model, build_dataset(val_index, val_rows, val_weights, worker, training=False),
                steps=val_steps)
            # The schedule, selection and early stopping read these: every worker must read
            # rank 0's, or the workers' learning rates could part.
            val_logs = broadcast_from_rank_zero(
                {k: float(v) for k, v in val_logs.items()} if worker.rank == 0 else None)
            record = training_run.epoch_record(
                epoch, train_logs, val_logs, seconds=seconds, images=steps * cfg.batch_size,
                val_seconds=val_seconds, learning_rate=rate, steps=steps,
                replicas=worker.strategy.num_replicas_in_sync)
            history = [h for h in history if h["epoch"] < epoch] + [record]
            kept = report_epoch(model, cfg, worker, record, history, kept, run_dir=run_dir,
                                tensorboard=tensorboard)
    finally:
        if tensorboard is not None:
            tensorboard.close()


# ---- on the driver -----------------------------------------------------------------------------

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


def _ray_storage(run_dir: str) -> dict:
    """Ray Train's storage arguments for run_dir: a bucket goes with dfd.storage's filesystem,
    which follows the standard variables (Ray's own would send gs:// to the real GCS under
    STORAGE_EMULATOR_HOST)."""
    if storage.is_local(run_dir):
        return {"storage_path": run_dir}
    fs, path = storage.resolve(run_dir)
    return {"storage_path": path, "storage_filesystem": fs}


def _root_cause(exc: BaseException) -> str:
    """The last 'SomeError: message' line of a worker's traceback, for a one-line error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    causes = [line for line in lines if line.split(":", 1)[0].split(".")[-1].endswith("Error")]
    return causes[-1] if causes else (lines[-1] if lines else type(exc).__name__)


def fit(run_dir: str, cfg: TrainConfig, train_index: train_input.FaceIndex,
        val_index: train_input.FaceIndex, *, address: str | None) -> Checkpoint:
    """Run the worker group to the last epoch; the final checkpoint."""
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
                name=rundir.RAY, **_ray_storage(run_dir),
                failure_config=FailureConfig(max_failures=cfg.max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoints_to_keep),
                worker_runtime_env={"env_vars": {
                    "TF_CPP_MIN_LOG_LEVEL": "2",
                    CPU_REPLICAS_ENV: os.environ.get(CPU_REPLICAS_ENV, "0")}}))
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
    return result.checkpoint


def run(data: str, run_dir: str, cfg: TrainConfig, *, address: str | None = None) -> dict:
    """Train (or continue training) into run_dir; return a summary of the finished run."""
    training_run.check_config(cfg)
    if storage.is_local(run_dir):
        run_dir = str(storage.local_path(run_dir).absolute())
    train_index, val_index = train_input.load_indexes(
        data, seed=cfg.seed, workers=cfg.workers, batch_size=cfg.batch_size,
        rebalance=cfg.rebalance)
    counts = {i.split: train_input.describe(i) for i in (train_index, val_index)}
    data_hash = manifest.content_hash(manifest.read(data, required=True))
    training_run.write_run_config(run_dir, cfg, data=data, data_hash=data_hash, counts=counts)
    log.info("training %s on %d train / %d validation crops with %d workers into %s",
             cfg.model, len(train_index), len(val_index), cfg.workers, run_dir)

    checkpoint = fit(run_dir, cfg, train_index, val_index, address=address)
    with checkpoint.as_directory() as directory:
        history = json.loads((Path(directory) / models.TRAINER_JSON).read_text())["history"]
        selection = training_run.export_selected(directory, run_dir, cfg, history)
    training_run.write_history(run_dir, history)
    plots = training_run.write_plots(run_dir, history)
    log.info("exported epoch %d: %s", selection["epoch"], selection["reason"])
    return {"run_dir": run_dir, "model_dir": rundir.model_dir(run_dir),
            "epochs": len(history), "final": history[-1], "plots": plots,
            "selection": selection, "attempts": training_run.read_attempts(run_dir)}
