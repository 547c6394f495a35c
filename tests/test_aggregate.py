"""Aggregation rules match hand-computed cases."""
import numpy as np
import pytest

from dfd import aggregate


def test_simple_rules_by_name():
    s = [0.1, 0.9, 0.4, 0.3]
    assert aggregate.aggregate(s, "mean") == pytest.approx(0.425)
    assert aggregate.aggregate(s, "median") == pytest.approx(0.35)
    assert aggregate.aggregate(s, "max") == pytest.approx(0.9)
    assert aggregate.aggregate(s) == aggregate.aggregate(s, "mean")  # mean is the default


@pytest.mark.parametrize("rule", ["mean", "median", "max", "confident"])
def test_a_video_without_faces_scores_one_half(rule):
    assert aggregate.aggregate([], rule) == 0.5


def test_confident_averages_a_confident_fake_majority():
    # 30 crops: 13 above 0.8 (more than 11 and more than 30/2.5 = 12) -> mean of those 13.
    high = [0.9] * 10 + [0.85, 0.95, 0.99]
    scores = high + [0.1] * 17
    assert aggregate.aggregate(scores, "confident") == pytest.approx(np.mean(high))


def test_confident_needs_more_than_n_over_2_5_confident_fakes():
    # 30 crops, exactly 12 above 0.8: 12 is not more than 30/2.5, so the plain mean.
    scores = [0.9] * 12 + [0.3] * 18
    assert aggregate.aggregate(scores, "confident") == pytest.approx(np.mean(scores))


def test_confident_needs_more_than_eleven_confident_fakes():
    # 5 crops (the paper's frames per video), all confident: 5 is not more than 11.
    scores = [0.95, 0.9, 0.85, 0.99, 0.3]
    assert aggregate.aggregate(scores, "confident") == pytest.approx(np.mean(scores))


def test_confident_averages_a_confident_real_majority():
    # 20 crops, 19 below 0.2 (more than 90 % of 20 = 18) -> mean of those 19.
    low = [0.05] * 10 + [0.1] * 9
    assert aggregate.aggregate(low + [0.7], "confident") == pytest.approx(np.mean(low))
    # 18 of 20 below 0.2 is not more than 90 %: the plain mean.
    scores = [0.05] * 18 + [0.7, 0.6]
    assert aggregate.aggregate(scores, "confident") == pytest.approx(np.mean(scores))


def test_unknown_rule_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown aggregation rule 'mode'.*confident"):
        aggregate.aggregate([0.1], "mode")


def test_aggregate_videos_groups_crops_by_video():
    out = aggregate.aggregate_videos(["a", "b", "a", "b", "a"], [0.2, 0.9, 0.4, 0.7, 0.6],
                                     "max")
    assert out == {"a": pytest.approx(0.6), "b": pytest.approx(0.9)}
    assert aggregate.names() == ("mean", "median", "max", "confident")


def test_video_records_are_one_valid_record_per_video_fallback_ones_at_their_score():
    import schemas

    frames = {"video": ["a.mp4", "b.mp4", "a.mp4"], "part": [7, 7, 7], "label": [1, 0, 1],
              "p_fake": [0.9, 0.2, 0.7]}
    records = aggregate.video_records(
        frames, model="m", rule="median", fallback_score=0.3,
        fallback=[{"video": "c.mp4", "part": 7, "label": 0, "reason": "unreadable"},
                  {"video": "a.mp4", "part": 7, "label": 1, "reason": "bad_crop"}])
    assert [(r["video"], r["n_faces"]) for r in records] == [("a.mp4", 2), ("b.mp4", 1),
                                                            ("c.mp4", 0)]
    assert [r["p_fake"] for r in records] == [pytest.approx(0.8), 0.2, 0.3]
    assert [r["label"] for r in records] == [1, 0, 0]
    # a.mp4 has scored crops: the model's, whatever else was rejected of it.
    assert [(r["scored_by"], r["reason"]) for r in records] == [
        ("model", None), ("model", None), ("fallback", "unreadable")]
    for r in records:
        schemas.validate(r, schemas.VIDEO_PREDICTION)
        assert r["aggregation"] == "median" and r["model"] == "m"
