"""The in-process Ray that `dfd train` and `dfd infer` start without ``--address``: reachable
on 127.0.0.1 only, no dashboard, and never a stray local cluster joined by accident."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts Ray twice

REPO = Path(__file__).resolve().parents[1]

# Runs in its own process, so that Ray's state here cannot leak into other tests.
PROBE = """
import json, os
import ray
from tests.proc_inspect import descendants, listening_addresses
from dfd.config import TrainConfig
from ray_jobs import local_ray, train

report = {}
for job, start in (("infer", lambda: local_ray.init(None)),
                   ("train", lambda: train.init_ray(None, TrainConfig(workers=1)))):
    assert start() is True
    node = ray._private.worker.global_worker.node
    pids = descendants(os.getpid()) - {os.getpid()}
    report[job] = {"listening": sorted(listening_addresses(pids)), "processes": len(pids),
                   "dashboard_url": node.webui_url, "gcs": node.gcs_address,
                   "nodes": len(ray.nodes())}
    ray.shutdown()
print(json.dumps(report))
"""


def test_in_process_ray_listens_on_loopback_only_without_a_dashboard_and_joins_nothing():
    with tempfile.TemporaryDirectory(prefix="dfd-ray-") as ray_tmp:
        # A cluster `ray start` once registered on this machine, long gone: a plain ray.init()
        # would try to join it (and hang); the job must start its own Ray instead.
        Path(ray_tmp, "ray_current_cluster").write_text("127.0.0.1:1")
        env = {**os.environ, "RAY_TMPDIR": ray_tmp, "PYTHONPATH": str(REPO)}
        env.pop("RAY_ADDRESS", None)
        done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for job in ("infer", "train"):
        started = report[job]
        assert started["processes"] >= 3  # GCS, raylet, agents: the servers were inspected
        assert started["listening"], started
        assert set(started["listening"]) <= {"127.0.0.1", "::ffff:127.0.0.1"}, started
        assert not started["dashboard_url"]
        assert started["gcs"].startswith("127.0.0.1:") and started["gcs"] != "127.0.0.1:1"
        assert started["nodes"] == 1
