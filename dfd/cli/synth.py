"""`dfd synth`: write a synthetic DFDC-format data set (real faces, face-swap fakes).

    dfd synth --out data/synth --preset smoke
    dfd synth --out data/dfdc-sized --parts 1 --size 1920x1080 --frames 300
"""
from __future__ import annotations

import argparse
import re

from dfd.config import PRESETS

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
    p.add_argument("--preset", default="paper", choices=sorted(PRESETS),
                   help="settings to start from (default: paper, the values shown below)")
    p.add_argument("--parts", type=int, help="number of parts (paper: 3)")
    p.add_argument("--first-part", type=int, help="number of the first part (default 0)")
    p.add_argument("--originals", type=int, help="REAL videos per part (paper: 8)")
    p.add_argument("--fakes-per-original", type=int, help="FAKE videos per original (paper: 2)")
    p.add_argument("--size", type=_size, help="WIDTHxHEIGHT (paper: 640x360); a share of "
                   "clips is turned to HEIGHTxWIDTH, as DFDC mixes in portrait clips")
    p.add_argument("--portrait-fraction", type=float,
                   help="share of clips turned to the other orientation (default 0.15)")
    p.add_argument("--frames", type=int, help="frames per clip (paper: 90)")
    p.add_argument("--fps", type=int, help="frames per second (default 30)")
    p.add_argument("--seed", type=int, help="same seed and settings give the same set (default 0)")
    p.add_argument("--workers", type=int,
                   help="processes rendering clips (default: one per CPU core)")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--zip", dest="zipped", action="store_true", default=None,
                      help="write dfdc_train_part_NN.zip files, as Kaggle ships them (default)")
    form.add_argument("--folders", dest="zipped", action="store_false",
                      help="write unpacked dfdc_train_part_N folders")
    p.set_defaults(func=run)


def run(args) -> int:
    from dfd import config
    from dfd.synth import generate

    width, height = args.size if args.size else (None, None)
    cfg = config.override(
        config.preset("synth", args.preset), parts=args.parts, first_part=args.first_part,
        originals=args.originals, fakes_per_original=args.fakes_per_original, width=width,
        height=height, frames=args.frames, fps=args.fps, seed=args.seed,
        portrait_fraction=args.portrait_fraction, workers=args.workers, zipped=args.zipped)
    for path in generate(args.out, cfg):
        print(path)
    return 0
