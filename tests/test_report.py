"""The report and the Kaggle submission CSV, from a predictions folder like `dfd infer` writes."""
import json
import re

import numpy as np
import pytest

import schemas
from dfd import aggregate, metrics, report, shards, submission


def _predictions_dir(tmp_path):
    rng = np.random.default_rng(3)
    frames = []
    for part in (45, 46):
        for k in range(12):
            label = k % 2
            for frame_index in (0, 7, 14, 21, 28):
                p = float(np.clip(0.5 + (0.3 if label else -0.3) + rng.normal(0, 0.2), 0, 1))
                frames.append({"video": f"v{part}_{k:02d}.mp4", "part": part,
                               "frame_index": frame_index, "face_index": 0, "label": label,
                               "p_fake": p, "model": "paper_cnn@run"})
    videos = aggregate.video_records(
        {k: [f[k] for f in frames] for k in ("video", "part", "label", "p_fake")},
        model="paper_cnn@run",
        faceless=[{"video": "noface.mp4", "part": 46, "label": 1}])
    out = tmp_path / "pred"
    out.mkdir()
    shards.write_parquet(frames, str(out / report.FRAME_PREDICTIONS), schemas.FRAME_PREDICTION)
    shards.write_parquet(videos, str(out / report.VIDEO_PREDICTIONS), schemas.VIDEO_PREDICTION)
    evaluated = metrics.evaluate({k: [f[k] for f in frames] for k in ("label", "p_fake", "part")},
                                 {k: [v[k] for v in videos] for k in ("label", "p_fake", "part")})
    (out / report.METRICS).write_text(json.dumps(evaluated))
    return out, frames, videos, evaluated


def _run_dir(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    history = [{"loss": 0.7 - 0.1 * e, "accuracy": 0.5 + 0.1 * e, "auc": 0.5 + 0.1 * e,
                "val_loss": 0.72 - 0.08 * e, "val_accuracy": 0.5 + 0.08 * e} for e in range(4)]
    (run / "history.json").write_text(json.dumps(history))
    (run / "config.json").write_text(json.dumps({"train": {"model": "paper_cnn"}}))
    return run


def test_report_is_one_self_contained_page_with_every_section(tmp_path):
    pred, frames, videos, evaluated = _predictions_dir(tmp_path)
    out = tmp_path / "report"
    path = report.render_report(pred, out, run_dir=_run_dir(tmp_path))
    page = path.read_text()
    for heading in ("Overall", "Per part (video level)", "ROC and confusion matrix",
                    "Scores by true label", "Aggregation rules", "Training curves"):
        assert f"<h2>{heading}</h2>" in page
    assert "part 45" in page and "part 46" in page
    # Self-contained: every image is inline, nothing is fetched.
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) == 5 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "href=" not in page
    # The video figures on the page are those of metrics.json.
    assert f"{evaluated['video']['log_loss']:.4f}" in page
    assert "1 without a face, scored 0.5" in page
    for name in ("roc.png", "confusion.png", "scores.png", "aggregation.png", "training.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_rule_comparison_scores_each_rule_on_the_same_crops(tmp_path):
    _, frames, videos, evaluated = _predictions_dir(tmp_path)
    cols = {k: [r[k] for r in frames] for k in frames[0]}
    vcols = {k: [r[k] for r in videos] for k in videos[0]}
    rows = {r["rule"]: r for r in report.compare_aggregations(cols, vcols)}
    assert list(rows) == list(aggregate.names())
    # The mean row is exactly the video level of metrics.json (the videos were made by mean).
    assert rows["mean"]["log_loss"] == pytest.approx(evaluated["video"]["log_loss"])
    assert all(r["n"] == 25 for r in rows.values())  # 24 videos with faces + 1 faceless
    by_hand = {v: aggregate.aggregate([f["p_fake"] for f in frames if f["video"] == v], "max")
               for v in {f["video"] for f in frames}}
    labels = {f["video"]: f["label"] for f in frames}
    names = sorted(by_hand)
    expected = metrics.log_loss([labels[n] for n in names] + [1],
                                [by_hand[n] for n in names] + [0.5])
    assert rows["max"]["log_loss"] == pytest.approx(expected)


def test_report_without_run_dir_or_metrics_json_still_renders(tmp_path):
    pred, *_ = _predictions_dir(tmp_path)
    (pred / report.METRICS).unlink()
    path = report.render_report(pred, tmp_path / "r")
    assert "Training curves" not in path.read_text()
    assert not (tmp_path / "r" / "training.png").exists()


def test_report_on_a_folder_without_predictions_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="frame_predictions.parquet.*dfd infer"):
        report.render_report(tmp_path, tmp_path / "r")


def test_submission_csv_is_kaggle_format_for_any_set_of_videos(tmp_path):
    pred, frames, videos, _ = _predictions_dir(tmp_path)
    report.render_report(pred, tmp_path / "r")
    written = submission.read_submission(tmp_path / "r" / report.SUBMISSION)
    assert written == {v["video"]: v["p_fake"] for v in videos}  # exact round trip
    assert written["noface.mp4"] == 0.5
    # A chosen set, in its order; a video never scored gets 0.5.
    path = tmp_path / "sub.csv"
    n = submission.write_submission({"a.mp4": 0.25, "b.mp4": 0.9}, path,
                                    videos=["b.mp4", "zz.mp4"])
    assert n == 2
    assert path.read_text() == "filename,label\nb.mp4,0.9\nzz.mp4,0.5\n"
    sample = tmp_path / "sample_submission.csv"
    sample.write_text("filename,label\nb.mp4,0.5\na.mp4,0.5\n")
    assert submission.read_videos(sample) == ["b.mp4", "a.mp4"]
    not_a_submission = tmp_path / "x.csv"
    not_a_submission.write_text("f,l\n")
    with pytest.raises(ValueError, match="filename,label"):
        submission.read_submission(not_a_submission)


def test_report_command_writes_the_page_and_a_submission_for_chosen_videos(tmp_path, capsys):
    from dfd.cli import main

    pred, _, videos, _ = _predictions_dir(tmp_path)
    sample = tmp_path / "sample_submission.csv"
    sample.write_text("filename,label\nnoface.mp4,0.5\nunseen.mp4,0.5\nv45_03.mp4,0.5\n")
    status = main(["report", "--predictions", str(pred), "--run-dir", str(_run_dir(tmp_path)),
                   "--out", str(tmp_path / "r"), "--videos", str(sample)])
    assert status == 0
    assert capsys.readouterr().out.splitlines()[-1] == str(tmp_path / "r" / report.REPORT)
    scores = {v["video"]: v["p_fake"] for v in videos}
    lines = (tmp_path / "r" / report.SUBMISSION).read_text().splitlines()
    assert lines == ["filename,label", "noface.mp4,0.5", "unseen.mp4,0.5",
                     f"v45_03.mp4,{scores['v45_03.mp4']!r}"]
    assert main(["report", "--predictions", str(tmp_path), "--out", str(tmp_path / "x")]) == 1
    assert "dfd report: error: " in capsys.readouterr().err
