"""Slow, bounded, plausible motion: an actor who sways, leans in and tilts the head, filmed by a
hand-held camera that drifts and shakes. Every motion is a sum of sinusoids in seconds, so a clip
looks the same at any frame rate and the face never wanders out of the frame however long it is.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class Sway:
    amplitude: float
    period_s: float
    phase: float

    def at(self, t: float) -> float:
        return self.amplitude * math.sin(2 * math.pi * t / self.period_s + self.phase)

    @classmethod
    def sample(cls, rng: np.random.Generator, amplitude: float, periods: tuple[float, float]):
        return cls(float(amplitude), float(rng.uniform(*periods)),
                   float(rng.uniform(0, 2 * math.pi)))


@dataclasses.dataclass(frozen=True)
class Pose:
    """Where the face is in one frame, and how far the camera moved the whole picture."""
    center: tuple[float, float]  # face center, frame pixels
    scale: float  # relative to the face's size at rest
    angle_deg: float  # head roll, clockwise on screen
    camera: tuple[float, float]  # camera offset in pixels, applied to the background too


@dataclasses.dataclass(frozen=True)
class Motion:
    rest_center: tuple[float, float]
    sway_x: Sway
    sway_y: Sway
    lean: Sway  # relative zoom: the actor leaning towards the camera and back
    roll_deg: float
    roll_sway: Sway
    camera_pan: Sway
    shake: tuple[Sway, ...]  # camera shake: pairs of x, y sways at hand-tremor frequencies

    def pose(self, t: float) -> Pose:
        cam_x = self.camera_pan.at(t) + sum(s.at(t) for s in self.shake[0::2])
        cam_y = sum(s.at(t) for s in self.shake[1::2])
        cx = self.rest_center[0] + self.sway_x.at(t) + cam_x
        cy = self.rest_center[1] + self.sway_y.at(t) + cam_y
        return Pose((cx, cy), 1.0 + self.lean.at(t), self.roll_deg + self.roll_sway.at(t),
                    (cam_x, cam_y))

    @property
    def camera_reach(self) -> float:
        """The furthest the camera moves the picture, in pixels, along either axis."""
        return abs(self.camera_pan.amplitude) + sum(abs(s.amplitude) for s in self.shake)


def sample_motion(rng: np.random.Generator, *, width: int, height: int,
                  face_size: tuple[float, float]) -> Motion:
    """A motion that keeps a face of `face_size` (w, h at rest) and its crop margin in frame."""
    face_w, face_h = face_size
    short = min(width, height)
    lean = Sway.sample(rng, rng.uniform(0.0, 0.07), (4.0, 12.0))
    shake = tuple(Sway.sample(rng, rng.uniform(0.0, 0.004) * short, (0.3, 1.5)) for _ in range(4))
    camera_pan = Sway.sample(rng, rng.uniform(0.0, 0.04) * width, (8.0, 20.0))
    # Room the face center has on each side once its largest size and a crop margin fit.
    grown = 1.0 + lean.amplitude
    half_w = 0.5 * face_w * grown * 1.6
    half_h = 0.5 * face_h * grown * 1.6
    reach = camera_pan.amplitude + sum(s.amplitude for s in shake)
    room_x = max(0.0, width / 2 - half_w - reach)
    room_y = max(0.0, height / 2 - half_h - reach)
    sway_x = Sway.sample(rng, rng.uniform(0.0, 0.35) * room_x, (3.0, 10.0))
    sway_y = Sway.sample(rng, rng.uniform(0.0, 0.25) * room_y, (3.0, 10.0))
    free_x = room_x - sway_x.amplitude
    free_y = room_y - sway_y.amplitude
    # Faces sit in the upper half more often than not, as in interview-style footage.
    cx = width / 2 + rng.uniform(-1.0, 1.0) * free_x
    cy = height / 2 + rng.uniform(-1.0, 0.4) * free_y
    return Motion(
        rest_center=(float(cx), float(cy)), sway_x=sway_x, sway_y=sway_y, lean=lean,
        roll_deg=float(rng.uniform(-5.0, 5.0)),
        roll_sway=Sway.sample(rng, rng.uniform(0.0, 4.0), (3.0, 9.0)),
        camera_pan=camera_pan, shake=shake)
