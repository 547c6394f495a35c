"""`dfd preprocess`: the Beam pipeline from DFDC parts to face shards."""
from __future__ import annotations

import argparse

from dfd.config import PRESETS
from dfd.errors import DfdError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True,
                   help="folder URI holding DFDC parts (zip or folder), or "
                        "kaggle://<competition> to fetch them (needs --staging)")
    p.add_argument("--output", required=True, help="output URI for shards and manifest")
    add_processing_arguments(p)


def add_processing_arguments(p: argparse.ArgumentParser) -> None:
    """Everything but --input and --output (shared with `dfd sync`)."""
    p.add_argument("--staging",
                   help="where parts fetched from a kaggle:// input are kept (folder, gs:// "
                        "or s3://); fetched parts stay there, verified, for later runs")
    p.add_argument("--preset", default="paper", choices=sorted(PRESETS))
    p.add_argument("--parts", help="parts to process, e.g. 0-9,12 (default: all found)")
    p.add_argument("--test-parts", help="parts held out whole as the test split, e.g. 45-49")
    p.add_argument("--validation-fraction", type=float)
    p.add_argument("--fakes-per-original",
                   help="fakes kept per original: a number (1 balances) or 'all'")
    p.add_argument("--frames-per-video", type=int)
    p.add_argument("--sampling", choices=["random", "uniform"])
    p.add_argument("--detector", choices=["retinaface", "mtcnn"])
    p.add_argument("--margin", type=float)
    p.add_argument("--image-format", choices=["jpeg", "png"])
    p.add_argument("--shards", type=int, dest="shards_per_split",
                   help="shards per part and split")
    p.add_argument("--seed", type=int)
    p.add_argument("--force", action="store_true", help="redo parts already committed")


def register(sub) -> None:
    p = sub.add_parser(
        "preprocess", help="DFDC parts -> balanced face shards (Apache Beam)",
        description="Decode sampled frames, crop faces and write Parquet + TFRecord shards. "
                    "Unknown flags go to Beam untouched (e.g. --runner=DataflowRunner "
                    "--project=P --region=R --temp_location=gs://...).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_arguments(p)
    p.add_argument("--summary-json", help="also write the run summary to this file")
    p.set_defaults(func=run, accepts_unknown=True)


def print_summary(summary: dict) -> None:
    for f in summary.get("fetched", []):
        print(f"part {f['part']:>2}: fetched {f['size']:,d} bytes from Kaggle "
              f"in {f['seconds']:.1f} s")
    for s in summary["committed"]:
        splits = ", ".join(f"{k} {v}" for k, v in s["records_by_split"].items()) or "none"
        print(f"part {s['part']:>2}: {s['videos_in_metadata']} videos, "
              f"{s['videos_with_records']} with faces, {s['videos_rejected']} rejected, "
              f"{s['fakes_left_out']} fakes left out; {s['records']} records ({splits})")
    for part in summary.get("skipped", []):
        print(f"part {part:>2}: already committed, skipped")
    for f in summary["failed"]:
        print(f"part {f['part']:>2}: FAILED ({f['reason']}): {f['detail']}")
    if summary.get("seconds"):
        print(f"done in {summary['seconds']:.1f} s")


def check_staging(args) -> None:
    """A kaggle:// input needs somewhere to put the parts (checked before Beam loads)."""
    if args.input.startswith("kaggle://") and not args.staging:
        raise DfdError(f"{args.input} needs --staging: a folder or gs:// / s3:// URI where "
                       f"the fetched parts are kept")


def run(args) -> int:
    import json

    check_staging(args)
    from pipelines.preprocess import run_with

    summary = run_with(args, args.unknown)
    print_summary(summary)
    if args.summary_json:
        with open(args.summary_json, "w") as f:
            json.dump(summary, f, indent=2, sort_keys=True)
    return 1 if summary["failed"] else 0
