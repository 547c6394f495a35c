"""`dfd demo` end to end (synthetic data -> Beam -> Ray Train -> Ray Data -> report), at the
smoke size, in a fresh process as a user runs it; then a second run reuses every stage."""
import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

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

    # the held-out part: one row per video, and the model generalizes to it
    metrics = json.loads((evaluation / "metrics.json").read_text())
    videos = pq.read_table(evaluation / "video_predictions.parquet").to_pylist()
    assert {v["part"] for v in videos} == {2}
    assert metrics["per_part"]["2"]["n"] == len(videos) == metrics["video"]["n"]
    assert metrics["video"]["auc"] >= 0.75, metrics["video"]
    assert "video AUC" in first.stdout and "report:" in first.stdout

    # a second run reuses every finished stage
    second = demo(work)
    assert second.returncode == 0, second.stderr[-4000:]
    assert second.stdout.count("reusing") == 3
    assert "already committed, skipped" in second.stdout
