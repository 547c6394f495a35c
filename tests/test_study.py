"""`dfd study`: the paper's experiments on tiny real data, with a real local Ray, real training
and the real face detector; and the pieces they rest on (masks, the random split, the tables)."""
from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from dfd import report
from dfd.study import occlusion, random_split, runs, summary, table
from dfd.study.table import Column
from tests.study_fixtures import HELD_OUT_PART, make_study_data

# Every end-to-end study trains 1 epoch on one worker and scores with one actor: the same
# settings everywhere, so the studies share their baseline runs as they would in real use.
BUDGET = ["--epochs", "1", "--batch-size", "8", "--workers", "1", "--actors", "1"]


# ---- occlusion masks ---------------------------------------------------------------------------

def frontal(dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    return np.array(occlusion.CANONICAL_LANDMARKS) + [dx, dy]


def centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def test_hiding_a_region_changes_exactly_that_regions_pixels():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (256, 256, 3)).astype(np.float32)
    for region in occlusion.REGIONS:
        mask = occlusion.region_mask(region, frontal())
        assert 0.01 < mask.mean() < 0.5, region
        hidden = occlusion.occlude(image, mask)
        changed = np.any(hidden != image, axis=-1)
        assert np.array_equal(changed, mask), region
        assert np.all(hidden[mask] == occlusion.FILL)
        np.testing.assert_array_equal(hidden[~mask], image[~mask])


def test_regions_follow_the_face_and_tile_it_from_forehead_to_jaw():
    masks = {r: occlusion.region_mask(r, frontal()) for r in occlusion.REGIONS}
    heights = [centroid(masks[r])[1] for r in ("forehead", "eyes", "nose", "mouth", "jaw")]
    assert heights == sorted(heights)
    bands = ("forehead", "eyes", "nose", "mouth", "jaw")
    for i, a in enumerate(bands):
        for b in bands[i + 1:]:
            assert not np.any(masks[a] & masks[b]), (a, b)  # the bands do not overlap
    eyes, mouth = masks["eyes"], masks["mouth"]
    for x, y in frontal()[:2]:
        assert eyes[int(y), int(x)]
    for x, y in frontal()[3:]:
        assert mouth[int(y), int(x)]
    left, right = masks["left_half"], masks["right_half"]
    assert not np.any(left & right) and centroid(left)[0] < 128 < centroid(right)[0]
    # The halves cover every band: together they are the whole face.
    face = np.logical_or.reduce([masks[b] for b in bands])
    assert np.all((left | right)[face])

    # A face 20 px right and 10 px down: every region moves with it, pixel for pixel.
    for region in occlusion.REGIONS:
        moved = occlusion.region_mask(region, frontal(20, 10))
        assert np.array_equal(moved[10:, 20:], masks[region][:-10, :-20]), region
    # A face lying on its side (rolled 90 degrees): the forehead is beside the eyes now.
    c = np.array([128.0, 128.0])
    rolled = (frontal() - c) @ np.array([[0.0, 1.0], [-1.0, 0.0]]) + c
    f, j = (centroid(occlusion.region_mask(r, rolled)) for r in ("forehead", "jaw"))
    assert abs(f[1] - j[1]) < 3 and abs(f[0] - j[0]) > 60


