"""Sizing of the full DFDC set: core-hours to preprocess, GPU-hours to train and to infer,
storage for the shards, with the arithmetic written out.

    python infra/sizing.py                              # the tables of docs/sizing.md
    python infra/sizing.py --set decode_core_s_per_clip=0.8 --set train_images_per_gpu_s=4500
    python infra/sizing.py --write docs/sizing.md       # after changing a default below

Every per-item cost is a named parameter with its source, so a new benchmark figure is one
``--set`` away; the run settings (frames per video, sampling, balancing, held-out parts,
epochs) come from the `paper` and `full` presets in dfd/config.py, so the sizing follows the
code. docs/sizing.md holds this script's output; tests/test_infra.py checks they agree.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from dfd import config as cfgmod

DATA_SET = "data set"
MEASURED = "measured"
PROJECTED = "projection"
SETTING = "setting"


@dataclasses.dataclass(frozen=True)
class Parameter:
    value: float
    unit: str
    kind: str  # DATA_SET, MEASURED, PROJECTED or SETTING
    source: str


PARAMETERS: dict[str, Parameter] = {
    # The data set (DESIGN.md, "Raw input").
    "videos": Parameter(119_154, "clips", DATA_SET, "DFDC train set, 50 parts"),
    "real_videos": Parameter(19_154, "clips", DATA_SET, "DFDC metadata: label REAL"),
    "parts": Parameter(50, "parts", DATA_SET, "dfdc_train_part_00 ... 49"),
    "clip_mb": Parameter(3.9, "MB", DATA_SET, "470 GB / 119,154 clips"),
    # Per-item costs on one core of this project's 2-core machine (DESIGN.md).
    "decode_core_s_per_clip": Parameter(
        1.0, "core-s", MEASURED,
        "H.264 1080p decode, 300-400 frames/s per core (DESIGN.md)"),
    "detect_core_s_per_frame": Parameter(
        0.026, "core-s", MEASURED, "RetinaFace on a quarter-size frame, one core (DESIGN.md)"),
    "crop_encode_ms": Parameter(0.14, "ms", MEASURED, "256x256 crop to JPEG q95 (DESIGN.md)"),
    "crop_kb_low": Parameter(13, "KB", MEASURED, "256x256 JPEG q95, smallest (DESIGN.md)"),
    "crop_kb_high": Parameter(23, "KB", MEASURED, "256x256 JPEG q95, largest (DESIGN.md)"),
    # Not yet measured: projections to replace when benchmarks/ reports them.
    "faces_per_frame": Parameter(
        1.0, "crops", PROJECTED, "max_faces=1 keeps the primary face; frames without a face "
        "lower it"),
    "cpu_efficiency": Parameter(
        0.75, "", PROJECTED, "share of paid core time spent decoding and detecting (reads "
        "from the bucket, shuffles, stragglers take the rest)"),
    "train_images_per_gpu_s": Parameter(
        3000, "images/s", PROJECTED, "paper_cnn training per GPU worker, bound by JPEG decode "
        "on 8-10 vCPUs and the gradient all-reduce of a 32-crop per-worker batch"),
    "infer_images_per_gpu_s": Parameter(
        8000, "images/s", PROJECTED, "paper_cnn forward pass per GPU actor, bound by JPEG "
        "decode"),
    "cluster_startup_min": Parameter(
        10, "min", PROJECTED, "GPU node scale-up and a ~5 GB image pull, per RayJob"),
    "beam_startup_min": Parameter(
        4, "min", PROJECTED, "a Beam job's start on Dataflow: worker VMs and the ~3 GB Beam "
        "image, once per wave"),
    # Deployment choices, not costs: infra/beam/dataflow.flags caps Dataflow at this, and
    # `dfd preprocess --parts-per-wave` (pipelines.preprocess.PARTS_PER_WAVE) cuts a run.
    "beam_vcpus": Parameter(512, "vCPUs", SETTING, "--max_num_workers=64 x n2-standard-8"),
    "parts_per_wave": Parameter(50, "parts", SETTING, "--parts-per-wave 50 on Dataflow: a "
                                "job start costs more than the compute a late failure loses "
                                "(the default, 5, is for runners that start jobs in seconds)"),
}


# A preset that holds no part out (paper) is sized as if run with --test-parts 45-49, as the
# full preset is: otherwise it would have nothing to score.
HELD_OUT_PARTS = 5


@dataclasses.dataclass(frozen=True)
class Line:
    """One figure with the arithmetic that produced it."""
    label: str
    value: float
    unit: str
    working: str


def _n(x: float, digits: int = 0) -> str:
    return f"{x:,.{digits}f}"


def fraction_decoded(sampling: str, k: int) -> tuple[float, str]:
    """How much of a clip is decoded when decoding stops after the last sampled frame."""
    if sampling == "random":
        # The largest of k uniform draws sits on average at k/(k+1) of the clip.
        return k / (k + 1), f"{k}/{k + 1} (largest of {k} random frames)"
    return 1.0, f"1 ({k} uniform frames reach the last one)"


def estimate(preset: str, p: dict[str, Parameter] = PARAMETERS) -> list[Line]:
    """The sizing of one preset, as lines of arithmetic."""
    pre = cfgmod.preset("preprocess", preset)
    train = cfgmod.preset("train", preset)
    v = {name: par.value for name, par in p.items()}
    real, fake = v["real_videos"], v["videos"] - v["real_videos"]
    k = pre.frames_per_video
    held_out = len(pre.test_parts) or HELD_OUT_PARTS
    test_share = held_out / v["parts"]
    held_out_note = (f"{held_out} held-out parts" if pre.test_parts
                     else f"{held_out} parts held out with --test-parts")
    lines: list[Line] = []

    if pre.fakes_per_original is None:
        fakes_kept, fake_note = fake, "all fakes"
    else:
        fakes_kept = min(fake, real * pre.fakes_per_original)
        fake_note = f"{pre.fakes_per_original} fake per original"
    decoded = real + fakes_kept
    lines.append(Line("clips decoded", decoded, "clips",
                      f"{_n(real)} originals + {_n(fakes_kept)} fakes ({fake_note})"))
    frac, frac_note = fraction_decoded(pre.sampling, k)
    decode = decoded * v["decode_core_s_per_clip"] * frac
    lines.append(Line("decode", decode / 3600, "core-h",
                      f"{_n(decoded)} clips x {v['decode_core_s_per_clip']} core-s x {frac_note}"
                      f" = {_n(decode)} core-s"))
    detect = real * k * v["detect_core_s_per_frame"]
    lines.append(Line("face detection", detect / 3600, "core-h",
                      f"{_n(real)} originals x {k} frames x {v['detect_core_s_per_frame']} s "
                      f"(fakes reuse their original's boxes) = {_n(detect)} core-s"))
    crops = decoded * k * v["faces_per_frame"]
    encode = crops * v["crop_encode_ms"] / 1000
    lines.append(Line("crop + JPEG", encode / 3600, "core-h",
                      f"{_n(crops)} crops x {v['crop_encode_ms']} ms = {_n(encode)} core-s"))
    work = decode + detect + encode
    paid = work / v["cpu_efficiency"]
    lines.append(Line("preprocessing, paid", paid / 3600, "core-h",
                      f"{_n(work / 3600, 1)} core-h of work / {v['cpu_efficiency']} efficiency"))
    waves = -(-v["parts"] // v["parts_per_wave"])
    compute_min = paid / v["beam_vcpus"] / 60
    lines.append(Line("preprocessing, wall time", compute_min + waves * v["beam_startup_min"],
                      "min", f"{_n(paid)} core-s / {_n(v['beam_vcpus'])} vCPUs = "
                      f"{_n(compute_min, 1)} min, plus {_n(waves)} "
                      f"wave{'s' if waves != 1 else ''} x "
                      f"{v['beam_startup_min']:g} min of job start-up"))
    lines.append(Line("work lost to a failure in the last wave",
                      paid / 3600 * v["parts_per_wave"] / v["parts"], "core-h",
                      f"{v['parts_per_wave']:g} of {_n(v['parts'])} parts of the paid "
                      f"core-h; at most {_n(compute_min * v['parts_per_wave'] / v['parts'], 1)}"
                      f" min of wall time"))

    formats = 2  # every crop is written as Parquet and as TFRecord
    low = formats * crops * v["crop_kb_low"] / 1e6
    high = formats * crops * v["crop_kb_high"] / 1e6
    lines.append(Line("face shards, Parquet + TFRecord", (low + high) / 2, "GB",
                      f"{formats} formats x {_n(crops)} crops x {v['crop_kb_low']:g}-"
                      f"{v['crop_kb_high']:g} KB = {_n(low, 1)}-{_n(high, 1)} GB"))
    raw = v["videos"] * v["clip_mb"] / 1000
    lines.append(Line("raw input read", raw, "GB",
                      f"{_n(v['videos'])} clips x {v['clip_mb']} MB, read once by ranged "
                      f"reads from the zips"))

    train_share = (1 - test_share) * (1 - pre.validation_fraction)
    if pre.fakes_per_original is None and train.rebalance:
        per_epoch = real * train_share * k * v["faces_per_frame"] * 2
        epoch_note = (f"{_n(real)} originals x {train_share:.2f} train share x {k} crops x 2 "
                      f"(re-balanced: one fake per original each epoch)")
    else:
        per_epoch = crops * train_share
        epoch_note = f"{_n(crops)} crops x {train_share:.2f} train share"
    lines.append(Line("training crops per epoch", per_epoch, "crops", epoch_note))
    validation = crops * (1 - test_share) * pre.validation_fraction
    lines.append(Line("validation crops per epoch", validation, "crops",
                      f"{_n(crops)} crops x {(1 - test_share) * pre.validation_fraction:.2f} "
                      f"validation share, scored after every epoch"))
    gpu_s = train.epochs * (per_epoch / v["train_images_per_gpu_s"]
                            + validation / v["infer_images_per_gpu_s"])
    workers = max(train.workers, 1)
    lines.append(Line("training", gpu_s / 3600, "GPU-h",
                      f"{train.epochs} epochs x ({_n(per_epoch)} / "
                      f"{_n(v['train_images_per_gpu_s'])} + {_n(validation)} / "
                      f"{_n(v['infer_images_per_gpu_s'])}) s = {_n(gpu_s)} GPU-s; "
                      f"{_n(gpu_s / workers / 3600, 2)} h on {workers} GPU workers plus "
                      f"{v['cluster_startup_min']:g} min start-up"))
    scored = crops * test_share
    infer_s = scored / v["infer_images_per_gpu_s"]
    lines.append(Line("inference", infer_s / 3600, "GPU-h",
                      f"{_n(scored)} test crops ({held_out_note}) / "
                      f"{_n(v['infer_images_per_gpu_s'])} images/s = {_n(infer_s)} GPU-s; the "
                      f"{v['cluster_startup_min']:g} min cluster start-up dominates"))
    return lines


def _figure(line: Line) -> str:
    if line.unit in ("clips", "crops") or line.value >= 10:
        return f"{_n(line.value)} {line.unit}"
    if line.value >= 0.1:
        return f"{_n(line.value, 1)} {line.unit}"
    return f"{line.value:.2g} {line.unit}"


def render_markdown(p: dict[str, Parameter] = PARAMETERS) -> str:
    out = ["| parameter | value | unit | kind | source |", "|---|---:|---|---|---|"]
    for name, par in p.items():
        out.append(f"| `{name}` | {par.value:,g} | {par.unit} | {par.kind} | {par.source} |")
    for preset in ("paper", "full"):
        pre = cfgmod.preset("preprocess", preset)
        train = cfgmod.preset("train", preset)
        fpo = "all fakes" if pre.fakes_per_original is None else \
            f"{pre.fakes_per_original} fake per original"
        out += ["", f"**`{preset}` preset**: {pre.frames_per_video} {pre.sampling} frames per "
                f"clip, {fpo}, {train.epochs} epochs of `{train.model}`.", "",
                "| figure | value | arithmetic |", "|---|---:|---|"]
        for line in estimate(preset, p):
            out.append(f"| {line.label} | {_figure(line)} | {line.working} |")
    return "\n".join(out) + "\n"


BEGIN_MARK = "<!-- sizing:begin"
END_MARK = "<!-- sizing:end -->"


def generated_block(text: str) -> str:
    """The part of a page between the sizing markers (the marker lines excluded)."""
    start = text.index(BEGIN_MARK)
    start = text.index("\n", start) + 1
    return text[start:text.index(END_MARK, start)]


def write_block(path: str, table: str) -> None:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    old = generated_block(text)
    start = text.index(old, text.index(BEGIN_MARK))
    with open(path, "w", encoding="utf-8") as f:
        f.write(text[:start] + table + text[start + len(old):])


def with_overrides(assignments: list[str]) -> dict[str, Parameter]:
    params = dict(PARAMETERS)
    for item in assignments:
        name, _, value = item.partition("=")
        if name not in params or not value:
            raise SystemExit(f"sizing: --set NAME=VALUE with NAME one of {', '.join(params)}")
        params[name] = dataclasses.replace(params[name], value=float(value), kind=MEASURED,
                                           source="set on the command line")
    return params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="replace a parameter (repeatable)")
    parser.add_argument("--write", metavar="PAGE",
                        help="replace the generated tables in PAGE (docs/sizing.md) instead "
                             "of printing them")
    args = parser.parse_args(argv)
    table = render_markdown(with_overrides(args.set))
    if args.write:
        write_block(args.write, table)
    else:
        sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
