"""Where a command's output goes: the one place that sets it up.

A normal run shows what dfd itself says (stage headers, results, its own log records) and
nothing else. Everything else, the libraries' start-up lines and logs, goes to a log file:
written in the system temp folder while the command runs, then appended to
``dfd-<command>.log`` in the command's work, run or output dir if that dir is local and exists
by the end, so a command that fails before making its dir leaves nothing there. An error line
names the log. ``--verbose`` puts everything back on the terminal, with debug logging.

Much of that chatter never passes through Python: TensorFlow's C++ runtime (absl) writes its
start-up lines ("oneDNN custom operations", "failed call to cuInit") straight to file
descriptor 2 while the library loads, before any setting can reach it (TF_CPP_MIN_LOG_LEVEL
no longer hides them in TF 2.21); Ray's core worker does the same ("core_worker.cc"), and so do
Beam's worker processes, which inherit the descriptor. So a quiet run points descriptor 2, and
``sys.stderr``, at the log file for the length of the command; Ray and Beam log there too
(Ray's handler writes to whatever ``sys.stderr`` is when it emits; Beam relays its workers'
logs through Python logging in this process; Ray workers' own output is never relayed, see
``ray_jobs.local_ray``). dfd's own records reach the terminal through a copy of the original
descriptor (``terminal()``); the one-line error is printed once the descriptor is restored.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

# Loggers of our own code: the only ones whose records reach the terminal on a normal run.
OWN_LOGGERS = ("dfd", "pipelines", "ray_jobs", "schemas", "benchmarks", "__main__")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATEFMT = "%H:%M:%S"

_terminal: TextIO | None = None


def terminal() -> TextIO:
    """The stream dfd's own messages go to: the terminal's stderr, even while descriptor 2
    points at the log file."""
    return _terminal if _terminal is not None else sys.stderr


@dataclasses.dataclass
class CommandLog:
    """Where one command's log is: ``path`` while it runs, and afterwards where it was kept
    (None when everything went to the terminal)."""
    path: Path | None
    keep_in: Path | None = None  # the command's local dir, where the log moves if it exists

    def where(self) -> str:
        return f" (log: {self.path})" if self.path else ""

    def settle(self, command: str) -> None:
        """Append the log to ``<dir>/dfd-<command>.log`` if the command's dir exists now."""
        if self.path is None or self.keep_in is None or not self.keep_in.is_dir():
            return
        kept = self.keep_in / log_name(command)
        try:
            with open(kept, "ab") as out, open(self.path, "rb") as log:
                shutil.copyfileobj(log, out)
            self.path.unlink()
        except OSError:
            return  # it stays in the temp folder, where the error line points
        self.path = kept


def log_name(command: str) -> str:
    """The log's name in the command's dir."""
    return f"dfd-{command}.log"


class _OwnRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.split(".", 1)[0] in OWN_LOGGERS


@contextlib.contextmanager
def _root_handlers(level: int, *handlers: logging.Handler) -> Iterator[None]:
    root = logging.getLogger()
    before = root.level
    root.setLevel(level)
    for handler in handlers:
        root.addHandler(handler)
    try:
        yield
    finally:
        for handler in handlers:
            root.removeHandler(handler)
        root.setLevel(before)


# Loggers that libraries give stream handlers of their own and stop propagating (Ray does, on
# import): while a command runs, their records go through the root's handlers like the rest,
# whether the library was imported before the command or during it. Handlers that are not
# streams (Ray Data's session log file) stay.
SELF_HANDLED = ("ray", "ray.data", "ray.train", "ray.tune", "ray.serve")


@contextlib.contextmanager
def _through_root(names: tuple[str, ...]) -> Iterator[None]:
    saved = []
    for name in names:
        logger = logging.getLogger(name)
        streams = [h for h in logger.handlers if isinstance(h, logging.StreamHandler)
                   and not isinstance(h, logging.FileHandler)]
        saved.append((logger, logger.propagate, streams))
        logger.propagate = True
        for handler in streams:
            logger.removeHandler(handler)
    try:
        yield
    finally:
        for logger, propagate, handlers in saved:
            logger.propagate = propagate
            for handler in handlers:
                logger.addHandler(handler)


def _keep_in(directory: str) -> Path | None:
    from dfd import storage

    return storage.local_path(directory).absolute() if storage.is_local(directory) else None


@contextlib.contextmanager
def command_output(command: str, *, directory: str | None, verbose: bool = False,
                   quiet: bool = False) -> Iterator[CommandLog]:
    """Route output for one command (see the module docstring). The log has no path when
    everything goes to the terminal: with ``verbose``, or for a command without a dir."""
    global _terminal

    own_level = logging.WARNING if quiet else logging.INFO
    if verbose or directory is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
        if not verbose:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            for noisy in ("tensorflow", "absl", "ray", "apache_beam"):
                logging.getLogger(noisy).setLevel(max(own_level, logging.WARNING))
        with _root_handlers(logging.DEBUG if verbose else own_level, handler):
            yield CommandLog(None)
        return

    folder = Path(tempfile.gettempdir()) / "dfd-logs"
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"dfd-{command}-", suffix=".log", dir=folder)
    result = CommandLog(Path(name), keep_in=_keep_in(directory))
    log = open(fd, "w", buffering=1, encoding="utf-8", errors="replace")
    log.write(f"==== dfd {command}, {time.strftime('%Y-%m-%d %H:%M:%S')}, pid {os.getpid()}\n")
    # The child processes' C++ runtimes log less to the file too (Beam workers inherit it).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    sys.stdout.flush()
    sys.stderr.flush()
    saved_fd = os.dup(2)
    original_stderr = sys.stderr
    try:
        real_stderr = original_stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # replaced by a test's capture
        real_stderr = False
    to_terminal = (open(os.dup(saved_fd), "w", buffering=1, encoding="utf-8",
                        errors="replace") if real_stderr else original_stderr)

    to_file = logging.StreamHandler(log)
    to_file.setFormatter(logging.Formatter(FORMAT, DATEFMT))
    shown = logging.StreamHandler(to_terminal)
    shown.setFormatter(logging.Formatter(FORMAT, DATEFMT))
    shown.setLevel(own_level)
    shown.addFilter(_OwnRecords())
    logging.captureWarnings(True)
    os.dup2(log.fileno(), 2)
    sys.stderr = log
    _terminal = to_terminal
    try:
        with _root_handlers(logging.INFO, to_file, shown), _through_root(SELF_HANDLED):
            yield result
    finally:
        sys.stderr = original_stderr
        log.flush()
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        _terminal = None
        logging.captureWarnings(False)
        if to_terminal is not original_stderr:
            to_terminal.close()
        # The file stays open: a library's handler made during the command may still hold it.
        result.settle(command)