def test_regions_come_from_the_detectors_landmarks_and_else_the_canonical_layout():
    from dfd.config import PreprocessConfig
    from dfd.faces import detector_options, get_detector
    from dfd.synth.face_shards import face_records

    cfg = PreprocessConfig()
    detector = get_detector(cfg.detector, **detector_options(cfg))
    record = face_records(part=0, split="train", originals=1, fakes_per_original=0,
                          frames=1)[0]
    crop = cv2.cvtColor(cv2.imdecode(np.frombuffer(record["image"], np.uint8),
                                     cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    blank = np.full((256, 256, 3), 128, np.uint8)
    (points, source), (fallback, fallback_source) = occlusion.crop_landmarks(
        detector, [crop, blank])
    assert source == occlusion.LANDMARKS and fallback_source == occlusion.CANONICAL
    np.testing.assert_array_equal(fallback, np.array(occlusion.CANONICAL_LANDMARKS))
    masks = {r: occlusion.region_mask(r, points) for r in ("eyes", "nose", "mouth")}
    for region, marks in (("eyes", points[:2]), ("nose", points[2:3]), ("mouth", points[3:])):
        for x, y in marks:
            assert masks[region][int(round(y)), int(round(x))], region


def test_occluded_views_hide_one_grid_square_each():
    image = np.random.default_rng(1).uniform(0, 1, (256, 256, 3)).astype(np.float32)
    masks = [occlusion.region_mask("jaw", frontal())]
    views = occlusion.occluded_views(image, masks, patch=64)
    assert views.shape == (1 + 1 + 16, 256, 256, 3)
    np.testing.assert_array_equal(views[0], image)
    np.testing.assert_array_equal(views[1], occlusion.occlude(image, masks[0]))
    changed = np.any(views[2:] != image, axis=-1)  # (16, 256, 256)
    for k in range(16):
        r, c = divmod(k, 4)
        expected = np.zeros((256, 256), bool)
        expected[r * 64:(r + 1) * 64, c * 64:(c + 1) * 64] = True
        assert np.array_equal(changed[k], expected)
    with pytest.raises(ValueError, match="divide"):
        occlusion.occluded_views(image, [], patch=48)


def test_evidence_lost_is_the_drop_of_the_true_labels_probability():
    # A fake whose score falls, a real whose score rises, a fake whose score rises.
    lost = occlusion.evidence_drop(np.array([0.9, 0.2, 0.7]), np.array([0.6, 0.5, 0.8]),
                                   np.array([1, 0, 1]))
    np.testing.assert_allclose(lost, [0.3, 0.3, -0.1])


# ---- the random image split --------------------------------------------------------------------

@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_study_data(tmp_path_factory.mktemp("study"))


def read_tree(tree: Path) -> list[dict]:
    return pq.read_table(tree / "parquet", columns=["video", "original", "split", "frame_index",
                                                    "part", "image"]).to_pylist()


def test_random_split_deals_the_same_crops_mixing_videos_the_leak_free_split_keeps_apart(
        data, tmp_path):
    described = random_split.write_random_split(str(data), str(tmp_path / "r"), seed=3)
    before = [r for r in read_tree(data) if r["split"] != "test"]
    after = read_tree(tmp_path / "r")

    # Every train and validation crop once, untouched; no held-out part; as many in validation.
    def key(r):
        return r["part"], r["video"], r["frame_index"], r["image"]
    assert sorted(map(key, after)) == sorted(map(key, before))
    assert HELD_OUT_PART not in {r["part"] for r in after}
    count = sum(r["split"] == "validation" for r in before)
    assert sum(r["split"] == "validation" for r in after) == count
    assert described["validation_images"] == count

    def videos_on_both_sides(rows):
        sides = {}
        for r in rows:
            sides.setdefault(r["video"], set()).add(r["split"])
        return sum(len(s) == 2 for s in sides.values())
    assert videos_on_both_sides(before) == 0
    assert videos_on_both_sides(after) > 0
    assert described["leak_free"]["validation_videos_seen_in_train"] == 0
    assert described["random"]["validation_videos_seen_in_train"] == videos_on_both_sides(after)

    # The seed decides the split: the same seed deals the same, another deals otherwise.
    again = random_split.random_validation(100, 20, seed=3)
    assert np.array_equal(again, random_split.random_validation(100, 20, seed=3))
    assert not np.array_equal(again, random_split.random_validation(100, 20, seed=4))
    assert again.sum() == 20


# ---- runs, statistics, tables ------------------------------------------------------------------

def test_a_run_is_named_by_what_shapes_the_model():
    from dfd.config import TrainConfig

    base = TrainConfig(epochs=2)
    key = runs.run_key(base, "data1")
    assert runs.run_key(TrainConfig(epochs=2, cpus_per_worker=4, max_failures=9), "data1") == key
    for other in (TrainConfig(epochs=3), TrainConfig(epochs=2, seed=1),
                  TrainConfig(epochs=2, augment="zoom")):
        assert runs.run_key(other, "data1") != key
    assert runs.run_key(base, "data2") != key


def test_spread_and_seed_paired_differences():
    s = summary.spread([0.8, None, 0.9, 0.7])
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.8)
    assert s["sd"] == pytest.approx(np.std([0.8, 0.9, 0.7], ddof=1))
    assert (s["min"], s["max"]) == (0.7, 0.9)
    assert summary.spread([0.5])["sd"] is None and summary.spread([])["mean"] is None
    d = summary.paired_difference({0: 0.9, 1: 0.7, 2: 0.5}, {0: 0.8, 1: 0.6, 3: 0.1})
    assert d["n"] == 2 and d["mean"] == pytest.approx(0.1) and d["sd"] == pytest.approx(0.0)

    rows = [{"v": "a|b", "x": summary.spread([0.5, 0.7]), "d": summary.spread([-0.00001])}]
    columns = [Column("v", "variant", "text"), Column("x", "x"), Column("d", "Δ", "delta")]
    assert table.markdown(rows, columns).splitlines()[2] == \
        "| a\\|b | 0.600 ± 0.141 | +0.000 |"
    parsed = list(csv.DictReader(io.StringIO(table.csv_text(rows, columns))))
    assert parsed[0]["x_mean"] == "0.6" and parsed[0]["x_n"] == "2" and parsed[0]["d_sd"] == ""


# ---- the studies end to end --------------------------------------------------------------------

@pytest.fixture(scope="module")
def local_ray():
    """One Ray for every study of the module, as one `dfd study` holds one for its runs."""
    import ray

    from dfd.config import TrainConfig
    from ray_jobs import train

    started = train.init_ray(None, TrainConfig(workers=1))
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


def study(kind: str, data: Path, out: Path, runs_dir: Path, *extra: str) -> dict:
    from dfd.cli import main

    with contextlib.redirect_stdout(io.StringIO()):
        status = main(["study", kind, "--data", str(data), "--out", str(out),
                       "--runs", str(runs_dir), *BUDGET, *extra])
    assert status == 0
    return json.loads((out / "study.json").read_text())


def rows_of(out: Path, name: str = "table") -> list[dict]:
    return list(csv.DictReader(io.StringIO((out / f"{name}.csv").read_text())))


def assert_png(path: Path) -> None:
    image = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[0] > 200 and image.shape[1] > 200, path


def recomputed_figures(frames: list[dict]) -> dict[str, float]:
    """One model's figures recomputed with scikit-learn from its frame scores: a video scores
    the mean of its frames (the default rule), and a score above 0.5 calls FAKE."""
    from sklearn import metrics as sk

    videos: dict[str, tuple[int, list[float]]] = {}
    for f in frames:
        videos.setdefault(f["video"], (f["label"], []))[1].append(f["p_fake"])
    y = [label for label, _ in videos.values()]
    p = [float(np.mean(scores)) for _, scores in videos.values()]
    frame_y, frame_p = [f["label"] for f in frames], [f["p_fake"] for f in frames]
    return {"video_auc": sk.roc_auc_score(y, p),
            "video_log_loss": sk.log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1]),
            "video_accuracy": sk.accuracy_score(y, np.greater(p, 0.5)),
            "frame_accuracy": sk.accuracy_score(frame_y, np.greater(frame_p, 0.5))}


