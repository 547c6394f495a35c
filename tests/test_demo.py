"""`dfd demo` end to end (synthetic data -> Beam -> Ray Train -> Ray Data -> report), at the
smoke size, in a fresh process as a user runs it; then a second run reuses every stage."""
import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from tests.chatter import chatter_in

pytestmark = pytest.mark.slow


def demo(workdir, *extra):
    return subprocess.run([sys.executable, "-m", "dfd.cli", "demo", "--workdir", str(workdir),
                           *extra], capture_output=True, text=True, timeout=1500)


def test_demo_end_to_end_then_reused(tmp_path):
    work = tmp_path / "demo"
    first = demo(work)
    assert first.returncode == 0, first.stderr[-4000:]

    # every output the demo names exists
    parts = sorted(p.name for p in (work / "dfdc").glob("dfdc_train_part_*.zip"))
    assert parts == [f"dfdc_train_part_0{i}.zip" for i in range(3)]
    manifest = json.loads((work / "faces" / "manifest.json").read_text())
    assert sorted(manifest["parts"]) == ["00", "01", "02"]
    for fmt in ("parquet", "tfrecord"):
        assert list((work / "faces" / fmt / "part-02").glob(f"faces-test-*.{fmt}"))
    run = work / "run"
    for name in ("model/model.json", "model/weights.h5", "history.json", "config.json"):
        assert (run / name).exists(), name
    assert list((run / "plots").glob("*.png"))
    evaluation = work / "eval"
    for name in ("frame_predictions.parquet", "video_predictions.parquet", "metrics.json",
                 "report/report.html"):
        assert (evaluation / name).exists(), name

    # the held-out part: one row per video, enough of them for an interval to say something,
    # and the model generalizes to it: the AUC's lower 95 % bound is above chance, and so is
    # the log loss below chance's
    metrics = json.loads((evaluation / "metrics.json").read_text())
    videos = pq.read_table(evaluation / "video_predictions.parquet").to_pylist()
    assert {v["part"] for v in videos} == {2}
    assert metrics["per_part"]["2"]["n"] == len(videos) == metrics["video"]["n"] >= 60
    validation = pq.read_table(work / "faces" / "parquet", columns=["video", "split"])
    assert len({v for v, s in zip(validation["video"].to_pylist(),
                                  validation["split"].to_pylist()) if s == "validation"}) >= 20
    video = metrics["video"]
    assert video["ci95"]["auc"][0] > 0.5, video
    assert video["log_loss"] < video["chance_log_loss"], video
    assert metrics["coverage"]["overall"]["scored_by_model"] == len(videos)
    assert "video AUC" in first.stdout and "report:" in first.stdout

    # Quiet: TensorFlow's, Beam's and Ray's start-up lines and logs are in the demo's log file,
    # not on the terminal.
    assert not chatter_in(first.stdout + first.stderr), chatter_in(first.stdout + first.stderr)
    assert chatter_in((work / "dfd-demo.log").read_text())

    # a second run reuses every finished stage
    second = demo(work)
    assert second.returncode == 0, second.stderr[-4000:]
    assert second.stdout.count("reusing") == 3
    assert "already committed, skipped" in second.stdout
