"""Typed configuration: one frozen dataclass per job, with named presets.

``smoke`` is for tests and the demo, ``paper`` is the published setup of Che & Ingham, ``full``
is for the whole 470 GB set on a cluster. Command-line flags override a preset field by field
(``override``); ``config_hash`` identifies the settings that shape the output.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, TypeVar

C = TypeVar("C")


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    """`dfd synth`: a synthetic DFDC-format data set."""
    parts: int = 3
    first_part: int = 0
    originals: int = 8  # REAL videos per part
    fakes_per_original: int = 2
    width: int = 640
    height: int = 360
    frames: int = 90
    fps: int = 30
    seed: int = 0
    zipped: bool = True
    portrait_fraction: float = 0.15  # DFDC has a share of 1080x1920 clips
    workers: int = 0  # processes rendering videos; 0 = one per CPU core (output is the same)


@dataclasses.dataclass(frozen=True)
class Limits:
    """Refuse inputs beyond these before they cost memory or time."""
    max_video_bytes: int = 200 * 2**20
    max_frame_pixels: int = 3840 * 2160
    max_frames: int = 2000
    max_decode_seconds: float = 120.0
    max_member_bytes: int = 200 * 2**20  # uncompressed size of one zip member


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """`dfd preprocess`: DFDC parts to face shards."""
    frames_per_video: int = 5  # the paper's 5 random frames
    sampling: str = "random"  # random | uniform
    detector: str = "retinaface"  # retinaface | mtcnn
    # Frames are downscaled to this longest side for detection: a quarter of 1080p keeps DFDC's
    # faces well above RetinaFace's smallest anchor and costs a fifth of decoding the clip
    # (benchmarks/per_video.py); 640 costs twice as much for no better boxes.
    detect_max_side: int = 480
    min_face: int = 40  # minimum face side in source pixels
    score_threshold: float = 0.9
    max_faces: int = 1  # faces kept per frame (>= 1); the largest confident one is face_index 0
    margin: float = 0.3  # context added on each edge of the box, as a fraction of its long side
    image_format: str = "jpeg"
    jpeg_quality: int = 95
    fakes_per_original: int | None = 1  # None keeps every fake ("all")
    validation_fraction: float = 0.1
    test_parts: tuple[int, ...] = ()
    shards_per_split: int = 1  # per part and split
    seed: int = 0
    limits: Limits = Limits()


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """`dfd train`: the CNN on Ray Train."""
    model: str = "paper_cnn"
    epochs: int = 100
    batch_size: int = 32  # global: split over the workers, so the optimization does not change
    learning_rate: float = 1e-3
    augment: str = "none"  # none | hflip | rotation | zoom | combinations joined by '+'
    dropout: float = 0.25
    workers: int = 2
    gpus_per_worker: float = 0.0
    seed: int = 0
    rebalance: bool = True  # one fake per original per epoch when the data kept all fakes
    pretrained: bool = True  # ImageNet weights for the backbone models, when available
    cpus_per_worker: float = 1.0
    max_failures: int = 3  # worker-group restarts from the last checkpoint before giving up
    checkpoints_to_keep: int = 2
    # Model selection (dfd.model_selection): the exported epoch, the learning-rate schedule
    # and early stopping, all resumed from a checkpoint as if never stopped.
    select: str = "val_loss"  # val_loss (lowest) | val_auc (highest) | last
    lr_schedule: str = "none"  # none | cosine | plateau
    plateau_patience: int = 2  # plateau: epochs without a better value before the rate drops
    plateau_factor: float = 0.5  # plateau: what the rate is multiplied by when it drops
    early_stopping: int = 0  # stop after this many epochs without a better value; 0 = never


@dataclasses.dataclass(frozen=True)
class InferConfig:
    """`dfd infer`: Ray Data batch inference."""
    batch_size: int = 256
    actors: int = 2
    gpus_per_actor: float = 0.0
    # Upper bound; a local node keeps one CPU free for the Parquet reads so that the actor
    # pool cannot starve them (with every CPU held by actors, Ray Data deadlocks).
    cpus_per_actor: float = 1.0
    aggregation: str = "mean"  # mean | median | max | confident (dfd.aggregate)
    # The score of a video the pipeline could not score (no face, unreadable, ...): every
    # labelled video counts, as Kaggle scored every test video.
    fallback_score: float = 0.5


JOBS = {"synth": SynthConfig, "preprocess": PreprocessConfig, "train": TrainConfig,
        "infer": InferConfig}

# What every command starts from unless told otherwise (`dfd demo` runs `smoke`, its size).
DEFAULT_PRESET = "paper"

PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "synth": SynthConfig(parts=3, originals=6, fakes_per_original=2, width=480, height=272,
                             frames=30),
        "preprocess": PreprocessConfig(frames_per_video=5, test_parts=(2,)),
        # ~150 crops: a batch of 8 gives enough steps in 6 epochs to learn the synthetic fakes.
        "train": TrainConfig(epochs=6, batch_size=8, workers=2),
        "infer": InferConfig(batch_size=128, actors=2),
    },
    "paper": {
        "synth": SynthConfig(),
        "preprocess": PreprocessConfig(frames_per_video=5, sampling="random"),
        "train": TrainConfig(epochs=130, batch_size=32, augment="none"),
        "infer": InferConfig(),
    },
    "full": {
        "synth": SynthConfig(parts=50, originals=380, fakes_per_original=5, width=1920,
                             height=1080, frames=300),
        "preprocess": PreprocessConfig(frames_per_video=32, sampling="uniform",
                                       fakes_per_original=None, shards_per_split=8,
                                       test_parts=(45, 46, 47, 48, 49)),
        "train": TrainConfig(epochs=40, batch_size=256, workers=8, gpus_per_worker=1.0,
                             cpus_per_worker=8.0),  # JPEG decoding must keep a GPU fed
        "infer": InferConfig(batch_size=1024, actors=8, gpus_per_actor=1.0),
    },
}


def preset(job: str, name: str = "smoke"):
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; one of {sorted(PRESETS)}")
    if job not in JOBS:
        raise ValueError(f"unknown job {job!r}; one of {sorted(JOBS)}")
    return PRESETS[name][job]


def override(cfg: C, **changes: Any) -> C:
    """Return cfg with the given fields replaced; None means "keep the preset's value"."""
    changes = {k: v for k, v in changes.items() if v is not None}
    names = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise ValueError(f"{type(cfg).__name__} has no field {unknown[0]!r}")
    return dataclasses.replace(cfg, **changes)


def to_dict(cfg) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(cls: type[C], data: dict[str, Any]) -> C:
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        if dataclasses.is_dataclass(f.default) and isinstance(value, dict):
            value = from_dict(type(f.default), value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[f.name] = value
    return cls(**kwargs)


def config_hash(cfg, *, exclude: tuple[str, ...] = ()) -> str:
    """A short stable hash of the settings (minus those that do not change the output)."""
    data = {k: v for k, v in to_dict(cfg).items() if k not in exclude}
    blob = json.dumps(data, sort_keys=True, default=list).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def part_config_hash(cfg: PreprocessConfig, part: int, *, held_out: bool | None = None) -> str:
    """The config hash a part carries in the manifest: holding out another part does not change
    this one. ``held_out`` overrides whether this part is in ``cfg.test_parts``."""
    if held_out is None:
        held_out = part in cfg.test_parts
    return config_hash(dataclasses.replace(cfg, test_parts=(held_out,)))
