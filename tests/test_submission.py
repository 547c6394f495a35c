"""Kaggle's unlabelled test_videos: `dfd predict` scores them, `dfd report` writes the submission
in sample_submission.csv's order and columns, with no metrics and a line that says why."""
from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import pytest

from dfd import predict, report, submission
from dfd.cli import main

SAMPLE = "filename,label\nzzzunseen.mp4,0.5\nbbbbbbbbbb.mp4,0.5\naaaaaaaaaa.mp4,0.5\n"


def _cli(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in args])
    return status, out.getvalue(), err.getvalue()


def _unlabelled_predictions(folder: Path) -> dict[str, float]:
    from dfd import evaluation

    crops = [{"video": v, "part": -1, "frame_index": i, "face_index": 0, "label": None,
              "p_fake": p, "model": "paper_cnn"}
             for v, scores in (("aaaaaaaaaa.mp4", (0.25, 0.75)), ("bbbbbbbbbb.mp4", (0.125,)))
             for i, p in enumerate(scores)]
    # as dfd predict scores videos outside any DFDC part folder (no part, no label)
    videos = [predict.video_prediction({"video": v, "part": None, "label": None, "p_fake": p,
                                        "n_faces": n, "aggregation": "mean",
                                        "model": "paper_cnn"})
              for v, p, n in (("aaaaaaaaaa.mp4", 0.5, 2), ("bbbbbbbbbb.mp4", 0.125, 1))]
    evaluation.write_evaluation(str(folder), crops, videos,
                                evaluation.evaluate_predictions(crops, videos))
    return {v["video"]: v["p_fake"] for v in videos}


def test_report_of_unlabelled_videos_is_the_submission_without_metrics(tmp_path):
    scores = _unlabelled_predictions(tmp_path / "pred")
    sample = tmp_path / "sample_submission.csv"
    sample.write_text(SAMPLE)
    status, out, err = _cli("report", "--predictions", tmp_path / "pred", "--out",
                            tmp_path / "r", "--videos", sample)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == f"submission for 3 videos from {sample}"
    assert lines[1] == ("no metrics: none of these 2 videos has a label (Kaggle never published "
                        "the labels of its test_videos), so there is nothing to measure the "
                        "scores against; the scores are in submission.csv")
    assert (tmp_path / "r" / report.SUBMISSION).read_text() == (
        f"filename,label\nzzzunseen.mp4,0.5\nbbbbbbbbbb.mp4,{scores['bbbbbbbbbb.mp4']!r}\n"
        f"aaaaaaaaaa.mp4,{scores['aaaaaaaaaa.mp4']!r}\n")
    page = (tmp_path / "r" / report.REPORT).read_text()
    assert "no metrics: none of these 2 videos has a label" in page
    assert "log loss" not in page.lower() and not list((tmp_path / "r").glob("*.png"))


def test_a_template_that_is_not_a_submission_is_refused(tmp_path):
    bad = tmp_path / "x.csv"
    bad.write_text("video,score,extra\na.mp4,0.5,1\n")
    with pytest.raises(ValueError, match="expected a CSV with the columns filename,label"):
        submission.read_template(bad)
    good = tmp_path / "s.csv"
    good.write_text(SAMPLE)
    template = submission.read_template(good)
    assert template.header == ("filename", "label")
    assert template.videos == ("zzzunseen.mp4", "bbbbbbbbbb.mp4", "aaaaaaaaaa.mp4")


@pytest.mark.slow
def test_predict_scores_test_videos_into_a_submission_and_a_predictions_folder(tmp_path):
    from tests.infer_fixtures import make_run_dir
    from tests.video_fixtures import clip

    test_videos = tmp_path / "test_videos"  # as `dfd download --kaggle-files` lays it out
    test_videos.mkdir()
    for name, seed in (("aaaaaaaaaa.mp4", 0), ("bbbbbbbbbb.mp4", 1)):
        shutil.copy(clip(f"subm-{seed}.mp4", 12, seed=seed), test_videos / name)
    sample = tmp_path / "sample_submission.csv"
    sample.write_text(SAMPLE)
    run = make_run_dir(tmp_path / "run")
    status, out, err = _cli("predict", "--run-dir", run, test_videos, "--frames-per-video", 2,
                            "--csv", tmp_path / "submission.csv", "--videos", sample,
                            "--out", tmp_path / "pred")
    assert status == 0, err
    rows = (tmp_path / "submission.csv").read_text().splitlines()
    assert rows[0] == "filename,label"
    assert [r.split(",")[0] for r in rows[1:]] == ["zzzunseen.mp4", "bbbbbbbbbb.mp4",
                                                   "aaaaaaaaaa.mp4"]
    assert rows[1] == "zzzunseen.mp4,0.5"  # not among the videos: "no idea"

    frames, videos, evaluated = report.read_predictions(tmp_path / "pred")
    assert sorted(videos["video"]) == ["aaaaaaaaaa.mp4", "bbbbbbbbbb.mp4"]
    assert set(videos["label"]) == {None} and set(videos["part"]) == {-1}
    assert sum(videos["n_faces"]) == len(frames["video"]) > 0
    assert evaluated["video"]["n"] == 0  # nothing labelled to measure
    status, out, _ = _cli("report", "--predictions", tmp_path / "pred", "--out", tmp_path / "r",
                          "--videos", sample)
    assert status == 0 and "no metrics: none of these 2 videos has a label" in out
    assert (tmp_path / "r" / report.SUBMISSION).read_text() == \
        (tmp_path / "submission.csv").read_text()
