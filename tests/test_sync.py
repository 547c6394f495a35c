"""`dfd sync` end to end (signed part links against the local links stand-in, real Beam, real
synthetic DFDC parts), the fetch stage's choice of parts, and the output lease."""
from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dfd import config, dfdc
from dfd.errors import DfdError
from dfd.kaggle import CompetitionFile
from dfd.lease import LEASE, Lease, LeaseHeld, LeaseLost, LeaseRecord, read_lease
from tests.infer_fixtures import make_run_dir
from tests.lease_race import race
from standins.kaggle import KaggleStandIn
from standins.links import LinksStandIn

COMPETITION = "deepfake-detection-challenge"
ROOT = Path(__file__).resolve().parents[1]
USERNAME, KEY = "dfd-tester", "sync-test-key-5e2d"
# Small parts the detector still finds faces in (320x180: faces about 70 px high). In-memory
# Beam spares each run the worker processes' start-up; tests/test_preprocess.py covers the
# multi-process runner.
SYNTH = config.SynthConfig(parts=2, originals=2, fakes_per_original=1, width=320, height=180,
                           frames=12, seed=5, zipped=True, portrait_fraction=0.0, workers=1)
PROCESS_FLAGS = ["--preset", "smoke", "--frames-per-video", "3",
                 "--direct_running_mode", "in_memory", "--direct_num_workers", "1"]


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict[int, bytes]:
    from dfd.synth import generate

    made = generate(tmp_path_factory.mktemp("synth"), SYNTH)
    return {dfdc.parse_part_name(p.name): p.read_bytes() for p in made}


@pytest.fixture(scope="module")
def kaggle():
    with KaggleStandIn(COMPETITION, username=USERNAME, key=KEY) as standin:
        yield standin


@pytest.fixture(scope="module")
def storage():
    """The signed links of the data page (standins/links.py)."""
    with LinksStandIn() as standin:
        yield standin


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAGGLE_", "XDG_"))}
    env.update(HOME=str(home), KAGGLE_API_ENVIRONMENT="TEST", PYTHONPATH=str(ROOT),
               KAGGLE_USERNAME=USERNAME, KAGGLE_KEY=KEY)
    return env


def sync_argv(root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dfd.cli", "sync", "--links", str(root / "links.txt"),
            "--staging", str(root / "staging"), "--output", str(root / "out"),
            *PROCESS_FLAGS, *extra]


def dfd_sync(root: Path, *extra: str) -> subprocess.CompletedProcess:
    (root / "home").mkdir(exist_ok=True)
    return subprocess.run(sync_argv(root, *extra), capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env=_env(root / "home"))


def committed(root: Path) -> dict:
    return json.loads((root / "out" / "manifest.json").read_text())["parts"]


