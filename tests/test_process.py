"""dfd.process.process_group: face records for an original and its fakes, box reuse, and rejects
for every kind of bad video without ever raising."""
from __future__ import annotations

import dataclasses
import json
from collections import Counter

import cv2
import numpy as np
import pytest

import schemas
from dfd.config import Limits, PreprocessConfig
from dfd.faces import get_detector
from dfd.faces.boxes import iou
from dfd.process import STATS, VideoRef, process_group
from dfd.video import sample_frame_indices
from tests.video_fixtures import (background, clip, face_patch, noise_clip, synth_part,
                                  truncated_copy, write_clip)

CFG = PreprocessConfig()  # the paper's 5 random frames, RetinaFace, JPEG q95


@pytest.fixture(scope="module")
def detector():
    return get_detector("retinaface")


def synth_groups():
    """(original ref, [fake refs], truth) per original of the synthetic part."""
    part = synth_part()
    truth = json.loads((part / "synth_truth.json").read_text())
    meta = json.loads((part / "metadata.json").read_text())
    groups = []
    for name in sorted(n for n, e in meta.items() if e["label"] == "REAL"):
        ref = VideoRef(name, 0, schemas.LABEL_REAL, name, str(part / name))
        fakes = [VideoRef(f, 0, schemas.LABEL_FAKE, name, str(part / f))
                 for f, e in sorted(meta.items()) if e.get("original") == name]
        groups.append((ref, fakes, truth))
    return groups


def by_video(records):
    out = {}
    for r in records:
        out.setdefault(r["video"], []).append(r)
    return out


def decoded(record) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(record["image"], np.uint8), cv2.IMREAD_COLOR)


def test_original_and_fakes_give_records_at_the_same_frames_with_the_same_boxes(detector):
    for original, fakes, truth in synth_groups():
        stats = Counter()
        result = process_group(original, fakes, split="validation", cfg=CFG, detector=detector,
                               stats=stats)
        assert result.rejects == []
        videos = by_video(result.records)
        assert set(videos) == {original.name} | {f.name for f in fakes}
        entry = truth[original.name]
        expected = sample_frame_indices(entry["frames"], CFG.frames_per_video, seed=CFG.seed,
                                        key=original.name)
        orig = videos[original.name]
        assert [r["frame_index"] for r in orig] == expected
        for r in orig:
            assert schemas.validate(r, schemas.FACE) == r
            assert (r["split"], r["label"], r["original"], r["part"], r["face_index"]) == \
                ("validation", schemas.LABEL_REAL, original.name, 0, 0)
            assert (r["frame_width"], r["frame_height"], r["frame_count"]) == \
                (entry["width"], entry["height"], entry["frames"])
            assert r["det_score"] >= CFG.score_threshold and r["image_format"] == "jpeg"
            assert iou(r["bbox"], entry["boxes"][r["frame_index"]]) >= 0.5
            assert decoded(r).shape == (256, 256, 3)
        for fake in fakes:
            mine = videos[fake.name]
            assert [(r["frame_index"], r["bbox"], r["det_score"]) for r in mine] == \
                [(r["frame_index"], r["bbox"], r["det_score"]) for r in orig]
            assert all(r["label"] == schemas.LABEL_FAKE and r["original"] == original.name
                       for r in mine)
            # Same place, different face: the crops differ.
            assert any(not np.array_equal(decoded(a), decoded(b)) for a, b in zip(mine, orig))
        n = len(expected)
        assert set(stats) == set(STATS)
        assert stats["frames_detected"] == n  # the detector never ran on a fake
        assert stats["boxes_reused"] == n * len(fakes)
        assert stats["videos"] == stats["videos_with_faces"] == 1 + len(fakes)
        assert stats["records"] == len(result.records)
        # Decoding stopped after the last sampled frame of each video.
        assert stats["frames_decoded"] == (expected[-1] + 1) * (1 + len(fakes))


def test_processing_is_deterministic(detector):
    original, fakes, _ = synth_groups()[0]
    a = process_group(original, fakes, split="train", cfg=CFG, detector=detector)
    b = process_group(original, fakes, split="train", cfg=CFG, detector=detector)
    assert a.records == b.records


