"""`dfd study`: re-run one of the paper's experiments over several seeds (ray_jobs.study)."""
from __future__ import annotations

import sys

from dfd.cli import _flags
from dfd.config import InferConfig, TrainConfig
from dfd.study import STUDIES

# The training and inference settings a study takes as flags (the rest is the preset's).
TRAIN_FLAGS = ("epochs", "batch_size", "learning_rate", "workers", "cpus_per_worker",
               "gpus_per_worker")
INFER_FLAGS = ("actors", "gpus_per_actor", "aggregation")


def _names(text: str | None) -> tuple[str, ...] | None:
    return tuple(n.strip() for n in text.split(",") if n.strip()) if text else None


def register(sub) -> None:
    p = sub.add_parser(
        "study", help="re-run one of the paper's experiments over several seeds",
        description="Train or evaluate each variant of a study with the same data and budget "
                    "over several seeds, and write a table (mean and spread of video-level "
                    "AUC, log loss and accuracy on the held-out parts) and plots to --out. "
                    "augmentation: none/hflip/rotation/zoom. backbone: paper_cnn vs "
                    "efficientnet_b0. occlusion: face regions hidden on held-out crops, and "
                    "an occlusion-sensitivity map. split: the paper's random image split vs "
                    "the leak-free split.")
    p.add_argument("kind", choices=STUDIES)
    p.add_argument("--data", required=True, metavar="URI",
                   help="face-shard tree with held-out (test) parts, from `dfd preprocess`")
    p.add_argument("--out", required=True, metavar="DIR", help="where tables and plots go")
    p.add_argument("--runs", metavar="DIR",
                   help="where training runs live (default OUT/runs); give studies the same "
                        "one and they train a shared baseline once, and reuse finished runs")
    p.add_argument("--seeds", type=int, default=3, help="training seeds per variant (3)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--variants", metavar="A,B",
                   help="augmentation or backbone: the variants to run (default all)")
    p.add_argument("--regions", metavar="A,B",
                   help="occlusion: regions to hide (default forehead,eyes,nose,mouth,jaw,"
                        "left_half,right_half)")
    p.add_argument("--patch", type=int, default=32,
                   help="occlusion: side in pixels of the grey square of the sensitivity map, "
                        "dividing 256 (32); 0 for no map")
    p.add_argument("--run-dir", dest="model_runs", action="append", metavar="RUN",
                   help="occlusion: a trained run dir to evaluate (repeat for several) "
                        "instead of training the baseline per seed")
    _flags.add_preset(p, what="training and inference settings")
    _flags.add_fields(p, TrainConfig, TRAIN_FLAGS,
                      help={"batch_size": "global training batch size",
                            "workers": "Ray Train workers per run"})
    _flags.add_fields(p, InferConfig, INFER_FLAGS, help={"actors": "Ray Data scoring actors"})
    p.add_argument("--address", help="an existing Ray cluster (default: a local Ray)")
    p.set_defaults(func=run, log_dir="out")


def run(args) -> int:
    from dfd.errors import DfdError
    from dfd.study import occlusion

    if args.seeds < 1:
        raise DfdError(f"--seeds must be at least 1, got {args.seeds}")
    if args.variants and args.kind not in ("augmentation", "backbone"):
        raise DfdError("--variants applies to the augmentation and backbone studies")
    if (args.regions or args.model_runs) and args.kind != "occlusion":
        raise DfdError("--regions and --run-dir apply to the occlusion study")
    try:
        regions = occlusion.parse_regions(_names(args.regions))
    except ValueError as exc:
        raise DfdError(str(exc)) from None

    from ray_jobs import study

    train_cfg = _flags.from_args(args, "train", names=TRAIN_FLAGS)
    infer_cfg = _flags.from_args(args, "infer", names=INFER_FLAGS)
    plan = study.StudyPlan(
        kind=args.kind, seeds=tuple(range(args.first_seed, args.first_seed + args.seeds)),
        train=train_cfg, infer=infer_cfg, variants=_names(args.variants), regions=regions,
        patch=args.patch or None, model_runs=tuple(args.model_runs or ()))
    record = study.run_study(plan, args.data, args.out, runs_root=args.runs,
                             address=args.address)
    from dfd import output_tree, storage

    sys.stdout.write(storage.read_text(output_tree.join(args.out, "table.md")) or "")
    print(f"\nwrote {args.out} ({record['wall_seconds']:.0f} s)")
    return 0
