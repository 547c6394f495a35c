"""Command-line flags for config fields, derived from the dataclasses in ``dfd.config``.

A flag's name (``--frames-per-video`` for ``frames_per_video``), type and choices come from its
field, and every flag defaults to None, meaning "the preset's value" (``config.override``), so a
field is declared once, in ``dfd.config``. A boolean field that is on by default gets a
``--no-<name>`` flag. Fields whose flag reads differently (``--size``, ``--test-parts``,
``--fakes-per-original all``, the limits) are added by their command.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any
from collections.abc import Iterable

from dfd import config

# Fields whose values come from a small fixed set; the rest are checked where they are used.
CHOICES: dict[str, tuple[str, ...]] = {
    "sampling": ("random", "uniform"),
    "detector": ("retinaface", "mtcnn"),
    "image_format": ("jpeg", "png"),
    "aggregation": ("mean", "median", "max", "confident"),
}

# The words of a flag's help, where the field's name does not say enough.
HELP: dict[str, str] = {
    "frames_per_video": "frames sampled per video",
    "sampling": "which frames: random (the paper's) or uniform (the DFDC winners')",
    "detector": "face detector",
    "margin": "context added on each edge of the face box, as a fraction of its long side",
    "image_format": "encoding of the stored crops",
    "shards_per_split": "shards per part and split",
    "validation_fraction": "share of originals (with their fakes) kept for validation",
    "seed": "seed (same seed and settings give the same output)",
    "model": "paper_cnn, efficientnet_b0, efficientnet_b4, xception",
    "batch_size": "batch size",
    "augment": "none, or hflip, rotation, zoom joined by '+' (e.g. hflip+zoom)",
    "workers": "parallel workers",
    "rebalance": "train on every fake each epoch instead of one per original",
    "pretrained": "start backbones from random weights instead of ImageNet's",
    "max_failures": "worker-group restarts before giving up",
    "actors": "model replicas (each loads the model once)",
    "aggregation": "video score from crop scores",
    "fallback_score": "score of a video the pipeline could not score (no face, unreadable, "
                      "...), which still counts",
    "parts": "number of parts",
    "first_part": "number of the first part",
    "originals": "REAL videos per part",
    "fakes_per_original": "FAKE videos per original",
    "portrait_fraction": "share of clips turned to the other orientation",
    "frames": "frames per clip",
    "fps": "frames per second",
}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def add_preset(p: argparse.ArgumentParser, *, default: str = config.DEFAULT_PRESET,
               what: str = "settings") -> None:
    p.add_argument("--preset", default=default, choices=sorted(config.PRESETS),
                   help=f"{what} to start from, which the flags below override field by field "
                        f"(default: %(default)s; `dfd config JOB --preset NAME` shows one)")


def add_fields(p: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type,
               names: Iterable[str], *, help: dict[str, str] | None = None,
               aliases: dict[str, tuple[str, ...]] | None = None) -> None:
    """One flag per named field of ``cls``, typed by the field; ``aliases`` adds other
    spellings of a flag (kept where users already type them)."""
    types = _field_types(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    [job] = [j for j, c in config.JOBS.items() if c is cls]
    shown = config.preset(job, config.DEFAULT_PRESET)
    for name in names:
        if name not in fields:
            raise ValueError(f"{cls.__name__} has no field {name!r}")
        kind = types[name]
        words = (help or {}).get(name) or HELP.get(name) or name.replace("_", " ")
        if kind is bool:
            if fields[name].default is not True:
                raise ValueError(f"{cls.__name__}.{name}: only fields on by default get a flag")
            p.add_argument(f"--no-{name.replace('_', '-')}", dest=name, action="store_false",
                           default=None, help=words + "%(default).0s")
            continue
        if kind not in (int, float, str):
            raise ValueError(f"{cls.__name__}.{name} ({kind}) needs a flag of its own")
        # The preset's value, not argparse's None (which means "the preset's"); "%(default).0s"
        # keeps ArgumentDefaultsHelpFormatter from appending "(default: None)".
        words += f" ({config.DEFAULT_PRESET}: {getattr(shown, name)})%(default).0s"
        p.add_argument(flag(name), *(aliases or {}).get(name, ()), dest=name, type=kind,
                       choices=CHOICES.get(name), default=None, help=words)


def overrides(args: argparse.Namespace, cls: type,
              names: Iterable[str] | None = None) -> dict[str, Any]:
    """The fields of ``cls`` (only ``names``, when given) set on the command line."""
    wanted = set(names) if names is not None else {f.name for f in dataclasses.fields(cls)}
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if f.name in wanted and getattr(args, f.name, None) is not None}


def from_args(args: argparse.Namespace, job: str, *, names: Iterable[str] | None = None,
              **changes: Any):
    """The job's config: its preset, then every field given as a flag (only ``names``, when
    a command's flags serve two jobs), then ``changes``."""
    cfg = config.preset(job, args.preset)
    cfg = config.override(cfg, **overrides(args, type(cfg), names))
    return config.override(cfg, **changes)
