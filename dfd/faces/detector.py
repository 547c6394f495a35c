"""What every face detector shares: the Face it returns, downscaling before detection and mapping
boxes back, the multi-face policy, lazy weights and pickling."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import cv2
import numpy as np

from dfd.faces.boxes import areas


@dataclasses.dataclass(frozen=True)
class Face:
    """One detected face in source-frame pixels.

    ``landmarks`` are 5 (x, y) points in this order: the subject's right eye, left eye, nose tip,
    right mouth corner, left mouth corner. For a frontal face that is left to right in the image
    (the subject's right eye appears on the image's left), the order RetinaFace and MTCNN emit.
    """
    box: tuple[float, float, float, float]
    score: float
    landmarks: tuple[tuple[float, float], ...] = ()

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


@dataclasses.dataclass
class RawDetections:
    """A detector's output for one downscaled frame, before the policy: boxes (N, 4), scores (N,)
    and landmarks (N, 5, 2), in the downscaled frame's pixels."""
    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    @classmethod
    def empty(cls) -> RawDetections:
        return cls(np.zeros((0, 4)), np.zeros((0,)), np.zeros((0, 5, 2)))


class Detector:
    """Finds faces in RGB uint8 frames.

    Frames are downscaled so their longest side is at most ``max_side`` before detection (DFDC
    faces are large; full 1080p costs 10x more for the same boxes), run as batches of up to
    ``batch_size`` same-sized frames, and the boxes are mapped back to source pixels. Faces
    below ``score_threshold`` or with a side under ``min_face`` source pixels are dropped; the
    largest remaining face comes first and at most ``max_faces`` are kept.

    Weights load on first use, once per process, and are never pickled: a detector built on the
    driver and shipped to workers (or built in a Beam DoFn's setup) is cheap to move.
    """
    name: ClassVar[str] = ""
    # Input sides the network needs to be multiples of; a downscaled frame is sized to them
    # rather than padded, so no compute goes to padding.
    stride: ClassVar[int] = 1

    def __init__(self, *, max_side: int = 480, min_face: int = 40, score_threshold: float = 0.9,
                 max_faces: int = 1, batch_size: int = 16):
        if max_side < 32:
            raise ValueError(f"max_side must be >= 32, got {max_side}")
        if max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, got {max_faces}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.max_side = int(max_side)
        self.min_face = float(min_face)
        self.score_threshold = float(score_threshold)
        self.max_faces = int(max_faces)
        self.batch_size = int(batch_size)
        self._model = None

    @property
    def options(self) -> dict[str, Any]:
        return {"max_side": self.max_side, "min_face": self.min_face,
                "score_threshold": self.score_threshold, "max_faces": self.max_faces,
                "batch_size": self.batch_size}

    def with_options(self, **changes: Any) -> Detector:
        """The same detector with some options changed; shares the loaded weights."""
        other = type(self)(**{**self.options, **changes})
        other._model = self._model
        return other

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None}

    # -- what a concrete detector provides

    def _load(self):
        """Load and return the model (cache it per process)."""
        raise NotImplementedError

    def _detect_batch(self, images: list[np.ndarray]) -> list[RawDetections]:
        """Detect in same-sized RGB uint8 images (already resized to ``detection_size``)."""
        raise NotImplementedError

    # -- the shared path

    @property
    def model(self):
        if self._model is None:
            self._model = self._load()
        return self._model

    def detection_size(self, width: int, height: int) -> tuple[int, int]:
        """The (width, height) a frame of this size is detected at: at most max_side, never
        enlarged; when shrunk, each side is rounded to the stride (a few percent of anisotropy
        that the boxes are mapped back through)."""
        scale = self.max_side / max(width, height)
        if scale >= 1.0:
            return width, height
        k = self.stride
        return (max(k, round(width * scale / k) * k), max(k, round(height * scale / k) * k))

    def detect(self, frames: Sequence[np.ndarray]) -> list[list[Face]]:
        """Faces per frame, primary (largest confident) face first."""
        results: list[list[Face]] = [[] for _ in frames]
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, frame in enumerate(frames):
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise ValueError(f"frames must be RGB uint8 HxWx3, got {frame.dtype} "
                                 f"{frame.shape}")
            by_size.setdefault(frame.shape[:2], []).append(i)
        for (h, w), members in by_size.items():
            dw, dh = self.detection_size(w, h)
            sx, sy = dw / w, dh / h
            for start in range(0, len(members), self.batch_size):
                chunk = members[start:start + self.batch_size]
                images = [frames[i] if (dw, dh) == (w, h)
                          else cv2.resize(frames[i], (dw, dh), interpolation=cv2.INTER_AREA)
                          for i in chunk]
                for i, raw in zip(chunk, self._detect_batch(images)):
                    results[i] = self._select(raw, sx, sy, w, h)
        return results

    def _select(self, raw: RawDetections, sx: float, sy: float, w: int, h: int) -> list[Face]:
        # Boxes may overhang the frame by a few pixels; records hold what is in the frame.
        boxes = np.clip(raw.boxes / np.array([sx, sy, sx, sy]), 0, [w, h, w, h])
        marks = raw.landmarks / np.array([sx, sy])
        sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        ok = (raw.scores >= self.score_threshold) & (sides >= self.min_face)
        idx = np.flatnonzero(ok)
        idx = idx[np.argsort(-areas(boxes[idx]), kind="stable")][:self.max_faces]
        return [Face(box=tuple(float(v) for v in boxes[i]), score=float(raw.scores[i]),
                     landmarks=tuple((float(x), float(y)) for x, y in marks[i]))
                for i in idx]
