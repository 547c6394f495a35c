"""`dfd sync`: process the DFDC parts that arrived since the last run, one run at a time.

    dfd sync --links dfdc-links.txt --staging gs://b/dfdc-raw \\
        --output gs://b/faces [--score-with runs/r1] [--parts 0-49] [preprocess options]
    dfd sync --source gs://b/dfdc-mirror --output gs://b/faces     # a watched bucket folder

New parts are new lines in the links file, or new part objects under the watched folder.
Fetches the parts the output's manifest does not hold (under the same config) into
--staging, processes only those, and with --score-with scores
them with the trained model and appends them to its generalization report (``dfd.sync``).
A lease in the output (``dfd.lease``) keeps two runs from processing the same parts.

Exit status: 0 when done, when there was nothing new ("nothing new"), and when another run
holds the lease (it is doing this work; one line says who holds it): a schedule must not
retry or alert on that. 1 when a part failed or the lease was lost mid-run.
"""
from __future__ import annotations

import argparse

from dfd.cli import _flags
from dfd.cli.preprocess import add_processing_arguments, preprocess_from_args, print_summary
from dfd.config import InferConfig
from dfd.lease import DEFAULT_TTL_S

# The inference settings of the scoring step that a flag can override.
SCORING_FLAGS = ("aggregation", "actors", "gpus_per_actor")


def register(sub) -> None:
    p = sub.add_parser(
        "sync", help="fetch and process only the DFDC parts not yet processed",
        description="Fetch and process the parts the output does not hold yet; optionally "
                    "score them and append them to the generalization report. Unknown "
                    "flags go to Beam untouched.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--source",
                   help="a watched folder (local, gs://, s3://) of parts; or give --links "
                        "FILE (needs --staging)")
    p.add_argument("--output", required=True, help="output URI for shards and manifest")
    add_processing_arguments(p)
    p.add_argument("--score-with", metavar="RUN_DIR",
                   help="score the new parts with this training run's model")
    p.add_argument("--report-dir", help="generalization report folder (default: "
                                        "RUN_DIR/generalization)")
    scoring = p.add_argument_group("scoring (with --score-with)")
    _flags.add_fields(scoring, InferConfig, SCORING_FLAGS,
                      help={"actors": "model replicas when scoring"})
    p.add_argument("--ray-address", help="Ray cluster for scoring (default: a local Ray)")
    p.add_argument("--lease-ttl", type=float, default=DEFAULT_TTL_S,
                   help="seconds a lease outlives its last renewal (renewed every quarter)")
    p.add_argument("--summary-json", help="also write the run summary to this file")
    p.set_defaults(func=run, accepts_unknown=True)


def run(args) -> int:
    import json

    from dfd.lease import Lease, LeaseHeld

    from dfd.errors import DfdError

    if not args.source and not args.links:
        raise DfdError("nothing to sync from: give --source (a watched folder of parts) or "
                       "--links FILE (the data page's part links)")
    from dfd.dfdc import check_part_source

    check_part_source(args.source, args.links, args.staging)
    if args.report_dir and not args.score_with:
        raise ValueError("--report-dir needs --score-with")
    lease = Lease(args.output, ttl_s=args.lease_ttl, purpose="sync")
    try:
        lease.acquire()
    except LeaseHeld as exc:
        print(f"another sync is running, nothing done: {exc}")
        return 0
    with lease:  # renews while the sync runs, releases at the end
        summary = _sync(args, lease)
    if args.summary_json:
        with open(args.summary_json, "w") as f:
            json.dump(summary, f, indent=2, sort_keys=True)
    return 1 if summary["failed"] else 0


def _sync(args, lease) -> dict:
    summary = preprocess_from_args(args, args.unknown, input=args.source,
                                   before_processing=lease.check)
    lease.check()
    new = [s["part"] for s in summary["committed"]]
    skipped = summary["skipped"]
    nothing_new = not new and not summary["failed"] and not summary.get("fetched")
    if not nothing_new:
        print_summary({**summary, "skipped": []})
        if skipped:
            print(f"{len(skipped)} part(s) already up to date ({_ranges(skipped)})")
    summary["scored"] = _score(args, new, lease) if args.score_with else None
    if nothing_new and not summary["scored"]:
        print(f"nothing new: {len(skipped)} part(s) up to date"
              + (f" ({_ranges(skipped)})" if skipped else ""))
    return summary


def _score(args, new: list[int], lease) -> dict | None:
    from dfd import sync
    from dfd import manifest as mf
    from dfd.metrics import format_summary

    report_dir = args.report_dir or sync.default_report_dir(args.score_with)
    pending = sync.mark_pending(report_dir, new)
    if not pending:
        return None
    manifest = mf.read(args.output)
    parts, empty = sync.scorable(pending, manifest)
    for part in empty:
        print(f"part {part:>2}: no face records, nothing to score")
    if not parts:
        sync.drop_pending(report_dir, empty)
        return {"parts": [], "report_dir": report_dir}
    lease.check()
    from ray_jobs.infer import run_inference

    batch = sync.batch_dir(report_dir)
    cfg = _flags.from_args(args, "infer", names=SCORING_FLAGS)
    scored = run_inference(args.output, args.score_with, batch, parts=set(parts), cfg=cfg,
                           address=args.ray_address, write_report=False)
    lease.check()
    evaluated = sync.append_scores(report_dir, batch, parts=parts, manifest=manifest,
                                   model=scored["run"]["model"], run_dir=args.score_with,
                                   done_without_scores=empty)
    for part in parts:
        print(f"part {part:>2}: scored, videos {format_summary(scored['per_part'][str(part)])}")
    print(f"generalization report ({len(evaluated['per_part'])} part(s)): "
          f"{sync.report_path(report_dir)}")
    print(f"  videos {format_summary(evaluated['video'])}")
    return {"parts": parts, "report_dir": report_dir, "video": evaluated["video"]}


def _ranges(parts: list[int]) -> str:
    """[0, 1, 2, 5] -> '00-02, 05'."""
    out, run = [], []
    for p in sorted(parts):
        if run and p == run[-1] + 1:
            run.append(p)
            continue
        if run:
            out.append(run)
        run = [p]
    if run:
        out.append(run)
    return ", ".join(f"{r[0]:02d}-{r[-1]:02d}" if len(r) > 1 else f"{r[0]:02d}" for r in out)
