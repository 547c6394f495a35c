"""Writing synthetic parts in DFDC's layout, one process per video group.

A part is staged under a hidden name in the output folder and appears under its DFDC name
(`dfdc_train_part_NN.zip` holding `dfdc_train_part_N/`, or that folder alone) only once it is
complete, so a reader never sees half a part. Regenerating replaces an earlier synthetic part;
a part without our truth sidecar is someone's real DFDC data and is never overwritten.
"""
from __future__ import annotations

import concurrent.futures
import json
import logging
import multiprocessing
import os
import shutil
import time
import zipfile
from pathlib import Path

from dfd.config import SynthConfig
from dfd.dfdc import METADATA, part_folder_name, part_zip_name
from dfd.errors import DfdError
from dfd.synth.clips import render_clips
from dfd.synth.part_plan import OriginalPlan, PartPlan, plan_part

log = logging.getLogger(__name__)

TRUTH_FILE = "synth_truth.json"
MIN_SIDE = 128  # faces are then 33-51 px tall, about the least RetinaFace and MTCNN find reliably
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member times: the same set gives the same zip bytes


def check_config(cfg: SynthConfig) -> None:
    problems = []
    if cfg.parts < 1 or cfg.originals < 1:
        problems.append("--parts and --originals must be at least 1")
    if cfg.first_part < 0:
        problems.append("--first-part must not be negative")
    if cfg.fakes_per_original < 0:
        problems.append("--fakes-per-original must not be negative")
    if cfg.width % 2 or cfg.height % 2:
        problems.append(f"--size {cfg.width}x{cfg.height}: H.264 in yuv420p needs even sides")
    if min(cfg.width, cfg.height) < MIN_SIDE:
        problems.append(f"--size {cfg.width}x{cfg.height}: the short side must be at least "
                        f"{MIN_SIDE} px for faces to be detectable")
    if cfg.frames < 1 or cfg.fps < 1:
        problems.append("--frames and --fps must be at least 1")
    if not 0.0 <= cfg.portrait_fraction <= 1.0:
        problems.append("portrait_fraction must be within [0, 1]")
    if cfg.workers < 0:
        problems.append("--workers must not be negative")
    if problems:
        raise DfdError("; ".join(problems))


def _earlier_copies(out: Path, part: int) -> list[Path]:
    """This part already under `out`, as a zip, a folder or both; raises if any is not ours."""
    found = []
    for path in (out / part_zip_name(part), out / part_folder_name(part)):
        if not path.exists():
            continue
        if path.is_dir():
            synthetic = (path / TRUTH_FILE).is_file()
        else:
            try:
                with zipfile.ZipFile(path) as zf:
                    synthetic = f"{part_folder_name(part)}/{TRUTH_FILE}" in zf.namelist()
            except zipfile.BadZipFile:
                synthetic = False
        if not synthetic:
            raise DfdError(f"{path} exists and is not a synthetic part (no {TRUTH_FILE}); "
                           f"refusing to overwrite it: choose another --out or --first-part")
        found.append(path)
    return found


def _write_zip(staged: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    folder = staged.name
    with zipfile.ZipFile(tmp, "w") as zf:
        zf.writestr(zipfile.ZipInfo(f"{folder}/", _ZIP_TIME), b"")
        for path in sorted(staged.iterdir()):
            info = zipfile.ZipInfo(f"{folder}/{path.name}", _ZIP_TIME)
            info.external_attr = 0o644 << 16
            # H.264 does not deflate; the JSON files do, a lot.
            info.compress_type = (zipfile.ZIP_STORED if path.suffix == ".mp4"
                                  else zipfile.ZIP_DEFLATED)
            with path.open("rb") as src, zf.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    os.replace(tmp, target)


def _metadata(truth: dict[str, dict]) -> dict[str, dict]:
    meta = {}
    for name in sorted(truth):
        entry = {"label": truth[name]["label"], "split": "train"}
        if entry["label"] == "FAKE":
            entry["original"] = truth[name]["original"]
        meta[name] = entry
    return meta


def _publish(out: Path, plan: PartPlan, staged: Path, truth: dict[str, dict],
             zipped: bool) -> Path:
    (staged / METADATA).write_text(json.dumps(_metadata(truth), sort_keys=True))
    (staged / TRUTH_FILE).write_text(json.dumps(dict(sorted(truth.items())), sort_keys=True))
    for path in _earlier_copies(out, plan.part):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    if zipped:
        target = out / part_zip_name(plan.part)
        _write_zip(staged, target)
    else:
        target = out / part_folder_name(plan.part)
        os.replace(staged, target)
    shutil.rmtree(staged.parent)
    return target


def _worker_init() -> None:
    import cv2

    # One process per core already; OpenCV's own threads would only contend with them.
    cv2.setNumThreads(1)


def _worker_count(cfg: SynthConfig, jobs: int) -> int:
    wanted = cfg.workers or os.cpu_count() or 1
    return max(1, min(wanted, jobs))


def generate(out: str | Path, cfg: SynthConfig) -> list[Path]:
    """Write parts cfg.first_part .. cfg.first_part + cfg.parts - 1 under `out`; return their
    paths (zips or folders per cfg.zipped)."""
    check_config(cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plans = [plan_part(cfg, part) for part in range(cfg.first_part, cfg.first_part + cfg.parts)]
    for plan in plans:  # fail before spending minutes on rendering
        _earlier_copies(out, plan.part)
    staged = {}
    for plan in plans:
        folder = out / f".synth-{plan.part}" / part_folder_name(plan.part)
        if folder.parent.exists():
            shutil.rmtree(folder.parent)  # left by an interrupted run
        folder.mkdir(parents=True)
        staged[plan.part] = folder
    try:
        paths = _render_and_publish(out, cfg, plans, staged)
    finally:
        for folder in staged.values():
            shutil.rmtree(folder.parent, ignore_errors=True)
    return paths


def _render_and_publish(out: Path, cfg: SynthConfig, plans: list[PartPlan],
                        staged: dict[int, Path]) -> list[Path]:
    jobs: list[tuple[int, OriginalPlan]] = [(p.part, o) for p in plans for o in p.originals]
    started = time.perf_counter()
    truth: dict[int, dict[str, dict]] = {p.part: {} for p in plans}
    workers = _worker_count(cfg, len(jobs))
    log.info("synth: %d parts, %d videos at %dx%d, %d frames, %d worker(s)", len(plans),
             sum(p.video_count for p in plans), cfg.width, cfg.height, cfg.frames, workers)
    if workers == 1:
        for part, original in jobs:
            truth[part].update(render_clips(original, staged[part], fps=cfg.fps,
                                            frames=cfg.frames))
    else:
        # spawn, not fork: callers (tests, the CLI) may already hold TensorFlow or Ray threads.
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx,
                                                    initializer=_worker_init) as pool:
            futures = {pool.submit(render_clips, original, staged[part], fps=cfg.fps,
                                   frames=cfg.frames): part for part, original in jobs}
            for future in concurrent.futures.as_completed(futures):
                truth[futures[future]].update(future.result())
    paths = [_publish(out, plan, staged[plan.part], truth[plan.part], cfg.zipped)
             for plan in plans]
    log.info("synth: wrote %d parts in %.1f s", len(paths), time.perf_counter() - started)
    return paths
