"""The `dfd` command line.

Each subcommand is a module in this package exposing ``register(subparsers)``, which adds its
parser and sets ``func`` to a callable taking the parsed args and returning an exit status.
Exit codes: 0 ok, 2 bad usage (argparse), 1 failure. Errors print as one line; ``--verbose``
adds the traceback. This is the only place in ``dfd`` that reaches into ``pipelines`` and
``ray_jobs``, and it imports them only inside the subcommand that runs them.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys

log = logging.getLogger("dfd")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dfd", description="Deepfake-video detection: DFDC parts -> face shards -> CNN.")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging and full tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        importlib.import_module(f"{__name__}.{info.name}").register(sub)
    return parser


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    if not verbose:
        # TensorFlow's C++ banner and Ray's start-up chatter are noise for a CLI user.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        for noisy in ("tensorflow", "absl", "ray", "apache_beam"):
            logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def main(argv: list[str] | None = None) -> int:
    from dfd.errors import DfdError

    parser = build_parser()
    # Subcommands that launch Beam pass unknown flags through to it (--runner=..., --project=...).
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "accepts_unknown", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.unknown = unknown
    _setup_logging(args.verbose, args.quiet)
    try:
        status = args.func(args)
    except KeyboardInterrupt:
        print("dfd: interrupted", file=sys.stderr)
        return 130
    except (DfdError, OSError, ValueError) as exc:
        if args.verbose:
            log.exception("failed")
        print(f"dfd {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # anything unexpected: still one line unless --verbose
        if args.verbose:
            log.exception("failed")
        print(f"dfd {args.command}: error: {type(exc).__name__}: {exc} "
              f"(run with --verbose for the traceback)", file=sys.stderr)
        return 1
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
