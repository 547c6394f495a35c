"""`dfd preprocess`: the Beam pipeline from DFDC parts to face shards.

Limits (``dfd.config.Limits``, the same in every preset) refuse hostile or broken inputs before
they cost memory or time; each refusal is a reject with its reason in the part's errors file:
``--max-video-bytes`` (200M, too_large), ``--max-frame-pixels`` (3840x2160, frame_too_large,
judged from the stream header), ``--max-frames`` (2000, too_many_frames), ``--max-decode-seconds``
(120, decode_timeout) and ``--max-member-bytes`` (200M uncompressed, member_too_large, from the
zip's central directory, so a zip bomb is never inflated).
"""
from __future__ import annotations

import argparse
import dataclasses
import re

from dfd.cli import _flags
from dfd.config import Limits, PreprocessConfig, override, preset
from dfd.dfdc import check_part_source, parse_part_selection
from dfd.errors import DfdError


# PreprocessConfig fields whose flags are derived from the field (the rest read differently).
FIELD_FLAGS = ("validation_fraction", "frames_per_video", "sampling", "detector", "margin",
               "image_format", "shards_per_split", "seed")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input",
                   help="folder URI holding DFDC parts (zip or folder); or give --links")
    p.add_argument("--output", required=True, help="output URI for shards and manifest")
    add_processing_arguments(p)


def add_processing_arguments(p: argparse.ArgumentParser) -> None:
    """Everything but --input and --output (shared with `dfd sync`)."""
    p.add_argument("--links", metavar="FILE",
                   help="fetch the parts from these signed links (copied from the "
                        "competition's data page, one per line) into --staging first")
    p.add_argument("--staging",
                   help="where parts fetched from --links are kept (folder, gs:// or s3://); "
                        "fetched parts stay there, verified, for later runs")
    _flags.add_preset(p)
    p.add_argument("--parts", help="parts to process, e.g. 0-9,12 (default: all found)")
    p.add_argument("--test-parts", help="parts held out whole as the test split, e.g. 45-49")
    p.add_argument("--fakes-per-original",
                   help="fakes kept per original: a number (1 balances) or 'all'")
    _flags.add_fields(p, PreprocessConfig, FIELD_FLAGS,
                      aliases={"shards_per_split": ("--shards",)})
    p.add_argument("--force", action="store_true", help="redo parts already committed")
    p.add_argument("--parts-per-wave", type=int, metavar="N",
                   help="parts per pipeline run (default 5); each wave commits before the next "
                        "starts, so a run that dies loses at most N parts' processing")
    add_limit_arguments(p)


# The limits every preset uses; a flag replaces one of them for this run.
_LIMITS = Limits()
# "%(default).0s" prints nothing: it keeps ArgumentDefaultsHelpFormatter from appending
# "(default: None)" where the help already names the real default.
_NO_DEFAULT_SUFFIX = "%(default).0s"


def add_limit_arguments(p: argparse.ArgumentParser) -> None:
    """Flags for dfd.config.Limits: inputs beyond them are refused before they cost memory or
    time, each as a reject with its reason in the part's errors file."""
    g = p.add_argument_group(
        "limits", "Inputs beyond a limit are refused, before they cost memory or time, and "
                  "recorded in the part's errors file with the reason in brackets. Sizes take "
                  "K/M/G (powers of 1024) suffixes, e.g. 200M.")
    g.add_argument("--max-video-bytes", type=byte_count, metavar="BYTES",
                   help=f"largest video file [too_large] (default: "
                        f"{_human_bytes(_LIMITS.max_video_bytes)}){_NO_DEFAULT_SUFFIX}")
    g.add_argument("--max-frame-pixels", type=pixel_count, metavar="PIXELS",
                   help=f"largest frame, as a count or WxH, judged from the header before any "
                        f"frame is decoded [frame_too_large] (default: "
                        f"{_LIMITS.max_frame_pixels}){_NO_DEFAULT_SUFFIX}")
    g.add_argument("--max-frames", type=_positive(int), metavar="N",
                   help=f"most frames a video may have, from its header or by counting packets "
                        f"[too_many_frames] (default: {_LIMITS.max_frames}){_NO_DEFAULT_SUFFIX}")
    g.add_argument("--max-decode-seconds", type=_positive(float), metavar="S",
                   help=f"wall-clock decoding budget per video [decode_timeout] (default: "
                        f"{_LIMITS.max_decode_seconds:g}){_NO_DEFAULT_SUFFIX}")
    g.add_argument("--max-member-bytes", type=byte_count, metavar="BYTES",
                   help=f"largest uncompressed zip member, judged from the central directory "
                        f"without inflating it: zip bombs [member_too_large] (default: "
                        f"{_human_bytes(_LIMITS.max_member_bytes)}){_NO_DEFAULT_SUFFIX}")