def mtimes(folder: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*")}


def downloads(storage: LinksStandIn) -> list[str]:
    return [s.path.rsplit("/", 1)[-1] for s in storage.object_gets()]


def add_link(root: Path, url: str) -> None:
    """A new line in the links file, as a user pastes a newly published part's link."""
    with open(root / "links.txt", "a") as f:
        f.write(url + "\n")


def stale_record(**changes) -> bytes:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    record = LeaseRecord(holder="0" * 32, host="crashed-node", pid=4242, purpose="sync",
                         acquired=past.isoformat(timespec="seconds"),
                         expires=(past + dt.timedelta(minutes=10)).isoformat(timespec="seconds"))
    return LeaseRecord(**{**record.__dict__, **changes}).to_bytes()


# ---- end to end ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_sync_twice_processes_the_new_part_once_and_nothing_else(tmp_path, storage, parts):
    storage.reset()
    for p in (0, 1):
        storage.add(dfdc.part_zip_name(p), parts[p])
    (tmp_path / "links.txt").write_text("# DFDC part links from the data page\n")
    add_link(tmp_path, storage.link(dfdc.part_zip_name(0)))

    first = dfd_sync(tmp_path)
    assert first.returncode == 0, first.stderr
    assert "part  0: fetched" in first.stdout and "part  0: 4 videos" in first.stdout
    assert sorted(committed(tmp_path)) == ["00"]
    assert downloads(storage) == [dfdc.part_zip_name(0)]
    assert not (tmp_path / "out" / LEASE).exists()  # released
    part0 = mtimes(tmp_path / "out" / "parquet" / "part-00")
    entry0 = committed(tmp_path)["00"]

    # Part 1 arrives: a new line in the links file; part 0's link has expired meanwhile. A
    # second sync started while this one runs finds the lease and stops. Part 1 is scored
    # with a trained model as it arrives (the run dir of `dfd train`).
    storage.log.clear()
    (tmp_path / "links.txt").write_text(storage.link(dfdc.part_zip_name(0), expires_in=-60)
                                        + "\n")
    add_link(tmp_path, storage.link(dfdc.part_zip_name(1)))
    run = make_run_dir(tmp_path / "run")
    second = subprocess.Popen(sync_argv(tmp_path, "--score-with", str(run), "--actors", "1"),
                              stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT,
                              env=_env(tmp_path / "home"))
    try:
        deadline = time.monotonic() + 60
        while read_lease(str(tmp_path / "out")) is None:
            assert second.poll() is None and time.monotonic() < deadline, "no lease taken"
            time.sleep(0.05)
        overlapping = dfd_sync(tmp_path)
        out, err = second.communicate(timeout=300)
    finally:
        second.kill()
    assert overlapping.returncode == 0, overlapping.stderr
    [line] = overlapping.stdout.splitlines()
    assert line.startswith("another sync is running, nothing done: ")
    assert f"on {socket.gethostname()} (pid {second.pid})" in line
    assert "fetched" not in overlapping.stdout + overlapping.stderr

    assert second.returncode == 0, err
    assert "part  1: fetched" in out and "part  1: 4 videos" in out
    assert "part  0" not in out and "1 part(s) already up to date (00)" in out
    assert sorted(committed(tmp_path)) == ["00", "01"]
    assert committed(tmp_path)["00"] == entry0
    assert mtimes(tmp_path / "out" / "parquet" / "part-00") == part0
    assert downloads(storage) == [dfdc.part_zip_name(1)]  # part 0 is never fetched again
    rows = pq.read_table(tmp_path / "out" / "parquet", columns=["part", "video"]).to_pylist()
    assert {r["part"] for r in rows} == {0, 1}

    # ... and its scores went into the model's generalization report, part 0's did not
    assert "part  1: scored, videos n=" in out
    report_dir = run / "generalization"
    assert f"generalization report (1 part(s)): {report_dir}/report/report.html" in out
    ledger = json.loads((report_dir / "scored.json").read_text())
    assert sorted(ledger["parts"]) == ["01"] and ledger["pending"] == []
    assert ledger["parts"]["01"]["source_checksum"] == committed(tmp_path)["01"]["source_checksum"]
    videos = pq.read_table(report_dir / "video_predictions.parquet").to_pylist()
    assert {v["part"] for v in videos} == {1}
    assert {v["video"] for v in videos} >= {r["video"] for r in rows if r["part"] == 1}
    assert (report_dir / "report" / "report.html").stat().st_size > 0
    scores_before = mtimes(report_dir)

    # Up to date; the lease a crashed run left behind is taken over.
    storage.log.clear()
    before = mtimes(tmp_path / "out")
    (tmp_path / "out" / LEASE).write_bytes(stale_record())
    third = dfd_sync(tmp_path, "--score-with", str(run))
    assert third.returncode == 0, third.stderr
    assert third.stdout.splitlines() == ["nothing new: 2 part(s) up to date (00-01)"]
    assert "taking over the stale lease" in third.stderr
    assert storage.log == []
    assert mtimes(tmp_path / "out") == {p: t for p, t in before.items() if p.name != LEASE}
    assert mtimes(report_dir) == scores_before


@pytest.mark.slow
def test_sync_of_a_watched_folder_processes_each_new_part_object_once(tmp_path, parts):
    """A folder (or bucket prefix) that parts are mirrored into: a new part object is a new
    part, processed once; the parts already committed are left alone."""
    watched = tmp_path / "mirror"
    watched.mkdir()
    (watched / dfdc.part_zip_name(0)).write_bytes(parts[0])
    argv = [sys.executable, "-m", "dfd.cli", "sync", "--source", str(watched), "--output",
            str(tmp_path / "out"), *PROCESS_FLAGS]

    def sync() -> subprocess.CompletedProcess:
        return subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=ROOT,
                              env=_env(tmp_path))

    first = sync()
    assert first.returncode == 0, first.stderr[-3000:]
    assert sorted(committed(tmp_path)) == ["00"]
    entry0 = committed(tmp_path)["00"]
    (watched / dfdc.part_zip_name(1)).write_bytes(parts[1])  # a new object in the mirror
    second = sync()
    assert second.returncode == 0, second.stderr[-3000:]
    assert "part  1: 4 videos" in second.stdout and "1 part(s) already up to date (00)" \
        in second.stdout
    assert sorted(committed(tmp_path)) == ["00", "01"]
    assert committed(tmp_path)["00"] == entry0
    third = sync()
    assert third.stdout.splitlines() == ["nothing new: 2 part(s) up to date (00-01)"]


