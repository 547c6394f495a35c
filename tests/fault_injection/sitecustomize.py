"""Faults injected into real dfd processes for tests/test_faults.py.

A test puts this folder first on PYTHONPATH and names a fault in DFD_FAULT; every Python process
of the run (the launcher and each Beam worker the DirectRunner starts) imports this module at
start-up and wraps one function of the pipeline. Without DFD_FAULT it does nothing.

    pause_before_shard_write   a worker about to write a TFRecord shard (its Parquet twin is
                               already staged) creates DFD_FAULT_DIR/writing-<pid> and waits
                               for DFD_FAULT_DIR/release: the test kills it meanwhile
    die_before_promote:N       the process committing parts SIGKILLs itself just before part N
                               is promoted (its shards staged, earlier parts committed)
    die_mid_promote:N          ... after part N's Parquet folder moved into place and before
                               its TFRecord folder does
    fail_writing_part:N        a worker about to write a shard of part N raises (a bundle that
                               keeps failing: the pipeline fails)
"""
import os

_FAULT = os.environ.get("DFD_FAULT", "")


def _kill_self():
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def _install(fault: str) -> None:
    import functools
    import time
    from pathlib import Path

    name, _, arg = fault.partition(":")
    if name == "pause_before_shard_write":
        from pipelines import transforms

        write = transforms._write_bytes

        @functools.wraps(write)
        def paused_write(uri, data):
            if uri.endswith(".tfrecord"):
                folder = Path(os.environ["DFD_FAULT_DIR"])
                (folder / f"writing-{os.getpid()}").write_text(uri)
                deadline = time.monotonic() + 120
                while not (folder / "release").exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
            return write(uri, data)

        transforms._write_bytes = paused_write
    elif name in ("die_before_promote", "die_mid_promote"):
        from pipelines import commit

        part = int(arg)
        if name == "die_before_promote":
            promote = commit.promote_part

            @functools.wraps(promote)
            def dying_promote(output, p):
                if p == part:
                    _kill_self()
                return promote(output, p)

            commit.promote_part = dying_promote
        else:
            promote_folder = commit._promote_folder

            @functools.wraps(promote_folder)
            def dying_promote_folder(output, fmt, p):
                if p == part and fmt == "tfrecord":
                    _kill_self()
                return promote_folder(output, fmt, p)

            commit._promote_folder = dying_promote_folder
    elif name == "fail_writing_part":
        from pipelines import transforms

        write = transforms._write_bytes
        folder = f"/_part-{int(arg):02d}/"

        @functools.wraps(write)
        def failing_write(uri, data):
            if folder in uri:
                raise RuntimeError(f"injected fault: cannot write {uri}")
            return write(uri, data)

        transforms._write_bytes = failing_write
    else:
        raise ValueError(f"unknown DFD_FAULT {fault!r}")


if _FAULT:
    _install(_FAULT)
