"""Which videos a synthetic part holds: names, labels, orientation and the seed of each video.

Every random choice is keyed by (seed, part, original index, fake index), so a video does not
change when other parts, other videos or the number of worker processes change.
"""
from __future__ import annotations

import dataclasses
import string

import numpy as np

from dfd.config import SynthConfig

_LETTERS = np.array(list(string.ascii_lowercase))
_NAME_STREAM = 0  # SeedSequence keys: which random stream a number comes from
_VIDEO_STREAM = 1


@dataclasses.dataclass(frozen=True)
class FakePlan:
    name: str
    seed: int


@dataclasses.dataclass(frozen=True)
class OriginalPlan:
    name: str
    seed: int
    width: int
    height: int
    fakes: tuple[FakePlan, ...]


@dataclasses.dataclass(frozen=True)
class PartPlan:
    part: int
    originals: tuple[OriginalPlan, ...]

    @property
    def video_count(self) -> int:
        return sum(1 + len(o.fakes) for o in self.originals)


def _seed(*key: int) -> int:
    return int(np.random.SeedSequence(list(key)).generate_state(1)[0])


def _video_names(rng: np.random.Generator, count: int) -> list[str]:
    """Ten lowercase letters + .mp4, like DFDC's, distinct within the part."""
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        name = "".join(rng.choice(_LETTERS, size=10)) + ".mp4"
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def plan_part(cfg: SynthConfig, part: int) -> PartPlan:
    per_original = 1 + cfg.fakes_per_original
    names = _video_names(np.random.default_rng(_seed(cfg.seed, part, _NAME_STREAM)),
                         cfg.originals * per_original)
    # A fixed share of turned clips per part (DFDC mixes 1080x1920 in with 1920x1080), spread
    # at random over the originals; fakes share their original's orientation.
    rng = np.random.default_rng(_seed(cfg.seed, part, _VIDEO_STREAM))
    turned_count = int(cfg.originals * cfg.portrait_fraction + rng.random())
    turned = np.zeros(cfg.originals, bool)
    turned[rng.permutation(cfg.originals)[:turned_count]] = True
    originals = []
    for i in range(cfg.originals):
        own = names[i * per_original:(i + 1) * per_original]
        width, height = (cfg.height, cfg.width) if turned[i] else (cfg.width, cfg.height)
        fakes = tuple(FakePlan(name, _seed(cfg.seed, part, _VIDEO_STREAM, i, k + 1))
                      for k, name in enumerate(own[1:]))
        originals.append(OriginalPlan(own[0], _seed(cfg.seed, part, _VIDEO_STREAM, i, 0),
                                      width, height, fakes))
    return PartPlan(part, tuple(originals))
