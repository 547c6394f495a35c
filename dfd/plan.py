"""Planning a part: which videos to process, grouped by original, balanced and split.

Works on metadata alone, before any video is opened, so the fakes left out by balancing are
never decoded. One ``Unit`` (an original with its chosen fakes) is the pipeline's unit of work.

A part is planned on its own: a video is keyed by (part, name). DFDC's names are unique across
parts; a name repeated in another part is taken for another video and kept once in each part
(records, rejects and the manifest's counts all carry the part), never merged or dropped.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from dfd.dfdc import Entry, reject
from dfd.splits import assign_split, choose_fakes, shard_of


@dataclass(frozen=True)
class Unit:
    part: int
    original: Entry
    fakes: tuple[Entry, ...]
    split: str
    shard: int


@dataclass
class PartPlan:
    part: int
    units: list[Unit]
    rejects: list[dict]  # metadata videos that will not be processed, with why
    left_out: list[str]  # fakes dropped by balancing
    videos_in_metadata: int
    extra_files: list[str] = field(default_factory=list)  # files without metadata entries


def plan_part(part: int, entries: Iterable[Entry], files: Iterable[str], *,
              fakes_per_original: int | None, seed: int, test_parts, validation_fraction: float,
              shards_per_split: int, rejected_entries: Iterable[str] = ()) -> PartPlan:
    """Group a part's entries by original, keep the chosen fakes, and assign splits.

    ``rejected_entries`` names what metadata.json lists but parse_metadata rejected: their
    files are accounted for by that reject, not reported again as files without an entry."""
    entries = list(entries)
    files = set(files)
    listed = {e.name for e in entries} | set(rejected_entries)
    rejects = [reject(name, part, "not_in_metadata", "file has no metadata.json entry")
               for name in sorted(files - listed)]
    by_name = {}
    for e in entries:
        if e.name not in files:
            rejects.append(reject(e.name, part, "no_file", "listed in metadata.json, no file"))
        else:
            by_name[e.name] = e
    fakes_of: dict[str, list[Entry]] = defaultdict(list)
    for e in by_name.values():
        if e.label == 1:
            fakes_of[e.original].append(e)
    units, left_out = [], []
    for original, fakes in sorted(fakes_of.items()):
        if original not in by_name or by_name[original].label != 0:
            rejects.extend(reject(f.name, part, "original_missing",
                                  f"its original {original} is not a REAL video of this part")
                           for f in sorted(fakes, key=lambda f: f.name))
    for name, e in sorted(by_name.items()):
        if e.label != 0:
            continue
        fakes = fakes_of.get(name, [])
        kept = set(choose_fakes([f.name for f in fakes], per_original=fakes_per_original,
                                seed=seed))
        left_out.extend(sorted(f.name for f in fakes if f.name not in kept))
        units.append(Unit(
            part=part, original=e,
            fakes=tuple(sorted((f for f in fakes if f.name in kept), key=lambda f: f.name)),
            split=assign_split(part, name, test_parts=test_parts,
                               validation_fraction=validation_fraction),
            shard=shard_of(name, shards_per_split)))
    return PartPlan(part=part, units=units, rejects=rejects, left_out=left_out,
                    videos_in_metadata=len(listed), extra_files=sorted(files - listed))
