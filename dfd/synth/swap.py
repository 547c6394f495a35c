"""Face-swap manipulation: another identity's face, synthesized at a lower resolution, aligned on
this face's landmarks, colour-corrected imperfectly and blended in through an elliptical mask.

The traces are the ones real swap pipelines leave (and the ones the paper's CNN keys on): blur
from the generator's low resolution, the generator's own skin tone plus a random colour mismatch
and blotches, a blending seam, and a face that wobbles against the head from frame to frame. One
`strength` scales all of them; each fake draws its own, so the set spans moderate to obvious
swaps. Pixels outside the true face box are never touched.
"""
from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from dfd.synth import geometry
from dfd.synth.grading import from_lab, to_lab
from dfd.synth.photos import (LFW_FACES, LFW_LANDMARKS, MIRRORED_LANDMARKS, PORTRAITS,
                              lfw_faces, portrait_pixels)
from dfd.synth.scene import RenderedFrame

# Calibrated on the demo (smoke preset, paper_cnn, 6 epochs on ~100 crops): with swaps weaker
# than this, or colour mismatch in random directions only, that budget learns next to nothing
# (held-out AUC about 0.6); with these, about 0.9 on 36 held-out videos. Real DFDC fakes are
# subtler on average and the paper trained 100+ epochs on 7,364 crops.
STRENGTH_RANGE = (0.5, 1.0)
# A generator renders skin the way its training faces looked, and colour transfer corrects only
# part of it: a shift (Lab L, a, b at strength 1) shared by every swap, as one generation method
# leaves one signature, on top of a random per-swap mismatch.
GENERATOR_TONE = (10.0, 32.0, 12.0)
RANDOM_MISMATCH = (6.0, 6.0, 6.0)
LFW_DONOR_SHARE = 0.35  # low-resolution strangers; the rest are the other packaged portraits


@dataclasses.dataclass(frozen=True)
class FaceSwap:
    donor: str  # a frontal PORTRAITS name, or "lfw:<index>"
    donor_mirror: bool
    strength: float
    resolution: float  # generator face width as a fraction of the target face width
    color_keep: float  # 0: donor recoloured to the target's statistics; 1: donor's own colours
    color_offset: tuple[float, float, float]  # L, a, b added to the swapped face
    blotch: float  # amplitude (Lab a/b units) of low-frequency colour blotches
    mask_axes: tuple[float, float]  # ellipse half-axes as fractions of the box width, height
    mask_drop: float  # ellipse center below the box center, fraction of box height
    feather: float  # width of the mask's soft edge, as a fraction of the ellipse radius
    opacity: float
    jitter: float  # per-frame misalignment, fraction of the face width
    seed: int


def sample_swap(rng: np.random.Generator, *, actor: str) -> FaceSwap:
    """A swap onto an actor made from portrait `actor`; the donor is always someone else."""
    donors = [n for n, p in sorted(PORTRAITS.items()) if p.frontal and n != actor]
    if rng.random() < LFW_DONOR_SHARE or not donors:
        donor = f"lfw:{int(rng.integers(LFW_FACES))}"
    else:
        donor = str(rng.choice(donors))
    u = float(rng.uniform(*STRENGTH_RANGE))
    return FaceSwap(
        donor=donor, donor_mirror=bool(rng.random() < 0.5), strength=u,
        resolution=float(1.0 - u * rng.uniform(0.4, 0.75)),
        color_keep=float(u * rng.uniform(0.1, 0.8)),
        color_offset=tuple(float(v) for v in u * (np.asarray(GENERATOR_TONE) + rng.uniform(
            -np.asarray(RANDOM_MISMATCH), RANDOM_MISMATCH))),
        blotch=float(u * rng.uniform(0.0, 9.0)),
        mask_axes=(float(rng.uniform(0.36, 0.46)), float(rng.uniform(0.40, 0.47))),
        mask_drop=float(rng.uniform(0.0, 0.03)),
        feather=float(0.45 - 0.35 * u * rng.uniform(0.6, 1.0)),
        opacity=float(rng.uniform(0.8, 1.0)),
        jitter=float(u * rng.uniform(0.0, 0.03)),
        seed=int(rng.integers(2**31)))


def _donor_face(donor: str, mirror: bool) -> tuple[np.ndarray, np.ndarray, float]:
    """The donor photo (RGB), its landmarks and its face width, all in donor pixels."""
    if donor.startswith("lfw:"):
        gray = lfw_faces()[int(donor[4:])]
        img = np.repeat(gray[..., None], 3, axis=2)
        landmarks = np.asarray(LFW_LANDMARKS)
        face_w = 18.4  # RetinaFace's mean box width on these crops
    else:
        img = portrait_pixels(donor)
        landmarks = np.asarray(PORTRAITS[donor].landmarks)
        face_w = float(PORTRAITS[donor].face_size[0])
    if mirror:
        img = img[:, ::-1]
        flipped = np.array([img.shape[1] - 1, 0]) + landmarks * [-1, 1]
        landmarks = flipped[list(MIRRORED_LANDMARKS)]
    return np.ascontiguousarray(img), landmarks, face_w


