"""Synthetic face shards: a committed face-shard tree made straight from photographs.

``write_face_shards`` writes what ``dfd preprocess`` writes (Parquet and TFRecord shards of
``schemas.FACE`` records plus ``manifest.json``) without decoding or detecting anything, so
training, inference and their benchmarks run on their own. Each REAL video is one packaged
portrait (``dfd.synth.photos``) under its own lighting, framed a little differently in every
frame. Its fakes are pixel-aligned with it (as in DFDC) and carry a learnable manipulation in the
face region: the face is blurred and its colour shifted under a soft elliptical mask, the
"distortions and colour blotches" the paper's CNN looks for.
"""
from __future__ import annotations

import datetime
import functools
import hashlib
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

import schemas
from dfd import manifest, output_tree, shards
from dfd.synth.photos import PORTRAITS, portrait_pixels
from schemas.records import CROP_SIZE, LABEL_FAKE, LABEL_REAL

FRAMES_IN_VIDEO = 300
MARGIN = 0.3  # the preprocessing default: context around the box as a fraction of its side
SOURCE_SCHEME = "synthetic://faces"  # the manifest's source of each part


def video_name(*keys: object) -> str:
    """A DFDC-looking name: ten lowercase letters and .mp4, stable for the keys."""
    digest = hashlib.sha256("/".join(map(str, keys)).encode()).digest()
    return "".join(chr(ord("a") + b % 26) for b in digest[:10]) + ".mp4"


