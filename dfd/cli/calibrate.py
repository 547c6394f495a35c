"""`dfd calibrate`: fit temperature scaling and a threshold on a run's validation videos."""
from __future__ import annotations

import json

from dfd.cli import _flags
from dfd.config import InferConfig


def register(sub) -> None:
    p = sub.add_parser(
        "calibrate", help="fit temperature scaling and a threshold on the validation split",
        description="Score the validation split of --data with the run's model (as `dfd infer "
                    "--split validation` does, into <run>/calibration/), fit the temperature "
                    "of least validation log loss and the threshold of highest validation "
                    "accuracy, and write them to <run>/calibration.json, with the log loss "
                    "and reliability before and after. `dfd infer` and `dfd predict` apply it "
                    "with --calibration temperature (and --threshold validation).")
    p.add_argument("--data", required=True, metavar="URI",
                   help="the face-shard tree the run was trained on (path, gs://, s3://)")
    p.add_argument("--run-dir", required=True, metavar="URI", help="run dir of `dfd train`")
    _flags.add_preset(p)
    _flags.add_fields(p, InferConfig, ("aggregation", "batch_size", "actors", "gpus_per_actor",
                                       "cpus_per_actor"),
                      help={"batch_size": "crops per model call",
                            "aggregation": "video score from crop scores; infer and predict "
                                           "must aggregate alike to apply the calibration"})
    p.add_argument("--address", help="an existing Ray cluster (e.g. ray://head:10001 or auto)")
    p.set_defaults(func=run, log_dir="run_dir")


def run(args) -> int:
    from dfd import calibration
    from dfd import run_dir as rundir
    from ray_jobs import infer

    cfg = _flags.from_args(args, "infer", calibration="none", threshold="0.5")
    out = rundir.calibration_eval_dir(args.run_dir)
    evaluated = infer.run_inference(args.data, args.run_dir, out, split="validation", cfg=cfg,
                                    address=args.address, write_report=False)
    fitted = calibration.write(args.run_dir, calibration.fit(
        calibration.read_videos(out), aggregation=cfg.aggregation,
        model=evaluated["run"]["model"], data=args.data))
    print(json.dumps({k: fitted[k] for k in ("temperature", "log_loss", "threshold",
                                             "fitted_on")}, indent=2))
    print(f"calibration.json in {args.run_dir}")
    return 0
