"""`dfd demo`: the main job end to end on embedded defaults and synthetic data.

    dfd demo [--workdir demo-work]

synthesize DFDC-format parts (one held out) -> Beam preprocessing (DirectRunner, two workers)
-> Ray Train on paper_cnn (two CPU workers) -> Ray Data inference on the held-out part ->
report. A second run reuses every finished stage; --fresh starts over.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

STAGES = ("synth", "preprocess", "train", "infer")
# The demo's size on top of the smoke preset: a held-out part of 30 originals (60 videos once
# balanced) and a third of the other parts' originals in validation (about 40 videos), so
# that the figures' bootstrap intervals say something (12 held-out videos moved AUC in steps
# of 1/36).
DEMO_ORIGINALS = 30
DEMO_VALIDATION_FRACTION = 0.35


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the whole system end to end on synthetic data",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("--workdir", default="demo-work", help="where every stage writes")
    p.add_argument("--preset", default="smoke", choices=["smoke", "paper", "full"])
    p.add_argument("--originals", type=int, default=DEMO_ORIGINALS,
                   help="REAL videos per part (%(default)s)")
    p.add_argument("--epochs", type=int, help="training epochs (preset's otherwise)")
    p.add_argument("--seed", type=int, help="training seed (preset's otherwise); the "
                                            "synthetic data stay the same")
    p.add_argument("--fresh", action="store_true", help="delete the workdir first")
    p.set_defaults(func=run, log_dir="workdir")


def _header(n: int, title: str) -> None:
    print(f"\n== [{n}/{len(STAGES) + 1}] {title}", flush=True)


def _stamp(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def _stamped(path: Path, payload: dict) -> bool:
    return path.exists() and json.loads(path.read_text()) == payload


def demo_configs(preset: str, originals: int | None, epochs: int | None,
                 seed: int | None = None):
    from dfd import config

    synth = config.override(config.preset("synth", preset), originals=originals)
    pre = config.override(config.preset("preprocess", preset),
                          validation_fraction=DEMO_VALIDATION_FRACTION)
    last = synth.first_part + synth.parts - 1
    if not pre.test_parts:
        pre = config.override(pre, test_parts=(last,))
    train = config.override(config.preset("train", preset), epochs=epochs, seed=seed)
    infer = config.preset("infer", preset)
    return synth, pre, train, infer


def run(args) -> int:
    from dfd import config

    work = Path(args.workdir).absolute()
    if args.fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    synth_cfg, pre_cfg, train_cfg, infer_cfg = demo_configs(args.preset, args.originals,
                                                            args.epochs, args.seed)
    src, faces, run_dir, evaluation = (work / "dfdc", work / "faces", work / "run",
                                       work / "eval")
    t_start = time.perf_counter()
    timings = {}

    # 1. synthetic DFDC parts
    _header(1, f"synthesize {synth_cfg.parts} DFDC-format parts of {synth_cfg.originals} "
               f"originals x {synth_cfg.fakes_per_original} fakes ({synth_cfg.width}x"
               f"{synth_cfg.height}, {synth_cfg.frames} frames) -> {src}")
    t = time.perf_counter()
    stamp = {"synth": config.to_dict(synth_cfg)}
    if _stamped(work / ".synth.json", stamp):
        print("   reusing the parts already there")
    else:
        from dfd.synth import generate

        generate(src, synth_cfg)
        _stamp(work / ".synth.json", stamp)
    timings["synth"] = time.perf_counter() - t

    # 2. Beam preprocessing
    held_out = ",".join(str(p) for p in pre_cfg.test_parts)
    _header(2, f"Beam preprocessing (DirectRunner, 2 workers): faces of "
               f"{pre_cfg.frames_per_video} random frames per video, part {held_out} held out "
               f"-> {faces}")
    t = time.perf_counter()
    from dfd.cli.preprocess import print_summary, run_argv

    summary = run_argv([
        "--input", str(src), "--output", str(faces), "--preset", args.preset,
        "--test-parts", held_out, "--validation-fraction", str(pre_cfg.validation_fraction),
        "--direct_num_workers", "2",
        "--direct_running_mode", "multi_processing"])
    print_summary(summary)
    if summary["failed"]:
        from dfd.errors import DfdError

        raise DfdError(f"preprocessing failed for parts {[f['part'] for f in summary['failed']]}")
    timings["preprocess"] = time.perf_counter() - t

    # 3. Ray Train
    _header(3, f"Ray Train: {train_cfg.model}, {train_cfg.workers} CPU workers, "
               f"{train_cfg.epochs} epochs -> {run_dir}")
    t = time.perf_counter()
    from dfd import manifest as mf
    from dfd import run_dir as rundir
    from dfd.models import MODEL_JSON

    data_hash = mf.content_hash(mf.read(str(faces), required=True))
    stamp = {"train": config.to_dict(train_cfg), "data": data_hash}
    if _stamped(work / ".train.json", stamp) and Path(
            rundir.model_file(str(run_dir), MODEL_JSON)).exists():
        print("   reusing the trained model")
    else:
        from ray_jobs import train

        if (work / ".train.json").exists():
            # Trained with other settings (another --seed, --epochs): start that run afresh; a
            # run interrupted before its stamp resumes from its checkpoint instead.
            shutil.rmtree(run_dir, ignore_errors=True)
        trained = train.run(str(faces), str(run_dir), train_cfg)
        final = trained["final"]
        print(f"   {trained['epochs']} epochs; last: loss {final.get('loss', float('nan')):.3f}, "
              f"val_auc {final.get('val_auc', float('nan')):.3f}")
        _stamp(work / ".train.json", stamp)
    timings["train"] = time.perf_counter() - t

    # 4. Ray Data batch inference + report
    _header(4, f"Ray Data inference on held-out part {held_out} ({infer_cfg.actors} actors, "
               f"aggregation {infer_cfg.aggregation}) -> {evaluation}")
    t = time.perf_counter()
    stamp = {"infer": config.to_dict(infer_cfg), "train": json.loads(
        (work / ".train.json").read_text()), "data": data_hash}
    if _stamped(work / ".infer.json", stamp) and (evaluation / "metrics.json").exists():
        print("   reusing the predictions already there")
        evaluated = json.loads((evaluation / "metrics.json").read_text())
    else:
        from ray_jobs import infer

        evaluated = infer.run_inference(str(faces), str(run_dir), str(evaluation),
                                        split="test", cfg=infer_cfg)
        _stamp(work / ".infer.json", stamp)
    timings["infer"] = time.perf_counter() - t

    _header(5, "summary (synthetic data)")
    print_table(evaluated)
    report = evaluation / "report" / "report.html"
    print(f"\nreport: {report if report.exists() else evaluation}")
    if not getattr(args, "verbose", False):
        from dfd.cli.logs import log_name

        print(f"libraries' output (TensorFlow, Beam, Ray): {work / log_name('demo')}")
    print("stage seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items())
          + f"; total {time.perf_counter() - t_start:.0f}")
    return 0


def print_table(evaluated: dict) -> None:
    """Per held-out part and overall: videos, AUC, log loss (beside chance) and accuracy,
    with their 95 % bootstrap intervals, then how many videos the figures stand on."""
    from dfd.metrics import format_interval

    def cells(name: str, m: dict) -> tuple[str, ...]:
        ci = m.get("ci95") or {}
        return (name, str(m["n"]), format_interval(m["auc"], ci.get("auc"), n=m["n"]),
                format_interval(m["log_loss"], ci.get("log_loss"), n=m["n"]),
                _fmt(m.get("chance_log_loss")),
                format_interval(m["accuracy"], ci.get("accuracy"), n=m["n"]))

    rows = [("part", "videos", "video AUC [95 %]", "log loss [95 %]", "chance",
             "accuracy [95 %]")]
    for part, m in sorted(evaluated["per_part"].items(), key=lambda kv: int(kv[0])):
        rows.append(cells(str(int(part)), m))
    rows.append(cells("all held out", evaluated["video"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    if "coverage" in evaluated:
        from dfd.cli.infer import coverage_line

        print(f"coverage: {coverage_line(evaluated['coverage'])}")


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"
