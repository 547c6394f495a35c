"""`dfd download` and dfd.kaggle: the real kaggle client against a local stand-in of Kaggle."""
from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from dfd import dfdc
from tests.kaggle_standin import Fault, KaggleStandIn

COMPETITION = "deepfake-detection-challenge"
ROOT = Path(__file__).resolve().parents[1]
USERNAME = "dfd-tester"
KEY = "plantedsecret7f3a9c0e5b1d"  # planted: must never appear in any output or file
BASIC = base64.b64encode(f"{USERNAME}:{KEY}".encode()).decode()  # what goes on the wire
SIGNATURE = "standin-signature-do-not-log"


def _video(frames: np.ndarray) -> bytes:
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "8", "preset": "ultrafast"}  # keep the noise: bigger clips
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


BIG = 3  # the part that interrupted-download tests cut


def big_part_zip(part: int) -> bytes:
    """A DFDC-shaped part over 2 MiB: real H.264 clips of a real face photo (one original, two
    fakes) with metadata.json, in the folder the real zips unpack to. The kaggle downloader
    writes in 1 MiB reads, so only a cut past the first MiB leaves bytes to resume from; at
    DFDC's bitrate dfd.synth would need about a minute to render that much, so these clips
    keep sensor-like noise at high quality instead."""
    from skimage import data

    face = data.astronaut()[::2, ::2].astype(np.float32)  # 256x256
    rng = np.random.default_rng(part)
    names = ["aaqaifqrwn.mp4", "bbcsfqyfkx.mp4", "cczdvavlsh.mp4"]
    meta = {names[0]: {"label": "REAL", "split": "train", "original": None}}
    meta.update({n: {"label": "FAKE", "split": "train", "original": names[0]} for n in names[1:]})
    buf = io.BytesIO()
    folder = dfdc.part_folder_name(part)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{folder}/{dfdc.METADATA}", json.dumps(meta))
        for i, name in enumerate(names):
            shade = face if i == 0 else face[:, ::-1]
            frames = np.clip(shade + rng.normal(0, 28, (16, *face.shape)), 0, 255)
            zf.writestr(f"{folder}/{name}", _video(frames.astype(np.uint8)))
    return buf.getvalue()


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict[int, bytes]:
    """Parts 0-2 from dfd.synth (real synthetic DFDC parts), part 3 the big one."""
    from dfd import config, synth

    cfg = config.override(config.preset("synth", "smoke"), parts=3, originals=1,
                          fakes_per_original=1, width=256, height=144, frames=12, workers=1)
    made = {dfdc.parse_part_name(p.name): p.read_bytes()
            for p in synth.generate(tmp_path_factory.mktemp("synth"), cfg)}
    made[BIG] = big_part_zip(BIG)
    assert sorted(made) == [0, 1, 2, BIG] and len(made[BIG]) > 2 * 2**20
    return made


@pytest.fixture(scope="module")
def server():
    with KaggleStandIn(COMPETITION, username=USERNAME, key=KEY, page_cap=2) as standin:
        yield standin


@pytest.fixture
def kaggle(server, parts):
    """The stand-in serving parts 0-3 and a non-part file, with a clean log and no faults."""
    server.reset()
    for p, data in parts.items():
        server.add_file(dfdc.part_zip_name(p), data)
    server.add_file("sample_submission.csv", b"filename,label\n")
    return server


