"""`dfd synth`: write a synthetic DFDC-format data set (real faces, face-swap fakes).

    dfd synth --out data/synth --preset smoke
    dfd synth --out data/dfdc-sized --parts 1 --size 1920x1080 --frames 300
"""
from __future__ import annotations

import argparse
import re

from dfd.cli import _flags
from dfd.config import SynthConfig

_SIZE = re.compile(r"^(\d+)x(\d+)$")


def _size(text: str) -> tuple[int, int]:
    m = _SIZE.match(text.strip().lower())
    if not m:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x360, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def register(sub) -> None:
    p = sub.add_parser(
        "synth", help="write synthetic DFDC parts (real face photos, face-swap fakes)",
        description="Write parts in DFDC's layout: dfdc_train_part_NN.zip holding "
                    "dfdc_train_part_N/ with H.264 clips, metadata.json and synth_truth.json "
                    "(the true face box of every frame). Parts already there are replaced if "
                    "they are synthetic and refused otherwise.")
    p.add_argument("--out", required=True, help="folder to write the parts into")
    _flags.add_preset(p)
    _flags.add_fields(p, SynthConfig, ("parts", "first_part", "originals",
                                       "fakes_per_original"))
    p.add_argument("--size", type=_size, help="WIDTHxHEIGHT (paper: 640x360); a share of "
                   "clips is turned to HEIGHTxWIDTH, as DFDC mixes in portrait clips")
    _flags.add_fields(p, SynthConfig, ("portrait_fraction", "frames", "fps", "seed", "workers"),
                      help={"workers": "processes rendering clips (0: one per CPU core)"})
    form = p.add_mutually_exclusive_group()
    form.add_argument("--zip", dest="zipped", action="store_true", default=None,
                      help="write dfdc_train_part_NN.zip files, as Kaggle ships them (default)")
    form.add_argument("--folders", dest="zipped", action="store_false",
                      help="write unpacked dfdc_train_part_N folders")
    p.set_defaults(func=run)


def run(args) -> int:
    from dfd.synth import generate

    width, height = args.size if args.size else (None, None)
    cfg = _flags.from_args(args, "synth", width=width, height=height, zipped=args.zipped)
    for path in generate(args.out, cfg):
        print(path)
    return 0
