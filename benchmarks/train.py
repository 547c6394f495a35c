"""Training throughput: the input pipeline alone, and training with 1 and 2 workers.

    .venv/bin/python -m benchmarks.train [--layouts 1x1,1x2,2x1] [--gpus-per-worker G] [--epochs 3]

Input rates are measured for the three ways to feed the workers that the design considered:
the one ``dfd.train_input`` uses (the Parquet shards' row groups read with pyarrow, decoded in
tf.data), tf.data over the TFRecord shards, and Ray Data over the Parquet shards. Training rates
are Keras ``fit`` images/s (global, all workers) on the epochs after the first (which traces the
graph), from the run's history, for each layout WORKERSxCPUS_PER_WORKER.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks import save

BATCH = 32


def _dataset(root: Path) -> dict:
    from dfd.synth.face_shards import write_face_shards

    return write_face_shards(root, parts=(0, 1), per_split={"train": 20, "validation": 4},
                             fakes_per_original=1, frames=8)


def _rate(batches, *, warmup: int = 2) -> float:
    """Images per second over an iterable of batches, after a few warm-up batches."""
    n, started = 0, None
    for i, batch in enumerate(batches):
        if i == warmup:
            n, started = 0, time.perf_counter()
        n += len(batch)
    if started is None:
        raise RuntimeError("too few batches to measure")
    return n / (time.perf_counter() - started)


def parquet_tfdata_rate(data: str) -> float:
    import numpy as np

    from dfd import train_input

    index = train_input.build_index(data, "train")
    rows, weights = train_input.worker_rows(index, np.arange(len(index)), rank=0, world=1,
                                            epoch=0, seed=0, shuffle=True, pad=False)
    ds = train_input.face_dataset(index, rows, weights, batch_size=BATCH, training=True)
    return _rate(x for x, _, _ in ds.repeat(2))


def tfrecord_tfdata_rate(data: str) -> float:
    import tensorflow as tf

    from dfd import output_tree
    from dfd.images import decode_crop_tensor

    spec = {"image": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64)}
    files = tf.io.gfile.glob(output_tree.shard_glob(data, "tfrecord", "train"))
    ds = (tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE)
          .shuffle(2048, seed=0)
          .map(lambda s: tf.io.parse_single_example(s, spec), num_parallel_calls=tf.data.AUTOTUNE)
          .map(lambda e: (decode_crop_tensor(e["image"]), e["label"]),
               num_parallel_calls=tf.data.AUTOTUNE)
          .batch(BATCH, drop_remainder=True).prefetch(tf.data.AUTOTUNE))
    return _rate(x for x, _ in ds.repeat(2))


def ray_data_rate(data: str) -> float:
    import ray

    from dfd import train_input
    from dfd.images import decode_crops

    files = train_input.find_shards(data, "train")
    ds = ray.data.read_parquet(files, partitioning=None).select_columns(["image", "label"])
    ds = ds.map_batches(lambda b: {"x": decode_crops(list(b["image"])), "y": b["label"]},
                        batch_size=BATCH, batch_format="numpy")
    return _rate(b["x"] for _ in range(2) for b in ds.iter_batches(batch_size=BATCH,
                                                                    batch_format="numpy"))


def training(data: str, *, workers: int, cpus_per_worker: float, gpus_per_worker: float,
             epochs: int) -> dict:
    from dfd import run_dir as rundir
    from dfd.config import TrainConfig
    from ray_jobs import train

    cfg = TrainConfig(epochs=epochs, batch_size=BATCH, workers=workers,
                      cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker,
                      max_failures=0)
    with tempfile.TemporaryDirectory(prefix="dfd-bench-run-") as run_dir:
        started = time.perf_counter()
        train.run(data, run_dir, cfg)
        wall = time.perf_counter() - started
        history = json.loads(Path(rundir.history_path(str(run_dir))).read_text())
    steady = history[1:] or history
    return {"images_per_s": round(statistics.median(h["images_per_s"] for h in steady), 1),
            "fit_s": round(statistics.median(h["seconds"] for h in steady), 2),
            "val_s": round(statistics.median(h["val_seconds"] for h in steady), 2),
            "first_epoch_s": history[0]["seconds"], "run_wall_s": round(wall, 1),
            "train_images_per_epoch": history[0]["train_images"], "epochs": len(history),
            "final_val_auc": round(history[-1]["val_auc"], 3)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="benchmarks.train")
    parser.add_argument("--layouts", default="1x1,1x2,2x1",
                        help="comma-separated WORKERSxCPUS_PER_WORKER to train with")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)

    import ray

    from dfd.config import TrainConfig
    from ray_jobs import train

    figures: dict = {"batch_size": BATCH, "gpus_per_worker": args.gpus_per_worker}
    with tempfile.TemporaryDirectory(prefix="dfd-bench-faces-") as data:
        counts = _dataset(Path(data))
        figures["train_crops"] = counts["records"]["train"]
        figures["input_images_per_s"] = {
            "parquet_rowgroups_tfdata": round(parquet_tfdata_rate(data), 1),
            "tfrecord_tfdata": round(tfrecord_tfdata_rate(data), 1)}
        layouts = [tuple(float(n) for n in layout.split("x")) for layout in args.layouts.split(",")]
        started_ray = train.init_ray(None, TrainConfig(workers=1))
        try:
            figures["input_images_per_s"]["ray_data_parquet"] = round(ray_data_rate(data), 1)
            figures["training"] = {}
            for workers, cpus in layouts:
                name = f"{int(workers)}_workers_x_{cpus:g}_cpus"
                figures["training"][name] = training(
                    data, workers=int(workers), cpus_per_worker=cpus,
                    gpus_per_worker=args.gpus_per_worker, epochs=args.epochs)
                print(f"{name}: {figures['training'][name]}", flush=True)
        finally:
            if started_ray:
                ray.shutdown()
    fastest_training = max(t["images_per_s"] for t in figures["training"].values())
    figures["input_over_training"] = round(
        figures["input_images_per_s"]["parquet_rowgroups_tfdata"] / fastest_training, 2)
    path = save("train", figures)
    print(json.dumps(figures, indent=2))
    print(f"wrote {path}")
    return figures


if __name__ == "__main__":
    main()
