"""Colour grading in CIE Lab: how an actor's skin tone, a background's colour and a swapped
face's colour mismatch are all varied."""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np


@dataclasses.dataclass(frozen=True)
class Grade:
    l_gain: float = 1.0
    l_gamma: float = 1.0
    ab_gain: float = 1.0  # saturation
    a_shift: float = 0.0  # green (-) to magenta (+)
    b_shift: float = 0.0  # blue (-) to yellow (+)

    @classmethod
    def sample(cls, rng: np.random.Generator, *, strength: float = 1.0,
               tint: tuple[float, float] = (0.0, 0.0)) -> Grade:
        return cls(l_gain=float(rng.uniform(1 - 0.15 * strength, 1 + 0.1 * strength)),
                   l_gamma=float(rng.uniform(1 - 0.2 * strength, 1 + 0.25 * strength)),
                   ab_gain=float(rng.uniform(1 - 0.3 * strength, 1 + 0.3 * strength)),
                   a_shift=float(tint[0] + rng.uniform(-4, 4) * strength),
                   b_shift=float(tint[1] + rng.uniform(-4, 4) * strength))


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 or [0, 255] float RGB -> float32 Lab (L in [0, 100], a and b about +-127)."""
    return cv2.cvtColor(np.asarray(rgb, dtype=np.float32) * (1 / 255), cv2.COLOR_RGB2Lab)


def from_lab(lab: np.ndarray) -> np.ndarray:
    """float32 Lab -> float32 RGB in [0, 255], unclipped."""
    return cv2.cvtColor(np.ascontiguousarray(lab, dtype=np.float32), cv2.COLOR_Lab2RGB) * 255


def apply_grade(rgb: np.ndarray, grade: Grade) -> np.ndarray:
    lab = to_lab(rgb)
    lab[..., 0] = 100 * np.clip(lab[..., 0] / 100, 0, 1) ** grade.l_gamma * grade.l_gain
    lab[..., 1] = lab[..., 1] * grade.ab_gain + grade.a_shift
    lab[..., 2] = lab[..., 2] * grade.ab_gain + grade.b_shift
    return np.clip(np.rint(from_lab(lab)), 0, 255).astype(np.uint8)
