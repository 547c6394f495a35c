"""Ray Data batch inference against a plain single-process loop over the same shards.

    .venv/bin/python -m benchmarks.infer [--crops 768] [--shards 12] [--batch-size 128] [--rounds 3]

Both paths read the same Parquet face shards, decode the crops (``dfd.images.decode_crops``)
and score them with the same model (paper_cnn). Figures are images per second:

* ``plain``: one process, the model loaded once, ``model.predict`` per batch;
  ``plain_direct_call`` calls the model as the actors do (``dfd.predict.score_crops``).
* ``ray_1_actor`` / ``ray_2_actors``: ``ray_jobs.infer.scored_batches`` on a local Ray.
  ``*_end_to_end`` counts from submitting the job to the last batch (actor start-up, which
  loads TensorFlow and the model, included); ``*_steady`` is the rate a long job converges
  to (see ``measure``).

The target on one node: Ray with one actor at least 0.8 of plain.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import save

NAME = "infer"


def _write_shards(root: Path, *, crops: int, shards: int) -> list[str]:
    """One Parquet test shard per part, ``crops // shards`` face crops in each, half of them
    from fakes (``dfd.synth.face_shards``)."""
    from dfd import output_tree as ot
    from dfd import shards as shard_io
    from dfd.synth.face_shards import face_records

    per_shard = crops // shards
    frames = 8  # each original and its fake give 2 * frames crops
    files = []
    for s in range(shards):
        rows = face_records(part=s, split="test", originals=-(-per_shard // (2 * frames)),
                            fakes_per_original=1, frames=frames)[:per_shard]
        path = Path(ot.shard_path(str(root), "parquet", s, "test", 0, 1))
        path.parent.mkdir(parents=True, exist_ok=True)
        shard_io.write_parquet(rows, str(path))
        files.append(str(path))
    return files


def _untrained_run_dir(run: Path, model: str = "paper_cnn") -> Path:
    """A run dir holding a seeded, untrained model as `dfd train` saves one: the benchmark
    measures throughput, which training does not change."""
    import tf_keras as keras

    from dfd import run_dir as rundir
    from dfd.models import build_model, save_model

    keras.utils.set_random_seed(0)
    save_model(build_model(model), rundir.model_dir(str(run)), name=model, options={})
    return run


def plain_images_per_second(files: list[str], run_dir: Path, batch_size: int, *,
                            direct_call: bool = False) -> dict:
    import pyarrow.parquet as pq

    from dfd import run_dir as rundir
    from dfd.images import decode_crops
    from dfd.models import load_model

    model = load_model(rundir.model_dir(str(run_dir)))
    model.predict(np.zeros((1, 256, 256, 3), np.float32), verbose=0)  # build before timing
    n = 0
    start = time.perf_counter()
    for path in files:
        images = pq.read_table(path, columns=["image"])["image"].to_pylist()
        for i in range(0, len(images), batch_size):
            x = decode_crops(images[i:i + batch_size])
            if direct_call:  # what the actors do (dfd.predict.score_crops)
                model(x, training=False)
            else:
                model.predict(x, batch_size=batch_size, verbose=0)
            n += len(x)
    seconds = time.perf_counter() - start
    return {"images": n, "seconds": round(seconds, 2), "images_per_s": round(n / seconds, 1)}


def ray_run(files: list[str], run_dir: Path, *, actors: int, batch_size: int) -> dict:
    """One Ray Data job over the files, timed from submission to its last batch."""
    from dfd.config import InferConfig
    from dfd.predict import read_model_files
    from ray_jobs.infer import scored_batches

    model_files, name = read_model_files(str(run_dir))
    cfg = InferConfig(batch_size=batch_size, actors=actors)
    total_bytes = sum(Path(f).stat().st_size for f in files)
    n = 0
    start = time.perf_counter()
    for batch in scored_batches(files, model_files, name, cfg, total_bytes=total_bytes):
        n += len(batch["p_fake"])
    return {"images": n, "seconds": round(time.perf_counter() - start, 2)}


def _best(runs: list[dict]) -> dict:
    return min(runs, key=lambda r: r["seconds"])


def measure(files: list[str], run_dir: Path, batch_size: int, rounds: int) -> dict:
    """Every configuration ``rounds`` times, interleaved, keeping each one's fastest run: on
    a shared machine the load drifts, and the fastest run is the least disturbed one.

    Ray's steady rate comes from two job sizes: a job's time is start-up (actors loading
    TensorFlow and the model) plus images / rate, so the rate is the difference in images
    over the difference in seconds of a job over a third of the shards and one over all."""
    import ray

    from ray_jobs.local_ray import init as init_ray

    runs: dict[str, list[dict]] = {}
    figures: dict = {"load_average_before": os.getloadavg()[0], "rounds": rounds}
    started = init_ray()
    try:
        for r in range(rounds):
            runs.setdefault("plain", []).append(
                plain_images_per_second(files, run_dir, batch_size))
            runs.setdefault("plain_direct_call", []).append(
                plain_images_per_second(files, run_dir, batch_size, direct_call=True))
            for actors in (1, 2):
                for size, subset in (("small", files[:len(files) // 3]), ("full", files)):
                    runs.setdefault(f"ray_{actors}_{size}", []).append(
                        ray_run(subset, run_dir, actors=actors, batch_size=batch_size))
            print(f"round {r + 1}/{rounds}: " + ", ".join(
                f"{k} {v[-1]['seconds']}s" for k, v in runs.items()), flush=True)
    finally:
        if started:
            ray.shutdown()
    for key in ("plain", "plain_direct_call"):
        best = _best(runs[key])
        figures[key] = {**best, "images_per_s": round(best["images"] / best["seconds"], 1),
                        "all_seconds": [x["seconds"] for x in runs[key]]}
    for actors in (1, 2):
        small, full = _best(runs[f"ray_{actors}_small"]), _best(runs[f"ray_{actors}_full"])
        extra_s = full["seconds"] - small["seconds"]
        steady = (full["images"] - small["images"]) / extra_s if extra_s > 0 else None
        figures[f"ray_{actors}_actor{'s' if actors > 1 else ''}"] = {
            "images": full["images"], "seconds": full["seconds"],
            "images_per_s_end_to_end": round(full["images"] / full["seconds"], 1),
            "images_per_s_steady": None if steady is None else round(steady, 1),
            "startup_s": None if steady is None else round(
                small["seconds"] - small["images"] / steady, 1),
            "all_seconds_full": [x["seconds"] for x in runs[f"ray_{actors}_full"]],
            "all_seconds_small": [x["seconds"] for x in runs[f"ray_{actors}_small"]]}
    figures["load_average_after"] = os.getloadavg()[0]
    return figures


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.infer")
    parser.add_argument("--crops", type=int, default=768)
    parser.add_argument("--shards", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="dfd-bench-infer-") as tmp:
        files = _write_shards(Path(tmp, "data"), crops=args.crops, shards=args.shards)
        run_dir = _untrained_run_dir(Path(tmp, "run"))
        figures = {"crops": args.crops, "shards": args.shards, "batch_size": args.batch_size,
                   "model": "paper_cnn", "cpus": os.cpu_count(),
                   **measure(files, run_dir, args.batch_size, args.rounds)}
    plain = figures["plain"]["images_per_s"]
    for key in ("ray_1_actor", "ray_2_actors"):
        steady = figures[key]["images_per_s_steady"]
        figures[f"{key}_steady_vs_plain"] = None if steady is None else round(steady / plain, 3)
        figures[f"{key}_end_to_end_vs_plain"] = round(
            figures[key]["images_per_s_end_to_end"] / plain, 3)
    print(f"plain model.predict {plain} images/s, direct call "
          f"{figures['plain_direct_call']['images_per_s']}; Ray 1 actor "
          f"{figures['ray_1_actor']['images_per_s_steady']} steady / "
          f"{figures['ray_1_actor']['images_per_s_end_to_end']} end to end; 2 actors "
          f"{figures['ray_2_actors']['images_per_s_steady']} / "
          f"{figures['ray_2_actors']['images_per_s_end_to_end']}")
    path = save(NAME, figures)
    print(f"ratios to plain model.predict: 1 actor {figures['ray_1_actor_steady_vs_plain']} "
          f"steady ({figures['ray_1_actor_end_to_end_vs_plain']} end to end), 2 actors "
          f"{figures['ray_2_actors_steady_vs_plain']} steady "
          f"({figures['ray_2_actors_end_to_end_vs_plain']} end to end) -> {path}")
    return figures


if __name__ == "__main__":
    main()
