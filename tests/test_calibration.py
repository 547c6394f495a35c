"""Temperature scaling and the threshold: fitted on validation videos, stored in the run dir,
applied to the model's video scores by `dfd infer`, reported before and after."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from dfd import calibration, evaluation, metrics
from dfd.errors import DfdError
from tests.infer_fixtures import make_face_tree, make_run_dir


def overconfident(n: int = 400, seed: int = 0, sharpness: float = 3.0):
    """Labels and scores whose logits are ``sharpness`` times the true log odds."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    log_odds = np.where(y == 1, 1.0, -1.0) + rng.normal(size=n)
    return y, 1 / (1 + np.exp(-sharpness * log_odds))


def test_the_fitted_temperature_is_the_one_of_least_log_loss_and_keeps_the_order():
    y, p = overconfident()
    t = calibration.fit_temperature(y, p)
    grid = np.exp(np.linspace(math.log(0.05), math.log(20), 4001))
    losses = [metrics.log_loss(y, calibration.apply_temperature(p, g)) for g in grid]
    assert t == pytest.approx(grid[int(np.argmin(losses))], rel=2e-3)
    assert t > 1  # over-confident scores are softened
    after = calibration.apply_temperature(p, t)
    assert metrics.log_loss(y, after) < metrics.log_loss(y, p)
    assert metrics.roc_auc(y, after) == pytest.approx(metrics.roc_auc(y, p))
    # p' = sigmoid(logit(p) / T)
    assert calibration.apply_temperature([0.8], 2.0)[0] == pytest.approx(
        1 / (1 + math.exp(-math.log(4) / 2)))


def test_the_threshold_is_the_one_of_highest_accuracy_nearest_one_half():
    y = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.35, 0.4, 0.6, 0.7, 0.9])
    t = calibration.choose_threshold(y, p)
    assert metrics.accuracy(y, p, threshold=t) == max(
        metrics.accuracy(y, p, threshold=c) for c in np.linspace(0, 1, 1001))
    assert t == pytest.approx(0.5)  # 0.375 ... 0.6 all score 7/8: 0.5 is among them
    assert calibration.choose_threshold([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4]) == pytest.approx(0.35)


def test_reliability_bins_count_every_video_and_compare_score_with_fake_rate():
    y, p = overconfident(200)
    bins = calibration.reliability(y, p)
    assert len(bins) == 10 and sum(b["n"] for b in bins) == 200
    for b in bins:
        inside = (p >= b["lo"]) & ((p < b["hi"]) | (b["hi"] == 1.0))
        assert b["n"] == int(inside.sum())
        if b["n"]:
            assert b["mean_p_fake"] == pytest.approx(p[inside].mean())
            assert b["fake_rate"] == pytest.approx(y[inside].mean())


@pytest.fixture()
def run_with_calibration(tmp_path) -> Path:
    run = make_run_dir(tmp_path / "run")
    y, p = overconfident(100)
    videos = [{"video": f"v{i}.mp4", "label": int(label), "p_fake": float(score),
               "scored_by": "model"} for i, (label, score) in enumerate(zip(y, p))]
    videos.append({"video": "x.mp4", "label": 1, "p_fake": 0.5, "scored_by": "fallback"})
    calibration.write(str(run), calibration.fit(videos, aggregation="mean", model="m",
                                                data="d"))
    return run


def test_what_cannot_be_applied_is_one_clear_error(tmp_path, run_with_calibration):
    bare = make_run_dir(tmp_path / "bare")
    with pytest.raises(DfdError, match="^--calibration temperature: .* has no calibration.json; "
                                       "fit one first with `dfd calibrate"):
        calibration.resolve(str(bare), method="temperature", threshold="0.5",
                            aggregation="mean")
    with pytest.raises(DfdError, match="^--threshold validation: .* has no calibration.json"):
        calibration.resolve(str(bare), method="none", threshold="validation",
                            aggregation="mean")
    run = str(run_with_calibration)
    with pytest.raises(DfdError, match="fitted on mean-aggregated scores"):
        calibration.resolve(run, method="temperature", threshold="0.5", aggregation="max")
    with pytest.raises(DfdError, match="--threshold must be a probability or 'validation'"):
        calibration.resolve(run, method="none", threshold="high", aggregation="mean")
    with pytest.raises(DfdError, match="unknown --calibration"):
        calibration.resolve(run, method="platt", threshold="0.5", aggregation="mean")
    # A model exported after the fit (training continued) makes calibration.json stale.
    from dfd.models import load_model, save_model

    model = load_model(str(run_with_calibration / "model"))
    model.weights[0].assign(model.weights[0] + 1.0)
    save_model(model, str(run_with_calibration / "model"), name="paper_cnn", options={})
    with pytest.raises(DfdError, match="fitted to another model"):
        calibration.resolve(run, method="temperature", threshold="0.5", aggregation="mean")


