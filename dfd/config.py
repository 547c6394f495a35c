"""Typed configuration: one frozen dataclass per job, with named presets.

``smoke`` is for tests and the demo, ``paper`` is Che & Ingham's setup where the paper states
it and our assumption where it does not (``PAPER_PROVENANCE`` says which, field by field;
``dfd config JOB --preset paper --provenance`` prints it), ``full`` is for the whole 470 GB set
on a cluster. Command-line flags override a preset field by field (``override``);
``config_hash`` identifies the settings that shape the output.
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
    """`dfd preprocess`: DFDC parts to face shards. Of the `paper` preset's values the paper
    states 5 random frames per video and a balanced set; the detector, crop and split are our
    assumptions (PAPER_PROVENANCE)."""
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
    """`dfd train`: the CNN on Ray Train. Of the `paper` preset's values the paper states the
    model and the epochs; batch size, learning rate, dropout and the rest are our assumptions
    (PAPER_PROVENANCE)."""
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
    # Temperature scaling of the model's video scores, fitted by `dfd calibrate` on the
    # validation split (dfd.calibration): none | temperature.
    calibration: str = "none"
    # A video is called FAKE when its score exceeds this: a probability, or "validation" (the
    # threshold of highest validation accuracy in the run's calibration.json).
    threshold: str = "0.5"


JOBS = {"synth": SynthConfig, "preprocess": PreprocessConfig, "train": TrainConfig,
        "infer": InferConfig}

# What every command starts from unless told otherwise (`dfd demo` runs `smoke`, its size).
DEFAULT_PRESET = "paper"

PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "synth": SynthConfig(parts=3, originals=6, fakes_per_original=2, width=480, height=272,
                             frames=30),
        "preprocess": PreprocessConfig(frames_per_video=5, test_parts=(2,)),
        # The demo's few training crops: a batch of 8 gives enough steps in 6 epochs to learn
        # the synthetic fakes.
        "train": TrainConfig(epochs=6, batch_size=8, workers=2),
        "infer": InferConfig(batch_size=128, actors=2),
    },
    # The paper's setup where it states one, our assumption where it does not: PAPER_PROVENANCE
    # below marks every field. Stated: 5 random frames per video, a balanced set, the CNN of
    # Fig. 2 on 256x256x3 crops, 100 + 30 epochs. Assumed: the face detector, crop margin, the
    # split by original, no augmentation at all, batch 32, learning rate 1e-3, dropout 0.25
    # (and, in dfd/models.py, ReLU, Adam and binary cross-entropy).
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


STATED = "stated by the paper"
ASSUMED = "our assumption"

# Where each field of the `paper` preset comes from, job by job: (STATED or ASSUMED, the
# paper's words or why we chose it). Che & Ingham, "Identifying Deepfake Videos with
# Convolutional Neural Networks"; section numbers are the paper's. Every field has an entry
# (tests/test_config_provenance.py), so a new field needs a decision.
_ENGINEERING = "engineering; the paper does not cover it and the model does not depend on it"
PAPER_PROVENANCE: dict[str, dict[str, tuple[str, str]]] = {
    "synth": {name: (ASSUMED, "synthetic data is ours; the paper used DFDC parts (§2)")
              for name in ("parts", "first_part", "originals", "fakes_per_original", "width",
                           "height", "frames", "fps", "seed", "zipped", "portrait_fraction",
                           "workers")},
    "preprocess": {
        "frames_per_video": (STATED, "'extracted 5 random frames' from each video (§2)"),
        "sampling": (STATED, "'5 random frames' (§2)"),
        "detector": (ASSUMED, "the paper 'identified and extracted the face' without naming a "
                              "detector; RetinaFace is what the DFDC winners used"),
        "detect_max_side": (ASSUMED, "detection resolution is not given; 480 px keeps DFDC's "
                                     "faces well above RetinaFace's smallest anchor"),
        "min_face": (ASSUMED, "not given"),
        "score_threshold": (ASSUMED, "not given"),
        "max_faces": (ASSUMED, "one face per frame is our reading of 'the face in each frame' "
                               "(§2)"),
        "margin": (ASSUMED, "the crop's context is not given; Fig. 1 shows the face with a "
                            "little border"),
        "image_format": (ASSUMED, "the paper saved arrays (.npy); we store JPEG"),
        "jpeg_quality": (ASSUMED, "the paper saved arrays (.npy), uncompressed"),
        "fakes_per_original": (ASSUMED, "a 'balanced subset' is stated (§2); one fake per "
                                        "original is how we balance it"),
        "validation_fraction": (ASSUMED, "the paper split 10,278 images at random into "
                                         "7,364 / 1,426 / 1,488 (about 14 % validation); we "
                                         "split by original, 10 %"),
        "test_parts": (ASSUMED, "the paper's test set was 1,488 random images plus 7,368 images "
                                "from other folders (§2); which parts to hold out is ours"),
        "shards_per_split": (ASSUMED, _ENGINEERING),
        "seed": (ASSUMED, "the paper's frames were random; the seed is ours"),
        "limits": (ASSUMED, _ENGINEERING),
    },
    "train": {
        "model": (STATED, "the CNN of Fig. 2: its layers, output shapes and 562,901 "
                          "parameters; kernel sizes and strides are derived from the shapes "
                          "and parameter counts; the 256x256x3 input from the first layer's "
                          "86x86 output"),
        "epochs": (STATED, "'the first 100 epochs' then 'a further 30 epochs' (§3.3)"),
        "batch_size": (ASSUMED, "the paper experimented with the batch size (abstract) but "
                                "does not give it"),
        "learning_rate": (ASSUMED, "not given; Adam's default"),
        "augment": (ASSUMED, "the paper left zoom out of its final model and found rotation "
                             "cost accuracy (§3.4); whether horizontal flip stayed is not said"),
        "dropout": (ASSUMED, "Fig. 2 has four dropout layers but gives no rate"),
        "workers": (ASSUMED, _ENGINEERING),
        "gpus_per_worker": (ASSUMED, _ENGINEERING),
        "seed": (ASSUMED, "the paper reports one run of several ('the most recent', §3.1)"),
        "rebalance": (ASSUMED, "the paper balanced once, when it saved the images (§2)"),
        "pretrained": (ASSUMED, "only for the backbone models (§3.5 downloaded EfficientNetB0); "
                                "the paper's CNN starts from random weights"),
        "cpus_per_worker": (ASSUMED, _ENGINEERING),
        "max_failures": (ASSUMED, _ENGINEERING),
        "checkpoints_to_keep": (ASSUMED, _ENGINEERING),
        "select": (ASSUMED, "the paper reports its best model ('the highest scores we can "
                            "confidently report', §3.3) without saying how it was chosen"),
        "lr_schedule": (ASSUMED, "not given"),
        "plateau_patience": (ASSUMED, "not given"),
        "plateau_factor": (ASSUMED, "not given"),
        "early_stopping": (ASSUMED, "not given; the paper trained 130 epochs"),
    },
    "infer": {
        "batch_size": (ASSUMED, _ENGINEERING),
        "actors": (ASSUMED, _ENGINEERING),
        "gpus_per_actor": (ASSUMED, _ENGINEERING),
        "cpus_per_actor": (ASSUMED, _ENGINEERING),
        "aggregation": (ASSUMED, "the paper scored face images, not videos; the mean of a "
                                 "video's crop scores is ours"),
        "fallback_score": (ASSUMED, "not in the paper; 0.5 is no evidence either way, as DFDC "
                                    "entrants scored videos they could not read"),
        "calibration": (ASSUMED, "not in the paper, which reports the model's raw scores"),
        "threshold": (ASSUMED, "not given; 0.5 is the usual call for a probability"),
    },
}
# Choices of the paper's setup fixed in code (dfd/models.py) rather than in a config field.
PAPER_CODE_PROVENANCE: dict[str, dict[str, tuple[str, str, str]]] = {
    "train": {
        "activation": ("ReLU in the hidden layers, sigmoid at the output", ASSUMED,
                       "Fig. 2 lists layers and shapes, not activations"),
        "optimizer": ("Adam", ASSUMED, "not given"),
        "loss": ("binary cross-entropy", ASSUMED,
                 "not given; the paper reports a Kaggle log loss of 0.51 (§3.3)"),
        "input": ("256x256x3 face crops", STATED,
                  "read off Fig. 2: a first layer of 75 4x4x3 filters (3,675 parameters) with "
                  "stride 3 and an 86x86 output takes a 256-pixel side; §2 saved 252x252 "
                  "crops, which Keras' directory iterator resized"),
        "labels": ("1 = FAKE (Kaggle's convention)", ASSUMED,
                   "the paper wrote 0 for fake, 1 for real (Fig. 5)"),
    },
}


def paper_provenance(job: str) -> dict[str, dict[str, Any]]:
    """Every field of ``job``'s ``paper`` preset with its value, whether the paper states it or
    we assume it, and why; then the choices fixed in code (``in_code``: true)."""
    cfg = preset(job, "paper")
    marks = PAPER_PROVENANCE[job]
    out: dict[str, dict[str, Any]] = {}
    for f in dataclasses.fields(cfg):
        source, why = marks[f.name]
        value = getattr(cfg, f.name)
        out[f.name] = {"value": to_dict(value) if dataclasses.is_dataclass(value) else value,
                       "source": source, "why": why}
    for name, (value, source, why) in PAPER_CODE_PROVENANCE.get(job, {}).items():
        out[name] = {"value": value, "source": source, "why": why, "in_code": True}
    return out


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
