"""`dfd predict`: score raw mp4 files with a trained model, end to end."""
from __future__ import annotations

import dataclasses
import json
import sys

from dfd.cli import _flags
from dfd.config import DEFAULT_PRESET, PRESETS, InferConfig, PreprocessConfig

# The preprocessing settings a flag can override.
SETTINGS_FLAGS = ("frames_per_video", "sampling", "detector", "margin", "seed")


def register(sub) -> None:
    p = sub.add_parser(
        "predict", help="score mp4 files (or folders of them) with a trained model",
        description="Sample frames, detect and crop faces as the preprocessing pipeline does, "
                    "score the crops with the run's model and aggregate them per video. The "
                    "sampling, detection and crop settings are those the training data's "
                    "manifest records, else PreprocessConfig's defaults; the flags below "
                    "override them. A video without a face scores 0.5. Each file that cannot "
                    "be read gets one error line and exit status 1; the others are scored.")
    p.add_argument("paths", nargs="+", metavar="VIDEO_OR_DIR",
                   help="mp4 files, or folders of them (a DFDC part folder's metadata.json "
                        "supplies labels and originals)")
    p.add_argument("--run-dir", required=True, metavar="URI", help="run dir of `dfd train`")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--csv", metavar="PATH", help="also write a Kaggle submission CSV")
    p.add_argument("--videos", metavar="CSV",
                   help="the submission's rows and columns, in order (e.g. Kaggle's "
                        "sample_submission.csv); a video not scored gets 0.5")
    p.add_argument("--out", metavar="DIR",
                   help="also write a predictions folder (frame and video predictions, "
                        "metrics.json) that `dfd report` renders; unlabelled videos such "
                        "as Kaggle's test_videos get scores and no metrics")
    p.add_argument("--aggregation", default="mean",
                   help="video score from crop scores: mean (default), median, max, confident")
    p.add_argument("--batch-size", type=int, default=64, help="crops per model call")
    _flags.add_fields(p, InferConfig, ("calibration", "threshold"),
                      help={"calibration": "none, or temperature: the run's calibration.json "
                                           "(from `dfd calibrate`) scales the video scores, "
                                           "as `dfd infer` does",
                            "threshold": "call a video FAKE when its score exceeds this: a "
                                         "probability, or 'validation' (calibration.json's)"})
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help=f"preprocessing preset to start from when the manifest records no "
                        f"settings (default: {DEFAULT_PRESET})")
    _flags.add_fields(p, PreprocessConfig, SETTINGS_FLAGS,
                      help={"seed": "frame-sampling seed"})
    p.set_defaults(func=run)


def settings(args) -> tuple[object, str]:
    """The PreprocessConfig to use and a line saying where it came from."""
    from dfd import config, predict

    recorded, why = predict.recorded_settings(args.run_dir)
    if recorded is not None:
        base, source = recorded, f"preprocessing settings {why}"
    else:
        name = args.preset or config.DEFAULT_PRESET
        base = config.preset("preprocess", name)
        source = f"preprocessing preset {name!r} ({why})"
    flags = _flags.overrides(args, PreprocessConfig, SETTINGS_FLAGS)
    cfg = config.override(base, **flags)
    if any(v is not None for v in flags.values()):
        source += " with " + ", ".join(f"{k}={v}" for k, v in flags.items() if v is not None)
    return cfg, source


def _table(results: list[dict], threshold: float) -> str:
    def label(v):
        return "-" if v is None else ("FAKE" if v else "REAL")

    width = max([len(r["video"]) for r in results] + [5])
    lines = [f"{'video':<{width}}  {'part':>4}  {'label':>5}  {'faces':>5}  {'p_fake':>6}  call"]
    for r in results:
        call = "FAKE" if r["p_fake"] > threshold else "REAL"
        part = "-" if r["part"] is None else str(r["part"])
        lines.append(f"{r['video']:<{width}}  {part:>4}  {label(r['label']):>5}  "
                     f"{r['n_faces']:>5}  {r['p_fake']:>6.4f}  {call}"
                     + ("  (no face)" if r["n_faces"] == 0 else ""))
    return "\n".join(lines)


def run(args) -> int:
    from dfd import aggregate, calibration, predict, submission
    from dfd.errors import DfdError
    from dfd.faces import get_detector

    aggregate.get(args.aggregation)
    calibrated = calibration.resolve(args.run_dir, method=args.calibration or "none",
                                     threshold=args.threshold or "0.5",
                                     aggregation=args.aggregation)
    files, name = predict.read_model_files(args.run_dir)
    cfg, source = settings(args)
    hashes = predict.data_config_hashes(args.run_dir)
    if hashes:
        # The manifest keeps only a hash of all settings (balancing and splits included), so
        # a match confirms the crops are made alike while a mismatch proves nothing.
        source += ("; they match the training data's config hash"
                   if predict.part_config_hashes(cfg) & hashes else
                   "; the training data's manifest holds only a hash of its settings, which "
                   "these do not reproduce: pass the flags it was preprocessed with")
    print(f"dfd predict: {source}", file=sys.stderr)
    if args.videos and not args.csv:
        raise DfdError("--videos orders the rows of --csv: give --csv PATH too")
    template = submission.read_template(args.videos) if args.videos else None
    crops: list[dict] = []
    results, failures = predict.predict_videos(
        args.paths, model=predict.load_model_files(files), model_name=name, cfg=cfg,
        detector=get_detector(cfg.detector), rule=args.aggregation,
        batch_size=args.batch_size, crops=crops)
    videos, block = [predict.video_prediction(r) for r in results], None
    if not calibrated.is_default:
        # The same mapping of the model's video scores as `dfd infer` applies.
        videos, block = calibrated.apply_to_videos(videos)
        results = [{**r, "p_fake": v["p_fake"]} for r, v in zip(results, videos)]
        print(f"dfd predict: calibration {calibrated.method} (temperature "
              f"{calibrated.temperature:.3f}), FAKE when p > {calibrated.threshold:g} "
              f"({calibrated.threshold_source})", file=sys.stderr)
    for failure in failures:
        print(f"dfd predict: error: {failure.line()}", file=sys.stderr)
    if args.json:
        print(json.dumps({"model": name, "settings": dataclasses.asdict(cfg),
                          "calibration": calibrated.method,
                          "threshold": calibrated.threshold,
                          "videos": results,
                          "errors": [{"path": str(f.path), "reason": f.reason,
                                      "detail": f.detail} for f in failures]},
                         indent=2, default=list))
    elif results:
        print(_table(results, calibrated.threshold))
    if args.csv:
        submission.write_submission({r["video"]: r["p_fake"] for r in results}, args.csv,
                                    template=template)
    if args.out:
        from dfd import evaluation

        evaluated = evaluation.evaluate_predictions(
            crops, videos, threshold=calibrated.threshold,
            frame_threshold=calibrated.raw_threshold)
        if block is not None:
            evaluated["calibration"] = block
        evaluation.write_evaluation(args.out, crops, videos, evaluated)
        print(f"dfd predict: predictions of {len(videos)} video(s) in {args.out} "
              f"(dfd report --predictions {args.out} ...)", file=sys.stderr)
    return 1 if failures else 0
