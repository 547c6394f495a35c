"""`dfd infer` end to end on real shards, a real model and a real local Ray."""
import contextlib
import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

import schemas
from dfd import aggregate, metrics, report
from dfd.config import InferConfig
from dfd.errors import DfdError
from dfd.images import decode_crops
from dfd.models import load_model
from dfd.predict import read_model_files
from tests.infer_fixtures import make_face_tree, make_run_dir

HELD_OUT, MIXED = 5, 1


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer")
    data = root / "data"
    records = make_face_tree(data, parts={MIXED: "mixed", HELD_OUT: "test"},
                             bad_crops={HELD_OUT: 1})
    run = make_run_dir(root / "run")
    return root, data, run, records


@pytest.fixture(scope="module")
def inferred(tree):
    """One real run through the command line: starting Ray and the actors' TensorFlow costs
    more than the scoring, so every end-to-end assertion shares it."""
    from dfd.cli import main

    root, data, run, _ = tree
    out = root / "pred"
    screen = io.StringIO()
    with contextlib.redirect_stdout(screen):
        status = main(["infer", "--data", str(data), "--run-dir", str(run), "--out", str(out),
                       "--actors", "2", "--batch-size", "5", "--aggregation", "median"])
    assert status == 0
    return out, json.loads((out / report.METRICS).read_text()), screen.getvalue()


@pytest.mark.slow
def test_one_row_per_face_and_per_video_with_the_models_own_scores(tree, inferred):
    _, _, run, records = tree
    out, _, _ = inferred
    frames = pq.read_table(out / report.FRAME_PREDICTIONS)
    schemas.check_arrow_schema(frames.schema, schemas.FRAME_PREDICTION)
    good = [r for r in records[HELD_OUT] if r["image"] != b"not a jpeg"]
    assert frames.num_rows == len(good) == len(records[HELD_OUT]) - 1
    keys = [(r["video"], r["frame_index"]) for r in frames.to_pylist()]
    assert keys == sorted((r["video"], r["frame_index"]) for r in good)  # sorted, unique
    # The scores are the model's own on the same crops.
    model = load_model(str(run / "model"))
    by_key = {(r["video"], r["frame_index"]): r for r in good}
    x = decode_crops([by_key[k]["image"] for k in keys])
    expected = np.asarray(model(x, training=False)).reshape(-1)
    np.testing.assert_allclose(frames["p_fake"].to_numpy(), expected, rtol=1e-5, atol=1e-6)
    assert frames["label"].to_pylist() == [by_key[k]["label"] for k in keys]
    assert set(frames["model"].to_pylist()) == {"paper_cnn@run"}

    videos = pq.read_table(out / report.VIDEO_PREDICTIONS)
    schemas.check_arrow_schema(videos.schema, schemas.VIDEO_PREDICTION)
    videos = videos.to_pylist()
    rejected = {"x0500.mp4", "b0500.mp4", "stray.mp4"}
    assert [v["video"] for v in videos] == sorted({r["video"] for r in good} | rejected)
    for v in videos:
        if v["video"] in rejected:
            continue
        mine = [f["p_fake"] for f in frames.to_pylist() if f["video"] == v["video"]]
        assert v["n_faces"] == len(mine) and v["aggregation"] == "median"
        assert v["p_fake"] == pytest.approx(aggregate.aggregate(mine, "median"))
        assert (v["scored_by"], v["reason"]) == ("model", None)


@pytest.mark.slow
def test_an_undecodable_crop_is_recorded_and_the_rest_scored(inferred):
    out, evaluated, _ = inferred
    rejected = pq.read_table(out / "rejected_crops.parquet").to_pylist()
    assert [(r["video"], r["part"], r["reason"]) for r in rejected] == [
        ("r0500.mp4", HELD_OUT, "bad_crop")]
    assert "frame 0 face 0" in rejected[0]["detail"]
    assert evaluated["run"]["rejected_crops"] == 1


@pytest.mark.slow
def test_every_rejected_video_is_scored_by_the_fallback_and_counted(inferred):
    out, evaluated, _ = inferred
    videos = {v["video"]: v for v in pq.read_table(out / report.VIDEO_PREDICTIONS).to_pylist()}
    fallback = {k: (v["label"], v["p_fake"], v["n_faces"], v["scored_by"], v["reason"])
                for k, v in videos.items() if v["scored_by"] == "fallback"}
    assert fallback == {"x0500.mp4": (1, 0.5, 0, "fallback", "no_face"),
                        "b0500.mp4": (0, 0.5, 0, "fallback", "truncated"),
                        "stray.mp4": (None, 0.5, 0, "fallback", "not_in_metadata")}
    # 3 REAL + 3 FAKE with crops, the faceless FAKE and the truncated REAL; the stray file
    # has no label and counts in no figure.
    assert (evaluated["video"]["n"], evaluated["video"]["n_fake"]) == (8, 4)
    assert (evaluated["video_model_only"]["n"], evaluated["video_model_only"]["n_fake"]) == (6, 3)
    part = evaluated["coverage"]["per_part"][f"{HELD_OUT:02d}"]
    assert part == {"listed": 8, "fakes_left_out": 0, "scored_by_model": 6,
                    "scored_by_fallback": {"no_face": 1, "truncated": 1},
                    "unscorable_no_label": 1}
    assert evaluated["coverage"]["overall"] == part
    assert evaluated["coverage"]["fallback_score"] == 0.5
    # Every listed video is in the figures: scored by the model or by the fallback.
    assert part["listed"] == part["scored_by_model"] + sum(part["scored_by_fallback"].values())


