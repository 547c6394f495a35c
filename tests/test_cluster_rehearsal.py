"""A two-node Ray cluster on this machine: training and batch inference spread over both nodes.

The head and a second node are started as separate `ray start` processes on 127.0.0.1 (through
``python -m ray_jobs.local_ray``, which keeps the loopback address), `dfd train` and `dfd infer`
join them with ``--address`` as they would a real cluster, and Ray's own actor table says where
their workers ran. Each node has 2 CPUs and every training worker or inference actor asks for
more than half of that, so two of them cannot share a node.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from dfd.synth.face_shards import write_face_shards
from tests.proc_inspect import alive, descendants, listening_addresses

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
NODE_CPUS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayNode:
    """One `ray start --block` process; stopping it stops the node's every process."""

    def __init__(self, args: list[str], env: dict[str, str], name: str):
        self.name = name
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ray_jobs.local_ray", "start", "--block",
             "--node-ip-address", "127.0.0.1", "--num-cpus", str(NODE_CPUS),
             # Two nodes on one machine cannot both take Ray's fixed default ports.
             "--dashboard-agent-listen-port", str(_free_port()),
             "--disable-usage-stats", *args],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)
            if "Ray runtime started" in line:
                self.ready.set()

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.wait(1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not start:\n{''.join(self.lines)}")

    def processes(self) -> set[int]:
        """This node's processes: `ray start` and everything it started (servers, workers)."""
        return descendants(self.process.pid)

    def stop(self) -> int | None:
        """SIGTERM, as `ray stop` sends; Ray's handler then exits with status 1."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        return self.process.returncode


@pytest.fixture(scope="module")
def cluster():
    # Ray's socket paths must stay under the 107-byte limit: a short folder, not tmp_path.
    temp_dir = Path(tempfile.mkdtemp(prefix="dfd-ray-"))
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "PYTHONPATH": str(REPO),
           # A stopped node tears down at once instead of draining (made for Ray Serve).
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    nodes = [RayNode(["--head", "--port", str(port), "--include-dashboard", "false",
                      "--ray-client-server-port", str(_free_port()),
                      "--temp-dir", str(temp_dir)], env, "head")]
    try:
        nodes[0].wait_ready()
        nodes.append(RayNode(["--address", f"127.0.0.1:{port}"], env, "second node"))
        nodes[1].wait_ready()
        yield {"address": f"127.0.0.1:{port}", "env": env, "temp_dir": temp_dir, "nodes": nodes}
    finally:
        for node in reversed(nodes):
            node.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _dfd(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "dfd.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


PLACEMENT = """
import json, sys
import ray
from ray._private.state import state
from ray_jobs.local_ray import connect

connect(sys.argv[1])
nodes = [n for n in ray.nodes() if n["Alive"]]
actors = [{"class": a["ActorClassName"], "node": a["Address"]["NodeID"], "job": a["JobID"]}
          for a in state.actor_table(None).values()]
print(json.dumps({"nodes": [{"id": n["NodeID"], "ip": n["NodeManagerAddress"],
                             "cpus": n["Resources"].get("CPU")} for n in nodes],
                  "actors": actors}))
ray.shutdown()
"""


def _placement(cluster) -> dict:
    done = subprocess.run([sys.executable, "-c", PLACEMENT, cluster["address"]], cwd=REPO,
                          env=cluster["env"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_training_and_inference_spread_over_two_loopback_nodes(cluster, tmp_path):
    placement = _placement(cluster)
    assert len(placement["nodes"]) == 2
    assert {n["ip"] for n in placement["nodes"]} == {"127.0.0.1"}
    assert all(n["cpus"] == NODE_CPUS for n in placement["nodes"])
    node_ids = {n["id"] for n in placement["nodes"]}
    # Every server of both nodes listens on the loopback interface only.
    pids = set().union(*(node.processes() for node in cluster["nodes"]))
    assert len(pids) > 4
    assert listening_addresses(pids) <= {"127.0.0.1", "::ffff:127.0.0.1"}

    data, run, out = tmp_path / "faces", tmp_path / "run", tmp_path / "scores"
    write_face_shards(data, parts=(0, 1), formats=("parquet",),
                      per_split={"train": 3, "validation": 1, "test": 2})
    env = cluster["env"]
    _dfd(["train", "--data", str(data), "--run-dir", str(run), "--preset", "smoke",
          "--epochs", "1", "--batch-size", "4", "--workers", "2",
          "--cpus-per-worker", str(NODE_CPUS), "--address", cluster["address"]], env)
    _dfd(["infer", "--data", str(data), "--run-dir", str(run), "--out", str(out),
          "--split", "test", "--actors", "2", "--cpus-per-actor", str(NODE_CPUS),
          "--address", cluster["address"]], env)

    actors = _placement(cluster)["actors"]
    trainers = {a["node"] for a in actors if a["class"] == "RayTrainWorker"}
    scorers = {a["node"] for a in actors if "MapWorker" in a["class"]}
    assert trainers == node_ids, actors
    assert scorers == node_ids, actors

    attempts = json.loads((run / "attempts.json").read_text())
    assert attempts[-1]["workers"] == 2
    assert (run / "model" / "model.json").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["video"]["n"] == 2 * 2 * 2  # 2 parts x 2 originals x (real + fake)

    # Both nodes stop, and nothing of the cluster outlives them.
    for node in reversed(cluster["nodes"]):
        node.stop()
    deadline = time.monotonic() + 30
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(1)
    assert not alive(pids)