def test_without_an_original_each_fake_is_detected_on_itself_at_the_same_frames(detector):
    original, fakes, truth = synth_groups()[0]
    with_original = process_group(original, fakes, split="train", cfg=CFG, detector=detector)
    stats = Counter()
    alone = process_group(None, fakes, split="train", cfg=CFG, detector=detector, stats=stats)
    assert alone.rejects == []
    assert stats["fakes_detected_alone"] == len(fakes)
    assert stats["boxes_reused"] == 0
    fake_records = by_video(with_original.records)[fakes[0].name]
    mine = by_video(alone.records)[fakes[0].name]
    assert [r["frame_index"] for r in mine] == [r["frame_index"] for r in fake_records]
    for r in mine:
        assert iou(r["bbox"], truth[fakes[0].name]["boxes"][r["frame_index"]]) >= 0.5


def test_a_broken_original_is_rejected_and_its_fakes_are_still_processed(detector):
    original, fakes, _ = synth_groups()[0]
    broken = dataclasses.replace(original, source=b"\x00\x01garbage" * 100)
    stats = Counter()
    result = process_group(broken, fakes, split="train", cfg=CFG, detector=detector, stats=stats)
    assert result.rejects == [schemas.validate(result.rejects[0], schemas.REJECT)]
    assert (result.rejects[0]["video"], result.rejects[0]["reason"]) == (original.name,
                                                                         "unreadable")
    assert set(by_video(result.records)) == {f.name for f in fakes}
    assert stats["videos_rejected"] == 1


@pytest.mark.parametrize("make_source,reason", [
    (lambda: truncated_copy(clip("fast.mp4", 30, faststart=True), 0.3), "truncated"),
    (lambda: str(noise_clip()), "no_face"),
    (lambda: "/no/such/file.mp4", "unreadable"),
    (lambda: (lambda: (_ for _ in ()).throw(OSError("gs:// unreachable"))), "unreadable"),
    (lambda: 12345, "unreadable"),  # not a source at all: still a reject, not a crash
])
def test_a_bad_fake_becomes_a_reject_and_never_stops_the_group(detector, make_source, reason):
    original, fakes, _ = synth_groups()[0]
    bad = VideoRef("bad.mp4", 0, schemas.LABEL_FAKE, original.name, make_source())
    result = process_group(original, [bad, *fakes], split="train", cfg=CFG, detector=detector)
    assert [(r["video"], r["reason"]) for r in result.rejects] == [("bad.mp4", reason)]
    assert result.rejects[0]["detail"]
    assert set(by_video(result.records)) == {original.name} | {f.name for f in fakes}


class _FailingDetector(type(get_detector("retinaface"))):
    def _detect_batch(self, images):
        raise RuntimeError("out of accelerator memory")


def test_an_unexpected_failure_is_a_processing_error_reject_per_video():
    original, fakes, _ = synth_groups()[0]
    result = process_group(original, fakes, split="train", cfg=CFG,
                           detector=_FailingDetector())
    assert result.records == []
    # The original failed, so each fake ran the (failing) detector on its own.
    assert [(r["video"], r["reason"]) for r in result.rejects] == \
        [(v.name, "processing_error") for v in [original, *fakes]]
    assert "RuntimeError: out of accelerator memory" in result.rejects[0]["detail"]


def test_declared_size_over_the_limit_is_rejected_before_reading(detector):
    original, fakes, _ = synth_groups()[0]
    calls = []
    big = VideoRef("big.mp4", 0, schemas.LABEL_FAKE, original.name,
                   lambda: calls.append(1), size=10 * 2**30)
    cfg = dataclasses.replace(CFG, limits=Limits(max_video_bytes=2**30))
    result = process_group(original, [big], split="train", cfg=cfg, detector=detector)
    assert [(r["video"], r["reason"]) for r in result.rejects] == [("big.mp4", "too_large")]
    assert calls == []


def test_fake_is_detected_only_in_frames_where_the_original_had_no_face(detector):
    # The original shows its face from frame 15 on; the fake has a face in every frame.
    original_path = clip("late_face.mp4", 30, face_from=15)
    fake_path = clip("early_face.mp4", 30, face="grace_hopper")
    cfg = dataclasses.replace(CFG, sampling="uniform")
    expected = sample_frame_indices(30, 5, policy="uniform")
    assert expected == [0, 7, 14, 22, 29]
    original = VideoRef("late_face.mp4", 1, schemas.LABEL_REAL, "late_face.mp4",
                        str(original_path))
    fake = VideoRef("early_face.mp4", 1, schemas.LABEL_FAKE, "late_face.mp4", str(fake_path))
    stats = Counter()
    result = process_group(original, [fake], split="train", cfg=cfg, detector=detector,
                           stats=stats)
    videos = by_video(result.records)
    assert [r["frame_index"] for r in videos["late_face.mp4"]] == [22, 29]
    assert [r["frame_index"] for r in videos["early_face.mp4"]] == expected
    orig_boxes = {r["frame_index"]: r["bbox"] for r in videos["late_face.mp4"]}
    for r in videos["early_face.mp4"]:
        if r["frame_index"] in orig_boxes:
            assert r["bbox"] == orig_boxes[r["frame_index"]]
    assert stats["boxes_reused"] == 2
    assert stats["frames_detected"] == 5 + 3
    assert stats["frames_without_face"] == 3


