"""A face-shard tree for the study tests: two parts split into train and validation by
original, and one part held out whole (test), from ``dfd.synth.face_shards``."""
from __future__ import annotations

import shutil
from pathlib import Path

from dfd import manifest as mf
from dfd import output_tree
from dfd.synth.face_shards import write_face_shards

HELD_OUT_PART = 2


def make_study_data(root: Path, *, originals: int = 4, validation: int = 2,
                    held_out: int = 3, frames: int = 4) -> Path:
    """``root/faces``: parts 0 and 1 with ``originals`` train and ``validation`` validation
    originals each, part 2 with ``held_out`` test originals; one fake per original."""
    data, scratch = root / "faces", root / "held-out"
    write_face_shards(data, parts=(0, 1), per_split={"train": originals,
                                                     "validation": validation},
                      frames=frames, formats=("parquet",))
    write_face_shards(scratch, parts=(HELD_OUT_PART,), per_split={"test": held_out},
                      frames=frames, formats=("parquet",), seed=1)
    shutil.copytree(output_tree.part_dir(str(scratch), "parquet", HELD_OUT_PART),
                    output_tree.part_dir(str(data), "parquet", HELD_OUT_PART))
    manifest = mf.with_parts(mf.read(str(data)), list(mf.read(str(scratch))["parts"].values()))
    mf.write(str(data), manifest)
    shutil.rmtree(scratch)
    return data
