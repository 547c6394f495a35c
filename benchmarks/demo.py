"""How stable `make demo`'s figures are across training seeds, and what the demo costs:

    .venv/bin/python -m benchmarks.demo [--seeds 0,1,2] [--workdir bench-work/demo]
    .venv/bin/python -m benchmarks.demo --collect W0 W1 W2   # demo workdirs already run

The first seed runs `dfd demo` in a fresh work dir (every stage, timed); each other seed runs
it in a copy of that dir with `--seed S`, so the synthetic data and the face shards are the
same and only training and inference run again. Writes bench-results/demo.json: per seed the
held-out video AUC, log loss and accuracy with their 95 % bootstrap intervals, the exported
epoch, and the stage seconds the demo printed. Synthetic data.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import benchmarks

_STAGES = re.compile(r"stage seconds: (.*); total (\d+)")


def _stage_seconds(log: str) -> dict[str, int]:
    m = _STAGES.search(log)
    if not m:
        return {}
    seconds = {k: int(v) for k, v in (kv.split() for kv in m.group(1).split(", "))}
    return {**seconds, "total": int(m.group(2))}


def collect(workdir: Path, *, seed: int, stdout: str = "") -> dict:
    """One demo run's figures, from its work dir (and its printed stage seconds)."""
    from dfd import run_dir as rundir

    # The predictions must be those of this work dir's model (a run stopped between training
    # and inference, or a copied work dir, holds another model's).
    trained = json.loads((workdir / ".train.json").read_text())
    inferred = json.loads((workdir / ".infer.json").read_text())
    if inferred.get("train") != trained:
        raise SystemExit(f"{workdir}: its predictions are not of its trained model; run "
                         f"`dfd demo --workdir {workdir}` again")
    metrics = json.loads((workdir / "eval" / "metrics.json").read_text())
    video = metrics["video"]
    selection = Path(rundir.selection_path(str(workdir / "run")))
    selected = json.loads(selection.read_text())["epoch"] if selection.exists() else None
    history = json.loads(Path(rundir.history_path(str(workdir / "run"))).read_text())
    return {"seed": seed, "videos": video["n"], "auc": video["auc"],
            "log_loss": video["log_loss"], "chance_log_loss": video["chance_log_loss"],
            "accuracy": video["accuracy"], "ci95": video["ci95"],
            "coverage": metrics["coverage"]["overall"], "epochs": len(history),
            "exported_epoch": selected, "stage_seconds": _stage_seconds(stdout)}


def run_demo(workdir: Path, seed: int) -> tuple[str, float]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "dfd.cli", "demo", "--workdir", str(workdir),
                           "--seed", str(seed)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"dfd demo --seed {seed} failed: {done.stderr.strip()[-500:]}")
    return done.stdout, time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--workdir", type=Path, default=Path("bench-work/demo"))
    parser.add_argument("--collect", nargs="+", type=Path, metavar="WORKDIR",
                        help="demo work dirs already run, with seeds 0, 1, ... in this order "
                             "(their demo.log beside them, when kept, gives stage seconds)")
    args = parser.parse_args(argv)
    runs = []
    if args.collect:
        for seed, workdir in enumerate(args.collect):
            log = workdir.with_suffix(".log")
            runs.append(collect(workdir, seed=seed,
                                stdout=log.read_text() if log.exists() else ""))
    else:
        seeds = [int(s) for s in args.seeds.split(",")]
        first = args.workdir / f"seed-{seeds[0]}"
        shutil.rmtree(args.workdir, ignore_errors=True)
        for seed in seeds:
            workdir = args.workdir / f"seed-{seed}"
            if seed != seeds[0]:
                shutil.copytree(first, workdir)  # same data: only training and inference rerun
            stdout, wall = run_demo(workdir, seed)
            runs.append({**collect(workdir, seed=seed, stdout=stdout),
                         "wall_seconds": round(wall, 1)})
    figures = {"runs": runs, "preset": "smoke", "data": "synthetic",
               "held_out_videos": runs[0]["videos"]}
    print(json.dumps(figures, indent=2))
    benchmarks.save("demo", figures)


if __name__ == "__main__":
    main()
