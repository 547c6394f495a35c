"""Every figure of dfd.metrics equals scikit-learn's on the same predictions."""
import json
import math

import numpy as np
import pytest
from sklearn import metrics as sk

from dfd import metrics

RNG = np.random.default_rng(7)


def _cases():
    n = 400
    y = RNG.integers(0, 2, n)
    informative = np.clip(0.5 + 0.3 * (y - 0.5) + RNG.normal(0, 0.25, n), 0.001, 0.999)
    # Scores rounded to one decimal put many ties across both labels: AUC and AP must
    # treat a tied group as one step, as scikit-learn does.
    tied = np.round(informative, 1).clip(0.001, 0.999)
    skewed_y = (RNG.random(n) < 0.84).astype(int)  # DFDC's natural mix of fakes
    skewed_p = np.clip(0.6 + 0.2 * (skewed_y - 0.5) + RNG.normal(0, 0.2, n), 0.01, 0.99)
    all_fake_calls = np.full(n, 0.9)
    return [("informative", y, informative), ("ties", y, tied),
            ("skewed", skewed_y, skewed_p), ("constant", y, all_fake_calls),
            ("small", np.array([0, 1, 1, 0, 1]), np.array([0.1, 0.4, 0.35, 0.8, 0.7]))]


@pytest.mark.parametrize("name,y,p", _cases(), ids=[c[0] for c in _cases()])
def test_every_figure_equals_scikit_learn(name, y, p):
    calls = (p > metrics.THRESHOLD).astype(int)
    got = metrics.summarize(y, p)
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(y, calls), abs=1e-12)
    assert got["precision"] == pytest.approx(sk.precision_score(y, calls, zero_division=0),
                                             abs=1e-12)
    assert got["recall"] == pytest.approx(sk.recall_score(y, calls, zero_division=0), abs=1e-12)
    assert got["f1"] == pytest.approx(sk.f1_score(y, calls, zero_division=0), abs=1e-12)
    assert got["auc"] == pytest.approx(sk.roc_auc_score(y, p), abs=1e-12)
    assert got["ap"] == pytest.approx(sk.average_precision_score(y, p), abs=1e-12)
    assert got["log_loss"] == pytest.approx(sk.log_loss(y, p, labels=[0, 1]), rel=1e-12)
    assert got["confusion_matrix"] == sk.confusion_matrix(y, calls, labels=[0, 1]).tolist()
    assert (got["n"], got["n_fake"], got["n_real"]) == (len(y), int(y.sum()), int((1 - y).sum()))


