"""The cluster path on real storage APIs: DFDC parts in one bucket, `dfd preprocess` into another,
crash safety on a store without rename, the sync lease, training, inference and reports in
buckets, and bad buckets named in one line.

S3 is moto in server mode and GCS is gcp-storage-emulator, both on 127.0.0.1, started here and
stopped after (tests/object_stores.py); the CLI finds them through the standard variables only.
The full matrix runs on S3; GCS covers what differs (its filesystems, Beam's GCS client, the
lease's generations). gcp-storage-emulator ignores ``ifGenerationMatch``, so the GCS lease's
race (two creators, exactly one wins) cannot be shown against it; the rest of the lease is.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from dfd import config, dfdc, shards, storage
from dfd.lease import LEASE, Lease, LeaseHeld, LeaseRecord, read_lease
from tests import object_stores
from tests.lease_race import race
from tests.proc_inspect import ray_train_workers

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
HOOKS = Path(__file__).resolve().parent / "fault_injection"
# Two parts of two originals and one fake each (tests/test_faults.py's data).
SYNTH = config.SynthConfig(parts=2, originals=2, fakes_per_original=1, width=320, height=180,
                           frames=12, seed=5, zipped=True, portrait_fraction=0.0, workers=1)
FLAGS = ["--preset", "smoke", "--frames-per-video", "3"]
IN_MEMORY = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]


# ---- servers and data ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    from dfd.synth import generate

    src = tmp_path_factory.mktemp("stores-src")
    generate(src, SYNTH)
    return src


@pytest.fixture(scope="module")
def local_clean(source, tmp_path_factory) -> Path:
    """The same parts processed onto local disk: what every bucket run must match."""
    out = tmp_path_factory.mktemp("stores-local") / "out"
    done = dfd("preprocess", "--input", str(source), "--output", str(out), *FLAGS, *IN_MEMORY)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with object_stores.moto_s3(tmp_path_factory.mktemp("moto")) as server:
        with object_stores.environ(server.env):
            yield server


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    with object_stores.gcs_emulator(tmp_path_factory.mktemp("gcs")) as server:
        with object_stores.environ(server.env):
            yield server


def upload_parts(server, source: Path, bucket: str) -> str:
    raw = server.make_bucket(bucket)
    for f in sorted(source.iterdir()):
        storage.commit_file(f, f"{raw}/{f.name}")
    return raw


@pytest.fixture(scope="module")
def s3_run(s3, source):
    """Part zips in one S3 bucket, `dfd preprocess` (default multi-process runner) into another."""
    raw = upload_parts(s3, source, "dfdc-raw")
    out = s3.make_bucket("faces") + "/out"
    done = dfd("preprocess", "--input", raw, "--output", out, *FLAGS, server=s3)
    assert done.returncode == 0, done.stderr[-3000:]
    return raw, out, done


@pytest.fixture(scope="module")
def gcs_run(gcs, source):
    raw = upload_parts(gcs, source, "dfdc-raw")
    out = gcs.make_bucket("faces") + "/out"
    done = dfd("preprocess", "--input", raw, "--output", out, *FLAGS, *IN_MEMORY, server=gcs)
    assert done.returncode == 0, done.stderr[-3000:]
    return raw, out, done


# ---- helpers ------------------------------------------------------------------------------------

def dfd_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "dfd.cli", *args]


def dfd_env(server=None, **extra) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HOOKS), str(ROOT)]))
    if server is not None:
        env.update(server.env)
    return {**env, **extra}


def dfd(*args: str, server=None, timeout: float = 300, **extra) -> subprocess.CompletedProcess:
    return subprocess.run(dfd_argv(*args), cwd=ROOT, env=dfd_env(server, **extra),
                          capture_output=True, text=True, timeout=timeout)


def tree(uri: str) -> dict[str, bytes]:
    """Every object (or file) under uri, by path relative to it."""
    fs, root = storage.resolve(uri)
    root = root.rstrip("/")
    found = {}
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
        if info.type == pafs.FileType.File:
            with fs.open_input_stream(info.path) as f:
                found[info.path[len(root) + 1:]] = f.read()
    return found


def shard_files(files: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in files.items() if k.startswith(("parquet/", "tfrecord/", "errors/"))}


def hidden(files: dict[str, bytes]) -> list[str]:
    """Staged folders, journals, temp objects: what no finished run may leave."""
    return sorted(k for k in files if any(p.startswith(("_", ".")) for p in k.split("/"))
                  and k not in ("_last_run.json", "dfd-preprocess.log"))


def manifest_parts(uri: str) -> dict:
    text = storage.read_text(f"{uri}/manifest.json")
    return json.loads(text)["parts"] if text else {}


def same_entries(bucket_entries: dict, local_entries: dict) -> None:
    varying = {"source", "committed_at"}
    assert sorted(bucket_entries) == sorted(local_entries)
    for key, entry in bucket_entries.items():
        assert {k: v for k, v in entry.items() if k not in varying} == \
            {k: v for k, v in local_entries[key].items() if k not in varying}
        assert entry["videos_in_metadata"] == (entry["videos_with_records"]
                                               + entry["videos_rejected"]
                                               + entry["fakes_left_out"])


def assert_same_as_local(out: str, local_clean: Path) -> None:
    """Byte for byte the shards and errors files a local run commits, the same manifest, and
    nothing hidden left behind."""
    files = tree(out)
    local = tree(str(local_clean))
    assert shard_files(files) == shard_files(local)
    same_entries(manifest_parts(out), manifest_parts(str(local_clean)))
    assert hidden(files) == []


# ---- S3: preprocess bucket to bucket ------------------------------------------------------------

def test_s3_preprocess_meets_the_output_contract_and_a_second_run_is_a_no_op(s3, s3_run,
                                                                              local_clean):
    raw, out, first = s3_run
    assert "part  0: 4 videos, 4 with faces" in first.stdout
    assert_same_as_local(out, local_clean)
    entries = manifest_parts(out)
    assert [e["source"] for e in entries.values()] == [
        f"{raw}/{dfdc.part_zip_name(p)}" for p in (0, 1)]
    # Plain readers of the bucket see the records: pyarrow over the whole format folder.
    table = shards.read_parquet(storage.resolve(out + "/parquet")[1],
                                filesystem=storage.filesystem(out))
    assert table.num_rows == sum(e["records"] for e in entries.values())

    before = {k: v for k, v in tree(out).items() if k != "_last_run.json"}
    again = dfd("preprocess", "--input", raw, "--output", out, *FLAGS, *IN_MEMORY, server=s3)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.splitlines()[:2] == ["part  0: already committed, skipped",
                                             "part  1: already committed, skipped"]
    assert {k: v for k, v in tree(out).items() if k != "_last_run.json"} == before


# ---- S3: crash safety on a store without rename -------------------------------------------------

def launch_preprocess(raw: str, out: str, server, fault: str) -> subprocess.CompletedProcess:
    return dfd("preprocess", "--input", raw, "--output", out, *FLAGS, *IN_MEMORY, server=server,
               DFD_FAULT=fault, DFD_FAULT_DIR=str(ROOT))


def visible_parts(files: dict[str, bytes]) -> dict[str, set[int]]:
    seen = {"parquet": set(), "tfrecord": set(), "errors": set()}
    for key in files:
        top, _, rest = key.partition("/")
        name = rest.split("/", 1)[0]
        if top in ("parquet", "tfrecord") and name.startswith("part-"):
            seen[top].add(int(name[5:]))
        elif top == "errors" and name.startswith("part-"):
            seen["errors"].add(int(name[5:7]))
    return seen


def test_s3_a_run_killed_between_staging_and_commit_ends_as_a_clean_run(s3, s3_run,
                                                                         local_clean):
    from dfd import train_input

    raw, _, _ = s3_run
    out = s3.uri("faces", "crash")
    killed = launch_preprocess(raw, out, s3, "die_before_promote:1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    files = tree(out)
    # Part 0 committed whole before the kill; part 1 is staged only, and not listed.
    assert sorted(manifest_parts(out)) == ["00"]
    assert visible_parts(files) == {"parquet": {0}, "tfrecord": {0}, "errors": {0}}
    assert {"_committing-part-01.json", "errors/_part-01.parquet"} <= set(hidden(files))
    assert any(k.startswith("parquet/_part-01/") for k in files)

    # Killed again after part 1's Parquet objects moved into place and before its TFRecord
    # ones did. A reader that goes by the manifest (training, inference) sees part 0 only.
    killed = launch_preprocess(raw, out, s3, "die_mid_promote:1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert sorted(manifest_parts(out)) == ["00"]
    assert visible_parts(tree(out))["tfrecord"] == {0}
    assert {Path(f).parent.name for f in train_input.find_shards(out, "train")} == {"part-00"}

    # The next plain run rolls the unfinished commit back, redoes part 1 alone and ends as a
    # clean run does; part 0's objects are not rewritten.
    part0 = {k: v for k, v in tree(out).items() if "part-00" in k}
    again = dfd("preprocess", "--input", raw, "--output", out, *FLAGS, *IN_MEMORY, server=s3)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "part  0: already committed, skipped" in again.stdout
    assert "part  1: 4 videos" in again.stdout
    assert {k: v for k, v in tree(out).items() if "part-00" in k} == part0
    assert_same_as_local(out, local_clean)


# ---- the sync lease in a bucket -----------------------------------------------------------------

def stale_record(**changes) -> bytes:
    """A lease a crashed run on another node left, expired ten minutes ago."""
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=20)
    record = LeaseRecord(holder="0" * 32, host="crashed-node", pid=4242, purpose="sync",
                         acquired=past.isoformat(timespec="seconds"),
                         expires=(past + dt.timedelta(minutes=10)).isoformat(timespec="seconds"))
    return LeaseRecord(**{**record.__dict__, **changes}).to_bytes()


def test_s3_lease_is_won_by_exactly_one_racer_through_conditional_writes(s3):
    out = s3.make_bucket("leases") + "/out"
    # Free: the create is a put with If-None-Match: *, which exactly one racer wins.
    won, _ = race([Lease(out, ttl_s=60) for _ in range(8)])
    assert len(won) == 1 and read_lease(out).holder == won[0]
    # Stale: the takeover is a put with If-Match: <the ETag read>, again one winner.
    storage.write_bytes(f"{out}/{LEASE}", stale_record())
    won, _ = race([Lease(out, ttl_s=60) for _ in range(6)])
    assert len(won) == 1 and read_lease(out).holder == won[0]


def test_s3_renewal_notices_a_takeover_and_release_leaves_the_taker_alone(s3):
    out = s3.make_bucket("renewals") + "/out"
    lease = Lease(out, ttl_s=60)
    lease.acquire()
    lease.renew()
    assert read_lease(out).expires_at() > time.time() + 30
    taker = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    storage.write_bytes(f"{out}/{LEASE}", stale_record(expires=taker.isoformat()))
    with pytest.raises(Exception, match="now held by sync 00000000 on crashed-node"):
        lease.renew()
    lease.release()
    assert read_lease(out).host == "crashed-node"


def sync_argv(raw: str, out: str) -> list[str]:
    return dfd_argv("sync", "--source", raw, "--output", out, "--parts", "1", *FLAGS, *IN_MEMORY)


def check_two_syncs(server, raw: str, out: str) -> None:
    """Two `dfd sync` runs on one bucket output: the second stops with one line while the
    first works; a lease a crashed run left is taken over."""
    first = subprocess.Popen(sync_argv(raw, out), cwd=ROOT, env=dfd_env(server),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while read_lease(out) is None:
            assert first.poll() is None and time.monotonic() < deadline, "no lease taken"
            time.sleep(0.1)
        second = subprocess.run(sync_argv(raw, out), cwd=ROOT, env=dfd_env(server),
                                capture_output=True, text=True, timeout=120)
        stdout, stderr = first.communicate(timeout=300)
    finally:
        first.kill()
    assert second.returncode == 0, second.stderr[-3000:]
    [line] = second.stdout.splitlines()
    assert line.startswith(f"another sync is running, nothing done: {out}/{LEASE} is leased "
                           f"by sync ")
    assert f"on {socket.gethostname()} (pid {first.pid})" in line
    assert first.returncode == 0, stderr[-3000:]
    assert "part  1: 4 videos" in stdout
    assert sorted(manifest_parts(out)) == ["01"] and read_lease(out) is None  # released

    storage.write_bytes(f"{out}/{LEASE}", stale_record())
    third = subprocess.run(sync_argv(raw, out), cwd=ROOT, env=dfd_env(server),
                           capture_output=True, text=True, timeout=120)
    assert third.returncode == 0, third.stderr[-3000:]
    assert third.stdout.splitlines() == ["nothing new: 1 part(s) up to date (01)"]
    assert "taking over the stale lease" in third.stderr
    assert read_lease(out) is None


def test_s3_two_syncs_on_one_bucket_output_one_stops_with_one_line(s3, s3_run):
    raw, _, _ = s3_run
    check_two_syncs(s3, raw, s3.uri("faces", "sync"))


# ---- bad buckets: one line naming the URI and the cause, before any work ------------------------

def one_error_line(done: subprocess.CompletedProcess, command: str) -> str:
    assert done.returncode == 1, done.stderr[-3000:]
    [line] = [x for x in done.stderr.splitlines() if x.startswith(f"dfd {command}: error: ")]
    assert line == done.stderr.strip().splitlines()[-1]
    return line.removeprefix(f"dfd {command}: error: ")


def test_s3_bad_buckets_are_named_in_one_line_before_any_work(s3, s3_run, tmp_path):
    raw, out, _ = s3_run
    before = tree(out)
    # A missing bucket, to read from or to write into.
    line = one_error_line(dfd("preprocess", "--input", "s3://no-such-raw/dfdc", "--output",
                              out, *FLAGS, server=s3), "preprocess")
    assert line.startswith("s3://no-such-raw/dfdc: bucket s3://no-such-raw does not exist")
    line = one_error_line(dfd("train", "--data", out, "--run-dir", "s3://no-such-runs/r1",
                              server=s3), "train")
    assert line.startswith("s3://no-such-runs/r1: bucket s3://no-such-runs does not exist")
    # An endpoint nothing answers on.
    dead = f"http://127.0.0.1:{object_stores.free_port()}"
    started = time.monotonic()
    line = one_error_line(dfd("preprocess", "--input", raw, "--output", out, *FLAGS,
                              server=s3, AWS_ENDPOINT_URL=dead), "preprocess")
    assert line.startswith(f"{raw}: cannot reach S3 (Could not connect to the endpoint URL: "
                           f"\"{dead}/dfdc-raw?")
    assert time.monotonic() - started < 60
    assert tree(out) == before  # nothing was started, nothing written


@pytest.fixture(scope="module")
def s3_with_auth(tmp_path_factory):
    """A second moto server that checks credentials (after a few set-up calls it lets through):
    a user who may only read, and a bucket with one object."""
    import boto3

    folder = tmp_path_factory.mktemp("moto-auth")
    # the start-up probe, create_user, create_access_key, put_user_policy, create_bucket,
    # put_object
    setup_calls = 6
    with object_stores.moto_s3(folder, INITIAL_NO_AUTH_ACTION_COUNT=str(setup_calls)) as server:
        with object_stores.environ(server.env):
            iam = boto3.client("iam")
            iam.create_user(UserName="reader")
            key = iam.create_access_key(UserName="reader")["AccessKey"]
            read_only = {"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetObject"],
                "Resource": "*"}]}
            iam.put_user_policy(UserName="reader", PolicyName="read-only",
                                PolicyDocument=json.dumps(read_only))
            s3 = boto3.client("s3")
            s3.create_bucket(Bucket="guarded")
            s3.put_object(Bucket="guarded", Key="raw/readme.txt", Body=b"not a part")
        yield server, {"AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                       "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def test_s3_refused_credentials_and_permissions_are_named_in_one_line(s3_with_auth):
    server, reader = s3_with_auth
    line = one_error_line(dfd("preprocess", "--input", "s3://guarded/raw", "--output",
                              "s3://guarded/out", *FLAGS, server=server,
                              AWS_ACCESS_KEY_ID="AKIAWRONGWRONGWRONG1",
                              AWS_SECRET_ACCESS_KEY="wrong"), "preprocess")
    assert line.startswith("s3://guarded/raw: the credentials were refused (InvalidAccessKeyId")
    # The reader may list and read, not write: the output is refused before any work.
    line = one_error_line(dfd("preprocess", "--input", "s3://guarded/raw", "--output",
                              "s3://guarded/out", *FLAGS, server=server, **reader),
                          "preprocess")
    assert line.startswith("s3://guarded/out: permission denied to write objects "
                           "(AccessDenied)")


# ---- GCS: what differs (its filesystems, Beam's GCS client, the lease's generations) ------------

def test_gcs_preprocess_meets_the_output_contract_and_a_second_run_is_a_no_op(gcs, gcs_run,
                                                                               local_clean):
    raw, out, first = gcs_run
    assert "part  1: 4 videos, 4 with faces" in first.stdout
    assert_same_as_local(out, local_clean)
    before = {k: v for k, v in tree(out).items() if k != "_last_run.json"}
    again = dfd("preprocess", "--input", raw, "--output", out, *FLAGS, *IN_MEMORY, server=gcs)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.splitlines()[:2] == ["part  0: already committed, skipped",
                                             "part  1: already committed, skipped"]
    assert {k: v for k, v in tree(out).items() if k != "_last_run.json"} == before
    line = one_error_line(dfd("preprocess", "--input", "gs://no-such-raw/dfdc", "--output", out,
                              *FLAGS, server=gcs), "preprocess")
    assert line.startswith("gs://no-such-raw/dfdc: bucket gs://no-such-raw does not exist")


def test_gcs_lease_holds_renews_and_releases_by_generation(gcs):
    out = gcs.make_bucket("leases") + "/out"
    with Lease(out, ttl_s=60) as lease:
        first = read_lease(out).expires_at()
        with pytest.raises(LeaseHeld, match="is leased by sync"):
            Lease(out, ttl_s=60).acquire()
        time.sleep(0.01)
        lease.renew()  # a write conditioned on the generation it last wrote
        assert read_lease(out).holder == lease.holder and read_lease(out).expires_at() > first
    assert read_lease(out) is None
    storage.write_bytes(f"{out}/{LEASE}", stale_record())
    taker = Lease(out, ttl_s=60)
    taker.acquire()
    assert read_lease(out).holder == taker.holder
    taker.release()


def test_gcs_two_syncs_on_one_bucket_output_one_stops_with_one_line(gcs, gcs_run):
    raw, _, _ = gcs_run
    check_two_syncs(gcs, raw, gcs.uri("faces", "sync"))


# ---- S3: training, inference and the report in buckets ------------------------------------------

@pytest.fixture(scope="module")
def s3_faces(s3, tmp_path_factory) -> str:
    """A small committed face-shard tree (train, validation and test splits) in a bucket."""
    from dfd.synth.face_shards import write_face_shards

    local = tmp_path_factory.mktemp("face-shards")
    write_face_shards(local, parts=(0, 1), per_split={"train": 8, "validation": 3, "test": 2},
                      frames=5, formats=("parquet",))
    data = s3.make_bucket("shards") + "/faces"
    for f in sorted(local.rglob("*")):
        if f.is_file():
            storage.commit_file(f, f"{data}/{f.relative_to(local).as_posix()}")
    return data


def test_s3_train_resumes_after_a_killed_worker_and_infer_and_report_use_buckets(s3, s3_faces):
    run_dir = s3.make_bucket("runs") + "/r1"
    train = subprocess.Popen(dfd_argv("train", "--data", s3_faces, "--run-dir", run_dir,
                                      "--epochs", "3", "--batch-size", "8", "--workers", "2",
                                      "--max-failures", "2"),
                             cwd=ROOT, env=dfd_env(s3), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    killed_after = None
    try:
        deadline = time.monotonic() + 400
        while killed_after is None and train.poll() is None:
            assert time.monotonic() < deadline, "training never finished an epoch"
            done = len(json.loads(storage.read_text(f"{run_dir}/history.json") or "[]"))
            workers = ray_train_workers(train.pid)
            if done >= 1 and workers:
                os.kill(max(workers), signal.SIGKILL)
                killed_after = done
            time.sleep(0.2)
        stdout, stderr = train.communicate(timeout=400)
    finally:
        if train.poll() is None:
            os.killpg(train.pid, signal.SIGKILL)
            train.communicate()
    assert train.returncode == 0, stderr[-3000:]
    assert killed_after is not None, "the worker was never killed"
    # Restarted once from the last checkpoint in the bucket: at most the epoch in flight lost.
    attempts = json.loads(storage.read_text(f"{run_dir}/attempts.json"))
    assert len(attempts) == 2 and attempts[0]["start_epoch"] == 0
    assert killed_after <= attempts[1]["start_epoch"] <= killed_after + 1
    history = json.loads(storage.read_text(f"{run_dir}/history.json"))
    assert [h["epoch"] for h in history] == [0, 1, 2]
    run = tree(run_dir)
    assert {"model/model.json", "model/weights.h5", "config.json", "plots/loss.png"} <= set(run)
    assert any(k.startswith("ray/checkpoint_") for k in run)
    assert any(k.startswith("tensorboard/validation/events.out.tfevents.") for k in run)

    # Ray Data reads the test split's shards straight from the bucket; predictions, metrics and
    # the report go to buckets.
    predictions = s3.uri("runs", "r1-test")
    infer = dfd("infer", "--data", s3_faces, "--run-dir", run_dir, "--out", predictions,
                "--split", "test", "--actors", "1", server=s3, timeout=400)
    assert infer.returncode == 0, infer.stderr[-3000:]
    frames = shards.read_parquet(storage.resolve(f"{predictions}/frame_predictions.parquet")[1],
                                 schema=__import__("schemas").FRAME_PREDICTION,
                                 filesystem=storage.filesystem(predictions))
    assert frames.num_rows == 2 * 2 * 2 * 5  # parts x test originals x (real + fake) x frames
    metrics = json.loads(storage.read_text(f"{predictions}/metrics.json"))
    assert metrics["video"]["n"] == 2 * 2 * 2
    report_dir = s3.uri("runs", "r1-report")
    report = dfd("report", "--predictions", predictions, "--run-dir", run_dir, "--out",
                 report_dir, server=s3, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    assert any(k.endswith("report.html") for k in tree(report_dir))


def test_gcs_training_checkpoints_and_resumes_through_the_standard_variables(gcs, tmp_path):
    """Ray Train's checkpoints go through dfd.storage's filesystem, which follows
    STORAGE_EMULATOR_HOST (pyarrow's own would go to the real GCS). `dfd infer` is not run here:
    its shard selection lists the parquet/ folder's part folders, and pyarrow's non-recursive
    listing of folders returns nothing against gcp-storage-emulator (infra/README.md)."""
    from dfd.synth.face_shards import write_face_shards

    local = tmp_path / "faces"
    write_face_shards(local, parts=(0,), per_split={"train": 4, "validation": 2}, frames=3,
                      formats=("parquet",))
    data = gcs.make_bucket("gcs-shards") + "/faces"
    for f in sorted(local.rglob("*")):
        if f.is_file():
            storage.commit_file(f, f"{data}/{f.relative_to(local).as_posix()}")
    run_dir = gcs.make_bucket("gcs-runs") + "/r1"
    train = dfd("train", "--data", data, "--run-dir", run_dir, "--epochs", "1",
                "--batch-size", "8", "--workers", "1", server=gcs, timeout=400)
    assert train.returncode == 0, train.stderr[-3000:]
    run = tree(run_dir)
    assert {"model/model.json", "model/weights.h5", "history.json"} <= set(run)
    assert any(k.startswith("ray/checkpoint_") for k in run)
    # Run again with one more epoch: it resumes from the checkpoint in the bucket.
    again = dfd("train", "--data", data, "--run-dir", run_dir, "--epochs", "2",
                "--batch-size", "8", "--workers", "1", server=gcs, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    attempts = json.loads(storage.read_text(f"{run_dir}/attempts.json"))
    assert [a["start_epoch"] for a in attempts] == [0, 1]
    assert len(json.loads(storage.read_text(f"{run_dir}/history.json"))) == 2
