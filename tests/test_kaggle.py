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
from standins.kaggle import Fault, KaggleStandIn

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


BIG = "test_videos/bigclipaaaa.mp4"  # the file that interrupted-download tests cut
SUBMISSION = b"filename,label\naassnaulhq.mp4,0.5\nbigclipaaaa.mp4,0.5\n"


def big_video() -> bytes:
    """A real H.264 clip of a real face photo over 2 MiB. The kaggle downloader writes in
    1 MiB reads, so only a cut past the first MiB leaves bytes to resume from; at DFDC's
    bitrate dfd.synth would need about a minute to render that much, so this clip keeps
    sensor-like noise at high quality instead."""
    from skimage import data

    face = data.astronaut()[::2, ::2].astype(np.float32)  # 256x256
    rng = np.random.default_rng(3)
    frames = np.clip(face + rng.normal(0, 28, (40, *face.shape)), 0, 255)
    return _video(frames.astype(np.uint8))


@pytest.fixture(scope="module")
def api_files(tmp_path_factory) -> dict[str, bytes]:
    """What Kaggle's API serves of DFDC, one file per path: a labelled sample (the members of a
    real synthetic part: metadata.json and its clips), unlabelled test videos, the template."""
    from dfd import config, synth

    cfg = config.override(config.preset("synth", "smoke"), parts=1, originals=1,
                          fakes_per_original=1, width=256, height=144, frames=12, workers=1)
    [made] = synth.generate(tmp_path_factory.mktemp("synth"), cfg)
    files = {}
    with zipfile.ZipFile(made) as zf:
        for member in zf.namelist():
            if not member.endswith("/"):
                files["train_sample_videos/" + member.rsplit("/", 1)[-1]] = zf.read(member)
    clips = [v for k, v in files.items() if k.endswith(".mp4")]
    files["test_videos/aassnaulhq.mp4"] = clips[0]
    files[BIG] = big_video()
    files["sample_submission.csv"] = SUBMISSION
    assert len(files[BIG]) > 2 * 2**20
    return files


@pytest.fixture(scope="module")
def server():
    with KaggleStandIn(COMPETITION, username=USERNAME, key=KEY, page_cap=2) as standin:
        yield standin


@pytest.fixture
def kaggle(server, api_files):
    """The stand-in serving DFDC's API files, with a clean log and no faults."""
    server.reset()
    for name, data in api_files.items():
        server.add_file(name, data)
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


