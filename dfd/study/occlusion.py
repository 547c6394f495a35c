"""Masking face regions of crops, placed from the five face landmarks, and sliding-patch
occlusion sensitivity: the experiment Che & Ingham proposed and did not run.

The paper asked whether rotation hurt because deepfake artifacts sit in particular places
(forehead vs jaw, left vs right) or because rotated faces are harder to learn. A model trained
without rotation, scored on upright held-out crops with one region hidden at a time, answers
the first half: hiding a region that carries the evidence costs accuracy, and a left/right or
forehead/jaw difference means the evidence is spatially asymmetric.

Regions are boxes in the face's own frame: the origin midway between the eyes, the x axis
along the eyes (unit: the distance between them), the y axis towards the mouth (unit: eyes to
mouth line). So they follow the face's position, size, roll and foreshortening. A hidden pixel
is set to mid-grey, the usual occluder of occlusion-sensitivity maps (Zeiler & Fergus 2014).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from schemas.records import CROP_SIZE

REGIONS = ("forehead", "eyes", "nose", "mouth", "jaw", "left_half", "right_half")
UNMASKED = "unmasked"
FILL = 0.5  # mid-grey in the models' [0, 1] input
# The five landmarks (subject's right eye, left eye, nose tip, right and left mouth corner;
# dfd.faces.Face) of a typical crop: RetinaFace's medians over the 180 crops of the demo data
# (256 px, margin 0.3), made left-right symmetric. Used where the detector finds no face.
CANONICAL_LANDMARKS = ((98.0, 107.0), (158.0, 107.0), (128.0, 142.0), (103.0, 164.0),
                       (153.0, 164.0))
LANDMARKS, CANONICAL = "landmarks", "canonical"  # where a crop's regions came from
MIN_EYE_DISTANCE = 0.05  # of the crop side: closer eyes are a failed detection, not a face

# Region bounds in face coordinates (a: across, eye distances; b: down, eyes-to-mouth).
# The vertical bands tile the face: forehead | eyes and brows | nose | mouth | jaw and chin.
FACE_TOP, FACE_BOTTOM, FACE_HALF_WIDTH = -1.35, 1.95, 1.05
_BANDS = {"forehead": (-1.35, -0.45), "eyes": (-0.45, 0.3), "nose": (0.3, 0.75),
          "mouth": (0.75, 1.25), "jaw": (1.25, 1.95)}


@dataclasses.dataclass(frozen=True)
class FaceFrame:
    origin: np.ndarray  # pixel position of the point between the eyes
    across: np.ndarray  # pixels per unit along the eyes (subject's right eye to left eye)
    down: np.ndarray  # pixels per unit towards the mouth

    def to_face(self, pixels: np.ndarray) -> np.ndarray:
        basis = np.stack([self.across, self.down], axis=1)
        return np.linalg.solve(basis, (np.asarray(pixels, np.float64) - self.origin).T).T


def face_frame(landmarks: Sequence[Sequence[float]]) -> FaceFrame:
    """The face's frame from its five landmarks."""
    p = np.asarray(landmarks, np.float64).reshape(5, 2)
    origin = (p[0] + p[1]) / 2
    across = p[1] - p[0]
    normal = np.array([-across[1], across[0]]) / np.linalg.norm(across)
    mouth_depth = float((((p[3] + p[4]) / 2) - origin) @ normal)
    if mouth_depth <= 0:  # mouth above the eyes: an upside-down face; keep the eye-based scale
        mouth_depth = float(np.linalg.norm(across))
    return FaceFrame(origin, across, normal * mouth_depth)


def _face_box(region: str, points: np.ndarray) -> tuple[float, float, float, float, float]:
    """(left, right, top, bottom, taper) of a region in face coordinates; ``taper`` narrows
    it towards the bottom (the jaw), as a fraction of its half-width."""
    if region in ("left_half", "right_half"):
        # Halves split at the face's midline; left is the image's left, the subject's right
        # side for a frontal face.
        left, right = (-FACE_HALF_WIDTH, 0.0) if region == "left_half" else (0.0,
                                                                            FACE_HALF_WIDTH)
        return left, right, FACE_TOP, FACE_BOTTOM, 0.0
    if region not in _BANDS:
        raise ValueError(f"unknown region {region!r}; one of {list(REGIONS)}")
    top, bottom = _BANDS[region]
    if region == "nose":  # centred on the nose tip, which moves across as the head turns
        return points[2, 0] - 0.3, points[2, 0] + 0.3, top, bottom, 0.0
    if region == "mouth":
        corners = points[3:, 0]
        return corners.min() - 0.2, corners.max() + 0.2, top, bottom, 0.0
    return -1.0, 1.0, top, bottom, 0.4 if region == "jaw" else 0.0


