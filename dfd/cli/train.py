"""`dfd train`: train a face-crop classifier on face shards with Ray Train."""
from __future__ import annotations

import json

from dfd.cli import _flags
from dfd.config import TrainConfig


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train a classifier on face shards with Ray Train",
        description="Train a face-crop classifier on a face-shard tree (from `dfd preprocess`) "
                    "with Ray Train. Without --address Ray runs in this process on 127.0.0.1. "
                    "Running again on the same --run-dir continues from its last checkpoint.")
    p.add_argument("--data", required=True, metavar="URI",
                   help="face-shard tree (path, gs://, s3://)")
    p.add_argument("--run-dir", required=True, metavar="URI",
                   help="where the model, history, plots and checkpoints go")
    _flags.add_preset(p)
    _flags.add_fields(p, TrainConfig, ("model", "epochs", "batch_size", "learning_rate",
                                       "dropout", "augment", "workers", "gpus_per_worker",
                                       "cpus_per_worker", "rebalance", "pretrained",
                                       "max_failures", "seed", "select", "lr_schedule",
                                       "plateau_patience", "plateau_factor", "early_stopping"),
                      help={"batch_size": "global batch size, split over the workers",
                            "workers": "Ray Train workers",
                            "select": "which epoch's model to export: val_loss (lowest), "
                                      "val_auc (highest) or last; selection.json says which",
                            "lr_schedule": "learning-rate schedule: none, cosine (to 0 over "
                                           "--epochs) or plateau (times --plateau-factor after "
                                           "--plateau-patience epochs without improvement)",
                            "plateau_patience": "plateau: epochs without a better validation "
                                                "value before the rate drops",
                            "plateau_factor": "plateau: what the rate is multiplied by",
                            "early_stopping": "stop after this many epochs without a better "
                                              "validation value (0: never)"})
    p.add_argument("--address", help="an existing Ray cluster (e.g. ray://head:10001 or auto)")
    p.set_defaults(func=run, log_dir="run_dir")


def run(args) -> int:
    from ray_jobs import train

    cfg = _flags.from_args(args, "train")
    summary = train.run(args.data, args.run_dir, cfg, address=args.address)
    final = summary["final"]
    print(json.dumps({"run_dir": summary["run_dir"], "model_dir": summary["model_dir"],
                      "epochs": summary["epochs"], "attempts": len(summary["attempts"]),
                      "selected": {k: summary["selection"][k]
                                   for k in ("epoch", "reason", "stopped_early")},
                      "final": {k: final[k] for k in ("loss", "accuracy", "auc", "val_loss",
                                                      "val_accuracy", "val_auc")}},
                     indent=2))
    return 0