# ---- which parts the fetch stage fetches --------------------------------------------------------

def _entry(part: int, *, size: int, config_hash: str = "h1") -> dict:
    return {"part": part, "source": f"/staging/{dfdc.part_zip_name(part)}", "source_size": size,
            "source_checksum": "zipcd-sha256:x", "config_hash": config_hash,
            "code_version": "0.1.0", "schema_version": 1, "videos_in_metadata": 4,
            "videos_with_records": 4, "videos_rejected": 0, "fakes_left_out": 0, "records": 12,
            "committed_at": "2025-01-01T00:00:00+00:00"}


def test_a_part_is_fetched_unless_committed_from_the_same_file_and_config(tmp_path):
    from pipelines.fetch import needs_fetch, plan_fetch

    created = "2019-12-11T18:30:00+00:00"
    file = CompetitionFile(dfdc.part_zip_name(3), 1000, created)
    same = _entry(3, size=1000)
    assert needs_fetch(file, None, config_hash="h1", receipt=None)
    assert not needs_fetch(file, same, config_hash="h1", receipt=None)
    assert not needs_fetch(file, same, config_hash="h1", receipt={"created": created})
    assert needs_fetch(file, same, config_hash="h2", receipt=None)  # new settings
    assert needs_fetch(file, _entry(3, size=999), config_hash="h1", receipt=None)
    # Kaggle replaced the file with one of the same size since it was staged
    assert needs_fetch(file, same, config_hash="h1", receipt={"created": "2020-01-01"})

    # A link says nothing of its file before it is fetched: committed under this config is
    # current, unless the staged copy is not the one that was processed.
    from dfd.kaggle.links import parse_links

    [link] = parse_links("https://storage.example/b/dfdc_train_part_03.zip?Signature=abcdefgh")
    assert needs_fetch(link, None, config_hash="h1", receipt=None)
    assert not needs_fetch(link, same, config_hash="h1", receipt=None)
    assert not needs_fetch(link, same, config_hash="h1", receipt={"size": 1000})
    assert needs_fetch(link, same, config_hash="h1", receipt={"size": 1200})
    assert needs_fetch(link, same, config_hash="h2", receipt={"size": 1000})

    listed = {p: CompetitionFile(dfdc.part_zip_name(p), 1000, created) for p in range(4)}
    manifest = {"parts": {"00": _entry(0, size=1000), "02": _entry(2, size=1000)}}
    plan = plan_fetch(listed, None, manifest, config_hash_of=lambda p: "h1",
                      staging=str(tmp_path))
    assert (plan.to_fetch, plan.up_to_date) == ([1, 3], [0, 2])
    plan = plan_fetch(listed, {0, 1}, manifest, config_hash_of=lambda p: "h1",
                      staging=str(tmp_path), force=True)
    assert (plan.to_fetch, plan.up_to_date) == ([0, 1], [])
    with pytest.raises(DfdError, match="has no part\\(s\\) 07"):
        plan_fetch(listed, {1, 7}, manifest, config_hash_of=lambda p: "h1",
                   staging=str(tmp_path))


