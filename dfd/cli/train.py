"""`dfd train`: train a face-crop classifier on face shards with Ray Train."""
from __future__ import annotations

import json


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
    p.add_argument("--preset", default="smoke", choices=["smoke", "paper", "full"])
    p.add_argument("--model",
                   help="paper_cnn (default), efficientnet_b0, efficientnet_b4, xception")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="global batch size, split over the workers")
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--dropout", type=float)
    p.add_argument("--augment", metavar="SPEC",
                   help="none, or hflip, rotation, zoom joined by '+' (e.g. hflip+zoom)")
    p.add_argument("--workers", type=int)
    p.add_argument("--gpus-per-worker", type=float)
    p.add_argument("--cpus-per-worker", type=float)
    p.add_argument("--no-rebalance", dest="rebalance", action="store_false", default=None,
                   help="train on every fake each epoch instead of one per original")
    p.add_argument("--no-pretrained", dest="pretrained", action="store_false", default=None,
                   help="start backbones from random weights instead of ImageNet's")
    p.add_argument("--max-failures", type=int, help="worker-group restarts before giving up")
    p.add_argument("--seed", type=int)
    p.add_argument("--address", help="an existing Ray cluster (e.g. ray://head:10001 or auto)")
    p.set_defaults(func=run, log_dir="run_dir")


def run(args) -> int:
    from dfd import config
    from ray_jobs import train

    cfg = config.override(
        config.preset("train", args.preset), model=args.model, epochs=args.epochs,
        batch_size=args.batch_size, learning_rate=args.learning_rate, dropout=args.dropout,
        augment=args.augment, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker, rebalance=args.rebalance,
        pretrained=args.pretrained, max_failures=args.max_failures, seed=args.seed)
    summary = train.run(args.data, args.run_dir, cfg, address=args.address)
    final = summary["final"]
    print(json.dumps({"run_dir": summary["run_dir"], "model_dir": summary["model_dir"],
                      "epochs": summary["epochs"], "attempts": len(summary["attempts"]),
                      "final": {k: final[k] for k in ("loss", "accuracy", "auc", "val_loss",
                                                      "val_accuracy", "val_auc")}},
                     indent=2))
    return 0