def assert_row_is_the_mean_of(row: dict, frames_per_model: list[list[dict]]) -> None:
    """Each figure of a table row is the mean over models of that model's recomputed figure."""
    per_model = [recomputed_figures(frames) for frames in frames_per_model]
    for name in per_model[0]:
        if f"{name}_mean" in row:
            expected = np.mean([figures[name] for figures in per_model])
            assert float(row[f"{name}_mean"]) == pytest.approx(expected, abs=1e-6), name
    assert int(row["video_auc_n"]) == len(per_model)


def frame_scores(run_dir: str, *, validation: bool = False) -> list[dict]:
    """A study run's frame scores on the held-out parts, or on its validation crops."""
    evaluated = [d for d in Path(run_dir, "eval").iterdir()
                 if d.name.startswith("validation-") == validation]
    (chosen,) = evaluated
    return pq.read_table(chosen / report.FRAME_PREDICTIONS).to_pylist()


@pytest.fixture(scope="module")
def augmentation(data, runs_root, local_ray, tmp_path_factory):
    out = tmp_path_factory.mktemp("augmentation")
    return out, study("augmentation", data, out, runs_root, "--variants", "none,hflip",
                      "--seeds", "1")


@pytest.mark.slow
def test_augmentation_study_tables_every_variant_scored_as_dfd_infer_scores(data, augmentation):
    from dfd.images import decode_crops
    from dfd.models import load_model

    out, record = augmentation
    rows = rows_of(out)
    assert [r["variant"] for r in rows] == ["none", "hflip"]
    for run, row in zip(record["runs"], rows):
        assert_row_is_the_mean_of(row, [frame_scores(run["run_dir"])])
    assert rows[0]["delta_video_accuracy_mean"] == ""  # the baseline has no difference
    assert rows[1]["delta_video_accuracy_mean"] != ""
    assert "rotation" not in (out / "table.md").read_text()
    assert_png(out / "augmentation.png")

    # Each row's figures are its run's metrics.json, and those the model's own scores on the
    # held-out crops, aggregated and measured as dfd infer does.
    assert [r["augment"] for r in record["runs"]] == ["none", "hflip"]
    held_out = pq.read_table(data / "parquet" / f"part-{HELD_OUT_PART:02d}").to_pylist()
    for run, row in zip(record["runs"], rows):
        (evaluated,) = Path(run["run_dir"], "eval").iterdir()
        metrics = json.loads((evaluated / report.METRICS).read_text())
        assert float(row["video_auc_mean"]) == pytest.approx(metrics["video"]["auc"])
        assert float(row["video_log_loss_mean"]) == pytest.approx(metrics["video"]["log_loss"])
        frames = pq.read_table(evaluated / report.FRAME_PREDICTIONS).to_pylist()
        assert len(frames) == len(held_out)
        by_key = {(r["video"], r["frame_index"]): r for r in held_out}
        model = load_model(str(Path(run["run_dir"]) / "model"))
        x = decode_crops([by_key[(f["video"], f["frame_index"])]["image"] for f in frames])
        np.testing.assert_allclose([f["p_fake"] for f in frames],
                                   model(x, training=False).numpy()[:, 0], atol=1e-5)
        assert metrics["video"]["n"] == len({r["video"] for r in held_out})


