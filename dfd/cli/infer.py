"""`dfd infer`: score face shards with a trained model on Ray Data; metrics and report."""
from __future__ import annotations

from dfd.cli import _flags
from dfd.config import InferConfig


def register(sub) -> None:
    p = sub.add_parser(
        "infer", help="batch inference over face shards, with metrics and a report",
        description="Score the face shards of some parts (typically held out of training) with "
                    "a trained model on a Ray Data actor pool. Writes frame_predictions.parquet, "
                    "video_predictions.parquet, metrics.json and report/ under --out. Without "
                    "--parts or --split, the test split is scored. Without --address Ray runs "
                    "in this process on 127.0.0.1.")
    p.add_argument("--data", required=True, metavar="URI",
                   help="face-shard tree of `dfd preprocess` (path, gs://, s3://)")
    p.add_argument("--run-dir", required=True, metavar="URI", help="run dir of `dfd train`")
    p.add_argument("--out", required=True, metavar="URI", help="where predictions go")
    p.add_argument("--parts", metavar="SPEC",
                   help="parts to score, e.g. 45-49 or 3,7 (every split of them)")
    p.add_argument("--split", choices=["train", "validation", "test"],
                   help="only this split (default: test when --parts is not given)")
    _flags.add_preset(p)
    _flags.add_fields(p, InferConfig, ("aggregation", "fallback_score", "calibration",
                                       "threshold", "batch_size", "actors", "gpus_per_actor",
                                       "cpus_per_actor"),
                      help={"batch_size": "crops per model call",
                            "calibration": "none, or temperature: the run's calibration.json "
                                           "(from `dfd calibrate`) scales the video scores",
                            "threshold": "call a video FAKE when its score exceeds this: a "
                                         "probability, or 'validation' (calibration.json's)"})
    p.add_argument("--no-report", dest="report", action="store_false",
                   help="write predictions and metrics only")
    p.add_argument("--address", help="an existing Ray cluster (e.g. ray://head:10001 or auto)")
    p.set_defaults(func=run, log_dir="out")


def run(args) -> int:
    from dfd import dfdc, metrics
    from ray_jobs import infer

    cfg = _flags.from_args(args, "infer")
    parts = dfdc.parse_part_selection(args.parts)
    split = args.split or (None if parts else "test")
    evaluated = infer.run_inference(args.data, args.run_dir, args.out, parts=parts,
                                    split=split, cfg=cfg, address=args.address,
                                    write_report=args.report)
    run_info = evaluated["run"]
    calibrated = evaluated.get("calibration")
    print(f"model {run_info['model']}, parts {run_info['parts']}, split {split or 'all'}, "
          f"aggregation {cfg.aggregation}")
    print(f"  calls: FAKE when p(FAKE) > {evaluated['video']['threshold']:g}, calibration "
          f"{cfg.calibration}")
    if calibrated and calibrated.get("log_loss"):
        print(f"  calibration: temperature {calibrated['temperature']:.3f}, video log loss "
              f"{calibrated['log_loss']['before']:.4f} before, "
              f"{calibrated['log_loss']['after']:.4f} after")
    print(f"  coverage: {coverage_line(evaluated['coverage'])}")
    print(f"  frames  {metrics.format_summary(evaluated['frame'])}")
    print(f"  videos  {metrics.format_summary(evaluated['video'])}")
    for part, block in evaluated["per_part"].items():
        print(f"  part {int(part):>3} {metrics.format_summary(block)}")
    print(f"predictions, metrics.json{' and report/' if args.report else ''} in {args.out}")
    return 0


def coverage_line(coverage: dict) -> str:
    """How many videos the figures stand on, in one line."""
    block = coverage["overall"]
    fallback = block["scored_by_fallback"]
    listed = ""
    if block["listed"] is not None:
        listed = f"{block['listed']} videos listed, {block['fakes_left_out']} fakes left out " \
                 f"by balancing, "
    reasons = ", ".join(f"{k} {v}" for k, v in fallback.items())
    return (f"{listed}{block['scored_by_model']} scored by the model, "
            f"{sum(fallback.values())} by the fallback score {coverage['fallback_score']:g}"
            + (f" ({reasons})" if reasons else "")
            + f", {block['unscorable_no_label']} without a label")