def test_fake_of_another_size_is_not_cropped_with_the_originals_boxes(detector):
    original = VideoRef("o.mp4", 0, schemas.LABEL_REAL, "o.mp4", str(clip("plain.mp4", 30)))
    other = clip("wide.mp4", 30, width=400, height=240)
    fake = VideoRef("f.mp4", 0, schemas.LABEL_FAKE, "o.mp4", str(other))
    stats = Counter()
    result = process_group(original, [fake], split="train", cfg=CFG, detector=detector,
                           stats=stats)
    assert result.rejects == []
    assert stats["boxes_reused"] == 0 and stats["fakes_detected_alone"] == 1
    fake_records = by_video(result.records)["f.mp4"]
    assert {r["frame_width"] for r in fake_records} == {400}
    assert [r["frame_index"] for r in fake_records] == \
        sample_frame_indices(30, 5, seed=CFG.seed, key="o.mp4")


def test_config_decides_the_detection_policy_and_the_image_format(detector):
    scene = background(640, 360)
    scene[40:320, 40:320] = face_patch("grace_hopper", 280)
    scene[140:300, 420:580] = face_patch("astronaut", 160)
    path = write_clip(clip("plain.mp4").parent / "two_faces.mp4", [scene] * 10)
    ref = VideoRef("two_faces.mp4", 3, schemas.LABEL_REAL, "two_faces.mp4", str(path))
    one_face_detector = detector.with_options(max_faces=1)
    cfg = dataclasses.replace(CFG, max_faces=2, frames_per_video=2, image_format="png")
    result = process_group(ref, [], split="test", cfg=cfg, detector=one_face_detector)
    assert [(r["frame_index"], r["face_index"]) for r in result.records] == \
        [(i, f) for i in sample_frame_indices(10, 2, key="two_faces.mp4") for f in (0, 1)]
    first, second = result.records[:2]
    area = [(b[2] - b[0]) * (b[3] - b[1]) for b in (first["bbox"], second["bbox"])]
    assert area[0] > area[1]
    assert all(r["image_format"] == "png" and r["image"][:8] == b"\x89PNG\r\n\x1a\n"
               for r in result.records)


def test_unknown_split_is_a_programming_error(detector):
    original, fakes, _ = synth_groups()[0]
    with pytest.raises(ValueError, match="split"):
        process_group(original, fakes, split="holdout", cfg=CFG, detector=detector)


@pytest.mark.slow
def test_the_pipeline_emits_process_groups_counters_as_beam_counters(detector):
    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.options.pipeline_options import PipelineOptions

    from dfd.dfdc import Entry
    from dfd.plan import Unit
    from dfd.process import STATS
    from pipelines.transforms import NAMESPACE, ProcessUnits

    original, fakes, _ = synth_groups()[0]
    unit = Unit(part=0, original=Entry(original.name, original.label, original.name),
                fakes=tuple(Entry(f.name, f.label, original.name) for f in fakes),
                split="train", shard=0)
    paths = {r.name: r.source for r in [original, *fakes]}
    expected = Counter()
    process_group(original, fakes, split="train", cfg=CFG, detector=detector, stats=expected)

    pipeline = beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"]))
    _ = pipeline | beam.Create([(unit, paths)]) | ProcessUnits(CFG)  # a path is a source
    result = pipeline.run()
    result.wait_until_finish()
    counters = {m.key.metric.name: m.committed for m in result.metrics().query(
        MetricsFilter().with_namespace(NAMESPACE))["counters"]}
    assert counters["units_processed"] == 1
    counted = {name: counters.get(name, 0) for name in STATS if not name.endswith("_ms")}
    assert counted == {name: expected[name] for name in STATS if not name.endswith("_ms")}
    assert counted["videos"] == 1 + len(fakes) and counted["records"] > 0