@pytest.mark.slow
def test_a_study_run_again_reuses_its_runs_and_writes_the_same_table(data, augmentation,
                                                                     runs_root):
    out, first = augmentation
    before = (out / "table.md").read_text(), (out / "table.csv").read_text()
    again = study("augmentation", data, out, runs_root, "--variants", "none,hflip",
                  "--seeds", "1")
    assert [r["reused"] for r in again["runs"]] == [True, True]
    assert [r["run_dir"] for r in again["runs"]] == [r["run_dir"] for r in first["runs"]]
    assert ((out / "table.md").read_text(), (out / "table.csv").read_text()) == before
    assert again["tables"] == first["tables"]


@pytest.mark.slow
def test_backbone_study_reports_validation_curves_and_shares_the_baseline(
        data, augmentation, runs_root, tmp_path):
    _, aug = augmentation
    record = study("backbone", data, tmp_path, runs_root, "--variants", "paper_cnn",
                   "--seeds", "1")
    # paper_cnn without augmentation is the augmentation study's 'none' run: not retrained.
    assert record["runs"][0]["reused"] is True
    assert record["runs"][0]["run_dir"] == aug["runs"][0]["run_dir"]
    (row,) = rows_of(tmp_path)
    assert row["variant"] == "paper_cnn" and row["init"].startswith("random")
    history = json.loads(Path(aug["runs"][0]["run_dir"], "history.json").read_text())
    assert float(row["val_accuracy_first_mean"]) == pytest.approx(history[0]["val_accuracy"])
    assert_png(tmp_path / "backbone.png")
    assert_png(tmp_path / "curves.png")


