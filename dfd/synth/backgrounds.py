"""The scene behind an actor: a packaged photograph or a plain room, graded and defocused the
way a shallow depth of field would leave it."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from dfd.synth.grading import Grade, apply_grade
from dfd.synth.photos import BACKGROUNDS, background_pixels

ROOM = "room"  # a procedurally drawn wall, floor and furniture instead of a photograph


@dataclasses.dataclass(frozen=True)
class Backdrop:
    source: str  # a BACKGROUNDS name or ROOM
    crop: tuple[float, float, float]  # left, top (fractions of the slack), zoom in [1, 2]
    flip: bool
    grade: Grade
    defocus: float  # Gaussian sigma as a fraction of the frame's short side
    room_seed: int


def sample_backdrop(rng: np.random.Generator) -> Backdrop:
    source = ROOM if rng.random() < 0.3 else str(rng.choice(BACKGROUNDS))
    tint = (float(rng.uniform(-10, 10)), float(rng.uniform(-12, 18)))
    return Backdrop(source=source,
                    crop=(float(rng.random()), float(rng.random()), float(rng.uniform(1.0, 2.0))),
                    flip=bool(rng.random() < 0.5),
                    grade=Grade.sample(rng, strength=1.5, tint=tint),
                    defocus=float(rng.uniform(0.0, 0.012)),
                    room_seed=int(rng.integers(2**31)))


def _room(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A wall with a floor line and a few darker or lighter panels (doors, frames, shelves)."""
    wall = rng.uniform(60, 220, size=3)
    wall2 = np.clip(wall * rng.uniform(0.6, 1.2, size=3), 0, 255)
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    img = (wall * (1 - t) + wall2 * t) * np.ones((1, width, 1), np.float32)
    floor = int(height * rng.uniform(0.65, 0.95))
    img[floor:] = rng.uniform(30, 160, size=3)
    for _ in range(int(rng.integers(1, 5))):
        w = int(width * rng.uniform(0.08, 0.35))
        h = int(height * rng.uniform(0.1, 0.6))
        x = int(rng.integers(0, max(1, width - w)))
        y = int(rng.integers(0, max(1, floor - h // 2)))
        img[y:y + h, x:x + w] = rng.uniform(20, 235, size=3)
    grain = rng.normal(0.0, 4.0, size=(height // 8 + 1, width // 8 + 1, 1)).astype(np.float32)
    img += cv2.resize(grain, (width, height), interpolation=cv2.INTER_LINEAR)[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def render_backdrop(backdrop: Backdrop, width: int, height: int) -> np.ndarray:
    """The backdrop as an RGB uint8 image of exactly width x height."""
    if backdrop.source == ROOM:
        img = _room(np.random.default_rng(backdrop.room_seed), width, height)
    else:
        src = background_pixels(backdrop.source)
        sh, sw = src.shape[:2]
        # The largest window of the target's aspect ratio, shrunk by the zoom, at the crop spot.
        aspect = width / height
        cw, ch = (sw, sw / aspect) if sw / sh < aspect else (sh * aspect, sh)
        left, top, zoom = backdrop.crop
        cw, ch = cw / zoom, ch / zoom
        x0, y0 = left * (sw - cw), top * (sh - ch)
        m = np.array([[width / cw, 0.0, -x0 * width / cw], [0.0, height / ch, -y0 * height / ch]])
        img = cv2.warpAffine(src, m, (width, height), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT)
    if backdrop.flip:
        img = img[:, ::-1]
    img = apply_grade(img, backdrop.grade)
    sigma = backdrop.defocus * min(width, height)
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    return np.ascontiguousarray(img)
