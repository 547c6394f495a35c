"""The Beam job protocol of cluster runners, rehearsed on 127.0.0.1.

Flink, Spark and Dataflow run a Python pipeline through Beam's portable job API, with SDK
workers taken from a worker pool (infra/beam/flink-worker-pool.flags: EXTERNAL environment,
a pool beside each TaskManager). Here Beam's own job service
(``apache_beam.runners.portability.local_job_service_main``) plays the runner and
``apache_beam.runners.worker.worker_pool_main`` the pool; `dfd preprocess` submits to them with
the flags a cluster run uses, and its shards must be the DirectRunner's, byte for byte.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dfd import config
from tests.object_stores import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SYNTH = config.SynthConfig(parts=2, originals=2, fakes_per_original=1, width=320, height=180,
                           frames=12, seed=5, zipped=True, portrait_fraction=0.0, workers=1)
FLAGS = ["--preset", "smoke", "--frames-per-video", "3"]
START_TIMEOUT_S = 90


def env() -> dict:
    # The pool starts SDK workers with the `python` first on its PATH: it must be this venv's.
    return dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent),
                                                  os.environ.get("PATH", "")]),
                PYTHONPATH=str(ROOT))


def wait_for_port(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listening on {port}: " \
                                                f"{log.read_text()[-3000:]}"
            time.sleep(0.2)


def start(argv: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes()
            for fmt in ("parquet", "tfrecord", "errors") for p in sorted((out / fmt).rglob("*"))
            if p.is_file()}


def preprocess(source: Path, out: Path, *beam_flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dfd.cli", "preprocess", "--input", str(source),
                           "--output", str(out), *FLAGS, *beam_flags], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=600)


def test_portable_runner_with_an_external_worker_pool_writes_the_direct_runners_shards(
        tmp_path):
    from dfd.synth import generate

    source = tmp_path / "src"
    generate(source, SYNTH)
    direct = preprocess(source, tmp_path / "direct", "--direct_running_mode=in_memory",
                        "--direct_num_workers=1")
    assert direct.returncode == 0, direct.stderr[-3000:]

    job_port, pool_port = free_port(), free_port()
    job_service = start([sys.executable, "-m",
                         "apache_beam.runners.portability.local_job_service_main",
                         "--port", str(job_port)], tmp_path / "job-service.log")
    pool = start([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                  "--service_port", str(pool_port)], tmp_path / "worker-pool.log")
    try:
        wait_for_port(job_port, job_service, tmp_path / "job-service.log")
        wait_for_port(pool_port, pool, tmp_path / "worker-pool.log")
        portable = preprocess(source, tmp_path / "portable", "--runner=PortableRunner",
                              f"--job_endpoint=localhost:{job_port}",
                              "--environment_type=EXTERNAL",
                              f"--environment_config=localhost:{pool_port}")
    finally:
        stop(pool)
        stop(job_service)
    assert portable.returncode == 0, portable.stderr[-3000:]
    assert "part  0: 4 videos, 4 with faces" in portable.stdout
    direct_shards = shard_bytes(tmp_path / "direct")
    assert any(k.startswith("parquet/part-01/") for k in direct_shards)
    assert shard_bytes(tmp_path / "portable") == direct_shards
    # The SDK workers ran in the pool's processes, not in the launcher.
    assert "Starting worker with command" in (tmp_path / "worker-pool.log").read_text()
