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
from typing import BinaryIO, Callable, Sequence

import numpy as np

import schemas
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
    stats: dict[str, int]  # counters, named in STATS


STATS = ("videos", "videos_with_faces", "videos_rejected", "frames_decoded", "frames_sampled",
         "frames_detected", "faces_detected", "boxes_reused", "fakes_detected_alone",
         "frames_without_face", "records", "image_bytes", "decode_ms", "detect_ms", "crop_ms")


@dataclasses.dataclass
class _Decoded:
    info: VideoInfo
    frames: dict[int, np.ndarray]  # sampled index -> upright RGB frame


@dataclasses.dataclass
class _Done:
    """A video whose faces are known: what its fakes may reuse."""
    info: VideoInfo
    faces: dict[int, list[Face]]  # sampled index -> faces, primary first


class _Group:
    def __init__(self, split: str, cfg: PreprocessConfig, detector: Detector):
        self.split, self.cfg = split, cfg
        # The config decides what shapes the output; the detector object supplies the model.
        wanted = detector_options(cfg)
        if any(detector.options.get(k) != v for k, v in wanted.items()):
            detector = detector.with_options(**wanted)
        self.detector = detector
        self.records: list[dict] = []
        self.rejects: list[dict] = []
        self.stats: Counter = Counter({k: 0 for k in STATS})

    def _timed(self, counter: str, start: float) -> None:
        self.stats[counter] += int(round((time.perf_counter() - start) * 1000))

    def decode(self, ref: VideoRef,
               choose: Callable[[VideoInfo], Sequence[int]] | None = None) -> _Decoded:
        """Decode the frames ``choose(info)`` picks; by default this video's own sample."""
        cfg = self.cfg
        start = time.perf_counter()
        try:
            with open_video(ref.source, limits=cfg.limits, size=ref.size) as video:
                info = video.info
                indices = choose(info) if choose is not None else self.sample(ref, info)
                frames = video.read(indices)
                self.stats["frames_decoded"] += video.frames_decoded
        finally:
            self._timed("decode_ms", start)
        self.stats["frames_sampled"] += len(frames)
        return _Decoded(info, frames)

    def sample(self, ref: VideoRef, info: VideoInfo) -> list[int]:
        # Keyed by the original's name, so a fake detected alone still samples the frames its
        # original and its siblings would.
        cfg = self.cfg
        return sample_frame_indices(info.frame_count, cfg.frames_per_video, policy=cfg.sampling,
                                    seed=cfg.seed, key=ref.original)

    def detect(self, frames: dict[int, np.ndarray], indices: Sequence[int]) -> dict[int, list[Face]]:
        if not indices:
            return {}
        start = time.perf_counter()
        found = self.detector.detect([frames[i] for i in indices])
        self._timed("detect_ms", start)
        self.stats["frames_detected"] += len(indices)
        self.stats["faces_detected"] += sum(len(f) for f in found)
        return dict(zip(indices, found))

    def emit(self, ref: VideoRef, decoded: _Decoded, faces: dict[int, list[Face]]) -> None:
        cfg, info = self.cfg, decoded.info
        if not any(faces.values()):
            raise NoFace(f"no face in {len(decoded.frames)} sampled frames")
        start = time.perf_counter()
        records = []
        for index in sorted(decoded.frames):
            if not faces.get(index):
                self.stats["frames_without_face"] += 1
                continue
            for face_index, face in enumerate(faces[index]):
                crop = crop_face(decoded.frames[index], face.box, margin=cfg.margin)
                image = encode_crop(crop, cfg.image_format, cfg.jpeg_quality)
                records.append(schemas.validate({
                    "video": ref.name, "part": ref.part, "original": ref.original,
                    "label": ref.label, "split": self.split, "frame_index": index,
                    "frame_count": info.frame_count, "face_index": face_index,
                    "bbox": list(face.box), "det_score": face.score,
                    "frame_width": info.width, "frame_height": info.height,
                    "image": image, "image_format": cfg.image_format,
                }, schemas.FACE))
        self._timed("crop_ms", start)
        self.records.extend(records)
        self.stats["records"] += len(records)
        self.stats["image_bytes"] += sum(len(r["image"]) for r in records)
        self.stats["videos_with_faces"] += 1

    def reject(self, ref: VideoRef, reason: str, detail: str) -> None:
        self.stats["videos_rejected"] += 1
        self.rejects.append(schemas.validate(
            {"video": ref.name, "part": ref.part, "reason": reason, "detail": detail[:500]},
            schemas.REJECT))

    def run(self, ref: VideoRef, work: Callable[[], _Done | None]) -> _Done | None:
        """Run one video's work; a failure becomes its reject, never an exception."""
        self.stats["videos"] += 1
        try:
            return work()
        except VideoError as exc:
            self.reject(ref, exc.reason, exc.detail)
        except Exception as exc:  # one bad video must not stop the group (or the pipeline)
            self.reject(ref, PROCESSING_ERROR, f"{type(exc).__name__}: {exc}")
        return None

    # -- the two kinds of video

    def alone(self, ref: VideoRef) -> _Done:
        decoded = self.decode(ref)
        faces = self.detect(decoded.frames, sorted(decoded.frames))
        self.emit(ref, decoded, faces)
        return _Done(decoded.info, faces)

    def reusing(self, ref: VideoRef, original: _Done) -> _Done:
        def aligned(info: VideoInfo) -> bool:
            o = original.info
            return (info.width, info.height, info.frame_count) == (o.width, o.height,
                                                                   o.frame_count)

        # Not the same geometry or length: the original's boxes would point elsewhere, so the
        # fake gets its own sample and its own detection.
        decoded = self.decode(ref, lambda info: sorted(original.faces) if aligned(info)
                              else self.sample(ref, info))
        indices = sorted(decoded.frames)
        if aligned(decoded.info):
            faces = {i: original.faces[i] for i in indices if original.faces[i]}
            self.stats["boxes_reused"] += len(faces)
            faces.update(self.detect(decoded.frames, [i for i in indices if i not in faces]))
        else:
            self.stats["fakes_detected_alone"] += 1
            faces = self.detect(decoded.frames, indices)
        self.emit(ref, decoded, faces)
        return _Done(decoded.info, faces)


def process_group(original: VideoRef | None, fakes: Sequence[VideoRef], *, split: str,
                  cfg: PreprocessConfig, detector: Detector) -> GroupResult:
    """Face records and rejects for one original and its fakes; never raises for a bad video.

    Detection options (max side, minimum face, score threshold, faces per frame) come from cfg;
    ``detector`` supplies the model and is reconfigured (sharing its weights) when they differ.
    """
    if split not in schemas.SPLITS:
        raise ValueError(f"unknown split {split!r}; one of {list(schemas.SPLITS)}")
    group = _Group(split, cfg, detector)
    done = group.run(original, lambda: group.alone(original)) if original is not None else None
    for fake in fakes:
        if done is None:
            group.stats["fakes_detected_alone"] += 1
            group.run(fake, lambda: group.alone(fake))
        else:
            group.run(fake, lambda: group.reusing(fake, done))
    return GroupResult(records=group.records, rejects=group.rejects, stats=dict(group.stats))
