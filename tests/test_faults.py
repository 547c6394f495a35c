"""Faults in the preprocessing pipeline: a Beam worker killed mid-run, the committing process
killed between writing shards and committing a part (and in the middle of promoting one), a
committed part whose source comes back broken. Real Beam DirectRunner, real SIGKILLs, real
synthetic DFDC parts; every run after a fault must end where one clean run does: the same
records, no duplicates, nothing staged left behind, nothing uncommitted visible."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dfd import config, dfdc, shards
from dfd.cli.preprocess import run_argv

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
HOOKS = Path(__file__).resolve().parent / "fault_injection"  # its sitecustomize.py
# Two parts of two originals and one fake each, small enough to decode in a blink; faces are
# real photographs, so every video yields records.
SYNTH = config.SynthConfig(parts=2, originals=2, fakes_per_original=1, width=320, height=180,
                           frames=12, seed=5, zipped=True, portrait_fraction=0.0, workers=1)
FLAGS = ["--preset", "smoke", "--frames-per-video", "3"]
IN_MEMORY = ["--direct_running_mode", "in_memory", "--direct_num_workers", "1"]
TWO_WORKERS = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    from dfd.synth import generate

    src = tmp_path_factory.mktemp("faults-src")
    generate(src, SYNTH)
    return src


@pytest.fixture(scope="module")
def clean(source, tmp_path_factory) -> dict:
    """What one undisturbed run commits: {(format, part): sorted record keys}."""
    out = tmp_path_factory.mktemp("faults-clean") / "out"
    summary = run_argv(["--input", str(source), "--output", str(out), *FLAGS,
                              *IN_MEMORY])
    assert [s["part"] for s in summary["committed"]] == [0, 1] and not summary["failed"]
    records = committed_records(out)
    assert all(records[("parquet", p)] for p in (0, 1))
    return records


# ---- helpers ------------------------------------------------------------------------------------

def record_key(r: dict) -> tuple:
    return (r["part"], r["video"], r["frame_index"], r["face_index"], r["split"],
            hashlib.sha256(r["image"]).hexdigest())


def committed_records(out: Path) -> dict:
    """Every record in the visible part folders of both formats, by (format, part)."""
    found = {}
    for fmt in ("parquet", "tfrecord"):
        for folder in sorted((out / fmt).glob("part-*")):
            part = int(folder.name.removeprefix("part-"))
            rows = []
            for f in sorted(folder.iterdir()):
                if fmt == "parquet":
                    rows += shards.read_parquet(str(f)).to_pylist()
                else:
                    rows += list(shards.iter_tfrecord(str(f)))
            found[(fmt, part)] = sorted(record_key(r) for r in rows)
    return found


def manifest_parts(out: Path) -> dict:
    path = out / "manifest.json"
    return json.loads(path.read_text())["parts"] if path.exists() else {}


def visible_parts(out: Path) -> dict[str, set[int]]:
    """Part folders and errors files a plain reader (pyarrow, Ray, tf.data globs) would see."""
    seen = {"parquet": set(), "tfrecord": set(), "errors": set()}
    for fmt in ("parquet", "tfrecord"):
        seen[fmt] = {int(p.name[5:]) for p in (out / fmt).glob("part-*")}
    seen["errors"] = {int(p.stem[5:]) for p in (out / "errors").glob("part-*.parquet")}
    return seen


def hidden_leftovers(out: Path) -> list[str]:
    """Staged or retired folders, journals and temp files: what a run must not leave behind."""
    return sorted(str(p.relative_to(out)) for p in out.rglob("_*")
                  if p.name != "_last_run.json")


def is_descendant(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        stat = Path(f"/proc/{pid}/stat").read_text()
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # field 4, after the (comm) field
    return False


def launch(src: Path, out: Path, *flags: str, fault: str | None = None,
           fault_dir: Path | None = None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HOOKS), str(ROOT)]))
    if fault:
        env.update(DFD_FAULT=fault, DFD_FAULT_DIR=str(fault_dir or out.parent))
    # Its own session, so that a test that fails midway can stop the run and its workers.
    return subprocess.Popen([sys.executable, "-m", "dfd.cli", "preprocess", "--input", str(src),
                             "--output", str(out), *FLAGS, *flags], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    return proc.returncode, out, err


def assert_same_as_clean(out: Path, clean: dict) -> None:
    got = committed_records(out)
    assert got.keys() == clean.keys()
    for key, records in got.items():
        assert len(records) == len(set(records)), f"duplicate records in {key}"
        assert records == clean[key], key
    entries = manifest_parts(out)
    assert sorted(entries) == ["00", "01"]
    for key, entry in entries.items():
        assert entry["records"] == len(clean[("parquet", int(key))])
        assert entry["videos_in_metadata"] == (entry["videos_with_records"]
                                               + entry["videos_rejected"]
                                               + entry["fakes_left_out"])
    assert visible_parts(out) == {"parquet": {0, 1}, "tfrecord": {0, 1}, "errors": {0, 1}}
    assert hidden_leftovers(out) == []


# ---- a worker killed ----------------------------------------------------------------------------

def test_a_worker_killed_mid_run_fails_the_run_and_the_next_run_redoes_it(source, clean,
                                                                          tmp_path):
    out = tmp_path / "out"
    faults = tmp_path / "faults"
    faults.mkdir()
    run = launch(source, out, *TWO_WORKERS, fault="pause_before_shard_write", fault_dir=faults)
    try:
        deadline = time.monotonic() + 180
        while not (paused := sorted(faults.glob("writing-*"))):
            assert run.poll() is None, run.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no worker reached the shard writes"
            time.sleep(0.05)
        worker = int(paused[0].name.removeprefix("writing-"))
        # A Beam SDK worker process of this run (under the launcher), not the launcher itself,
        # and it has staged part of its output already.
        assert worker != run.pid and is_descendant(worker, run.pid)
        staged_tfrecord = Path(paused[0].read_text())
        assert staged_tfrecord.parent.name.startswith("_part-")
        assert list(out.glob(f"parquet/{staged_tfrecord.parent.name}/*.parquet"))
        os.kill(worker, signal.SIGKILL)
    finally:
        (faults / "release").touch()
    status, _, err = finish(run)

    assert status == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("dfd preprocess: error: the pipeline failed (")
    # The one line names the parts lost and what to do (then where the full log is).
    assert "part(s) 00, 01 not committed; a new run processes them again" in last
    assert manifest_parts(out) == {}
    assert visible_parts(out) == {"parquet": set(), "tfrecord": set(), "errors": set()}
    assert any("_part-" in p for p in hidden_leftovers(out))  # what the killed run staged

    # The next plain run (default runner settings, no fault) completes: same records as a
    # clean run, once each, and the killed run's staging is gone.
    again = run_argv(["--input", str(source), "--output", str(out), *FLAGS])
    assert [s["part"] for s in again["committed"]] == [0, 1] and not again["failed"]
    assert_same_as_clean(out, clean)


# ---- the committing process killed --------------------------------------------------------------

def test_a_crash_between_staging_and_commit_loses_only_that_part_until_the_next_run(
        source, clean, tmp_path):
    out = tmp_path / "out"
    status, _, err = finish(launch(source, out, *IN_MEMORY, fault="die_before_promote:1"))
    assert status == -signal.SIGKILL, err[-3000:]
    # Part 0 committed whole before the crash; part 1 is staged only, and not listed.
    assert sorted(manifest_parts(out)) == ["00"]
    assert visible_parts(out) == {"parquet": {0}, "tfrecord": {0}, "errors": {0}}
    assert committed_records(out) == {k: v for k, v in clean.items() if k[1] == 0}
    assert {"parquet/_part-01", "tfrecord/_part-01", "errors/_part-01.parquet",
            "_committing-part-01.json"} <= set(hidden_leftovers(out))

    # Killed again, this time after part 1's Parquet folder moved into place and before its
    # TFRecord folder did: the one window where a format shows a part the manifest does not
    # list. The folder shown is whole (one rename), never a mix of old and new files.
    status, _, err = finish(launch(source, out, *IN_MEMORY, fault="die_mid_promote:1"))
    assert status == -signal.SIGKILL, err[-3000:]
    assert sorted(manifest_parts(out)) == ["00"]
    assert visible_parts(out)["tfrecord"] == {0}
    assert committed_records(out)[("parquet", 1)] == clean[("parquet", 1)]

    # The next plain run rolls the unfinished commit back, redoes part 1 alone, and ends as a
    # clean run does.
    before = (out / "parquet" / "part-00").stat().st_mtime_ns
    again = run_argv(["--input", str(source), "--output", str(out), *FLAGS, *IN_MEMORY])
    assert [s["part"] for s in again["committed"]] == [1] and again["skipped"] == [0]
    assert (out / "parquet" / "part-00").stat().st_mtime_ns == before
    assert_same_as_clean(out, clean)


def test_a_committed_part_whose_source_comes_back_broken_keeps_its_records(source, clean,
                                                                           tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    for part in (0, 1):
        name = dfdc.part_zip_name(part)
        (src / name).write_bytes((source / name).read_bytes())
    first = run_argv(["--input", str(src), "--output", str(out), *FLAGS, *IN_MEMORY,
                            "--parts", "1"])
    assert [s["part"] for s in first["committed"]] == [1]
    entry = manifest_parts(out)["01"]

    # A re-download cut short: the source changed, so the part is redone, and fails.
    zipped = src / dfdc.part_zip_name(1)
    zipped.write_bytes(zipped.read_bytes()[:len(zipped.read_bytes()) // 2])
    broken = run_argv(["--input", str(src), "--output", str(out), *FLAGS, *IN_MEMORY,
                             "--parts", "1"])
    [failed] = broken["failed"]
    assert failed["part"] == 1 and failed["reason"] == "bad_archive"
    assert failed["detail"].endswith("part 01 as committed earlier is kept")
    assert manifest_parts(out)["01"] == entry
    assert committed_records(out) == {k: v for k, v in clean.items() if k[1] == 1}
    assert hidden_leftovers(out) == []