def test_kaggle_files_fetches_the_sample_the_test_videos_and_the_template_then_skips_them(
        tmp_path, kaggle, api_files):
    out = tmp_path / "raw"
    # VERBOSE=1 turns on the stock kaggle client's request dump, Authorization header included.
    first = dfd(tmp_path, "-v", "download", "--kaggle-files", "--out", str(out), "--progress",
                "--jobs", "2", VERBOSE="1")
    assert first.returncode == 0, first.stderr
    for name, data in api_files.items():
        assert (out / name).read_bytes() == data, name
        receipt = json.loads((out / "_verified" / f"{name}.json").read_text())
        assert receipt["size"] == len(data) and "md5" in receipt["checked"]
    assert f"{len(api_files)} fetched, 0 already present, 0 failed" in first.stdout
    assert f"overall ({len(api_files)}/{len(api_files)} files)" in first.stderr
    # The sample reads as a labelled part: its metadata.json labels every clip in the folder.
    meta = json.loads((out / "train_sample_videos" / dfdc.METADATA).read_text())
    assert sorted(meta) == sorted(p.name for p in (out / "train_sample_videos").glob("*.mp4"))
    listings = [s for s in kaggle.log if s.path.endswith("/ListDataFiles")]
    assert len(listings) == 4 and all(s.authorized for s in kaggle.log)  # 7 files, 2 a page

    kaggle.log.clear()
    again = dfd(tmp_path, "download", "--kaggle-files", "test_videos,sample_submission.csv",
                "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert "0 fetched, 3 already present, 0 failed" in again.stdout
    assert kaggle.storage_gets() == []

    listing = dfd(tmp_path, "download", "--list", "--out", str(out))
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert [ln.split()[0] for ln in lines[:len(api_files)]] == sorted(api_files)
    assert all(ln.split()[-1] == "present" for ln in lines[:len(api_files)])
    assert lines[len(api_files)].startswith(f"{len(api_files)} files")
    assert lines[-1] == ("the training parts are not among them: they come as links from the "
                         "data page (dfd download --links FILE)")
    assert_nothing_leaked(tmp_path, first, again, listing)


def test_a_folder_the_api_lists_as_one_zip_is_fetched_and_unpacked(tmp_path, kaggle, api_files):
    kaggle.reset()
    tests = {k: v for k, v in api_files.items() if k.startswith("test_videos/")}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in tests.items():
            zf.writestr(name, data)
    kaggle.add_file("test_videos.zip", buf.getvalue())
    out = tmp_path / "raw"
    run = dfd(tmp_path, "download", "--kaggle-files", "test_videos", "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert "test_videos.zip: fetched" in run.stdout
    for name, data in tests.items():
        assert (out / name).read_bytes() == data
    assert not list(out.glob(".unpack-*"))


def test_parts_asked_of_the_api_get_one_line_that_names_links(tmp_path, kaggle, kaggle_env):
    out = tmp_path / "raw"
    kaggle.add_file("train_sample_videos.zip", b"PK\x05\x06" + bytes(18))  # the zip shape
    runs = [dfd(tmp_path, "download", "--parts", "0-4", "--out", str(out)),
            dfd(tmp_path, "download", "--kaggle-files", "--parts", "0", "--out", str(out))]
    for run in runs:
        assert run.returncode == 1 and run.stdout == ""
        [line] = run.stderr.splitlines()
        assert line.startswith("dfd download: error: Kaggle's API does not serve the DFDC "
                               "training parts")
        assert "use --links FILE" in line and "/competitions/deepfake-detection-challenge/rules"\
            in line
    assert kaggle.storage_gets() == [] and not out.exists()

    # The stand-in refuses to serve a part, and a request for one by name answers 404, as the
    # real API does (kaggle-cli issue #413): the error says where parts come from instead.
    with pytest.raises(ValueError):
        kaggle.add_file(dfdc.part_zip_name(0), b"PK")
    from dfd.errors import DfdError
    from dfd.kaggle import Competition, CompetitionFile

    with pytest.raises(DfdError, match="use --links FILE"):
        Competition(COMPETITION).fetch(CompetitionFile("dfdc_train_all.zip", 10), str(out))
    assert [s.status for s in kaggle.log if "DownloadDataFile" in s.path] == [404]


def test_a_dropped_connection_resumes_with_a_range_request(tmp_path, kaggle, api_files):
    size = len(api_files[BIG])
    kaggle.reset()
    kaggle.add_file(BIG, api_files[BIG])
    kaggle.fault(Fault(drop_after=size * 3 // 4))
    out = tmp_path / "raw"
    run = dfd(tmp_path, "download", "--kaggle-files", "test_videos", "--out", str(out),
              "--backoff", "0.01", "--jobs", "1")
    assert run.returncode == 0, run.stderr
    assert "connection dropped mid-transfer; retrying" in run.stderr
    assert (out / BIG).read_bytes() == api_files[BIG]
    cut, *rest = [s for s in kaggle.storage_gets() if s.path.split("?")[0].endswith(BIG)]
    assert cut.status == 200 and cut.body_bytes == size * 3 // 4
    [resumed] = [s for s in rest if s.status == 206]
    start = int(resumed.range.removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= size * 3 // 4 and resumed.body_bytes == size - start
    assert_nothing_leaked(tmp_path, run)


def test_an_interrupted_run_leaves_only_a_partial_that_the_next_run_resumes(tmp_path, kaggle,
                                                                              api_files):
    size = len(api_files[BIG])
    kaggle.reset()
    kaggle.add_file(BIG, api_files[BIG])
    kaggle.fault(Fault(drop_after=size // 2))
    out = tmp_path / "raw"
    failed = dfd(tmp_path, "download", "--kaggle-files", "test_videos", "--out", str(out),
                 "--retries", "0")
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines()[-1] == \
        f"dfd download: error: 1 of 1 file(s) failed: {BIG}"
    assert "Traceback" not in failed.stderr
    partial = out / "_incoming" / BIG
    kept = partial.stat().st_size
    assert 0 < kept < size
    assert not (out / BIG).exists()  # nothing under the final name

    kaggle.log.clear()
    resumed = dfd(tmp_path, "download", "--kaggle-files", "test_videos", "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert (out / BIG).read_bytes() == api_files[BIG]
    ranges = [s.range for s in kaggle.storage_gets() if s.status == 206]
    assert ranges == [f"bytes={kept}-"]
    assert list((out / "_incoming" / "test_videos").iterdir()) == []
    assert_nothing_leaked(tmp_path, failed, resumed)


def test_size_and_checksum_mismatches_are_detected_and_retried(tmp_path, kaggle, api_files):
    name = "sample_submission.csv"
    size = len(api_files[name])
    kaggle.fault(Fault(truncate_to=size - 10), Fault(corrupt=True))
    out = tmp_path / "raw"
    run = dfd(tmp_path, "download", "--kaggle-files", name, "--out", str(out), "--backoff",
              "0.01")
    assert run.returncode == 0, run.stderr
    assert f"size mismatch: {size - 10} bytes downloaded, Kaggle lists {size}" in run.stderr
    assert "md5 mismatch" in run.stderr or "crc32c mismatch" in run.stderr
    assert [s.status for s in kaggle.storage_gets()] == [200, 200, 200]  # each from scratch
    assert (out / name).read_bytes() == api_files[name]

    # Out of retries: the wrong bytes never land under the final name, and no receipt.
    kaggle.log.clear()
    (out / name).unlink()
    kaggle.fault(Fault(truncate_to=size // 3), Fault(truncate_to=size // 3))
    spent = dfd(tmp_path, "download", "--kaggle-files", name, "--out", str(out), "--retries",
                "1", "--backoff", "0")
    assert spent.returncode == 1
    assert "gave up after 2 attempt(s): size mismatch" in spent.stdout
    assert not (out / name).exists()
    assert_nothing_leaked(tmp_path, run, spent)


def test_a_copy_already_there_is_verified_by_checksum_not_downloaded(tmp_path, kaggle,
                                                                     api_files, kaggle_env,
                                                                     caplog):
    from dfd.kaggle import download_files

    out = tmp_path / "raw"
    good, bad = "test_videos/aassnaulhq.mp4", "sample_submission.csv"
    (out / "test_videos").mkdir(parents=True)
    (out / good).write_bytes(api_files[good])  # fetched earlier with the kaggle CLI
    corrupt = bytearray(api_files[bad])
    corrupt[len(corrupt) // 2] ^= 0xFF
    (out / bad).write_bytes(bytes(corrupt))
    results = download_files([good, bad], str(out), jobs=1)
    assert [r.status for r in results] == ["present", "fetched"]
    assert "does not match Kaggle's checksum" in caplog.text
    assert (out / bad).read_bytes() == api_files[bad]
    assert (out / "_verified" / f"{good}.json").exists()
    assert [s.status for s in kaggle.storage_gets()].count(200) == 3  # 2 checks, 1 download


def test_missing_credentials_give_one_line_and_leak_nothing(tmp_path, kaggle):
    out = tmp_path / "raw"
    runs = []
    # Nothing anywhere.
    runs.append(dfd(tmp_path, "download", "--kaggle-files", "--out", str(out), creds=False))
    # Half a credential: a key in the environment, no username.
    runs.append(dfd(tmp_path, "download", "--kaggle-files", "--out", str(out), creds=False,
                    KAGGLE_KEY=KEY))
    # A kaggle.json holding only a key.
    config = tmp_path / "kaggle-config"
    config.mkdir()
    (config / "kaggle.json").write_text(json.dumps({"key": KEY}))
    (config / "kaggle.json").chmod(0o600)
    runs.append(dfd(tmp_path, "download", "--kaggle-files", "--out", str(out), creds=False,
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
    wrong_key = dfd(tmp_path, "download", "--kaggle-files", "--out", out,
                    KAGGLE_KEY="not-the-key")
    assert wrong_key.returncode == 1
    assert wrong_key.stderr.splitlines() == [
        "dfd download: error: Kaggle rejected the credentials from the KAGGLE_USERNAME and "
        "KAGGLE_KEY environment variables (HTTP 401)"]
    kaggle.rules_accepted = False
    rules = dfd(tmp_path, "download", "--kaggle-files", "--out", out)
    assert rules.returncode == 1 and len(rules.stderr.splitlines()) == 1
    assert "accept the competition's rules at https://www.kaggle.com/competitions/" \
           "deepfake-detection-challenge/rules" in rules.stderr
    assert kaggle.storage_gets() == []
    assert_nothing_leaked(tmp_path, wrong_key, rules)


def test_what_the_competition_does_not_list_is_refused_before_any_download(tmp_path, kaggle,
                                                                           kaggle_env):
    from dfd.errors import DfdError
    from dfd.kaggle import download_files

    with pytest.raises(DfdError) as refused:
        download_files(["test_videos", "train_videos"], str(tmp_path / "raw"))
    assert str(refused.value) == ("the competition lists no 'train_videos'; it serves "
                                  "sample_submission.csv, test_videos, train_sample_videos")
    assert kaggle.storage_gets() == [] and not (tmp_path / "raw").exists()


def test_a_throttled_request_is_retried_after_the_time_the_server_asks(tmp_path, kaggle,
                                                                         api_files, kaggle_env):
    from dfd import kaggle as kaggle_mod

    kaggle.fault(Fault(status=503, retry_after=0))
    retry = kaggle_mod.RetryPolicy(attempts=3, backoff_s=0.01)
    staging = str(tmp_path / "staging")
    [result] = kaggle_mod.download_files(["sample_submission.csv"], staging, retry=retry)
    assert result.status == "fetched"
    assert Path(result.uri).read_bytes() == api_files["sample_submission.csv"]
    assert [s.status for s in kaggle.storage_gets()] == [503, 200]
    kaggle.log.clear()
    [again] = kaggle_mod.download_files(["sample_submission.csv"], staging, retry=retry)
    assert again.status == "present" and kaggle.storage_gets() == []


def test_backoff_doubles_is_capped_and_honours_retry_after():
    from dfd.kaggle import RetryPolicy

    policy = RetryPolicy(attempts=8, backoff_s=2.0, max_backoff_s=30.0)
    waits = [policy.delay(n) for n in range(1, 7)]
    assert all(1.0 * 2 ** (n - 1) <= w <= 2.0 * 2 ** (n - 1) for n, w in enumerate(waits[:4], 1))
    assert all(w <= 30.0 for w in waits) and waits[-1] >= 15.0
    assert policy.delay(1, retry_after=7.0) == 7.0
    assert policy.delay(1, retry_after=3600.0) == 30.0


def test_the_sync_cronjob_runs_daily_one_at_a_time_with_its_links_from_a_secret():
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
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    argv = container.get("command", []) + container.get("args", [])
    assert argv[:2] == ["dfd", "sync"] and "--source" not in argv
    # The signed part links are credentials: a file mounted from a Secret, readable by the pod.
    links = Path(argv[argv.index("--links") + 1])
    [mount] = [m for m in container["volumeMounts"] if links.is_relative_to(m["mountPath"])]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert mount["readOnly"] and volume["secret"]["secretName"]
    assert volume["secret"]["defaultMode"] & 0o077 == 0o040  # owner and fsGroup, nobody else
    assert pod["securityContext"]["fsGroup"]
    claim = next(v for v in pod["volumes"] if v["name"] == "scratch")[
        "persistentVolumeClaim"]["claimName"]
    assert scratch["kind"] == "PersistentVolumeClaim" and scratch["metadata"]["name"] == claim
    env = {e["name"]: e for e in container["env"]}
    for name, entry in env.items():
        if name.startswith("KAGGLE_") and name != "KAGGLE_CONFIG_DIR":
            assert "value" not in entry and entry["valueFrom"]["secretKeyRef"]["name"]