@pytest.mark.slow
def test_metrics_json_and_report_are_written(inferred):
    out, evaluated, _ = inferred
    on_disk = evaluated
    for level in ("frame", "video"):
        assert {"accuracy", "precision", "recall", "f1", "auc", "ap", "log_loss", "n",
                "n_fake", "n_real"} <= set(on_disk[level])
    assert list(on_disk["per_part"]) == [str(HELD_OUT)]
    assert on_disk["frame"]["n"] == 23
    assert on_disk["run"]["parts"] == [HELD_OUT] and on_disk["run"]["split"] == "test"
    page = (out / "report" / report.REPORT).read_text()
    assert f"part {HELD_OUT}" in page and "Training curves" in page
    assert (out / "report" / report.SUBMISSION).read_text().startswith("filename,label\n")


def test_selection_by_parts_and_split(tree):
    from dfd.evaluation import select_shards

    _, data, _, _ = tree
    everything = select_shards(str(data), parts=None, split=None)
    assert everything.parts == [MIXED, HELD_OUT]
    assert everything.whole_parts == {MIXED, HELD_OUT}
    assert len(everything.files) == 3  # train + validation of the mixed part, test
    test = select_shards(str(data), parts=None, split="test")
    assert test.parts == [HELD_OUT] and test.files[0].endswith(
        "parquet/part-05/faces-test-00000-of-00001.parquet")
    train = select_shards(str(data), parts={MIXED, HELD_OUT}, split="train")
    assert train.parts == [MIXED] and train.whole_parts == set()


def test_staged_parts_are_not_read(tree, tmp_path):
    import shutil

    from dfd.evaluation import select_shards

    _, data, _, _ = tree
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    (copy / "parquet" / "part-05").rename(copy / "parquet" / "_part-05")
    with pytest.raises(DfdError, match="no face shards"):
        select_shards(str(copy), parts={HELD_OUT}, split=None)


def test_a_rejected_video_falls_in_the_split_of_its_original(tree):
    from dfd.evaluation import rejected_videos, select_shards
    from dfd.splits import assign_split

    _, data, _, _ = tree
    # x0100.mp4 fakes r0100.mp4, whose group is in validation in the mixed part; b0100.mp4, a
    # REAL without any crop, goes where the split rule puts it with the recorded fraction.
    b_split = assign_split(MIXED, "b0100.mp4", test_parts=(), validation_fraction=0.5)
    expected = {"validation": [("x0100.mp4", 1)], "train": []}
    expected[b_split].append(("b0100.mp4", 0))
    expected[None] = [("b0100.mp4", 0), ("stray.mp4", None), ("x0100.mp4", 1)]
    for split, videos in expected.items():
        sel = select_shards(str(data), parts={MIXED}, split=split)
        found = rejected_videos(str(data), sel)
        assert sorted((v["video"], v["label"]) for v in found) == sorted(videos), split


def test_bad_selections_and_run_dirs_fail_with_one_clear_error(tree, tmp_path):
    from dfd.evaluation import select_shards
    from ray_jobs.infer import run_inference

    _, data, run, _ = tree
    with pytest.raises(DfdError, match=r"no face shards .* parts \[7\].*found \{1: "):
        select_shards(str(data), parts={7}, split=None)
    with pytest.raises(DfdError, match="unknown split 'tset'"):
        select_shards(str(data), parts=None, split="tset")
    with pytest.raises(DfdError, match="no parquet/ folder"):
        select_shards(str(tmp_path), parts=None, split=None)
    with pytest.raises(DfdError, match="no trained model"):
        read_model_files(str(tmp_path))
    with pytest.raises(ValueError, match="unknown aggregation rule 'vote'"):
        run_inference(str(data), str(run), str(tmp_path / "o"),
                      cfg=InferConfig(aggregation="vote"))


@pytest.mark.slow
def test_the_command_prints_metrics_with_the_label_balance_beside_log_loss(inferred):
    _, evaluated, screen = inferred
    lines = screen.splitlines()
    assert lines[0] == "model paper_cnn@run, parts [5], split test, aggregation median"
    video = next(line for line in lines if line.lstrip().startswith("videos"))
    # Video figures are printed with their 95 % interval, to the precision it supports.
    loss = evaluated["video"]["log_loss"]
    shown = metrics.format_interval(loss, evaluated["video"]["ci95"]["log_loss"],
                                    n=evaluated["video"]["n"])
    assert f"log_loss={shown}" in video
    share = evaluated["video"]["n_fake"] / evaluated["video"]["n"]
    chance = -(share * np.log(share) + (1 - share) * np.log(1 - share))
    assert f"(chance {chance:.4f} at {share:.4f} fake)" in video
    assert any(line.lstrip().startswith("part   5") for line in lines)
    assert "coverage: 8 videos listed, 0 fakes left out by balancing, 6 scored by the model, " \
           "2 by the fallback score 0.5 (no_face 1, truncated 1), 1 without a label" in screen


def test_the_command_fails_with_one_line_on_a_missing_tree(tmp_path, capsys):
    from dfd.cli import main

    status = main(["infer", "--data", str(tmp_path / "nowhere"), "--run-dir", str(tmp_path),
                   "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1
    assert err.startswith("dfd infer: error: ") and "no parquet/ folder" in err


def test_read_blocks_are_small_enough_to_reach_every_actor():
    from ray_jobs.infer import MIN_READ_BLOCK_BYTES, read_block_bytes

    mib = 1 << 20
    assert read_block_bytes(64 * mib, 2, 128 * mib) == 8 * mib  # 4 blocks per actor
    assert read_block_bytes(100 * 1024, 8, 128 * mib) == MIN_READ_BLOCK_BYTES
    assert read_block_bytes(100_000 * mib, 8, 128 * mib) == 128 * mib  # never above Ray's own