def test_roc_curve_spans_the_same_points_as_scikit_learn():
    y, p = _cases()[1][1:]
    fpr, tpr, thr = metrics.roc_curve(y, p)
    sk_fpr, sk_tpr, _ = sk.roc_curve(y, p, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    assert thr[0] == np.inf and np.all(np.diff(thr[1:]) < 0)


def test_log_loss_clips_certain_mistakes_to_the_stated_eps():
    y = np.array([1, 0, 1, 0])
    p = np.array([0.0, 1.0, 1.0, 0.0])  # two certain misses, two certain hits
    eps = metrics.LOG_LOSS_EPS
    expected = sk.log_loss(y, np.clip(p, eps, 1 - eps), labels=[0, 1])
    assert metrics.log_loss(y, p) == pytest.approx(expected, rel=1e-9)
    assert metrics.log_loss(y, p) == pytest.approx(-math.log(eps) / 2, rel=1e-4)
    assert math.isfinite(metrics.log_loss(y, p))


def test_chance_log_loss_is_the_label_prior_entropy():
    assert metrics.chance_log_loss(0.5) == pytest.approx(0.6931, abs=1e-4)
    assert metrics.chance_log_loss(metrics.DFDC_FAKE_FRACTION) == pytest.approx(0.441, abs=1e-3)
    y = (RNG.random(1000) < 0.3).astype(int)
    prior = np.full(y.size, y.mean())
    assert metrics.summarize(y, prior)["chance_log_loss"] == pytest.approx(
        sk.log_loss(y, prior), rel=1e-9)


def test_single_class_and_empty_sets_give_null_not_nan():
    only_fakes = metrics.summarize([1, 1, 1], [0.9, 0.2, 0.7])
    assert only_fakes["auc"] is None and only_fakes["ap"] is None
    assert only_fakes["recall"] == pytest.approx(2 / 3)
    empty = metrics.summarize([], [])
    assert empty["n"] == 0 and empty["accuracy"] is None and empty["log_loss"] is None
    json.dumps(empty, allow_nan=False)  # stays valid JSON


def test_bad_input_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="labels must be 0"):
        metrics.summarize([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="probabilities"):
        metrics.summarize([0, 1], [0.1, 1.2])
    with pytest.raises(ValueError, match="2 labels but 3 scores"):
        metrics.summarize([0, 1], [0.1, 0.2, 0.3])


def test_evaluate_reports_frames_videos_and_each_part_leaving_out_unlabelled_rows():
    frames = {"label": [1, 1, 0, 0, None], "p_fake": [0.9, 0.6, 0.2, 0.7, 0.5],
              "part": [3, 3, 3, 4, 4]}
    videos = {"label": [1, 0, 0, 1, None], "p_fake": [0.75, 0.2, 0.7, 0.5, 0.9],
              "part": [3, 3, 4, 4, 4]}
    out = metrics.evaluate(frames, videos)
    assert set(out) == {"frame", "video", "per_part", "bootstrap"}
    assert out["frame"]["n"] == 4 and out["video"]["n"] == 4
    assert set(out["per_part"]) == {"3", "4"}
    assert out["per_part"]["3"]["accuracy"] == 1.0
    # Part 4: a REAL called FAKE (0.7) and a faceless FAKE at 0.5 called REAL.
    assert out["per_part"]["4"]["accuracy"] == 0.0
    assert out["per_part"]["4"]["confusion_matrix"] == [[0, 1], [1, 0]]
    for block in [out["frame"], out["video"], *out["per_part"].values()]:
        assert {"accuracy", "precision", "recall", "f1", "auc", "ap", "log_loss",
                "n", "n_fake", "n_real"} <= set(block)
    json.dumps(out, allow_nan=False)


# ---- bootstrap intervals ---------------------------------------------------------------------

def _sk_percentiles(y, p, idx, level=0.95):
    """The percentile interval of each figure, each resample scored by scikit-learn."""
    tail = 100 * (1 - level) / 2
    auc, loss, acc = [], [], []
    for row in idx:
        yy, pp = y[row], p[row]
        auc.append(sk.roc_auc_score(yy, pp))
        loss.append(sk.log_loss(yy, pp, labels=[0, 1]))
        acc.append(sk.accuracy_score(yy, (pp > metrics.THRESHOLD).astype(int)))
    return {name: list(np.percentile(v, [tail, 100 - tail]))
            for name, v in (("auc", auc), ("log_loss", loss), ("accuracy", acc))}


@pytest.mark.parametrize("name,y,p", _cases()[:3] + _cases()[4:],
                         ids=[c[0] for c in _cases()[:3] + _cases()[4:]])
def test_bootstrap_intervals_equal_scikit_learn_on_the_same_resamples(name, y, p):
    got = metrics.bootstrap_intervals(y, p, resamples=200, seed=11)
    idx = metrics.bootstrap_indices(y, resamples=200, seed=11)
    expected = _sk_percentiles(y, p, idx)
    for figure in metrics.CI_FIGURES:
        assert got[figure] == pytest.approx(expected[figure], abs=1e-12), figure
    # A percentile interval of a resampled figure lies inside the figure's range and, for a
    # set this size, around the figure itself.
    block = metrics.summarize(y, p)
    for figure in metrics.CI_FIGURES:
        lo, hi = got[figure]
        assert lo <= hi
        if y.size > 100:
            assert lo <= block[figure] <= hi


def test_bootstrap_resamples_videos_within_each_label_reproducibly():
    y = np.array([1] * 7 + [0] * 3)
    RNG.shuffle(y)
    idx = metrics.bootstrap_indices(y, resamples=50, seed=4)
    assert idx.shape == (50, 10)
    # Stratified: every resample keeps 7 FAKEs and 3 REALs, drawn with replacement.
    assert (y[idx].sum(axis=1) == 7).all()
    assert any(len(set(row)) < 10 for row in idx)
    np.testing.assert_array_equal(idx, metrics.bootstrap_indices(y, resamples=50, seed=4))
    assert not np.array_equal(idx, metrics.bootstrap_indices(y, resamples=50, seed=5))


def test_bootstrap_of_one_label_or_no_videos_leaves_auc_undefined():
    one_label = metrics.bootstrap_intervals([1, 1, 1, 1], [0.9, 0.2, 0.7, 0.6])
    assert one_label["auc"] is None
    assert one_label["accuracy"][0] <= 0.75 <= one_label["accuracy"][1]
    assert metrics.bootstrap_intervals([], []) == {"auc": None, "log_loss": None,
                                                   "accuracy": None}


def test_evaluate_puts_intervals_in_every_video_block_and_says_how_they_were_drawn():
    y, p = _cases()[0][1:]
    parts = np.where(np.arange(y.size) < 300, 3, 4)
    out = metrics.evaluate({"label": y, "p_fake": p, "part": parts},
                           {"label": y, "p_fake": p, "part": parts}, resamples=300, seed=2)
    assert out["bootstrap"]["resamples"] == 300 and out["bootstrap"]["seed"] == 2
    assert "ci95" not in out["frame"]  # crops of a video are not independent draws
    assert out["video"]["ci95"] == metrics.bootstrap_intervals(y, p, resamples=300, seed=2)
    rows = parts == 4
    assert out["per_part"]["4"]["ci95"] == metrics.bootstrap_intervals(
        y[rows], p[rows], resamples=300, seed=2)
    # A part of 100 videos has a wider AUC interval than the 400 videos overall.
    width = {k: b["ci95"]["auc"][1] - b["ci95"]["auc"][0]
             for k, b in (("all", out["video"]), ("4", out["per_part"]["4"]))}
    assert width["4"] > width["all"]
    json.dumps(out, allow_nan=False)


def test_too_small_says_why_a_set_is_too_small_for_its_figures():
    big = metrics.summarize_videos(*_cases()[0][1:])
    assert metrics.too_small(big) is None
    assert "only 12 labelled videos" in metrics.too_small(
        metrics.summarize_videos([0, 1] * 6, [0.2, 0.8] * 6))
    assert "only 5 REAL videos" in metrics.too_small(
        metrics.summarize_videos([1] * 35 + [0] * 5, [0.8] * 35 + [0.2] * 5))
    wide = {"n": 40, "n_fake": 20, "n_real": 20, "ci95": {"auc": [0.55, 0.9]}}
    assert "0.35 wide" in metrics.too_small(wide)
    assert metrics.too_small({"n": 0, "n_fake": 0, "n_real": 0}) is not None


def test_figures_are_printed_to_the_precision_their_interval_supports():
    assert metrics.format_interval(0.8123456, [0.61, 0.99]) == "0.81 [0.61, 0.99]"
    assert metrics.format_interval(0.8123456, [0.801, 0.825]) == "0.812 [0.801, 0.825]"
    assert metrics.format_interval(0.8123456, [0.8121, 0.8125]) == "0.8123 [0.8121, 0.8125]"
    assert metrics.format_interval(0.5, [0.0, 1.0]) == "0.5 [0.0, 1.0]"
    assert metrics.format_interval(0.8123456, None) == "0.8123"
    assert metrics.format_interval(None, [0.1, 0.2]) == "-"
    # Every resample of 12 right calls is right: the interval has no width, but 12 videos
    # cannot know accuracy finer than 1/12.
    assert metrics.format_interval(1.0, [1.0, 1.0], n=12) == "1.000 [1.000, 1.000]"
    assert metrics.format_interval(0.75, [0.74, 0.76], n=12) == "0.750 [0.740, 0.760]"
    line = metrics.format_summary(metrics.summarize_videos([0, 1] * 6, [0.3, 0.7] * 6))
    assert "auc=1.000 [1.000, 1.000]" in line and "acc=1.000 [1.000, 1.000]" in line
