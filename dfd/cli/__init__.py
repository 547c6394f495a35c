"""The `dfd` command line.

Each subcommand is a module in this package exposing ``register(subparsers)``, which adds its
parser and sets ``func`` to a callable taking the parsed args and returning an exit status.
Exit codes: 0 ok, 2 bad usage (argparse), 1 failure. Errors print as one line; ``--verbose``
adds the traceback. A subcommand that names its folder (``set_defaults(log_dir=<arg name>)``)
keeps the libraries' chatter in a log file there (``dfd.cli.logs``). This is the only place in
``dfd`` that reaches into ``pipelines`` and ``ray_jobs``, and it imports them only inside the
subcommand that runs them.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
import traceback

log = logging.getLogger("dfd")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dfd", description="Deepfake-video detection: DFDC parts -> face shards -> CNN.")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="everything on the terminal: the libraries' logs and start-up "
                             "lines (otherwise in dfd-<command>.log), debug logging and full "
                             "tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name == "logs":
            continue
        importlib.import_module(f"{__name__}.{info.name}").register(sub)
    return parser


# Arguments a command writes under (and the --run-dir of `dfd train` and `dfd calibrate`); any
# other gs:// or s3:// argument is only read.
_WRITTEN = frozenset({"output", "out", "staging", "report_dir", "runs"})


def _check_buckets(args) -> None:
    """Every bucket a command was given answers, readable (and writable where it writes),
    before any work starts; else one line names the URI and the cause (dfd.storage)."""
    uris = [(dest, v) for dest, value in vars(args).items()
            for v in (value if isinstance(value, list) else [value])
            if isinstance(v, str) and v.startswith(("s3://", "gs://"))]
    if not uris:
        return
    from dfd import storage

    written = _WRITTEN | ({"run_dir"} if args.command in ("train", "calibrate") else set())
    for dest, uri in uris:
        storage.check_access(uri, write=dest in written)


def main(argv: list[str] | None = None) -> int:
    from dfd.cli import logs

    parser = build_parser()
    # Subcommands that launch Beam pass unknown flags through to it (--runner=..., --project=...).
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "accepts_unknown", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.unknown = unknown
    log_dir = getattr(args, "log_dir", None)
    with logs.command_output(args.command, directory=getattr(args, log_dir) if log_dir else None,
                             verbose=args.verbose, quiet=args.quiet) as output:
        status, error = _run(args, keep_traceback=output.path is not None)
    if error:
        print(f"dfd {args.command}: {error}{output.where()}", file=sys.stderr)
    return status


def _run(args, *, keep_traceback: bool) -> tuple[int, str | None]:
    """The subcommand's exit status, and its error as one line (None when it succeeded)."""
    from dfd.errors import DfdError

    try:
        _check_buckets(args)
        return int(args.func(args) or 0), None
    except KeyboardInterrupt:
        return 130, "interrupted"
    except (DfdError, OSError, ValueError) as exc:
        _traceback(args, keep_traceback)
        return 1, f"error: {exc}"
    except Exception as exc:  # anything unexpected: still one line unless --verbose
        _traceback(args, keep_traceback)
        hint = "" if keep_traceback else " (run with --verbose for the traceback)"
        return 1, f"error: {type(exc).__name__}: {exc}{hint}"


def _traceback(args, keep_traceback: bool) -> None:
    if args.verbose:
        log.exception("failed")
    elif keep_traceback:
        traceback.print_exc(file=sys.stderr)  # the log file, while the command runs


if __name__ == "__main__":
    sys.exit(main())
