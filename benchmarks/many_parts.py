"""Many parts in one `dfd preprocess` run: time per part, worker memory across the run, and the
work a failure late in the run loses.

    .venv/bin/python -m benchmarks.many_parts [--parts 50] [--parts-per-wave 5]

50 small synthetic parts (two originals with one fake each, 320x180, 12 frames) go through one
run, which processes and commits them in waves (``pipelines.preprocess.waves``). A sampler
reads the resident memory of every process under the run from /proc twice a second and notes
how many parts the manifest lists, so the peak of the Beam workers can be told apart per wave:
flat means the last wave's peak is the first's. The same parts in one wave (the commit waiting
for every part, as before waves) give the cost of waves in seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import benchmarks
from dfd import config

WORK = Path(os.environ.get("DFD_BENCH_WORK", "bench-work")) / "many_parts"
FLAGS = ["--preset", "smoke", "--frames-per-video", "3"]


def make_parts(root: Path, parts: int) -> Path:
    src = root / f"src-{parts}"
    if not (src / "done").exists():
        from dfd.synth import generate

        generate(src, config.SynthConfig(parts=parts, originals=2, fakes_per_original=1,
                                         width=320, height=180, frames=12, seed=5, zipped=True,
                                         portrait_fraction=0.0))
        (src / "done").touch()
    return src


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class MemorySampler(threading.Thread):
    """Peak RSS of the launcher and of the largest worker, by how many parts were committed."""

    def __init__(self, pid: int, manifest: Path):
        super().__init__(daemon=True)
        self.pid, self.manifest = pid, manifest
        self.stop = threading.Event()
        self.by_committed: dict[int, dict[str, float]] = {}

    def committed(self) -> int:
        try:
            return len(json.loads(self.manifest.read_text())["parts"])
        except (OSError, ValueError, KeyError):
            return 0

    def run(self) -> None:
        while not self.stop.wait(0.5):
            workers = [_rss_mb(p) for p in _descendants(self.pid)]
            peak = self.by_committed.setdefault(self.committed(),
                                                {"launcher_mb": 0.0, "worker_mb": 0.0})
            peak["launcher_mb"] = max(peak["launcher_mb"], _rss_mb(self.pid))
            peak["worker_mb"] = max([peak["worker_mb"], *workers])


def run(src: Path, out: Path, parts_per_wave: int) -> dict:
    argv = [sys.executable, "-m", "dfd.cli", "preprocess", "--input", str(src), "--output",
            str(out), *FLAGS, "--force", "--parts-per-wave", str(parts_per_wave),
            "--summary-json", str(out.parent / f"{out.name}-summary.json")]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", OPENCV_FFMPEG_THREADS="1")
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    sampler = MemorySampler(proc.pid, out / "manifest.json")
    sampler.start()
    stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - started
    sampler.stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(stderr[-3000:])
    manifest = json.loads((out / "manifest.json").read_text())
    return {"seconds": round(seconds, 1), "manifest_entries": len(manifest["parts"]),
            "records": sum(e["records"] for e in manifest["parts"].values()),
            "memory_by_parts_committed": {str(k): {n: round(v) for n, v in peak.items()}
                                          for k, peak in sorted(sampler.by_committed.items())}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", type=int, default=50)
    ap.add_argument("--parts-per-wave", type=int, default=5)
    args = ap.parse_args(argv)
    src = make_parts(WORK, args.parts)
    waves = run(src, WORK / "out-waves", args.parts_per_wave)
    one = run(src, WORK / "out-one-wave", args.parts)
    memory = waves["memory_by_parts_committed"]
    first_wave = [v["worker_mb"] for k, v in memory.items() if int(k) < args.parts_per_wave]
    last_wave = [v["worker_mb"] for k, v in memory.items()
                 if int(k) >= args.parts - args.parts_per_wave and int(k) < args.parts]
    figures = {
        "parts": f"{args.parts} synthetic parts: 2 originals + 1 fake each, 320x180, 12 frames, "
                 "H.264; smoke preset, 3 frames per video; DirectRunner, 2 workers",
        "parts_per_wave": args.parts_per_wave,
        "seconds": waves["seconds"],
        "seconds_per_part": round(waves["seconds"] / args.parts, 2),
        "seconds_one_wave": one["seconds"],
        "seconds_per_part_one_wave": round(one["seconds"] / args.parts, 2),
        "manifest_entries": waves["manifest_entries"],
        "worker_peak_rss_mb_first_wave": round(max(first_wave, default=0)),
        "worker_peak_rss_mb_last_wave": round(max(last_wave, default=0)),
        "worker_peak_rss_mb_one_wave": round(max(v["worker_mb"] for v in
                                                 one["memory_by_parts_committed"].values())),
        "parts_lost_by_a_late_failure": args.parts_per_wave,
        "parts_lost_by_a_late_failure_one_wave": args.parts,
        "runs": {"waves": waves, "one_wave": one},
    }
    print(json.dumps({k: v for k, v in figures.items() if k != "runs"}, indent=2))
    print("written", benchmarks.save("many_parts", figures))


if __name__ == "__main__":
    main()