def region_mask(region: str, landmarks: Sequence[Sequence[float]], *,
                size: int = CROP_SIZE) -> np.ndarray:
    """A (size, size) bool mask of the pixels whose centres lie in the region. Edges are
    half-open (top and left in, bottom and right out), so the bands never share a pixel."""
    frame = face_frame(landmarks)
    points = frame.to_face(np.asarray(landmarks, np.float64).reshape(5, 2))
    left, right, top, bottom, taper = _face_box(region, points)
    ys, xs = np.mgrid[0:size, 0:size]
    a, b = frame.to_face(np.stack([xs.ravel(), ys.ravel()], axis=1)).T
    depth = np.clip((b - top) / (bottom - top), 0.0, 1.0)
    shrink = taper * depth * (right - left) / 2  # a trapezoid for the tapering jaw
    inside = (a >= left + shrink) & (a < right - shrink) & (b >= top) & (b < bottom)
    return inside.reshape(size, size)


def parse_regions(spec: Sequence[str] | None) -> tuple[str, ...]:
    if not spec:
        return REGIONS
    unknown = [r for r in spec if r not in REGIONS]
    if unknown:
        raise ValueError(f"unknown region {unknown[0]!r}; one of {list(REGIONS)}")
    return tuple(r for r in REGIONS if r in spec)


def occlude(image: np.ndarray, mask: np.ndarray, *, fill: float = FILL) -> np.ndarray:
    """A copy of one decoded crop (H, W, 3 float) with the mask's pixels set to ``fill``."""
    out = image.copy()
    out[mask] = fill
    return out


# ---- where the regions come from ---------------------------------------------------------------

def plausible(landmarks: np.ndarray, *, size: int = CROP_SIZE) -> bool:
    """Whether detected landmarks describe the crop's face: eyes apart, inside the crop."""
    p = np.asarray(landmarks, np.float64).reshape(5, 2)
    inside = np.all((p > -0.25 * size) & (p < 1.25 * size))
    return bool(inside and np.linalg.norm(p[1] - p[0]) >= MIN_EYE_DISTANCE * size)


def crop_landmarks(detector, crops: Sequence[np.ndarray]) -> list[tuple[np.ndarray, str]]:
    """Per crop (RGB uint8), the landmarks its regions are placed from, and their source:
    the detector's on the crop itself, or the canonical layout where it finds no face."""
    canonical = np.array(CANONICAL_LANDMARKS)
    out = []
    for faces in detector.detect(list(crops)):
        if faces and faces[0].landmarks and plausible(np.array(faces[0].landmarks)):
            out.append((np.array(faces[0].landmarks, np.float64), LANDMARKS))
        else:
            out.append((canonical, CANONICAL))
    return out


# ---- scoring one crop --------------------------------------------------------------------------

def grid_side(patch: int, *, size: int = CROP_SIZE) -> int:
    if patch < 1 or size % patch:
        raise ValueError(f"the occlusion patch must divide the crop side {size}, got {patch}")
    return size // patch


def occluded_views(image: np.ndarray, masks: Sequence[np.ndarray], *, patch: int | None,
                   fill: float = FILL) -> np.ndarray:
    """The crop as the models see it in an occlusion study, stacked: unmasked, then each mask,
    then (with ``patch``) one grey patch at each grid position, row by row."""
    size = image.shape[0]
    side = grid_side(patch, size=size) if patch else 0
    views = np.repeat(image[None], 1 + len(masks) + side * side, axis=0)
    for k, mask in enumerate(masks):
        views[1 + k][mask] = fill
    for k in range(side * side):
        r, c = divmod(k, side)
        views[1 + len(masks) + k, r * patch:(r + 1) * patch, c * patch:(c + 1) * patch] = fill
    return views


def score_views(model, views: np.ndarray, *, n_regions: int, patch: int | None
                ) -> tuple[float, np.ndarray, np.ndarray]:
    """One model's p(FAKE) of one crop's views: unmasked, per region (R,), per patch (G, G)."""
    from dfd.predict import score_crops

    p = score_crops(model, views)
    side = grid_side(patch, size=views.shape[1]) if patch else 0
    return (float(p[0]), p[1:1 + n_regions],
            p[1 + n_regions:].reshape(side, side) if side else np.zeros((0, 0)))


def evidence_drop(p_unmasked: np.ndarray, p_masked: np.ndarray, labels: np.ndarray
                  ) -> np.ndarray:
    """How much hiding something lowered the probability of the true label, per crop:
    positive where the hidden pixels were evidence for the right answer. Broadcasts over
    trailing axes of ``p_masked`` (regions, grid positions)."""
    labels = np.asarray(labels).reshape((-1,) + (1,) * (np.ndim(p_masked) - 1))
    base = np.asarray(p_unmasked).reshape(labels.shape)
    return np.where(labels == 1, base - p_masked, p_masked - base)
