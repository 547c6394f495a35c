"""Face crops: a square around the detected box with some context, resized to the network's input
size and encoded for the shards."""
from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from schemas.records import CROP_SIZE, IMAGE_FORMATS


def crop_window(box: Sequence[float], *, margin: float) -> tuple[int, int, int]:
    """(x, y, side) of the square crop around box, in frame pixels; it may leave the frame.

    The square is centred on the box, its side the box's longer side plus ``margin`` of that
    side on each edge (margin 0.3 gives 1.6x the face), so the crop keeps hair, chin and the
    blending seam around a swapped face.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 <= x1 or y2 <= y1:
        raise ValueError(f"not a box: {tuple(box)}")
    side = max(1, round(max(x2 - x1, y2 - y1) * (1 + 2 * margin)))
    x = math.floor((x1 + x2) / 2 - side / 2 + 0.5)
    y = math.floor((y1 + y2) / 2 - side / 2 + 0.5)
    return x, y, side


def crop_face(frame: np.ndarray, box: Sequence[float], *, margin: float,
              size: int = CROP_SIZE) -> np.ndarray:
    """The square crop around box, black where it leaves the frame, resized to size x size.

    frame is HxWx3 uint8 (RGB in, RGB out)."""
    x, y, side = crop_window(box, margin=margin)
    h, w = frame.shape[:2]
    square = np.zeros((side, side, frame.shape[2]), dtype=frame.dtype)
    fx1, fy1 = max(x, 0), max(y, 0)
    fx2, fy2 = min(x + side, w), min(y + side, h)
    if fx2 > fx1 and fy2 > fy1:
        square[fy1 - y:fy2 - y, fx1 - x:fx2 - x] = frame[fy1:fy2, fx1:fx2]
    if side == size:
        return square
    # Area averaging when shrinking avoids aliasing; linear when enlarging a small face.
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(square, (size, size), interpolation=interpolation)


def encode_crop(img: np.ndarray, fmt: str = "jpeg", quality: int = 95) -> bytes:
    """An RGB uint8 image encoded as JPEG (at ``quality``) or PNG bytes."""
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"unknown image format {fmt!r}; one of {list(IMAGE_FORMATS)}")
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)  # OpenCV encodes BGR arrays
    if fmt == "jpeg":
        if not 1 <= quality <= 100:
            raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    else:
        ok, buf = cv2.imencode(".png", bgr)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {img.shape} image as {fmt}")
    return buf.tobytes()
