"""dfd.faces: box geometry and NMS, the RetinaFace graph's real layout, both detectors on real
face photographs and on synthetic DFDC videos, and the multi-face policy."""
from __future__ import annotations

import json
import pickle

import cv2
import numpy as np
import pytest

from dfd.faces import NAMES, Face, get_detector
from dfd.faces import retinaface as rf
from dfd.faces.boxes import iou, iou_matrix, nms
from dfd.video import probe_video, read_frames
from tests.video_fixtures import face_photo, synth_part


@pytest.fixture(scope="module")
def detectors():
    return {name: get_detector(name, max_faces=4) for name in NAMES}


def two_face_scene() -> tuple[np.ndarray, list[float], list[float]]:
    """A 720x1280 frame holding a large and a small face, and their photo squares."""
    canvas = np.full((720, 1280, 3), 90, np.uint8)
    big = cv2.resize(face_photo("grace_hopper"), (400, 468))
    small = cv2.resize(face_photo("astronaut"), (300, 300))
    canvas[100:568, 100:500] = big
    canvas[200:500, 800:1100] = small
    return canvas, [100, 100, 500, 568], [800, 200, 1100, 500]


def _centre_inside(box, region) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return region[0] < cx < region[2] and region[1] < cy < region[3]


# ---- geometry -----------------------------------------------------------------------------------