@pytest.mark.slow
def test_fetch_stage_stages_parts_and_tags_those_it_cannot_fetch(tmp_path, storage, kaggle,
                                                                  parts, monkeypatch):
    from dfd.kaggle import links
    from pipelines.fetch import KaggleSource, LinksSource, run_fetch

    storage.reset()
    for p in (0, 1):
        storage.add(dfdc.part_zip_name(p), parts[p])
    text = "\n".join([storage.link(dfdc.part_zip_name(0)), storage.link(dfdc.part_zip_name(1)),
                      storage.link(dfdc.part_zip_name(2), expires_in=-60)])
    source = LinksSource("links.txt", tuple(links.parse_links(text)))
    staging = tmp_path / "staging"
    beam_args = ["--direct_num_workers", "2"]

    # Part 2's link has expired: it alone fails, with the line that says what to do.
    fetched = run_fetch([0, 1, 2, 5], competition=source, staging=str(staging),
                        beam_args=beam_args)
    assert [(r["part"], r["status"]) for r in fetched["staged"]] == [(0, "fetched"),
                                                                      (1, "fetched")]
    assert [(f["part"], f["reason"]) for f in fetched["failed"]] == [(2, "link_refused"),
                                                                      (5, "fetch_failed")]
    assert "the link has expired (HTTP 400 ExpiredToken)" in fetched["failed"][0]["detail"]
    assert "no longer list(s) part 05" in fetched["failed"][1]["detail"]
    for p in (0, 1):
        assert (staging / dfdc.part_zip_name(p)).read_bytes() == parts[p]
    assert not (staging / "_fetch_runs").exists() or not list((staging / "_fetch_runs")
                                                                .iterdir())
    assert "Signature" not in json.dumps(fetched)

    # Workers without Kaggle credentials: every part says why, the pipeline still completes.
    for name in [k for k in os.environ if k.startswith("KAGGLE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "TEST")
    monkeypatch.setenv("KAGGLE_USERNAME", USERNAME)
    denied = run_fetch([0, 1], competition=KaggleSource(COMPETITION),
                       staging=str(tmp_path / "other"), beam_args=beam_args)
    assert denied["staged"] == [] and [f["reason"] for f in denied["failed"]] == ["no_access"] * 2
    assert "incomplete Kaggle credentials: KAGGLE_KEY is not set" in denied["failed"][0]["detail"]
    assert KEY not in json.dumps(denied)


def test_fetched_sources_are_refused_in_one_line_when_they_cannot_work(tmp_path, kaggle):
    def dfd(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dfd.cli", *args], capture_output=True,
                              text=True, timeout=60, cwd=ROOT, env=_env(tmp_path))

    (tmp_path / "links.txt").write_text("https://storage.example/b/dfdc_train_part_00.zip\n")
    out = str(tmp_path / "out")
    no_staging = dfd("preprocess", "--links", str(tmp_path / "links.txt"), "--output", out)
    assert no_staging.returncode == 1
    [line] = no_staging.stderr.splitlines()
    assert line.startswith(
        "dfd preprocess: error: --links needs --staging: a folder or gs:// / s3:// URI where "
        "the fetched parts are kept")
    nothing = dfd("sync", "--output", out)
    [line] = nothing.stderr.splitlines()
    assert line.startswith(
        "dfd sync: error: nothing to sync from: give --source (a watched folder of parts) or "
        "--links FILE (the data page's part links)")
    # Kaggle's API lists no training part (as the real one does): the line says to use links.
    kaggle.reset()
    kaggle.add_file("sample_submission.csv", b"filename,label\n")
    api = dfd("sync", "--source", f"kaggle://{COMPETITION}", "--staging",
              str(tmp_path / "staging"), "--output", out)
    assert api.returncode == 1
    line = api.stderr.splitlines()[-1]
    assert line.startswith("dfd sync: error: Kaggle's API does not serve the DFDC training "
                           "parts") and "use --links FILE" in line
    assert kaggle.storage_gets() == [] and not (tmp_path / "out" / "manifest.json").exists()


# ---- the lease ----------------------------------------------------------------------------------

def test_a_held_lease_blocks_others_until_released(tmp_path):
    out = str(tmp_path / "out")
    first = Lease(out, ttl_s=60)
    first.acquire()
    with pytest.raises(LeaseHeld) as held:
        Lease(out, ttl_s=60).acquire()
    assert f"pid {os.getpid()}" in str(held.value) and held.value.record.holder == first.holder
    on_disk = json.loads((tmp_path / "out" / LEASE).read_text())
    assert set(on_disk) == {"holder", "host", "pid", "purpose", "acquired", "expires"}
    first.release()
    assert not (tmp_path / "out" / LEASE).exists()
    second = Lease(out, ttl_s=60)
    second.acquire()
    assert read_lease(out).holder == second.holder


def test_of_many_racing_for_a_free_lease_exactly_one_wins(tmp_path):
    out = str(tmp_path / "out")
    leases = [Lease(out, ttl_s=60) for _ in range(12)]
    won, refused = race(leases)
    assert len(won) == 1 and len(refused) == 11
    assert read_lease(out).holder == won[0]


def test_stale_leases_are_taken_over_by_exactly_one_run(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    # expired
    (out / LEASE).write_bytes(stale_record())
    leases = [Lease(str(out), ttl_s=60) for _ in range(6)]
    won, _ = race(leases)
    assert len(won) == 1 and read_lease(str(out)).holder == won[0]

    # not expired, but its holder process on this host is gone
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    (out / LEASE).write_bytes(stale_record(host=socket.gethostname(),
                                           pid=int(dead.stdout), expires=future.isoformat()))
    taker = Lease(str(out), ttl_s=60)
    taker.acquire()
    assert read_lease(str(out)).holder == taker.holder
    # a live holder on another host is respected until its expiry
    (out / LEASE).write_bytes(stale_record(expires=future.isoformat()))
    with pytest.raises(LeaseHeld, match="crashed-node"):
        Lease(str(out), ttl_s=60).acquire()


def test_renewal_extends_the_lease_and_notices_a_takeover(tmp_path):
    out = str(tmp_path / "out")
    with Lease(out, ttl_s=0.4) as lease:
        first = lease.record.expires_at()
        # Renewed every 0.1 s: past its first expiry, the lease is still ours, expiring later.
        deadline = time.monotonic() + 5
        while not (time.time() > first and read_lease(out).expires_at() > first):
            assert time.monotonic() < deadline, "the lease was not renewed past its first expiry"
            time.sleep(0.02)
        assert read_lease(out).holder == lease.holder and lease.lost is None
        lease.check()
        # someone else took it (e.g. this process stalled past the TTL), replacing the file in
        # one step as a lease store does: the renewer never reads a half-written record
        record = stale_record(expires=(
            dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat())
        deadline = time.monotonic() + 5
        while lease.lost is None and time.monotonic() < deadline:
            if read_lease(out).host != "crashed-node":
                # Taken again: a renewal that had checked the file before it was replaced
                # can still land after it (a real taker waits for the store's lock; this one
                # writes past it).
                taken = tmp_path / "taken.json"
                taken.write_bytes(record)
                os.replace(taken, tmp_path / "out" / LEASE)
            time.sleep(0.02)
        with pytest.raises(LeaseLost, match="now held by sync 00000000 on crashed-node"):
            lease.check()
    # not ours: left in place
    assert read_lease(out).host == "crashed-node"


# ---- the generalization report -----------------------------------------------------------------

def _write_batch(batch: Path, part: int, *, model: str, shift: float) -> None:
    """Predictions for one part as run_inference writes them (two videos, two crops each)."""
    import schemas

    batch.mkdir(parents=True)
    frames, videos = [], []
    for label, video in ((0, f"real{part:02d}.mp4"), (1, f"fake{part:02d}.mp4")):
        p = 0.2 + 0.6 * label + shift
        frames += [{"video": video, "part": part, "frame_index": i, "face_index": 0,
                    "label": label, "p_fake": p, "model": model} for i in (0, 10)]
        record = {"video": video, "part": part, "label": label, "p_fake": p, "n_faces": 2,
                  "aggregation": "mean", "model": model, "scored_by": "model", "reason": None}
        # how a video was scored: recorded from VIDEO_PREDICTION version 2 on
        videos.append({k: v for k, v in record.items() if k in schemas.VIDEO_PREDICTION.names})
    pq.write_table(schemas.to_arrow_table(frames, schemas.FRAME_PREDICTION),
                   batch / "frame_predictions.parquet")
    pq.write_table(schemas.to_arrow_table(videos, schemas.VIDEO_PREDICTION),
                   batch / "video_predictions.parquet")


def test_each_synced_part_is_appended_to_the_generalization_report(tmp_path):
    from dfd import sync

    report_dir = str(tmp_path / "report")
    manifest = {"parts": {"00": _entry(0, size=1), "01": _entry(1, size=1),
                          "02": {**_entry(2, size=1), "records": 0}}}
    assert sync.mark_pending(report_dir, [0]) == [0]
    batch = Path(sync.batch_dir(report_dir))
    _write_batch(batch, 0, model="paper_cnn@r1", shift=0.0)
    first = sync.append_scores(report_dir, str(batch), parts=[0], manifest=manifest,
                               model="paper_cnn@r1")
    assert sorted(first["per_part"]) == ["0"] and not batch.exists()
    part0 = (tmp_path / "report" / "parts" / "part-00" / "video_predictions.parquet")
    written = part0.stat().st_mtime_ns

    # A later sync whose scoring died leaves part 1 pending; the next one scores it with the
    # new part 2 (which has no face record, so there is nothing to score).
    assert sync.mark_pending(report_dir, [1]) == [1]
    assert sync.mark_pending(report_dir, [2]) == [1, 2]
    assert sync.scorable([1, 2], manifest) == ([1], [2])
    batch = Path(sync.batch_dir(report_dir))
    _write_batch(batch, 1, model="paper_cnn@r1", shift=0.1)
    second = sync.append_scores(report_dir, str(batch), parts=[1], manifest=manifest,
                                model="paper_cnn@r1", done_without_scores=[2])
    assert sorted(second["per_part"]) == ["0", "1"]
    assert second["per_part"]["0"] == first["per_part"]["0"]
    assert second["video"]["n"] == 4 and second["run"]["parts"] == [0, 1]
    assert part0.stat().st_mtime_ns == written  # an earlier part is not rewritten
    ledger = sync.read_ledger(report_dir)
    assert sorted(ledger["parts"]) == ["00", "01"] and ledger["pending"] == []
    combined = pq.read_table(tmp_path / "report" / "video_predictions.parquet").to_pylist()
    assert sorted(v["video"] for v in combined) == ["fake00.mp4", "fake01.mp4", "real00.mp4",
                                                     "real01.mp4"]
    assert json.loads((tmp_path / "report" / "metrics.json").read_text()) == second
    html = (tmp_path / "report" / "report" / "report.html").read_text()
    assert "part 0" in html and "part 1" in html

    batch = Path(sync.batch_dir(report_dir))
    _write_batch(batch, 3, model="efficientnet_b0@r2", shift=0.0)
    with pytest.raises(DfdError, match="holds scores of paper_cnn@r1, not efficientnet_b0@r2"):
        sync.append_scores(report_dir, str(batch), parts=[3], manifest=manifest,
                           model="efficientnet_b0@r2")
