"""Tiny face-shard trees and training run dirs for the inference, report and predict tests.

Crops are cut from real photographs shipped by installed packages (scikit-image's astronaut
and camera, matplotlib's Grace Hopper), laid out exactly as `dfd preprocess` writes them."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

import schemas
from dfd import manifest as mf
from dfd import output_tree as ot
from dfd import shards
from dfd.synth.photos import portrait_pixels


def photos() -> list[np.ndarray]:
    return [portrait_pixels(name) for name in ("astronaut", "camera", "grace_hopper")]


def crop_jpeg(photo: np.ndarray, rng: np.random.Generator, *, fake: bool) -> bytes:
    h, w = photo.shape[:2]
    side = int(min(h, w) * rng.uniform(0.5, 0.9))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    crop = cv2.resize(photo[y:y + side, x:x + side], (256, 256), interpolation=cv2.INTER_AREA)
    if fake:  # a blotch of off-colour skin, the kind of artifact the paper's CNN looks for
        cy, cx = rng.integers(64, 192, 2)
        cv2.circle(crop, (int(cx), int(cy)), 40, (200, 120, 160), -1)
        crop = cv2.GaussianBlur(crop, (5, 5), 0)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return buf.tobytes()


def face_record(*, video: str, part: int, original: str, label: int, split: str,
                frame_index: int, image: bytes) -> dict:
    return {"video": video, "part": part, "original": original, "label": label,
            "split": split, "frame_index": frame_index, "frame_count": 30, "face_index": 0,
            "bbox": [10.0, 20.0, 110.0, 140.0], "det_score": 0.99, "frame_width": 480,
            "frame_height": 272, "image": image, "image_format": "jpeg"}


def make_face_tree(out: Path, *, parts: dict[int, str], originals: int = 3,
                   frames: int = 4, seed: int = 0, faceless: int = 1,
                   bad_crops: dict[int, int] | None = None,
                   sources: Path | None = None) -> dict:
    """A committed output tree.

    ``parts`` maps a part to 'test' (held out whole) or 'mixed' (train + validation). Each part
    has ``originals`` REAL videos with one FAKE each and ``frames`` crops per video, plus
    ``faceless`` FAKE videos rejected with reason no_face, a REAL rejected as truncated and a
    file without a metadata entry rejected as not_in_metadata; ``bad_crops`` maps a part to how
    many of its first crops do not decode. Each part's metadata.json goes under ``sources``
    and the manifest lists it there. Returns {part: [face records]}."""
    rng = np.random.default_rng(seed)
    pics = photos()
    manifest = mf.empty()
    written = {}
    sources = sources or out.parent / "sources"
    for part, kind in sorted(parts.items()):
        records, metadata = [], {}
        for k in range(originals):
            real = f"r{part:02d}{k:02d}.mp4"
            fake = f"f{part:02d}{k:02d}.mp4"
            split = "test" if kind == "test" else ("validation" if k == 0 else "train")
            metadata[real] = {"label": "REAL", "split": "train", "original": None}
            metadata[fake] = {"label": "FAKE", "split": "train", "original": real}
            for video, label in ((real, 0), (fake, 1)):
                for f in range(frames):
                    image = crop_jpeg(pics[(k + f) % len(pics)], rng, fake=bool(label))
                    records.append(face_record(video=video, part=part, original=real,
                                               label=label, split=split,
                                               frame_index=7 * f, image=image))
        for b in range((bad_crops or {}).get(part, 0)):
            records[b] = {**records[b], "image": b"not a jpeg"}
        rejects = []
        for k in range(faceless):
            # The fake of the first original: in 'mixed' parts its group is in validation.
            name = f"x{part:02d}{k:02d}.mp4"
            metadata[name] = {"label": "FAKE", "split": "train", "original": f"r{part:02d}00.mp4"}
            rejects.append({"video": name, "part": part, "reason": "no_face",
                            "detail": "no face in any sampled frame", "label": 1,
                            "original": f"r{part:02d}00.mp4"})
        # A listed REAL the pipeline could not read, and a stray file metadata.json does not
        # list (so no label).
        broken = f"b{part:02d}00.mp4"
        metadata[broken] = {"label": "REAL", "split": "train", "original": None}
        rejects.append({"video": broken, "part": part, "reason": "truncated",
                        "detail": "moov atom not found", "label": 0, "original": broken})
        rejects.append({"video": "stray.mp4", "part": part, "reason": "not_in_metadata",
                        "detail": "file has no metadata.json entry", "label": None,
                        "original": None})
        by_split: dict[str, list] = {}
        for r in records:
            by_split.setdefault(r["split"], []).append(r)
        for split, rows in by_split.items():
            path = Path(ot.shard_path(str(out), "parquet", part, split, 0, 1))
            path.parent.mkdir(parents=True, exist_ok=True)
            shards.write_parquet(rows, str(path))
        errors = Path(ot.errors_path(str(out), part))
        errors.parent.mkdir(parents=True, exist_ok=True)
        shards.write_parquet(rejects, str(errors), schemas.REJECT)
        source = sources / f"dfdc_train_part_{part}"
        source.mkdir(parents=True, exist_ok=True)
        (source / "metadata.json").write_text(json.dumps(metadata))
        manifest = mf.with_parts(manifest, [{
            "part": part, "source": str(source), "source_size": 1, "source_checksum": "x",
            "config_hash": "h", "code_version": "0.1.0", "schema_version": 1,
            "videos_in_metadata": len(metadata), "videos_with_records": 2 * originals,
            "videos_rejected": len(rejects) - 1, "fakes_left_out": 0, "records": len(records),
            "committed_at": "2025-01-01T00:00:00Z"}],
            settings={"validation_fraction": 0.5})
        written[part] = records
    (out / ot.MANIFEST).write_text(mf.dumps(manifest))
    return written


def make_run_dir(run: Path, *, model: str = "paper_cnn", history: bool = True) -> Path:
    """A training run dir holding an untrained (seeded) model, as `dfd train` lays it out."""
    import tf_keras as keras

    from dfd.models import build_model, save_model

    keras.utils.set_random_seed(0)
    m = build_model(model)
    save_model(m, str(run / "model"), name=model, options={})
    if history:
        (run / "history.json").write_text(json.dumps(
            [{"loss": 0.69 - 0.05 * e, "accuracy": 0.5 + 0.05 * e, "val_loss": 0.7 - 0.04 * e,
              "val_accuracy": 0.5 + 0.04 * e} for e in range(3)]))
    (run / "config.json").write_text(json.dumps({"train": {"model": model}}))
    return run