class FaceSwapper:
    """Applies one fake's swap to the frames of its original, one frame at a time."""

    def __init__(self, swap: FaceSwap, *, actor_landmarks: np.ndarray, face_width: float):
        """`actor_landmarks`: the actor's landmarks in its portrait's pixels (the space the
        renderer's placement maps from); `face_width`: the target face's width at rest."""
        self.swap = swap
        img, landmarks, donor_w = _donor_face(swap.donor, swap.donor_mirror)
        # Synthesize at the generator's resolution: shrink the donor once so that its face is
        # `resolution` times the target's width; warping it up later leaves the generator's blur.
        shrink = min(1.0, swap.resolution * face_width / donor_w)
        if shrink < 1.0:
            full_w = img.shape[1]
            size = (max(8, round(full_w * shrink)), max(8, round(img.shape[0] * shrink)))
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
            shrink = size[0] / full_w
        self._donor = img
        self._gray_donor = swap.donor.startswith("lfw:")
        self._to_actor = geometry.compose(geometry.similarity(landmarks, actor_landmarks),
                                          np.array([[1 / shrink, 0, 0], [0, 1 / shrink, 0]]))
        rng = np.random.default_rng(swap.seed)
        self._blotches = rng.uniform(-1.0, 1.0, size=(3, 3, 2)).astype(np.float32) * swap.blotch
        self._rng = rng

    def apply(self, frame: RenderedFrame) -> np.ndarray:
        """The fake frame: `frame.image` with the face box region swapped (a new array)."""
        s = self.swap
        out = frame.image.copy()
        h, w = out.shape[:2]
        x1, y1, x2, y2 = frame.box
        bw, bh = x2 - x1, y2 - y1
        # The randomness is drawn before any early return so frame n always gets the same jitter.
        shift = self._rng.normal(0.0, s.jitter * bw, size=2)
        turn = float(self._rng.normal(0.0, 40 * s.jitter))
        rx0, ry0 = max(0, math.floor(x1)), max(0, math.floor(y1))
        rx1, ry1 = min(w, math.ceil(x2)), min(h, math.ceil(y2))
        if rx1 - rx0 < 4 or ry1 - ry0 < 4:
            return out
        rw, rh = rx1 - rx0, ry1 - ry0
        lm = frame.landmarks
        eye_dx, eye_dy = lm[1] - lm[0]
        roll = math.degrees(math.atan2(eye_dy, eye_dx))
        # Centered in the box (brow to chin) rather than on the landmarks, which sit off-center
        # in a three-quarter view; the ellipse then fits inside the box at any roll.
        center = np.array([(x1 + x2) / 2, (y1 + y2) / 2 + s.mask_drop * bh])
        wobble = geometry.placement(center, center + shift, scale_x=1.0, scale_y=1.0,
                                    angle_deg=turn)
        to_roi = geometry.compose(geometry.translation(-rx0, -ry0), wobble, frame.placement,
                                  self._to_actor)
        donor = cv2.warpAffine(self._donor, to_roi, (rw, rh), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
        alpha = self._mask(center - [rx0, ry0], (s.mask_axes[0] * bw, s.mask_axes[1] * bh), roll,
                           (rw, rh), box=(x1 - rx0, y1 - ry0, x2 - rx0, y2 - ry0))
        target = out[ry0:ry1, rx0:rx1]
        face = self._recolor(donor, target, alpha, (rw, rh))
        a = alpha[..., None]
        blended = target.astype(np.float32) * (1 - a) + face * a
        out[ry0:ry1, rx0:rx1] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
        return out

    def _mask(self, center, axes, roll_deg, size, *, box) -> np.ndarray:
        rw, rh = size
        yy, xx = np.mgrid[0:rh, 0:rw].astype(np.float32)
        dx, dy = xx - center[0], yy - center[1]
        a = math.radians(roll_deg)
        u = (dx * math.cos(a) + dy * math.sin(a)) / axes[0]
        v = (-dx * math.sin(a) + dy * math.cos(a)) / axes[1]
        r = np.sqrt(u * u + v * v)
        edge = np.clip((1.0 - r) / self.swap.feather, 0.0, 1.0)
        alpha = edge * edge * (3 - 2 * edge) * self.swap.opacity
        bx1, by1, bx2, by2 = box
        alpha[(xx < bx1) | (xx >= bx2) | (yy < by1) | (yy >= by2)] = 0.0
        return alpha

    def _recolor(self, donor: np.ndarray, target: np.ndarray, alpha: np.ndarray,
                 size: tuple[int, int]) -> np.ndarray:
        """Transfer the target's Lab mean and spread onto the donor, imperfectly."""
        s = self.swap
        d_lab, t_lab = to_lab(donor), to_lab(target)
        if self._gray_donor:
            # A grayscale stranger lends only its shading; the chroma is the target's, smoothed
            # the way a generator that never saw this skin would render it.
            sigma = 0.08 * size[0]
            d_lab[..., 1:] = cv2.GaussianBlur(t_lab[..., 1:], (0, 0), sigma)
        inside = alpha > 0.5 * s.opacity
        if inside.sum() < 16:
            inside = alpha > 0
        if not inside.any():
            return donor.astype(np.float32)
        d_mu, d_sd = d_lab[inside].mean(0), d_lab[inside].std(0)
        t_mu, t_sd = t_lab[inside].mean(0), t_lab[inside].std(0)
        matched = (d_lab - d_mu) * (t_sd / np.maximum(d_sd, 1.0)) + t_mu
        lab = matched + s.color_keep * (d_lab - matched)
        lab += np.asarray(s.color_offset, np.float32)
        if s.blotch > 0:
            lab[..., 1:] += cv2.resize(self._blotches, size, interpolation=cv2.INTER_CUBIC)
        lab[..., 0] = np.clip(lab[..., 0], 0, 100)
        return from_lab(lab)
