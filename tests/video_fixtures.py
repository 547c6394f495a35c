"""Real H.264 test clips for the per-video tests: written with PyAV's libx264 from the face
photographs that installed packages ship, plus small synthetic DFDC parts from dfd.synth.

Clips are cached per test process (several test modules share them) in one temporary folder.
"""
from __future__ import annotations

import atexit
import functools
import io
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import av
import cv2
import numpy as np

from dfd.synth.photos import portrait_pixels

_ROOT = Path(tempfile.mkdtemp(prefix="dfd-video-tests-"))
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)


def face_photo(name: str = "astronaut") -> np.ndarray:
    """A real face photograph, RGB uint8 and read-only: scikit-image's astronaut or
    matplotlib's Grace Hopper (``dfd.synth.photos``)."""
    if name not in ("astronaut", "grace_hopper"):
        raise ValueError(name)
    return portrait_pixels(name)


# A square around each photo's face (rows, cols), so the face fills about half of it.
_FACE_SQUARES = {"astronaut": (slice(0, 240), slice(103, 343)),
                 "grace_hopper": (slice(55, 385), slice(98, 428))}


def face_patch(name: str = "astronaut", side: int = 160) -> np.ndarray:
    """The face of a photograph, cropped square and resized to side x side."""
    rows, cols = _FACE_SQUARES[name]
    return cv2.resize(face_photo(name)[rows, cols], (side, side), interpolation=cv2.INTER_AREA)


def background(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Smooth coloured noise: texture for the encoder, nothing face-like."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def write_clip(path: Path, frames: Iterable[np.ndarray], *, fps: int = 30, rotation: int = 0,
               faststart: bool = False) -> Path:
    """Encode RGB frames as an H.264 mp4; rotation is stored as display-matrix metadata."""
    frames = iter(frames)
    first = next(frames)
    h, w = first.shape[:2]
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), mode="w", format="mp4", options=options) as container:
        stream = container.add_stream("libx264", rate=fps,
                                      options={"preset": "ultrafast", "threads": "1"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        for rgb in (first, *frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def face_frames(n: int, *, width: int = 320, height: int = 240, face: str = "astronaut",
                face_side: int = 160, face_from: int = 0, seed: int = 0) -> list[np.ndarray]:
    """n frames of a face photo drifting over a background; frames before face_from have no
    face. Returns the frames (the face's box in frame i is ``face_box(i, ...)``)."""
    photo = face_patch(face, face_side)
    bg = background(width, height, seed)
    out = []
    for i in range(n):
        img = bg.copy()
        if i >= face_from:
            x, y = _face_origin(i, width, height, face_side)
            img[y:y + face_side, x:x + face_side] = photo
        out.append(img)
    return out


def _face_origin(i: int, width: int, height: int, side: int) -> tuple[int, int]:
    span_x, span_y = max(0, width - side), max(0, height - side)
    return int(span_x * (0.3 + 0.2 * np.sin(i / 7))), int(span_y * 0.5)


@functools.cache
def clip(name: str, n: int = 30, *, width: int = 320, height: int = 240,
         face: str = "astronaut", face_from: int = 0, rotation: int = 0,
         faststart: bool = False, seed: int = 0) -> Path:
    """A cached face clip on disk."""
    frames = face_frames(n, width=width, height=height, face=face, face_from=face_from,
                         seed=seed)
    return write_clip(_ROOT / name, frames, rotation=rotation, faststart=faststart)


@functools.cache
def noise_clip(name: str = "noise.mp4", n: int = 20, width: int = 320,
               height: int = 240) -> Path:
    """A clip with no face in it."""
    return write_clip(_ROOT / name, (background(width, height, seed=i) for i in range(n)))


def reference_decode(path: Path) -> list[np.ndarray]:
    """Every frame, decoded and converted the plain way: the reference for bit-identity."""
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def truncated_copy(path: Path, fraction: float = 0.5) -> bytes:
    """The first part of a (faststart) clip's bytes, as a cut-off download would leave it."""
    data = path.read_bytes()
    return data[:int(len(data) * fraction)]


def as_stream(path: Path) -> io.BytesIO:
    return io.BytesIO(path.read_bytes())


@functools.cache
def synth_part(originals: int = 2, fakes_per_original: int = 1, frames: int = 16,
               width: int = 480, height: int = 272, portrait_fraction: float = 0.5,
               seed: int = 0) -> Path:
    """An unzipped synthetic DFDC part (dfd.synth), with its synth_truth.json."""
    from dfd.config import SynthConfig
    from dfd.synth import generate

    out = _ROOT / f"synth-{originals}-{fakes_per_original}-{frames}-{width}x{height}-{seed}"
    cfg = SynthConfig(parts=1, originals=originals, fakes_per_original=fakes_per_original,
                      width=width, height=height, frames=frames, seed=seed, zipped=False,
                      portrait_fraction=portrait_fraction, workers=1)
    [path] = generate(out, cfg)
    return Path(path)
