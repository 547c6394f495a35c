"""Beam preprocessing throughput and memory on synthetic 1080p, 300-frame clips.

    .venv/bin/python -m benchmarks.preprocess [--originals 12]

Figures: clips/s with 1 and 2 DirectRunner workers (multi_processing) over the same part;
seconds per decoded clip against the decode floor (decode up to the last sampled frame, no
colour conversion, one core); peak RSS of the largest Beam worker for a part and for a part
four times larger. Each run is a fresh process, so its workers' peak RSS is measured alone
(getrusage of the waited-for children).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import av

import benchmarks
from dfd import config, dfdc
from dfd.video import sample_frame_indices

WORK = Path(os.environ.get("DFD_BENCH_WORK", "bench-work")) / "preprocess"
FRAMES_PER_VIDEO = 5

_CHILD = r"""
import json, resource, sys, time
from dfd.cli.preprocess import run_argv
t = time.perf_counter()
summary = run_argv(sys.argv[1:])
committed = summary["committed"]
def peak_rss_mb(who):
    return resource.getrusage(who).ru_maxrss / 1024
print(json.dumps({"seconds": time.perf_counter() - t,
                  "worker_peak_rss_mb": peak_rss_mb(resource.RUSAGE_CHILDREN),
                  "launcher_peak_rss_mb": peak_rss_mb(resource.RUSAGE_SELF),
                  "committed": [s["part"] for s in committed],
                  "records": sum(s["records"] for s in committed),
                  "videos_with_records": sum(s["videos_with_records"] for s in committed)}))
"""


def make_part(root: Path, part: int, originals: int, frames: int) -> Path:
    cfg = config.SynthConfig(parts=1, first_part=part, originals=originals, fakes_per_original=1,
                             width=1920, height=1080, frames=frames, fps=30, seed=part,
                             zipped=True, portrait_fraction=0.0)
    root.mkdir(parents=True, exist_ok=True)
    if not (root / dfdc.part_zip_name(part)).exists():
        from dfd.synth import generate

        generate(root, cfg)
    return root / dfdc.part_zip_name(part)


def run_pipeline(src: Path, out: Path, part: int, workers: int) -> dict:
    args = ["--input", str(src), "--output", str(out), "--parts", str(part),
            "--frames-per-video", str(FRAMES_PER_VIDEO), "--force",
            f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", OPENCV_FFMPEG_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True,
                          env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def decode_floor(zip_path: Path, part: int) -> float:
    """Seconds per clip to decode up to each clip's last sampled frame, no conversion."""
    with zipfile.ZipFile(zip_path) as zf:
        folder = dfdc.part_folder_name(part)
        meta = json.loads(zf.read(f"{folder}/metadata.json"))
        total, clips = 0.0, 0
        for name, m in sorted(meta.items()):
            key = m.get("original") or name  # fakes are sampled at their original's frames
            data = zf.read(f"{folder}/{name}")
            t = time.perf_counter()
            with av.open(__import__("io").BytesIO(data)) as c:
                s = c.streams.video[0]
                s.codec_context.thread_count = 1
                last = max(sample_frame_indices(s.frames, FRAMES_PER_VIDEO, policy="random",
                                                seed=0, key=key))
                for i, _ in enumerate(c.decode(s)):
                    if i >= last:
                        break
            total += time.perf_counter() - t
            clips += 1
    return total / clips


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--originals", type=int, default=3, help="originals in the small part")
    ap.add_argument("--frames", type=int, default=300, help="frames per clip (DFDC: 300)")
    args = ap.parse_args(argv)
    src = WORK / f"src-{args.frames}f"
    small = make_part(src, 0, args.originals, args.frames)
    make_part(src, 1, 4 * args.originals, args.frames)
    floor = decode_floor(small, 0)
    runs = {}
    for label, part, workers in (("small_2w", 0, 2), ("large_1w", 1, 1), ("large_2w", 1, 2)):
        r = run_pipeline(src, WORK / f"out-{label}", part, workers)
        clips = 2 * (args.originals if part == 0 else 4 * args.originals)
        r["clips"] = clips
        r["clips_per_s"] = clips / r["seconds"]
        runs[label] = r
        print(f"{label}: {clips} clips in {r['seconds']:.1f} s = {r['clips_per_s']:.2f} clips/s; "
              f"worker peak RSS {r['worker_peak_rss_mb']:.0f} MB", flush=True)
    one, two = runs["large_1w"], runs["large_2w"]
    figures = {
        "clip": f"synthetic 1920x1080, {args.frames} frames, H.264; 5 random frames; "
                "RetinaFace; JPEG q95",
        "decode_floor_s_per_clip": round(floor, 3),
        "s_per_clip_1_worker": round(one["seconds"] / one["clips"], 3),
        "s_per_clip_over_decode_floor_1_worker": round(one["seconds"] / one["clips"] / floor, 2),
        "clips_per_s_1_worker": round(one["clips_per_s"], 3),
        "clips_per_s_2_workers": round(two["clips_per_s"], 3),
        "speedup_2_workers": round(two["clips_per_s"] / one["clips_per_s"], 2),
        "worker_peak_rss_mb_part": round(runs["small_2w"]["worker_peak_rss_mb"]),
        "worker_peak_rss_mb_part_x4": round(two["worker_peak_rss_mb"]),
        "runs": runs,
    }
    print(json.dumps({k: v for k, v in figures.items() if k != "runs"}, indent=2))
    print("written", benchmarks.save("preprocess", figures))


if __name__ == "__main__":
    main()