@pytest.fixture(scope="module")
def occluded(data, augmentation, runs_root, tmp_path_factory):
    """The occlusion study on two trained models given by run dir: the augmentation study's."""
    out = tmp_path_factory.mktemp("occlusion")
    given = [arg for run in augmentation[1]["runs"] for arg in ("--run-dir", run["run_dir"])]
    return out, study("occlusion", data, out, runs_root, *given, "--regions",
                      "forehead,jaw,left_half,right_half", "--patch", "128")


@pytest.mark.slow
def test_occlusion_study_tables_each_region_and_maps_sensitivity(data, augmentation, occluded):
    out, record = occluded
    rows = rows_of(out)
    assert [r["region"] for r in rows] == ["unmasked", "forehead", "jaw", "left_half",
                                           "right_half"]
    # Each region's figures: both models' scores with that region hidden, measured as any
    # evaluation measures them.
    crops = pq.read_table(out / "crops.parquet").to_pylist()
    models = sorted({c["model"] for c in crops})
    assert len(models) == 2
    for row in rows:
        assert_row_is_the_mean_of(row, [[c for c in crops
                                          if c["region"] == row["region"] and c["model"] == m]
                                         for m in models])
        assert row["video_log_loss_sd"] != ""
    for row in rows[1:]:
        assert 0 < float(row["pixels_mean"]) < 0.5
        assert float(row["delta_video_auc_mean"]) == pytest.approx(
            float(row["video_auc_mean"]) - float(rows[0]["video_auc_mean"]), abs=1e-6)
    assert [r["pair"] for r in rows_of(out, "asymmetry")] == ["left_half − right_half",
                                                              "forehead − jaw"]

    # The first model is the augmentation study's baseline: its unmasked scores are the same
    # as that study's held-out evaluation of it.
    held_out = pq.read_table(data / "parquet" / f"part-{HELD_OUT_PART:02d}")
    assert len(crops) == held_out.num_rows * 2 * 5
    assert record["layouts"]["landmarks"] + record["layouts"]["canonical"] == \
        held_out.num_rows
    text = (out / "table.md").read_text()
    assert f"for {record['layouts']['landmarks']} crops" in text
    (evaluated,) = Path(augmentation[1]["runs"][0]["run_dir"], "eval").iterdir()
    expected = {(f["video"], f["frame_index"]): f["p_fake"] for f in
                pq.read_table(evaluated / report.FRAME_PREDICTIONS).to_pylist()}
    model = record["runs"][0]["run_dir"]
    got = {(c["video"], c["frame_index"]): c["p_fake"] for c in crops
           if c["region"] == "unmasked" and c["model"].endswith(Path(model).name)}
    assert got.keys() == expected.keys()
    for key, p in got.items():
        assert p == pytest.approx(expected[key], abs=1e-5)

    heat = {k: np.array(v) for k, v in record["heatmap"].items()}
    assert set(heat) == {"FAKE", "REAL"} and all(h.shape == (2, 2) for h in heat.values())
    assert_png(out / "heatmap.png")
    assert_png(out / "occlusion.png")


@pytest.mark.slow
def test_occlusion_study_without_run_dirs_scores_the_shared_baseline(data, augmentation,
                                                                      runs_root, tmp_path):
    record = study("occlusion", data, tmp_path, runs_root, "--seeds", "1", "--regions", "jaw",
                   "--patch", "0")
    # Seed 0 of the baseline (paper_cnn, no augmentation) is already trained: reused.
    assert [(r["run_dir"], r["reused"]) for r in record["runs"]] == [
        (augmentation[1]["runs"][0]["run_dir"], True)]
    assert [r["region"] for r in rows_of(tmp_path)] == ["unmasked", "jaw"]
    assert rows_of(tmp_path)[0]["video_auc_mean"] == rows_of(augmentation[0])[0]["video_auc_mean"]
    assert not (tmp_path / "heatmap.png").exists() and "heatmap" not in record