def test_calibration_json_holds_the_fit_and_the_threshold_on_both_scales(run_with_calibration):
    fitted = json.loads((run_with_calibration / "calibration.json").read_text())
    y, p = overconfident(100)
    assert fitted["fitted_on"] == {"split": "validation", "videos": 100,
                                   "n_fake": int(y.sum()), "n_real": int((y == 0).sum())}
    t = fitted["temperature"]
    assert t == pytest.approx(calibration.fit_temperature(y, p))
    assert fitted["log_loss"] == {
        "before": pytest.approx(metrics.log_loss(y, p)),
        "after": pytest.approx(metrics.log_loss(y, calibration.apply_temperature(p, t)))}
    raw = fitted["threshold"]["none"]
    assert fitted["threshold"]["temperature"] == pytest.approx(
        calibration.apply_temperature([raw], t)[0])
    assert fitted["threshold"]["accuracy"] == metrics.accuracy(y, p, threshold=raw)
    cal = calibration.resolve(str(run_with_calibration), method="temperature",
                              threshold="validation", aggregation="mean")
    assert cal.threshold == fitted["threshold"]["temperature"]
    assert cal.raw_threshold == pytest.approx(raw)


def test_evaluation_calibrates_model_scores_states_the_threshold_and_reports_it(
        run_with_calibration, tmp_path):
    from sklearn.metrics import accuracy_score, log_loss

    from dfd import report

    cal = calibration.resolve(str(run_with_calibration), method="temperature",
                              threshold="validation", aggregation="mean")
    rng = np.random.default_rng(3)
    frames = []
    for v in range(30):
        label = v % 2
        for f in range(3):
            frames.append({"video": f"v{v:02d}.mp4", "part": 5, "frame_index": f,
                           "face_index": 0, "label": label, "model": "m",
                           "p_fake": float(np.clip(0.5 + (label - 0.5) * rng.uniform(0, 1.6),
                                                   0.01, 0.99))})
    rejected = [{"video": "x.mp4", "part": 5, "reason": "no_face", "label": 1}]
    raw_videos, raw = evaluation.evaluate_model(frames, model="m", rule="mean",
                                                rejected=rejected)
    videos, evaluated = evaluation.evaluate_model(frames, model="m", rule="mean",
                                                  rejected=rejected, calibration=cal)
    assert "calibration" not in raw and raw["video"]["threshold"] == 0.5
    by_name = {v["video"]: v for v in raw_videos}
    for v in videos:
        before = by_name[v["video"]]["p_fake"]
        expected = before if v["scored_by"] == "fallback" else \
            calibration.apply_temperature([before], cal.temperature)[0]
        assert v["p_fake"] == pytest.approx(expected)
    # The video figures are over the calibrated scores, called at the stated threshold.
    y = [v["label"] for v in videos]
    p = [v["p_fake"] for v in videos]
    assert evaluated["video"]["threshold"] == cal.threshold
    assert evaluated["video"]["accuracy"] == pytest.approx(
        accuracy_score(y, [int(x > cal.threshold) for x in p]))
    assert evaluated["video"]["log_loss"] == pytest.approx(log_loss(y, p))
    assert evaluated["frame"]["threshold"] == pytest.approx(cal.raw_threshold)
    block = evaluated["calibration"]
    model_rows = [v for v in videos if v["scored_by"] == "model"]
    assert block["videos"] == len(model_rows) == 30
    assert block["log_loss"]["after"] == pytest.approx(
        log_loss([v["label"] for v in model_rows], [v["p_fake"] for v in model_rows]))
    assert block["log_loss"]["before"] == pytest.approx(
        log_loss([v["label"] for v in model_rows],
                 [by_name[v["video"]]["p_fake"] for v in model_rows]))
    assert [b["n"] for b in block["reliability"]["after"]] == \
        [b["n"] for b in calibration.reliability(
            [v["label"] for v in model_rows], [v["p_fake"] for v in model_rows])]

    out = tmp_path / "eval"
    evaluation.write_evaluation(str(out), frames, videos, evaluated)
    page = report.render_report(out, out / "report").read_text()
    assert "<h2>Calibration</h2>" in page and (out / "report" / "reliability.png").is_file()
    assert f"{block['log_loss']['before']:.4f}" in page
    assert f"{block['log_loss']['after']:.4f}" in page
    assert f"p(FAKE) &gt; {cal.threshold:g}." in page


