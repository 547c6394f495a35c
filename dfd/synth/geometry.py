"""2-D affine transforms as 2x3 float64 matrices (the form cv2.warpAffine takes)."""
from __future__ import annotations

import math

import numpy as np


def compose(*transforms: np.ndarray) -> np.ndarray:
    """compose(a, b) applies b first, then a (like the matrix product a @ b)."""
    out = np.eye(3)
    for m in transforms:
        out = out @ np.vstack([m, [0.0, 0.0, 1.0]])
    return out[:2]


def apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    return points @ m[:, :2].T + m[:, 2]


def translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])


def placement(anchor: np.ndarray, target: tuple[float, float], *, scale_x: float,
              scale_y: float, angle_deg: float, mirror: bool = False) -> np.ndarray:
    """Move `anchor` to `target`, scaling and rotating (clockwise on screen) around it."""
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    sx = -scale_x if mirror else scale_x
    # Image y points down, so this rotation turns the picture clockwise as seen on screen.
    linear = np.array([[c, -s], [s, c]]) @ np.diag([sx, scale_y])
    offset = np.asarray(target, dtype=np.float64) - linear @ np.asarray(anchor, dtype=np.float64)
    return np.hstack([linear, offset[:, None]])


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The least-squares rotation + uniform scale + translation taking src points onto dst
    (Umeyama's closed form; deterministic, unlike OpenCV's RANSAC estimators)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    fix = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ fix @ vt
    scale = np.trace(np.diag(sig) @ fix) / (s0 ** 2).sum(1).mean()
    linear = scale * rot
    return np.hstack([linear, (mu_d - linear @ mu_s)[:, None]])
