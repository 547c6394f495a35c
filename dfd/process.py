"""Per-group processing: one REAL video and the fakes made from it, to face records and rejects.

The original is decoded, detected and cropped. DFDC fakes are pixel-aligned with their original,
so each fake is decoded at the original's frame indices and cropped with the original's boxes;
the detector runs on a fake only in frames where the original had no face. Without a usable
original, a fake is detected on its own. A video that fails becomes a reject with a short reason
and never stops the group.
"""
from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import BinaryIO

import numpy as np

import schemas
from dfd import dfdc
from dfd.config import PreprocessConfig
from dfd.crop import crop_face, encode_crop
from dfd.faces import Detector, Face, detector_options
from dfd.video import NoFace, VideoError, VideoInfo, open_video, sample_frame_indices

PROCESSING_ERROR = "processing_error"  # a failure no typed VideoError describes


@dataclasses.dataclass(frozen=True)
class VideoRef:
    """One video to process and where to read it from."""
    name: str  # file name, e.g. "abcdefghij.mp4"
    part: int
    label: int  # schemas.LABEL_REAL (0) / schemas.LABEL_FAKE (1)
    original: str  # the REAL video it derives from; itself for REAL
    source: str | bytes | Callable[[], BinaryIO]  # path, bytes, or opener of a binary stream
    size: int | None = None  # bytes, when known


@dataclasses.dataclass
class GroupResult:
    records: list[dict]  # schemas.FACE records (validated)
    rejects: list[dict]  # schemas.REJECT records


# Counters that process_group and process_video add to a caller's Counter (the pipeline's
# ProcessUnits emits them as Beam counters). frames_decoded counts every frame through the
# decoder, frames_sampled the ones kept; boxes_reused counts fake frames cropped with the
# original's boxes, fakes_detected_alone the fakes that had no usable original; *_ms are
# wall-clock milliseconds.
STATS = ("videos", "videos_with_faces", "videos_rejected", "frames_decoded", "frames_sampled",
         "frames_detected", "faces_detected", "boxes_reused", "fakes_detected_alone",
         "frames_without_face", "records", "image_bytes", "decode_ms", "detect_ms", "crop_ms")


@dataclasses.dataclass
class VideoFaces:
    """The faces found in one video's sampled frames: what its fakes reuse."""
    info: VideoInfo
    faces: dict[int, list[Face]]  # every sampled index -> its faces, primary first


def configured(detector: Detector, cfg: PreprocessConfig) -> Detector:
    """The detector with cfg's detection options; it shares the loaded weights."""
    wanted = detector_options(cfg)
    if any(detector.options.get(k) != v for k, v in wanted.items()):
        return detector.with_options(**wanted)
    return detector


class _Timer:
    def __init__(self, stats: Counter, counter: str):
        self.stats, self.counter = stats, counter

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.stats[self.counter] += int(round((time.perf_counter() - self.start) * 1000))


def _sample(ref: VideoRef, info: VideoInfo, cfg: PreprocessConfig) -> list[int]:
    # Keyed by the original's name, so a fake detected alone still samples the frames its
    # original and its siblings would.
    return sample_frame_indices(info.frame_count, cfg.frames_per_video, policy=cfg.sampling,
                                seed=cfg.seed, key=ref.original)


def _aligned(info: VideoInfo, reference: VideoFaces) -> bool:
    o = reference.info
    return (info.width, info.height, info.frame_count) == (o.width, o.height, o.frame_count)


def _detect(detector: Detector, frames: dict[int, np.ndarray], indices: Sequence[int],
            stats: Counter) -> dict[int, list[Face]]:
    if not indices:
        return {}
    with _Timer(stats, "detect_ms"):
        found = detector.detect([frames[i] for i in indices])
    stats["frames_detected"] += len(indices)
    stats["faces_detected"] += sum(len(f) for f in found)
    return dict(zip(indices, found))


