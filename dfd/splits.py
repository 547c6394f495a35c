"""The split rule and balancing: pure functions of names, so every run and runner agrees.

A split never separates a fake from its original: it is a function of (part, original) only.
Held-out parts are ``test`` whole (unseen folders); elsewhere a stable hash of the original
picks ``train`` or ``validation``.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence


def stable_fraction(*keys: object) -> float:
    """A uniform number in [0, 1) from the keys, identical on every machine and Python."""
    digest = hashlib.sha256("\x1f".join(str(k) for k in keys).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(part: int, original: str, *, test_parts: Sequence[int],
                 validation_fraction: float) -> str:
    if part in test_parts:
        return "test"
    return "validation" if stable_fraction("split", original) < validation_fraction else "train"


def choose_fakes(fakes: Sequence[str], *, per_original: int | None, seed: int) -> list[str]:
    """The fakes kept for one original: the ``per_original`` with the lowest stable hash of
    (seed, video), or all when per_original is None. Sorted by name."""
    if per_original is None:
        return sorted(fakes)
    ranked = sorted(fakes, key=lambda v: (stable_fraction("fake", seed, v), v))
    return sorted(ranked[:per_original])


def shard_of(original: str, shards: int) -> int:
    """The shard an original (with its fakes) is written to."""
    return int(stable_fraction("shard", original) * shards)
