"""MTCNN from the ``mtcnn`` package (1.x), which ships its weights and detects a batch of
same-sized images in one call."""
from __future__ import annotations

import functools

import numpy as np

from dfd.faces.detector import Detector, RawDetections


@functools.cache
def load_model():
    """The three-stage MTCNN (proposal, refinement, output with landmarks), once per process."""
    from mtcnn import MTCNN

    return MTCNN(stages="face_and_landmarks_detection", device="CPU:0")


class MTCNNDetector(Detector):
    name = "mtcnn"

    def _load(self):
        return load_model()

    def _detect_batch(self, images: list[np.ndarray]) -> list[RawDetections]:
        # min_face_size stays at the package default: mtcnn 1.0 sizes its pyramid without it,
        # and a larger value shrinks the last level below the proposal network's 12 pixels.
        rows = self.model.detect_faces(list(images), box_format="xyxy", output_type="numpy")
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, 16)
        out = []
        for b in range(len(images)):
            mine = rows[rows[:, 0] == b]
            # Columns: image, x1, y1, x2, y2, score, then the 5 points' x, then their y, from the
            # image's left eye to its right mouth corner: the same points as RetinaFace's.
            marks = mine[:, 6:16].reshape(-1, 2, 5).transpose(0, 2, 1)
            out.append(RawDetections(mine[:, 1:5], mine[:, 5], marks))
        return out