def _env(home: Path, *, creds: bool = True, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAGGLE_", "XDG_"))}
    env.update(HOME=str(home), KAGGLE_API_ENVIRONMENT="TEST", PYTHONPATH=str(ROOT))
    if creds:
        env.update(KAGGLE_USERNAME=USERNAME, KAGGLE_KEY=KEY)
    env.update(extra)
    return env


def dfd(tmp_path: Path, *args: str, creds: bool = True, **env: str):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "dfd.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env=_env(home, creds=creds, **env))


@pytest.fixture
def kaggle_env(monkeypatch, tmp_path):
    """This process talks to the stand-in with the planted credentials (for the library API)."""
    for name in [k for k in os.environ if k.startswith("KAGGLE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "TEST")
    monkeypatch.setenv("KAGGLE_USERNAME", USERNAME)
    monkeypatch.setenv("KAGGLE_KEY", KEY)


def assert_nothing_leaked(tmp_path: Path, *runs, secrets=(KEY, BASIC)):
    for run in runs:
        for secret in secrets:
            assert secret not in run.stdout and secret not in run.stderr
        assert SIGNATURE not in run.stdout + run.stderr  # signed download URLs stay out too
    for path in tmp_path.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            assert not any(s.encode() in blob for s in secrets), path


def test_download_fetches_the_selected_parts_then_skips_them(tmp_path, kaggle, parts):
    out = tmp_path / "raw"
    # VERBOSE=1 turns on the stock kaggle client's request dump, Authorization header included.
    first = dfd(tmp_path, "-v", "download", "--parts", "0-1", "--out", str(out), "--progress",
                VERBOSE="1")
    assert first.returncode == 0, first.stderr
    for p in (0, 1):
        zip_path = out / dfdc.part_zip_name(p)
        assert zip_path.read_bytes() == parts[p]
        with zipfile.ZipFile(zip_path) as zf:
            assert f"{dfdc.part_folder_name(p)}/{dfdc.METADATA}" in zf.namelist()
        receipt = json.loads((out / "_verified" / f"{dfdc.part_zip_name(p)}.json").read_text())
        assert receipt["size"] == len(parts[p]) and "md5" in receipt["checked"]
        assert f"part {p:02d}: fetched" in first.stdout
    assert not (out / dfdc.part_zip_name(2)).exists()
    assert "overall (2/2 files)" in first.stderr and dfdc.part_zip_name(1) in first.stderr
    listings = [s for s in kaggle.log if s.path.endswith("/ListDataFiles")]
    assert len(listings) == 3 and all(s.authorized for s in kaggle.log)  # 5 files, 2 a page

    kaggle.log.clear()
    again = dfd(tmp_path, "download", "--parts", "0-1", "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already present and verified") == 2
    assert kaggle.storage_gets() == []

    listing = dfd(tmp_path, "download", "--list", "--out", str(out))
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert [ln.split()[0] for ln in lines[:4]] == [dfdc.part_zip_name(p) for p in range(4)]
    assert [ln.split()[-1] for ln in lines[:4]] == ["present", "present", "missing", "missing"]
    assert f"{len(parts[2]):,d}" in lines[2] and lines[4].startswith("4 parts")
    assert_nothing_leaked(tmp_path, first, again, listing)


def test_a_dropped_connection_resumes_with_a_range_request(tmp_path, kaggle, parts):
    size = len(parts[BIG])
    kaggle.fault(Fault(drop_after=size * 3 // 4))
    out = tmp_path / "raw"
    run = dfd(tmp_path, "download", "--parts", str(BIG), "--out", str(out), "--backoff", "0.01")
    assert run.returncode == 0, run.stderr
    assert "connection dropped mid-transfer; retrying" in run.stderr
    assert (out / dfdc.part_zip_name(BIG)).read_bytes() == parts[BIG]
    cut, *rest = kaggle.storage_gets()
    assert cut.status == 200 and cut.body_bytes == size * 3 // 4
    [resumed] = [s for s in rest if s.status == 206]
    start = int(resumed.range.removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= size * 3 // 4 and resumed.body_bytes == size - start
    assert_nothing_leaked(tmp_path, run)


def test_an_interrupted_run_leaves_only_a_partial_that_the_next_run_resumes(tmp_path, kaggle,
                                                                              parts):
    size = len(parts[BIG])
    kaggle.fault(Fault(drop_after=size // 2))
    out = tmp_path / "raw"
    failed = dfd(tmp_path, "download", "--parts", str(BIG), "--out", str(out), "--retries", "0")
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines()[-1] == \
        f"dfd download: error: 1 of 1 part(s) failed: {BIG:02d}"
    assert "Traceback" not in failed.stderr
    partial = out / "_incoming" / dfdc.part_zip_name(BIG)
    kept = partial.stat().st_size
    assert 0 < kept < size
    assert not (out / dfdc.part_zip_name(BIG)).exists()  # nothing under the final name

    kaggle.log.clear()
    resumed = dfd(tmp_path, "download", "--parts", str(BIG), "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert (out / dfdc.part_zip_name(BIG)).read_bytes() == parts[BIG]
    ranges = [s.range for s in kaggle.storage_gets() if s.status == 206]
    assert ranges == [f"bytes={kept}-"]
    assert list((out / "_incoming").iterdir()) == []
    assert_nothing_leaked(tmp_path, failed, resumed)


def test_size_and_checksum_mismatches_are_detected_and_retried(tmp_path, kaggle, parts):
    size = len(parts[2])
    kaggle.fault(Fault(truncate_to=size - 1000), Fault(corrupt=True))
    out = tmp_path / "raw"
    run = dfd(tmp_path, "download", "--parts", "2", "--out", str(out), "--backoff", "0.01")
    assert run.returncode == 0, run.stderr
    assert f"size mismatch: {size - 1000} bytes downloaded, Kaggle lists {size}" in run.stderr
    assert "md5 mismatch" in run.stderr or "crc32c mismatch" in run.stderr
    assert [s.status for s in kaggle.storage_gets()] == [200, 200, 200]  # each from scratch
    assert (out / dfdc.part_zip_name(2)).read_bytes() == parts[2]

    # Out of retries: the wrong bytes never land under the final name, and no receipt.
    kaggle.log.clear()
    (out / dfdc.part_zip_name(2)).unlink()
    kaggle.fault(Fault(truncate_to=size // 3), Fault(truncate_to=size // 3))
    spent = dfd(tmp_path, "download", "--parts", "2", "--out", str(out), "--retries", "1",
                "--backoff", "0")
    assert spent.returncode == 1
    assert "gave up after 2 attempt(s): size mismatch" in spent.stdout
    assert not (out / dfdc.part_zip_name(2)).exists()
    assert_nothing_leaked(tmp_path, run, spent)


def test_a_copy_already_there_is_verified_by_checksum_not_downloaded(tmp_path, kaggle, parts,
                                                                     kaggle_env, caplog):
    from dfd.kaggle import download_parts

    out = tmp_path / "raw"
    out.mkdir()
    (out / dfdc.part_zip_name(0)).write_bytes(parts[0])  # fetched earlier with the kaggle CLI
    bad = bytearray(parts[1])
    bad[len(bad) // 2] ^= 0xFF
    (out / dfdc.part_zip_name(1)).write_bytes(bytes(bad))
    results = download_parts({0, 1}, str(out))
    assert [r.status for r in results] == ["present", "fetched"]
    assert "does not match Kaggle's checksum" in caplog.text
    assert (out / dfdc.part_zip_name(1)).read_bytes() == parts[1]
    assert (out / "_verified" / f"{dfdc.part_zip_name(0)}.json").exists()
    assert [s.status for s in kaggle.storage_gets()].count(200) == 3  # 2 checks, 1 download


def test_missing_credentials_give_one_line_and_leak_nothing(tmp_path, kaggle):
    out = tmp_path / "raw"
    runs = []
    # Nothing anywhere.
    runs.append(dfd(tmp_path, "download", "--parts", "0", "--out", str(out), creds=False))
    # Half a credential: a key in the environment, no username.
    runs.append(dfd(tmp_path, "download", "--parts", "0", "--out", str(out), creds=False,
                    KAGGLE_KEY=KEY))
    # A kaggle.json holding only a key.
    config = tmp_path / "kaggle-config"
    config.mkdir()
    (config / "kaggle.json").write_text(json.dumps({"key": KEY}))
    (config / "kaggle.json").chmod(0o600)
    runs.append(dfd(tmp_path, "download", "--parts", "0", "--out", str(out), creds=False,
                    KAGGLE_CONFIG_DIR=str(config)))
    (config / "kaggle.json").unlink()  # the planted file itself is not output
    for run in runs:
        assert run.returncode == 1 and run.stdout == ""
        [line] = run.stderr.splitlines()
        assert line.startswith("dfd download: error: ")
    assert "no Kaggle credentials: set KAGGLE_USERNAME and KAGGLE_KEY" in runs[0].stderr
    assert "KAGGLE_USERNAME is not set" in runs[1].stderr
    assert "KAGGLE_USERNAME is not set" in runs[2].stderr
    assert kaggle.log == [] and not out.exists()
    assert_nothing_leaked(tmp_path, *runs)


def test_refusals_stop_with_a_line_that_says_what_to_do(tmp_path, kaggle):
    out = str(tmp_path / "raw")
    wrong_key = dfd(tmp_path, "download", "--parts", "0", "--out", out,
                    KAGGLE_KEY="not-the-key")
    assert wrong_key.returncode == 1
    assert wrong_key.stderr.splitlines() == [
        "dfd download: error: Kaggle rejected the credentials from the KAGGLE_USERNAME and "
        "KAGGLE_KEY environment variables (HTTP 401)"]
    kaggle.rules_accepted = False
    rules = dfd(tmp_path, "download", "--parts", "0", "--out", out)
    assert rules.returncode == 1 and len(rules.stderr.splitlines()) == 1
    assert "accept the competition's rules at https://www.kaggle.com/competitions/" \
           "deepfake-detection-challenge/rules" in rules.stderr
    assert kaggle.storage_gets() == []
    assert_nothing_leaked(tmp_path, wrong_key, rules)


def test_parts_the_competition_does_not_list_are_refused_before_any_download(tmp_path, kaggle,
                                                                             kaggle_env):
    from dfd.errors import DfdError
    from dfd.kaggle import download_parts

    with pytest.raises(DfdError) as refused:
        download_parts({2, 3, 4, 5, 6}, str(tmp_path / "raw"))
    assert str(refused.value) == \
        "deepfake-detection-challenge has no part(s) 4-6; it lists parts 0-3"
    assert kaggle.storage_gets() == [] and not (tmp_path / "raw").exists()


def test_fetch_part_for_a_beam_stage_retries_a_throttled_request(tmp_path, kaggle, parts,
                                                                  kaggle_env):
    from dfd import kaggle as kaggle_mod

    kaggle.fault(Fault(status=503, retry_after=0))
    retry = kaggle_mod.RetryPolicy(attempts=3, backoff_s=0.01)
    staging = str(tmp_path / "staging")
    uri = kaggle_mod.fetch_part(COMPETITION, 1, staging, retry=retry)
    assert uri == f"{staging}/{dfdc.part_zip_name(1)}"
    assert Path(uri).read_bytes() == parts[1]
    assert [s.status for s in kaggle.storage_gets()] == [503, 200]
    kaggle.log.clear()
    assert kaggle_mod.fetch_part(COMPETITION, 1, staging, retry=retry) == uri
    assert kaggle.storage_gets() == []


def test_backoff_doubles_is_capped_and_honours_retry_after():
    from dfd.kaggle import RetryPolicy

    policy = RetryPolicy(attempts=8, backoff_s=2.0, max_backoff_s=30.0)
    waits = [policy.delay(n) for n in range(1, 7)]
    assert all(1.0 * 2 ** (n - 1) <= w <= 2.0 * 2 ** (n - 1) for n, w in enumerate(waits[:4], 1))
    assert all(w <= 30.0 for w in waits) and waits[-1] >= 15.0
    assert policy.delay(1, retry_after=7.0) == 7.0
    assert policy.delay(1, retry_after=3600.0) == 30.0


def test_the_sync_cronjob_runs_daily_one_at_a_time_with_credentials_from_a_secret():
    text = (ROOT / "infra" / "k8s" / "dfd-sync-cronjob.yaml").read_text()
    import kubernetes_validate

    cron, scratch = yaml.safe_load_all(text)
    for doc in (cron, scratch):  # strict: a misspelt field fails, not just a missing one
        kubernetes_validate.validate(doc, "1.30", strict=True)
    assert cron["kind"] == "CronJob" and cron["apiVersion"] == "batch/v1"
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    minute, hour, *rest = spec["schedule"].split()
    assert rest == ["*", "*", "*"] and minute.isdigit() and hour.isdigit()
    [container] = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    argv = container.get("command", []) + container.get("args", [])
    assert argv[:2] == ["dfd", "sync"]
    assert argv[argv.index("--source") + 1] == f"kaggle://{COMPETITION}"
    claim = next(v for v in spec["jobTemplate"]["spec"]["template"]["spec"]["volumes"]
                 if v["name"] == "scratch")["persistentVolumeClaim"]["claimName"]
    assert scratch["kind"] == "PersistentVolumeClaim" and scratch["metadata"]["name"] == claim
    env = {e["name"]: e for e in container["env"]}
    assert {"KAGGLE_USERNAME", "KAGGLE_KEY"} <= set(env)
    for name, entry in env.items():
        if name.startswith("KAGGLE_") and name != "KAGGLE_CONFIG_DIR":
            assert "value" not in entry and entry["valueFrom"]["secretKeyRef"]["name"]