def limits_from_args(args, base: Limits) -> Limits:
    """base with the limits given on the command line."""
    return override(base, **{f.name: getattr(args, f.name, None)
                             for f in dataclasses.fields(Limits)})


_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def byte_count(text: str) -> int:
    """'200M', '200MiB', '1.5G', '4096' -> bytes (K/M/G/T are powers of 1024)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4096, 200M, 1.5G)")
    value = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if value < 1:
        raise argparse.ArgumentTypeError(f"size must be at least 1 byte, got {text!r}")
    return value


def pixel_count(text: str) -> int:
    """'8294400' or '3840x2160' -> pixels."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", text)
    value = int(m.group(1)) * int(m.group(2)) if m else _positive(int)(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"pixels must be at least 1, got {text!r}")
    return value


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {kind.__name__}: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _human_bytes(n: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if n >= _UNITS[unit] and n % _UNITS[unit] == 0:
            return f"{n // _UNITS[unit]}{unit}"
    return str(n)


def register(sub) -> None:
    p = sub.add_parser(
        "preprocess", help="DFDC parts -> balanced face shards (Apache Beam)",
        description="Decode sampled frames, crop faces and write Parquet + TFRecord shards. "
                    "Unknown flags go to Beam untouched (e.g. --runner=DataflowRunner "
                    "--project=P --region=R --temp_location=gs://...).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_arguments(p)
    p.add_argument("--summary-json", help="also write the run summary to this file")
    p.set_defaults(func=run, accepts_unknown=True, log_dir="output")


def print_summary(summary: dict) -> None:
    for f in summary.get("fetched", []):
        print(f"part {f['part']:>2}: fetched {f['size']:,d} bytes "
              f"in {f['seconds']:.1f} s")
    for s in summary["committed"]:
        splits = ", ".join(f"{k} {v}" for k, v in s["records_by_split"].items()) or "none"
        print(f"part {s['part']:>2}: {s['videos_in_metadata']} videos, "
              f"{s['videos_with_records']} with faces, {s['videos_rejected']} rejected, "
              f"{s['fakes_left_out']} fakes left out; {s['records']} records ({splits})")
    for part in summary.get("skipped", []):
        print(f"part {part:>2}: already committed, skipped")
    for f in summary["failed"]:
        print(f"part {f['part']:>2}: FAILED ({f['reason']}): {f['detail']}")
    if summary.get("seconds"):
        print(f"done in {summary['seconds']:.1f} s")


def config_from_args(args) -> PreprocessConfig:
    """The PreprocessConfig of `dfd preprocess`/`dfd sync` flags: the preset, then each flag
    given."""
    fpo = args.fakes_per_original
    if fpo is not None and fpo != "all":
        try:
            fpo = int(fpo)
        except ValueError:
            raise DfdError(f"--fakes-per-original must be a number or 'all', got {fpo!r}") \
                from None
    test_parts = parse_part_selection(args.test_parts)
    base = preset("preprocess", args.preset)
    cfg = _flags.from_args(
        args, "preprocess", names=FIELD_FLAGS, limits=limits_from_args(args, base.limits),
        test_parts=tuple(sorted(test_parts)) if test_parts is not None else None)
    if fpo == "all":
        cfg = dataclasses.replace(cfg, fakes_per_original=None)
    elif fpo is not None:
        cfg = dataclasses.replace(cfg, fakes_per_original=fpo)
    return cfg


def preprocess_from_args(args, beam_args: list[str], *, input: str | None,
                         before_processing=None) -> dict:
    """``pipelines.preprocess.run_preprocess`` with the parsed flags of `dfd preprocess` or
    `dfd sync`; returns the run summary."""
    check_part_source(input, args.links, args.staging)  # before Beam loads
    cfg = config_from_args(args)
    from pipelines.preprocess import run_preprocess

    return run_preprocess(input, args.output, cfg, parts=parse_part_selection(args.parts),
                          links=args.links, staging=args.staging, force=args.force,
                          beam_args=beam_args, before_processing=before_processing,
                          **({"parts_per_wave": args.parts_per_wave}
                             if args.parts_per_wave is not None else {}))


def run_argv(argv: list[str]) -> dict:
    """`dfd preprocess ARGV` as a function: the run summary (for tests, benchmarks, the demo)."""
    parser = argparse.ArgumentParser(prog="dfd preprocess")
    add_arguments(parser)
    args, beam_args = parser.parse_known_args(argv)
    return preprocess_from_args(args, beam_args, input=args.input)


def run(args) -> int:
    import json

    summary = preprocess_from_args(args, args.unknown, input=args.input)
    print_summary(summary)
    if args.summary_json:
        with open(args.summary_json, "w") as f:
            json.dump(summary, f, indent=2, sort_keys=True)
    return 1 if summary["failed"] else 0