def _crop(photo: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * (1 + MARGIN)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    scale = CROP_SIZE / side
    # An affine warp crops, scales and pads (with edge pixels) in one step.
    m = np.array([[scale, 0, CROP_SIZE / 2 - scale * cx], [0, scale, CROP_SIZE / 2 - scale * cy]])
    return cv2.warpAffine(photo, m, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_REPLICATE)


@functools.lru_cache(maxsize=1)
def _face_mask() -> np.ndarray:
    mask = np.zeros((CROP_SIZE, CROP_SIZE), np.float32)
    c = CROP_SIZE // 2
    cv2.ellipse(mask, (c, c), (int(CROP_SIZE * 0.27), int(CROP_SIZE * 0.34)), 0, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(mask, (0, 0), 8)[:, :, None]


def manipulate_face(crop: np.ndarray, *, strength: float = 1.0, blur: float = 2.5,
                    cast: tuple[float, float, float] = (1.18, 0.97, 0.80)) -> np.ndarray:
    """The synthetic deepfake artefact: a blurred, colour-shifted face blended into the crop."""
    fake = cv2.GaussianBlur(crop, (0, 0), blur).astype(np.float32)
    fake *= np.array(cast, np.float32)  # a warm cast, as badly matched skin
    alpha = _face_mask() * strength
    out = crop.astype(np.float32) * (1 - alpha) + fake * alpha
    return np.clip(out, 0, 255).astype(np.uint8)


def _encode(rgb: np.ndarray, image_format: str) -> bytes:
    ext, params = ((".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95]) if image_format == "jpeg"
                   else (".png", []))
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a crop as {image_format}")
    return buf.tobytes()


def _video_frames(rng: np.random.Generator, frames: int):
    """Per video: a photo, a lighting and per-frame boxes; fakes reuse all of it."""
    portrait = PORTRAITS[sorted(PORTRAITS)[rng.integers(len(PORTRAITS))]]
    photo = portrait_pixels(portrait.name).astype(np.float32)
    gain = rng.uniform(0.85, 1.15, size=3).astype(np.float32)  # lighting and white balance
    lit = np.clip(photo * gain + rng.uniform(-15, 15), 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        lit = lit[:, ::-1].copy()
        w = lit.shape[1]
        x1, y1, x2, y2 = portrait.face_box
        base = (w - x2, y1, w - x1, y2)
    else:
        base = portrait.face_box
    indices = np.sort(rng.choice(FRAMES_IN_VIDEO, size=frames, replace=False))
    out = []
    for index in indices:
        side = base[2] - base[0]
        dx, dy = rng.uniform(-0.08, 0.08, size=2) * side
        s = rng.uniform(0.92, 1.12)
        cx, cy = (base[0] + base[2]) / 2 + dx, (base[1] + base[3]) / 2 + dy
        half_w, half_h = (base[2] - base[0]) * s / 2, (base[3] - base[1]) * s / 2
        box = (cx - half_w, cy - half_h, cx + half_w, cy + half_h)
        crop = _crop(lit, box)
        noise = rng.normal(0, 3, crop.shape)
        crop = np.clip(crop + noise, 0, 255).astype(np.uint8)
        out.append((int(index), box, crop, lit.shape))
    return out


def face_records(*, part: int, split: str, originals: int, fakes_per_original: int,
                 frames: int, image_format: str = "jpeg", fake_strength: float = 1.0,
                 seed: int = 0) -> list[dict]:
    """FACE records of one part and split: each original's frames and its fakes' frames."""
    rng = np.random.default_rng([seed, part, schemas.records.SPLITS.index(split)])
    records = []
    for i in range(originals):
        real = video_name(seed, part, split, i)
        fakes = [video_name(seed, part, split, i, k) for k in range(fakes_per_original)]
        # Each fake of an original is its own swap: its own blur and colour cast.
        looks = {f: {"strength": fake_strength * rng.uniform(0.8, 1.0),
                     "blur": rng.uniform(3.5, 4.5),
                     "cast": (rng.uniform(1.2, 1.3), rng.uniform(0.95, 1.0),
                              rng.uniform(0.7, 0.78))} for f in fakes}
        for index, box, crop, (h, w, _) in _video_frames(rng, frames):
            for video, label in [(real, LABEL_REAL)] + [(f, LABEL_FAKE) for f in fakes]:
                image = crop if label == LABEL_REAL else manipulate_face(crop, **looks[video])
                records.append({
                    "video": video, "part": part, "original": real, "label": label,
                    "split": split, "frame_index": index, "frame_count": FRAMES_IN_VIDEO,
                    "face_index": 0, "bbox": [float(v) for v in box],
                    "det_score": float(rng.uniform(0.95, 1.0)), "frame_width": int(w),
                    "frame_height": int(h), "image": _encode(image, image_format),
                    "image_format": image_format})
    return records


def write_face_shards(out: str | Path, *, parts: tuple[int, ...] = (0, 1),
                      per_split: Mapping[str, int] | None = None,
                      fakes_per_original: int = 1, frames: int = 5,
                      shards_per_split: int = 1, image_format: str = "jpeg",
                      formats: tuple[str, ...] = ("parquet", "tfrecord"),
                      fake_strength: float = 1.0, seed: int = 0) -> dict:
    """Write a committed face-shard tree under out; return its counts.

    ``per_split`` is the number of REAL videos (originals) per part and split (by default 4 in
    train and 2 in validation); each has ``frames`` crops and ``fakes_per_original`` fakes with
    the same number of crops.
    Returns ``{"records": {split: n}, "fake": {split: n}, "real": {split: n}}``.
    """
    out = str(out)
    per_split = {"train": 4, "validation": 2} if per_split is None else per_split
    counts: dict = {"records": {}, "fake": {}, "real": {}}
    entries = []
    for part in parts:
        part_records = 0
        videos = 0
        for split, originals in per_split.items():
            records = face_records(part=part, split=split, originals=originals,
                                   fakes_per_original=fakes_per_original, frames=frames,
                                   image_format=image_format, fake_strength=fake_strength,
                                   seed=seed)
            videos += originals * (1 + fakes_per_original)
            part_records += len(records)
            for key, n in (("records", len(records)),
                           ("fake", sum(r["label"] == LABEL_FAKE for r in records)),
                           ("real", sum(r["label"] == LABEL_REAL for r in records))):
                counts[key][split] = counts[key].get(split, 0) + n
            for fmt in formats:
                Path(output_tree.part_dir(out, fmt, part)).mkdir(parents=True, exist_ok=True)
                for index in range(shards_per_split):
                    shard = [r for j, r in enumerate(records) if j % shards_per_split == index]
                    path = output_tree.shard_path(out, fmt, part, split, index, shards_per_split)
                    write = shards.write_parquet if fmt == "parquet" else shards.write_tfrecord
                    write(shard, path)
        entries.append({
            "part": part, "source": f"{SOURCE_SCHEME}/{part}", "source_size": 0,
            "source_checksum": hashlib.sha256(f"{seed}/{part}".encode()).hexdigest()[:16],
            "config_hash": "synthetic-faces", "code_version": "synthetic",
            "schema_version": schemas.FACE.version, "videos_in_metadata": videos,
            "videos_with_records": videos, "videos_rejected": 0, "fakes_left_out": 0,
            "records": part_records,
            "committed_at": datetime.datetime.now(datetime.UTC).isoformat()})
    manifest.write(str(out), manifest.with_parts(manifest.empty(), entries))
    return counts
