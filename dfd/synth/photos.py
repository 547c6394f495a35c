"""Real photographs that ship inside installed packages: the actors, the swap donors and the
backgrounds of the synthetic set. Nothing is downloaded and no photo lives in this repository.

Face boxes and landmarks were calibrated once by running RetinaFace (the frozen graph of PyPI
`retinaface` 1.1.1) and MTCNN (`mtcnn` 1.0) on each photo: the box is the mean of the two
detectors' boxes, the landmarks are RetinaFace's. Synthetic truth boxes derive from these, so a
detector's IoU against them measures the detector, not our guess of where a face ends.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np

# Landmark order everywhere in dfd.synth: eye on the image's left, eye on the image's right,
# nose tip, mouth corner on the image's left, mouth corner on the image's right.
MIRRORED_LANDMARKS = (1, 0, 2, 4, 3)


@dataclasses.dataclass(frozen=True)
class Portrait:
    """A photograph of one person with the face where detectors report it (photo pixels)."""
    name: str
    face_box: tuple[float, float, float, float]
    landmarks: tuple[tuple[float, float], ...]
    frontal: bool  # a usable swap donor: both eyes and the mouth visible, face not occluded

    @property
    def face_center(self) -> np.ndarray:
        x1, y1, x2, y2 = self.face_box
        return np.array([(x1 + x2) / 2, (y1 + y2) / 2])

    @property
    def face_size(self) -> np.ndarray:
        x1, y1, x2, y2 = self.face_box
        return np.array([x2 - x1, y2 - y1])


PORTRAITS: dict[str, Portrait] = {p.name: p for p in (
    # RetinaFace [177.3, 59.9, 270.2, 181.3], MTCNN [182, 64, 265, 171]
    Portrait("astronaut", (179.6, 62.0, 267.6, 176.2),
             ((202.5, 102.8), (245.6, 103.1), (224.8, 127.6), (203.3, 139.6), (245.9, 140.1)),
             frontal=True),
    # RetinaFace [196.6, 113.0, 259.3, 199.1], MTCNN [197, 116, 256, 198]; three-quarter view,
    # one eye behind the camera he looks through, so it is an actor but never a donor.
    Portrait("camera", (196.8, 114.5, 257.6, 198.6),
             ((238.1, 147.0), (252.0, 148.4), (252.3, 168.6), (229.6, 180.5), (238.8, 182.0)),
             frontal=False),
    # RetinaFace [174.1, 112.1, 352.2, 328.7], MTCNN [178, 110, 351, 330]
    Portrait("grace_hopper", (176.0, 111.0, 351.6, 329.4),
             ((221.3, 189.7), (308.4, 185.2), (264.6, 241.3), (229.4, 274.8), (299.0, 271.3)),
             frontal=True),
)}

# The 25x25 LFW crops in scikit-image are roughly aligned; RetinaFace on all 100 faces (upscaled
# 8x) put the landmarks within about 1 px of this mean.
LFW_LANDMARKS = ((6.43, 8.90), (15.10, 8.57), (10.59, 13.75), (7.55, 18.08), (14.51, 17.80))
LFW_FACES = 100  # the first 100 of the 200 crops are faces, the rest are not

# Scenes behind the actor: photographs without faces, chosen to look like places a person
# could stand in front of (a wall, a garage, a lawn, a desk, a launch pad at night).
BACKGROUNDS = ("brick.png", "grass.png", "gravel.png", "coffee.png", "rocket.jpg",
               "hubble_deep_field.jpg", "motorcycle_left.png", "coins.png", "moon.png",
               "page.png", "text.png", "ihc.png")


def _skimage_file(name: str) -> Path:
    import skimage.data

    return Path(skimage.data.data_dir) / name


def _read_rgb(path: Path) -> np.ndarray:
    # Pillow (matplotlib's own image reader) rather than OpenCV, whose libpng prints a warning
    # about one packaged photo's colour profile on every worker.
    from PIL import Image

    if not path.is_file():
        raise FileNotFoundError(f"sample photo {path} is missing from the installed package")
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


@functools.cache
def portrait_pixels(name: str) -> np.ndarray:
    """The photo as RGB uint8 (HxWx3); read-only, shared between callers."""
    if name == "grace_hopper":
        import matplotlib.cbook

        path = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    elif name in PORTRAITS:
        path = _skimage_file(f"{name}.png")
    else:
        raise KeyError(f"unknown portrait {name!r}; one of {sorted(PORTRAITS)}")
    img = _read_rgb(path)
    img.flags.writeable = False
    return img


@functools.cache
def background_pixels(name: str) -> np.ndarray:
    img = _read_rgb(_skimage_file(name))
    img.flags.writeable = False
    return img


@functools.cache
def lfw_faces() -> np.ndarray:
    """The 100 LFW face crops as uint8 grayscale, 100x25x25."""
    faces = np.load(_skimage_file("lfw_subset.npy"))[:LFW_FACES]
    faces = np.round(faces * 255).astype(np.uint8)
    faces.flags.writeable = False
    return faces
