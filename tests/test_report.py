"""The report and the Kaggle submission CSV, from a predictions folder like `dfd infer` writes."""
import base64
import html
import json
import re
from pathlib import Path

import cv2

import numpy as np
import pytest

import schemas
from dfd import aggregate, evaluation, metrics, report, shards, submission
from dfd import output_tree as ot
from tests.infer_fixtures import crop_jpeg, face_record, photos


# 3 REALs and 2 FAKEs of part 45, 1 REAL and 3 FAKEs of 46.
MISTAKEN = {"v45_00.mp4", "v45_02.mp4", "v45_04.mp4", "v45_01.mp4", "v45_03.mp4",
            "v46_06.mp4", "v46_05.mp4", "v46_07.mp4", "v46_09.mp4"}


def _predictions_dir(tmp_path, *, with_shards=True):
    """A predictions folder as `dfd infer` writes it, over a face-shard tree holding the crops:
    parts 45 and 46, 12 videos each (5 crops), a faceless FAKE and a truncated REAL in 46.
    The model gets the videos of MISTAKEN confidently wrong."""
    rng = np.random.default_rng(3)
    pics = photos()
    frames, faces = [], []
    for part in (45, 46):
        for k in range(12):
            label = k % 2
            video = f"v{part}_{k:02d}.mp4"
            shift = (0.3 if label else -0.3) * (-1 if video in MISTAKEN else 1)
            for frame_index in (0, 7, 14, 21, 28):
                p = float(np.clip(0.5 + shift + rng.normal(0, 0.2), 0, 1))
                frames.append({"video": video, "part": part, "frame_index": frame_index,
                               "face_index": 0, "label": label, "p_fake": p,
                               "model": "paper_cnn@run"})
                faces.append(face_record(
                    video=video, part=part, original=video, label=label, split="test",
                    frame_index=frame_index,
                    image=crop_jpeg(pics[k % len(pics)], rng, fake=bool(label))))
    data = tmp_path / "faces"
    if with_shards:
        for part in (45, 46):
            path = Path(ot.shard_path(str(data), "parquet", part, "test", 0, 1))
            path.parent.mkdir(parents=True, exist_ok=True)
            shards.write_parquet([f for f in faces if f["part"] == part], str(path))
    rejected = [{"video": "noface.mp4", "part": 46, "label": 1, "original": "v46_00.mp4",
                 "reason": "no_face"},
                {"video": "broken.mp4", "part": 46, "label": 0, "original": "broken.mp4",
                 "reason": "truncated"}]
    listed = {45: {"videos_in_metadata": 13, "fakes_left_out": 1},
              46: {"videos_in_metadata": 16, "fakes_left_out": 2}}
    videos, evaluated = evaluation.evaluate_model(frames, model="paper_cnn@run", rule="mean",
                                                  rejected=rejected, listed=listed)
    evaluated["run"] = {"model": "paper_cnn@run", "data": str(data)}
    out = tmp_path / "pred"
    out.mkdir()
    shards.write_parquet(frames, str(out / report.FRAME_PREDICTIONS), schemas.FRAME_PREDICTION)
    shards.write_parquet(videos, str(out / report.VIDEO_PREDICTIONS), schemas.VIDEO_PREDICTION)
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
    headings = re.findall(r"<h2>([^<]*)</h2>", page)
    assert headings == ["Coverage", "Overall", "Per part (video level)",
                        "Most confident mistakes", "ROC and confusion matrix",
                        "Scores by true label", "Aggregation rules", "Training curves"]
    assert "part 45" in page and "part 46" in page
    # Self-contained: every image is inline (PNG figures, JPEG crop thumbnails), nothing is
    # fetched.
    srcs = re.findall(r'src="([^"]*)"', page)
    assert sum(s.startswith("data:image/png;base64,") for s in srcs) == 5
    assert all(s.startswith(("data:image/png;base64,", "data:image/jpeg;base64,"))
               for s in srcs)
    assert "href=" not in page
    assert "24 scored by the model, 2 by the fallback score 0.5 (no_face 1, truncated 1)" in page
    for name in ("roc.png", "confusion.png", "scores.png", "aggregation.png", "training.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def _rows(page, first_cell):
    """The cells of every table row whose first cell is ``first_cell``."""
    found = []
    for row in re.findall(r"<tr>(.*?)</tr>", page):
        cells = [html.unescape(re.sub(r"<[^>]+>", "", c))
                 for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
        if cells and cells[0] == first_cell:
            found.append(cells)
    return found


def test_coverage_comes_first_then_both_video_figures_with_their_intervals(tmp_path):
    pred, _, videos, evaluated = _predictions_dir(tmp_path)
    page = report.render_report(pred, tmp_path / "r").read_text()
    assert page.index("<h2>Coverage</h2>") < page.index("<h2>Overall</h2>")
    # listed, left out by balancing, by the model, by the fallback, reasons, no label
    assert _rows(page, "part 45") [0] == ["part 45", "13", "1", "12", "0", "–", "0"]
    assert _rows(page, "part 46")[0] == ["part 46", "16", "2", "12", "2",
                                         "no_face 1, truncated 1", "0"]
    assert _rows(page, "overall")[0] == ["overall", "29", "3", "24", "2",
                                         "no_face 1, truncated 1", "0"]
    # Both video-level figures, each as metrics.json holds it, with its 95 % interval.
    everything = _rows(page, "video: every scored video (fallbacks included, as Kaggle scored)")
    model_only = _rows(page, "video: scored by the model only")
    for (cells,), block in ((everything, evaluated["video"]),
                            (model_only, evaluated["video_model_only"])):
        assert cells[1:4] == [str(block["n"]), str(block["n_fake"]), str(block["n_real"])]
        for column, figure in ((4, "accuracy"), (8, "auc"), (10, "log_loss")):
            assert cells[column] == metrics.format_interval(
                block[figure], block["ci95"][figure], n=block["n"])
    assert evaluated["video"]["n"] == 26 and evaluated["video_model_only"]["n"] == 24
    # Frame figures have no interval of their own: printed at the video figures' precision,
    # and judged by the videos, not flagged by their crop count.
    (frame,) = _rows(page, "frame")
    d = metrics.interval_digits(evaluated["video"]["ci95"]["accuracy"], n=26)
    assert frame[4] == f"{evaluated['frame']['accuracy']:.{d}f}" and d < 4
    assert frame[-1] == "–"
    # The intervals are those of a stratified bootstrap over the same videos, recomputed.
    labelled = [v for v in videos if v["label"] is not None]
    assert evaluated["video"]["ci95"] == metrics.bootstrap_intervals(
        [v["label"] for v in labelled], [v["p_fake"] for v in labelled])
    assert f"{evaluated['bootstrap']['resamples']} bootstrap resamples" in page


def test_a_part_too_small_for_its_figures_is_flagged_in_plain_words(tmp_path):
    pred, *_ = _predictions_dir(tmp_path)
    page = report.render_report(pred, tmp_path / "r").read_text()
    part45 = _rows(page, "part 45")[1]  # [0] is its coverage row
    assert part45[-1] == "too small: only 12 labelled videos (fewer than 30)"
    assert _rows(page, "part 46")[1][-1] == "too small: only 14 labelled videos (fewer than 30)"
    # No figure of a 12-video part is printed to four decimals.
    assert not any(re.fullmatch(r"\d\.\d{4}( \[.*)?", c) for c in part45[4:-1] if c != "–")


def test_the_most_confident_mistakes_show_their_part_score_and_deciding_crops(tmp_path):
    pred, frames, videos, _ = _predictions_dir(tmp_path)
    page = report.render_report(pred, tmp_path / "r").read_text()
    section = page[page.index("<h2>Most confident mistakes</h2>"):
                   page.index("<h2>ROC and confusion matrix</h2>")]
    model = [v for v in videos if v["scored_by"] == "model"]
    fp = sorted((v for v in model if v["label"] == 0 and v["p_fake"] > 0.5),
                key=lambda v: -v["p_fake"])[:8]
    fn = sorted((v for v in model if v["label"] == 1 and v["p_fake"] <= 0.5),
                key=lambda v: v["p_fake"])[:8]
    assert fp and fn  # the fixture has both kinds
    fp_html = section[section.index("false positives"):section.index("false negatives")]
    fn_html = section[section.index("false negatives"):]
    for mistakes, part_html in ((fp, fp_html), (fn, fn_html)):
        shown = [c[:3] for c in (_rows(part_html, v["video"])[0] for v in mistakes)]
        assert shown == [[v["video"], str(v["part"]), f"{v['p_fake']:.3f}"] for v in mistakes]
        order = [part_html.index(v["video"]) for v in mistakes]
        assert order == sorted(order)  # most confident first
    # The worst false positive's thumbnails are its most FAKE-looking crops, from the shards.
    worst = fp[0]
    crops = sorted((f for f in frames if f["video"] == worst["video"]),
                   key=lambda f: -f["p_fake"])[:report.CROPS_PER_MISTAKE]
    row = re.search(rf"<tr><td class=l>{re.escape(worst['video'])}</td>(.*?)</tr>",
                    section).group(1)
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", row)
    assert captions == [f"frame {c['frame_index']}: {c['p_fake']:.2f}" for c in crops]
    thumbs = re.findall(r'src="data:image/jpeg;base64,([^"]*)"', row)
    assert len(thumbs) == len(crops)
    pixels = cv2.imdecode(np.frombuffer(base64.b64decode(thumbs[0]), np.uint8),
                          cv2.IMREAD_COLOR)
    assert pixels.shape == (report.THUMBNAIL, report.THUMBNAIL, 3)


def test_confident_mistakes_are_the_eight_worst_of_each_kind_scored_by_the_model():
    p = np.linspace(0.01, 0.99, 40)
    videos = {"video": [f"v{i:02d}.mp4" for i in range(40)] + ["fb.mp4"],
              "part": [i % 3 for i in range(40)] + [1], "label": [i % 2 for i in range(40)] + [1],
              "p_fake": list(p) + [0.5], "n_faces": [5] * 40 + [0],
              "scored_by": ["model"] * 40 + ["fallback"]}
    found = report.confident_mistakes(videos)
    real_high = sorted((i for i in range(40) if i % 2 == 0 and p[i] > 0.5), key=lambda i: -p[i])
    fake_low = sorted((i for i in range(40) if i % 2 == 1 and p[i] <= 0.5), key=lambda i: p[i])
    assert [m["video"] for m in found["false_positives"]] == \
        [f"v{i:02d}.mp4" for i in real_high[:8]]
    # The fallback-scored FAKE at 0.5 is a miss no crop decided: not among them.
    assert [m["video"] for m in found["false_negatives"]] == \
        [f"v{i:02d}.mp4" for i in fake_low[:8]]
    assert len(real_high) > 8 and len(fake_low) > 8


def test_crops_are_read_for_the_wanted_videos_only_across_row_groups(tmp_path):
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    pics = photos()
    faces = [face_record(video=f"v{k}.mp4", part=7, original=f"v{k}.mp4", label=k % 2,
                         split="test", frame_index=f,
                         image=crop_jpeg(pics[k % 3], rng, fake=bool(k % 2)))
             for k in range(6) for f in (0, 7)]
    path = Path(ot.shard_path(str(tmp_path), "parquet", 7, "test", 0, 1))
    path.parent.mkdir(parents=True)
    # Row groups of 3 rows: the wanted videos sit in different row groups.
    pq.write_table(schemas.to_arrow_table(faces, schemas.FACE), path, row_group_size=3)
    assert pq.ParquetFile(path).num_row_groups == 4
    got = report.read_crop_images(str(tmp_path), {7: {"v1.mp4", "v4.mp4"}})
    assert got == {(7, f["video"], f["frame_index"], 0): f["image"] for f in faces
                   if f["video"] in ("v1.mp4", "v4.mp4")}


def test_mistakes_without_reachable_shards_are_listed_and_the_report_says_why(tmp_path):
    pred, _, videos, _ = _predictions_dir(tmp_path, with_shards=False)
    page = report.render_report(pred, tmp_path / "r").read_text()
    assert "No crops shown: the face shards at" in page and "could not be read" in page
    assert "data:image/jpeg" not in page
    assert "<h3>REAL called FAKE (false positives)</h3>" in page


def test_a_metrics_json_of_an_older_run_still_renders(tmp_path):
    """Without coverage, intervals, model-only figures or run: what the report cannot show
    it says it cannot show."""
    pred, *_ = _predictions_dir(tmp_path)
    old = json.loads((pred / report.METRICS).read_text())
    for key in ("coverage", "video_model_only", "bootstrap", "run"):
        old.pop(key)
    for block in [old["video"], *old["per_part"].values()]:
        block.pop("ci95")
    (pred / report.METRICS).write_text(json.dumps(old))
    page = report.render_report(pred, tmp_path / "r").read_text()
    assert "predates coverage accounting" in page
    assert "predates bootstrap intervals" in page
    assert "No crops shown: this metrics.json does not name the face shards" in page
    assert _rows(page, "video: every scored video (fallbacks included, as Kaggle scored)")
    assert not _rows(page, "video: scored by the model only")
    assert f"{old['video']['log_loss']:.4f}" in page  # no interval: full precision


def test_rule_comparison_scores_each_rule_on_the_same_crops(tmp_path):
    _, frames, videos, evaluated = _predictions_dir(tmp_path)
    cols = {k: [r[k] for r in frames] for k in frames[0]}
    vcols = {k: [r[k] for r in videos] for k in videos[0]}
    rows = {r["rule"]: r for r in report.compare_aggregations(cols, vcols)}
    assert list(rows) == list(aggregate.names())
    # The mean row is exactly the video level of metrics.json (the videos were made by mean).
    assert rows["mean"]["log_loss"] == pytest.approx(evaluated["video"]["log_loss"])
    assert all(r["n"] == 26 for r in rows.values())  # 24 videos with faces + 2 fallbacks
    by_hand = {v: aggregate.aggregate([f["p_fake"] for f in frames if f["video"] == v], "max")
               for v in {f["video"] for f in frames}}
    labels = {f["video"]: f["label"] for f in frames}
    names = sorted(by_hand)
    expected = metrics.log_loss([labels[n] for n in names] + [1, 0],
                                [by_hand[n] for n in names] + [0.5, 0.5])
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