@pytest.mark.slow
def test_dfd_calibrate_fits_on_validation_and_dfd_infer_applies_it(tmp_path, capsys):
    from dfd.cli import main

    data = tmp_path / "faces"
    make_face_tree(data, parts={1: "mixed", 2: "mixed", 3: "test"}, originals=3, frames=3)
    run = make_run_dir(tmp_path / "run")
    assert main(["infer", "--data", str(data), "--run-dir", str(run), "--out",
                 str(tmp_path / "x"), "--calibration", "temperature", "--actors", "1"]) == 1
    assert "has no calibration.json; fit one first with `dfd calibrate" in \
        capsys.readouterr().err

    assert main(["calibrate", "--data", str(data), "--run-dir", str(run), "--actors", "1"]) == 0
    fitted = json.loads((run / "calibration.json").read_text())
    validation = pq.read_table(run / "calibration" / "video_predictions.parquet").to_pylist()
    scored = [v for v in validation if v["scored_by"] == "model"]
    # Parts 1 and 2 each keep one original (a REAL and its FAKE) for validation.
    assert fitted["fitted_on"]["videos"] == len(scored) == 4
    assert fitted["temperature"] == pytest.approx(calibration.fit_temperature(
        [v["label"] for v in scored], [v["p_fake"] for v in scored]))

    out = tmp_path / "eval"
    assert main(["infer", "--data", str(data), "--run-dir", str(run), "--out", str(out),
                 "--calibration", "temperature", "--threshold", "validation",
                 "--actors", "1"]) == 0
    evaluated = json.loads((out / "metrics.json").read_text())
    assert evaluated["calibration"]["temperature"] == fitted["temperature"]
    assert evaluated["video"]["threshold"] == fitted["threshold"]["temperature"]
    # Each model-scored video: the mean of its crops' raw scores, then the temperature.
    frames = pq.read_table(out / "frame_predictions.parquet").to_pylist()
    for v in pq.read_table(out / "video_predictions.parquet").to_pylist():
        if v["scored_by"] != "model":
            assert v["p_fake"] == 0.5
            continue
        mean = np.mean([f["p_fake"] for f in frames if f["video"] == v["video"]])
        assert v["p_fake"] == pytest.approx(
            calibration.apply_temperature([mean], fitted["temperature"])[0])
    assert "<h2>Calibration</h2>" in (out / "report" / "report.html").read_text()


@pytest.mark.slow
def test_dfd_predict_applies_the_calibration_as_dfd_infer_does(tmp_path, run_with_calibration):
    import contextlib
    import io

    from dfd import config
    from dfd.cli import main
    from dfd.synth import generate

    [part_dir] = generate(tmp_path / "raw", config.SynthConfig(
        parts=1, first_part=4, originals=2, fakes_per_original=1, width=480, height=272,
        frames=12, zipped=False, portrait_fraction=0.0, seed=1))

    def predict(*flags):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["predict", "--run-dir", str(run_with_calibration), str(part_dir),
                         "--frames-per-video", "2", "--json", *flags]) == 0
        return json.loads(out.getvalue())

    raw = predict()
    calibrated = predict("--calibration", "temperature", "--threshold", "validation",
                         "--out", str(tmp_path / "eval"))
    fitted = json.loads((run_with_calibration / "calibration.json").read_text())
    assert (raw["calibration"], raw["threshold"]) == ("none", 0.5)
    assert (calibrated["calibration"], calibrated["threshold"]) == \
        ("temperature", fitted["threshold"]["temperature"])
    before = {v["video"]: v for v in raw["videos"]}
    assert len(before) == 4 and any(v["n_faces"] for v in raw["videos"])
    for v in calibrated["videos"]:
        p = before[v["video"]]["p_fake"]
        assert v["p_fake"] == pytest.approx(
            calibration.apply_temperature([p], fitted["temperature"])[0] if v["n_faces"] else p)
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated["video"]["threshold"] == fitted["threshold"]["temperature"]
    assert evaluated["calibration"]["temperature"] == fitted["temperature"]
