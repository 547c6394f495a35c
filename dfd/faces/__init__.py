"""Face detectors behind one lookup: ``get_detector(name, **options)``.

``retinaface`` (the default) and ``mtcnn``; see ``dfd.faces.detector.Detector`` for the options
they share. Detector modules load TensorFlow, so they are imported only when asked for.
"""
from __future__ import annotations

import importlib
from typing import Any

from dfd.faces.detector import Detector, Face

DEFAULT = "retinaface"
_REGISTRY = {
    "retinaface": ("dfd.faces.retinaface", "RetinaFaceDetector"),
    "mtcnn": ("dfd.faces.mtcnn", "MTCNNDetector"),
}
NAMES = tuple(_REGISTRY)


def get_detector(name: str = DEFAULT, **options: Any) -> Detector:
    """A detector by name; its weights load on first use, once per process."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown face detector {name!r}; one of {list(NAMES)}")
    module, cls = _REGISTRY[name]
    return getattr(importlib.import_module(module), cls)(**options)


def detector_options(cfg) -> dict[str, Any]:
    """The detector options a PreprocessConfig asks for."""
    return {"max_side": cfg.detect_max_side, "min_face": cfg.min_face,
            "score_threshold": cfg.score_threshold, "max_faces": cfg.max_faces}


__all__ = ["DEFAULT", "NAMES", "Detector", "Face", "detector_options", "get_detector"]