def _face_records(ref: VideoRef, info: VideoInfo, frames: dict[int, np.ndarray],
                  faces: dict[int, list[Face]], *, split: str, cfg: PreprocessConfig,
                  stats: Counter) -> list[dict]:
    records = []
    with _Timer(stats, "crop_ms"):
        for index in sorted(frames):
            if not faces.get(index):
                stats["frames_without_face"] += 1
                continue
            for face_index, face in enumerate(faces[index]):
                crop = crop_face(frames[index], face.box, margin=cfg.margin)
                records.append(schemas.validate({
                    "video": ref.name, "part": ref.part, "original": ref.original,
                    "label": ref.label, "split": split, "frame_index": index,
                    "frame_count": info.frame_count, "face_index": face_index,
                    "bbox": list(face.box), "det_score": face.score,
                    "frame_width": info.width, "frame_height": info.height,
                    "image": encode_crop(crop, cfg.image_format, cfg.jpeg_quality),
                    "image_format": cfg.image_format,
                }, schemas.FACE))
    stats["records"] += len(records)
    stats["image_bytes"] += sum(len(r["image"]) for r in records)
    return records


def process_video(ref: VideoRef, *, split: str, cfg: PreprocessConfig, detector: Detector,
                  reference: VideoFaces | None = None,
                  stats: Counter | None = None) -> tuple[list[dict], VideoFaces]:
    """One video's face records, and its faces for reuse by its fakes.

    With ``reference`` (its original's faces) the video is decoded at the original's frame
    indices and cropped with the original's boxes, detecting only where the original had no
    face; a reference of another size or length is ignored. Raises a VideoError subclass for
    an unusable video (NoFace when no sampled frame has a face). ``detector`` is used as given;
    ``stats`` (a Counter) collects the counters named in STATS.
    """
    stats = stats if stats is not None else Counter()
    with _Timer(stats, "decode_ms"), \
            open_video(ref.source, limits=cfg.limits, size=ref.size) as video:
        info = video.info
        reusing = reference is not None and _aligned(info, reference)
        frames = video.read(sorted(reference.faces) if reusing else _sample(ref, info, cfg))
        stats["frames_decoded"] += video.frames_decoded
    stats["frames_sampled"] += len(frames)
    indices = sorted(frames)
    if reusing:
        faces = {i: reference.faces[i] for i in indices if reference.faces[i]}
        stats["boxes_reused"] += len(faces)
        faces.update(_detect(detector, frames, [i for i in indices if i not in faces], stats))
    else:
        if ref.label == schemas.LABEL_FAKE:
            stats["fakes_detected_alone"] += 1
        faces = _detect(detector, frames, indices, stats)
    if not any(faces.values()):
        raise NoFace(f"no face in {len(frames)} sampled frames")
    records = _face_records(ref, info, frames, faces, split=split, cfg=cfg, stats=stats)
    stats["videos_with_faces"] += 1
    return records, VideoFaces(info, faces)


def _reject(ref: VideoRef, reason: str, detail: str) -> dict:
    return schemas.validate(dfdc.reject(ref.name, ref.part, reason, detail, label=ref.label,
                                        original=ref.original), schemas.REJECT)


def process_group(original: VideoRef | None, fakes: Sequence[VideoRef], *, split: str,
                  cfg: PreprocessConfig, detector: Detector,
                  stats: Counter | None = None) -> GroupResult:
    """Face records and rejects for one original and its fakes; never raises for a bad video.

    Detection options (max side, minimum face, score threshold, faces per frame) come from cfg;
    ``detector`` supplies the model and is reconfigured (sharing its weights) when they differ.
    ``stats`` (a Counter) gets every counter named in STATS added to it.
    """
    if split not in schemas.SPLITS:
        raise ValueError(f"unknown split {split!r}; one of {list(schemas.SPLITS)}")
    detector = configured(detector, cfg)
    stats = stats if stats is not None else Counter()
    stats.update({k: 0 for k in STATS})  # every name present, even at zero
    records: list[dict] = []
    rejects: list[dict] = []
    reference: VideoFaces | None = None
    for ref in ([original] if original is not None else []) + list(fakes):
        stats["videos"] += 1
        try:
            mine, faces = process_video(ref, split=split, cfg=cfg, detector=detector,
                                        reference=reference, stats=stats)
        except VideoError as exc:
            rejects.append(_reject(ref, exc.reason, exc.detail))
        except Exception as exc:  # one bad video must not stop the group (or the pipeline)
            rejects.append(_reject(ref, PROCESSING_ERROR, f"{type(exc).__name__}: {exc}"))
        else:
            records.extend(mine)
            if ref is original:
                reference = faces
    stats["videos_rejected"] += len(rejects)
    return GroupResult(records=records, rejects=rejects)