@pytest.mark.slow
def test_split_study_shows_what_a_random_image_split_adds_to_the_score(
        data, augmentation, runs_root, tmp_path):
    record = study("split", data, tmp_path, runs_root, "--seeds", "1")
    rows = rows_of(tmp_path)
    assert [(r["split"], r["evaluated on"]) for r in rows] == [
        ("random image split", "validation (random images)"),
        ("random image split", "held-out parts"),
        ("leak-free split", "validation (by original)"),
        ("leak-free split", "held-out parts")]
    assert float(rows[0]["seen_mean"]) > 0 and float(rows[2]["seen_mean"]) == 0
    # Each row is its arm's model scored on that row's crops.
    (random_run,) = [r for r in record["runs"] if r["variant"] == "random"]
    (leak_free_run,) = [r for r in record["runs"] if r["variant"] == "leak_free"]
    for row, run, validation in zip(rows, (random_run, random_run, leak_free_run, leak_free_run),
                                    (True, False, True, False)):
        assert_row_is_the_mean_of(row, [frame_scores(run["run_dir"], validation=validation)])

    # Both arms are scored on the same held-out parts; the leak-free arm is the shared
    # baseline, whose held-out figures are the augmentation study's 'none' row.
    leak_free = [r for r in record["runs"] if r["variant"] == "leak_free"]
    assert leak_free[0]["run_dir"] == augmentation[1]["runs"][0]["run_dir"]
    none_row = rows_of(augmentation[0])[0]
    assert rows[3]["video_auc_mean"] == none_row["video_auc_mean"]
    random_tree = Path([r for r in record["runs"] if r["variant"] == "random"][0]["data"])
    assert random_tree.is_dir() and (random_tree / "manifest.json").is_file()
    # Each arm's validation figures come from its own tree's validation crops: the same
    # number of crops, dealt differently.
    for run, tree in ((leak_free[0], data), (record["runs"][-1], random_tree)):
        (validation,) = Path(run["run_dir"], "eval").glob("validation-*")
        metrics = json.loads((validation / report.METRICS).read_text())
        scored = {(f["video"], f["frame_index"]) for f in
                  pq.read_table(validation / report.FRAME_PREDICTIONS).to_pylist()}
        assert scored == {(r["video"], r["frame_index"]) for r in read_tree(tree)
                          if r["split"] == "validation"}
        assert metrics["frame"]["n"] == len(scored)

    inflation = {r["difference"]: r for r in rows_of(tmp_path, "inflation")}
    assert len(inflation) == 4
    first = inflation["random-split validation − the same model on held-out parts"]
    assert float(first["video_auc_mean"]) == pytest.approx(
        float(rows[0]["video_auc_mean"]) - float(rows[1]["video_auc_mean"]), abs=1e-6)
    assert_png(tmp_path / "split.png")


# ---- bad input ---------------------------------------------------------------------------------

def test_bad_study_requests_fail_in_one_line_before_any_work(data, tmp_path, capsys):
    from dfd.cli import main

    no_held_out = tmp_path / "no-test"
    import shutil
    shutil.copytree(data, no_held_out)
    shutil.rmtree(no_held_out / "parquet" / f"part-{HELD_OUT_PART:02d}")
    cases = [
        (["augmentation", "--data", str(data), "--variants", "none,upside_down"],
         "no variant 'upside_down'"),
        (["occlusion", "--data", str(data), "--regions", "ears"], "unknown region 'ears'"),
        (["augmentation", "--data", str(data), "--regions", "jaw"], "--regions"),
        (["occlusion", "--data", str(data), "--patch", "48"], "must divide"),
        (["split", "--data", str(no_held_out)], "held-out parts"),
    ]
    for argv, message in cases:
        assert main(["study", *argv, "--out", str(tmp_path / "out")]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, (argv, err)
    assert not (tmp_path / "out").exists()