def test_iou_of_known_boxes():
    assert iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert iou([0, 0, 10, 10], [20, 20, 30, 30]) == 0.0
    assert iou([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0
    assert iou_matrix([[0, 0, 10, 10]] * 2, [[0, 0, 10, 10]] * 3).shape == (2, 3)


def test_nms_keeps_the_best_of_overlapping_boxes_and_every_separate_one():
    boxes = [[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 9]]
    scores = [0.8, 0.9, 0.7, 0.95]
    assert nms(boxes, scores, 0.4).tolist() == [3, 2]
    assert nms(boxes, scores, 0.99).tolist() == [3, 1, 0, 2]
    assert nms(np.zeros((0, 4)), [], 0.4).tolist() == []


# ---- the RetinaFace graph -----------------------------------------------------------------------

def test_retinaface_priors_match_the_graphs_own_anchor_subgraph():
    run = rf.load_graph(("RetinaFaceModel/tf_op_layer_concat_7/concat_7:0",))
    for h, w in [(288, 512), (96, 64)]:
        [graph_priors] = run(np.zeros((1, h, w, 3), np.float32))
        assert np.allclose(rf.priors(h, w), graph_priors, atol=1e-6), (h, w)


def test_our_decoding_and_nms_reproduce_the_graphs_own_output():
    image = face_photo("astronaut")
    batch = rf.pad_to_stride([image])
    [full] = rf.load_graph((rf.FULL_OUTPUT,))(batch)
    # Identity:0 rows: normalized box, 5 normalized landmarks, a constant 1, then the score.
    assert full.shape[1] == 16 and np.allclose(full[:, 14], 1.0)
    detector = get_detector("retinaface", score_threshold=0.5, max_faces=10, max_side=1024,
                            min_face=1)
    [raw] = detector._detect_batch([image])
    h, w = batch.shape[1:3]
    assert len(raw.boxes) == len(full)
    assert np.allclose(raw.boxes, full[:, :4] * [w, h, w, h], atol=1e-3)
    assert np.allclose(raw.landmarks, full[:, 4:14].reshape(-1, 5, 2) * [w, h], atol=1e-3)
    assert np.allclose(raw.scores, full[:, 15], atol=1e-6)


# ---- both detectors on real photographs ---------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("photo", ["astronaut", "grace_hopper"])
def test_detector_finds_the_face_with_landmarks_in_the_documented_order(detectors, name, photo):
    image = face_photo(photo)
    [[face, *rest]] = detectors[name].detect([image])
    assert isinstance(face, Face) and face.score >= 0.9 and not rest
    x1, y1, x2, y2 = face.box
    assert 0 <= x1 < x2 <= image.shape[1] and 0 <= y1 < y2 <= image.shape[0]
    assert len(face.landmarks) == 5
    right_eye, left_eye, nose, mouth_right, mouth_left = face.landmarks
    # The subject's right eye and mouth corner appear on the image's left.
    assert right_eye[0] < left_eye[0] and mouth_right[0] < mouth_left[0]
    assert max(right_eye[1], left_eye[1]) < nose[1] < min(mouth_right[1], mouth_left[1])
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face.landmarks)


def test_both_detectors_agree_on_the_box(detectors):
    for photo in ("astronaut", "grace_hopper"):
        boxes = [detectors[n].detect([face_photo(photo)])[0][0].box for n in NAMES]
        assert iou(*boxes) >= 0.7, photo


@pytest.mark.parametrize("name", NAMES)
def test_detection_on_a_downscaled_frame_maps_boxes_back_to_source_pixels(detectors, name):
    image = face_photo("grace_hopper")
    big = cv2.resize(image, (image.shape[1] * 3, image.shape[0] * 3),
                     interpolation=cv2.INTER_CUBIC)
    detector = detectors[name].with_options(max_side=image.shape[0])
    dw, dh = detector.detection_size(big.shape[1], big.shape[0])
    assert abs(dw - image.shape[1]) <= detector.stride / 2
    assert abs(dh - image.shape[0]) <= detector.stride / 2
    [[small_face]], [[big_face]] = detector.detect([image]), detector.detect([big])
    assert iou(np.array(small_face.box) * 3, big_face.box) >= 0.9
    nose_small, nose_big = np.array(small_face.landmarks[2]), np.array(big_face.landmarks[2])
    assert np.abs(nose_small * 3 - nose_big).max() < 12


def test_detection_size_shrinks_to_max_side_in_stride_multiples_and_never_enlarges():
    retina, mtcnn = get_detector("retinaface", max_side=480), get_detector("mtcnn", max_side=480)
    assert retina.detection_size(1920, 1080) == (480, 256)  # no compute spent on padding
    assert retina.detection_size(1080, 1920) == (256, 480)
    assert mtcnn.detection_size(1920, 1080) == (480, 270)  # MTCNN takes any size
    assert retina.detection_size(320, 240) == mtcnn.detection_size(320, 240) == (320, 240)


def test_a_batch_gives_what_single_frames_give_and_keeps_input_order(detectors):
    a, b = face_photo("astronaut"), face_photo("grace_hopper")
    hopper_sized_astronaut = cv2.resize(a, (b.shape[1], b.shape[0]))
    frames = [a, b, hopper_sized_astronaut, np.zeros_like(b)]
    for name in NAMES:
        batched = detectors[name].detect(frames)
        single = [detectors[name].detect([f])[0] for f in frames]
        assert [len(f) for f in batched] == [1, 1, 1, 0]
        for got, want in zip(batched, single):
            for g, w in zip(got, want):
                assert iou(g.box, w.box) > 0.98 and abs(g.score - w.score) < 1e-3


def test_largest_confident_face_comes_first_and_the_policy_limits_what_is_kept(detectors):
    scene, big_box, small_box = two_face_scene()
    for name in NAMES:
        both = detectors[name].with_options(max_faces=2, min_face=40).detect([scene])[0]
        assert len(both) == 2, name
        assert _centre_inside(both[0].box, big_box) and _centre_inside(both[1].box, small_box)
        assert both[0].width * both[0].height > both[1].width * both[1].height
        [only] = detectors[name].with_options(max_faces=1).detect([scene])[0]
        assert only == both[0]
        small_side = min(both[1].width, both[1].height)
        [big_only] = detectors[name].with_options(max_faces=2,
                                                  min_face=small_side + 1).detect([scene])[0]
        assert big_only == both[0]
        assert detectors[name].with_options(score_threshold=1.01).detect([scene]) == [[]]


def test_registry_and_option_checks():
    assert NAMES == ("retinaface", "mtcnn")
    assert get_detector().name == "retinaface"
    with pytest.raises(ValueError, match="retinaface"):
        get_detector("haar")
    with pytest.raises(ValueError, match="max_faces"):
        get_detector("retinaface", max_faces=0)
    with pytest.raises(ValueError, match="RGB uint8"):
        get_detector("retinaface").detect([np.zeros((10, 10), np.uint8)])


@pytest.mark.parametrize("name", NAMES)
def test_detector_pickles_without_its_weights_and_works_after(detectors, name):
    detector = detectors[name]
    image = face_photo("astronaut")
    before = detector.detect([image])
    assert detector._model is not None
    blob = pickle.dumps(detector)
    assert len(blob) < 1000  # options only
    clone = pickle.loads(blob)
    assert clone._model is None and clone.options == detector.options
    assert clone.detect([image]) == before
    assert detector.with_options(max_faces=1)._model is detector._model


# ---- synthetic DFDC videos ----------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_primary_box_matches_synth_truth_in_at_least_95_percent_of_frames(detectors, name):
    part = synth_part()
    truth = json.loads((part / "synth_truth.json").read_text())
    assert {t["label"] for t in truth.values()} == {"REAL", "FAKE"}
    assert any(t["height"] > t["width"] for t in truth.values())  # a portrait clip is in
    detector = detectors[name].with_options(max_faces=1)
    ious = []
    for video, entry in sorted(truth.items()):
        info = probe_video(part / video)
        assert (info.width, info.height, info.frame_count) == (entry["width"], entry["height"],
                                                               entry["frames"])
        frames = read_frames(part / video, range(info.frame_count))
        found = detector.detect([frames[i] for i in range(info.frame_count)])
        ious += [iou(f[0].box, entry["boxes"][i]) if f else 0.0 for i, f in enumerate(found)]
    ious = np.array(ious)
    assert len(ious) == sum(t["frames"] for t in truth.values())
    assert (ious >= 0.5).mean() >= 0.95, f"{name}: {np.round(ious, 2).tolist()}"
