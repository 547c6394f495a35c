"""What each training study varies, by name, with the claim of the paper it tests.

A variant is a set of ``TrainConfig`` changes; every other setting, the data and the seeds are
shared by all variants of a study, so a difference in the table is the variant's.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from dfd.errors import DfdError


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    changes: dict[str, Any]  # TrainConfig fields
    paper: str  # what the paper reports for it


AUGMENTATION = (
    Variant("none", {"augment": "none"}, "baseline (the paper's final model)"),
    Variant("hflip", {"augment": "hflip"}, "no significant effect"),
    Variant("rotation", {"augment": "rotation"}, "accuracy about 10 % lower"),
    Variant("zoom", {"augment": "zoom"}, "accuracy about 5 % lower (zoom range 0.1)"),
)
BACKBONE = (
    Variant("paper_cnn", {"model": "paper_cnn", "augment": "none"},
            "0.84 test accuracy after 130 epochs"),
    Variant("efficientnet_b0", {"model": "efficientnet_b0", "augment": "none",
                                "pretrained": True},
            "started in the low 0.8s, lost 3 % accuracy over 15 epochs"),
)
# The model the occlusion and split studies train when not given one: the paper's final setup.
BASELINE = AUGMENTATION[0]
VARIANTS = {"augmentation": AUGMENTATION, "backbone": BACKBONE}


def select(study: str, names: Sequence[str] | None) -> tuple[Variant, ...]:
    """The study's variants named (all when None), in the study's own order; the first one
    is the baseline the others are compared with."""
    known = VARIANTS[study]
    if not names:
        return known
    by_name = {v.name: v for v in known}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise DfdError(f"{study} has no variant {unknown[0]!r}; one of {list(by_name)}")
    return tuple(v for v in known if v.name in names)
