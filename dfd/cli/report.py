"""`dfd report`: the HTML report and PNGs of a predictions folder."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "report", help="HTML report and plots of a predictions folder",
        description="Render report.html (self-contained), its PNGs and a Kaggle submission.csv "
                    "from the --out folder of `dfd infer`; --run-dir adds the training curves.")
    p.add_argument("--predictions", required=True, metavar="DIR",
                   help="folder holding frame_predictions.parquet and video_predictions.parquet")
    p.add_argument("--run-dir", metavar="DIR", help="training run dir (history.json)")
    p.add_argument("--out", required=True, metavar="DIR", help="where the report goes")
    p.add_argument("--videos", metavar="CSV",
                   help="write the submission for these videos, in this order (a CSV whose "
                        "first column is filename, e.g. Kaggle's sample_submission.csv)")
    p.set_defaults(func=run)


def run(args) -> int:
    import tempfile
    from pathlib import Path

    from dfd import report, run_dir, storage, submission

    # The report renders from local files: bucket folders are read into scratch first and the
    # report is copied into the --out bucket after.
    with tempfile.TemporaryDirectory(prefix="dfd-report-") as scratch:
        predictions = storage.local_copy(
            args.predictions, (report.FRAME_PREDICTIONS, report.VIDEO_PREDICTIONS,
                               report.METRICS), Path(scratch, "predictions"))
        history = args.run_dir and storage.local_copy(
            args.run_dir, (run_dir.HISTORY, run_dir.CONFIG), Path(scratch, "run"))
        out = storage.local_path(args.out) if storage.is_local(args.out) else Path(scratch, "out")
        path = report.render_report(predictions, out, run_dir=history or None)
        _, videos, _ = report.read_predictions(predictions)
        if args.videos:
            n = submission.write_submission(dict(zip(videos["video"], videos["p_fake"])),
                                            out / report.SUBMISSION,
                                            template=submission.read_template(args.videos))
            print(f"submission for {n} videos from {args.videos}")
        if not storage.is_local(args.out):
            storage.publish_folder(out, args.out)
            path = f"{args.out.rstrip('/')}/{path.name}"
    if videos["video"] and all(label is None for label in videos["label"]):
        print(report.NO_LABELS.format(n=len(videos["video"])))
    print(path)
    return 0
