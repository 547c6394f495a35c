"""`dfd download --links`: DFDC parts from signed links, against a local stand-in of the signed
cloud-storage URLs the data page hands out (standins/links.py), through the CLI."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from dfd import dfdc
from standins.links import Fault, LinksStandIn

ROOT = Path(__file__).resolve().parents[1]
FRESH = ("accept the rules at https://www.kaggle.com/competitions/deepfake-detection-challenge/"
         "rules and copy fresh links from the competition's data page")
CHUNK = 256 * 2**10  # what a cut connection may lose of the chunk in flight
BIG = 3


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict[int, bytes]:
    """Parts 0-2 from dfd.synth (real synthetic DFDC parts), part 3 over 2 MiB."""
    from dfd import config, synth
    from tests.test_kaggle import big_video

    cfg = config.override(config.preset("synth", "smoke"), parts=3, originals=1,
                          fakes_per_original=1, width=256, height=144, frames=12, workers=1)
    made = {dfdc.parse_part_name(p.name): p.read_bytes()
            for p in synth.generate(tmp_path_factory.mktemp("synth"), cfg)}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        folder = dfdc.part_folder_name(BIG)
        zf.writestr(f"{folder}/{dfdc.METADATA}",
                    json.dumps({"bigclipaaaa.mp4": {"label": "REAL", "split": "train"}}))
        zf.writestr(f"{folder}/bigclipaaaa.mp4", big_video())
    made[BIG] = buf.getvalue()
    return made


@pytest.fixture(scope="module")
def server():
    with LinksStandIn() as standin:
        yield standin


@pytest.fixture
def storage(server, parts):
    """The stand-in holding parts 0-3 (part 1 a composite object: crc32c only; part 2 from a
    mirror that answers Content-MD5), clean log."""
    server.reset()
    for p, data in parts.items():
        server.add(dfdc.part_zip_name(p), data, crc32c_only=p == 1, content_md5=p == 2)
    return server


def signatures(text: str) -> list[str]:
    return [line.split("Signature=")[1] for line in text.splitlines() if "Signature=" in line]


def links_file(path: Path, *urls: str) -> Path:
    path.write_text("# DFDC part links, copied from the data page\n\n"
                    + "\n".join(urls) + "\n")
    return path


def dfd(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAGGLE_", "XDG_"))}
    env.update(HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "dfd.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env=env)


def assert_no_signature(tmp_path: Path, links: Path, *runs) -> None:
    secrets = signatures(links.read_text())
    assert secrets
    for secret in secrets:
        for run in runs:
            assert secret not in run.stdout + run.stderr
            assert "Signature=" not in run.stdout + run.stderr
        for path in tmp_path.rglob("*"):
            if path.is_file() and path != links:
                assert secret.encode() not in path.read_bytes(), path


def test_links_download_in_parallel_verify_commit_then_transfer_nothing(tmp_path, storage,
                                                                          parts):
    out = tmp_path / "raw"
    links = links_file(tmp_path / "links.txt",
                       *(storage.link(dfdc.part_zip_name(p)) for p in range(4)))
    first = dfd(tmp_path, "-v", "download", "--links", str(links), "--out", str(out),
                "--parts", "0-2", "--jobs", "3", "--progress")
    assert first.returncode == 0, first.stderr
    for p in range(3):
        assert (out / dfdc.part_zip_name(p)).read_bytes() == parts[p]
        receipt = json.loads((out / "_verified" / f"{dfdc.part_zip_name(p)}.json").read_text())
        assert receipt["size"] == len(parts[p])
        assert receipt["checked"] == {0: ["size", "crc32c", "md5"], 1: ["size", "crc32c"],
                                      2: ["size", "md5"]}[p]
        assert receipt["link"] == (f"http://127.0.0.1:{storage.port}/kaggle-competitions-"
                                   f"detached-data/16880/{dfdc.part_zip_name(p)}")
        assert f"part {p:02d}: fetched" in first.stdout
    assert not (out / dfdc.part_zip_name(BIG)).exists()
    assert "overall (3/3 files)" in first.stderr
    assert first.stdout.splitlines()[-1] == "3 fetched, 0 already present, 0 failed"
    assert list((out / "_incoming").iterdir()) == []

    # Hours later the links have expired: what is committed and verified is not asked again.
    storage.log.clear()
    stale = links_file(tmp_path / "stale.txt", *(storage.link(dfdc.part_zip_name(p),
                                                               expires_in=-60)
                                                  for p in range(3)))
    again = dfd(tmp_path, "download", "--links", str(stale), "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already present and verified") == 3
    assert storage.log == []
    assert_no_signature(tmp_path, links, first, again)
    assert_no_signature(tmp_path, stale, first, again)


def test_a_cut_connection_resumes_with_range_and_if_range(tmp_path, storage, parts):
    name, size = dfdc.part_zip_name(BIG), len(parts[BIG])
    storage.fault(Fault(drop_after=size * 3 // 4, name=name))
    out = tmp_path / "raw"
    links = links_file(tmp_path / "links.txt", storage.link(name))
    run = dfd(tmp_path, "download", "--links", str(links), "--out", str(out), "--backoff",
              "0.01")
    assert run.returncode == 0, run.stderr
    assert f"{name}: connection dropped mid-transfer; retrying" in run.stderr
    assert (out / name).read_bytes() == parts[BIG]
    cut, resumed = storage.object_gets()
    assert cut.status == 200 and cut.body_bytes == size * 3 // 4
    assert resumed.status == 206 and resumed.if_range == storage.objects[name].etag
    start = int(resumed.range.removeprefix("bytes=").rstrip("-"))
    assert size * 3 // 4 - CHUNK <= start <= size * 3 // 4
    assert resumed.body_bytes == size - start
    assert storage.bytes_served(name) <= size + CHUNK  # about its size once, not twice
    assert_no_signature(tmp_path, links, run)


def test_an_interrupted_run_leaves_a_partial_that_the_next_run_resumes(tmp_path, storage,
                                                                       parts):
    name, size = dfdc.part_zip_name(BIG), len(parts[BIG])
    storage.fault(Fault(drop_after=size // 2, name=name))
    out = tmp_path / "raw"
    links = links_file(tmp_path / "links.txt", storage.link(name), storage.link(
        dfdc.part_zip_name(0)))
    failed = dfd(tmp_path, "download", "--links", str(links), "--out", str(out), "--retries",
                 "0")
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines()[-1] == \
        f"dfd download: error: 1 of 2 part(s) failed: {BIG:02d}"
    assert "Traceback" not in failed.stderr
    assert (out / dfdc.part_zip_name(0)).read_bytes() == parts[0]  # the other link went on
    kept = (out / "_incoming" / name).stat().st_size
    assert 0 < kept < size and not (out / name).exists()

    storage.log.clear()
    resumed = dfd(tmp_path, "download", "--links", str(links), "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert (out / name).read_bytes() == parts[BIG]
    [get] = storage.object_gets()
    assert (get.status, get.range, get.if_range) == (206, f"bytes={kept}-",
                                                     storage.objects[name].etag)
    assert not (out / "_incoming" / name).exists()
    assert_no_signature(tmp_path, links, failed, resumed)


def test_links_that_do_not_give_the_file_get_one_line_each_and_the_rest_go_on(tmp_path,
                                                                              storage, parts):
    good = storage.link(dfdc.part_zip_name(0))
    expired = storage.link(dfdc.part_zip_name(1), expires_in=-3600)
    tampered = storage.link(dfdc.part_zip_name(2)).replace("Signature=", "Signature=x")
    sign_in = storage.sign_in_link(dfdc.part_zip_name(BIG))
    missing = storage.link(dfdc.part_zip_name(7))
    links = links_file(tmp_path / "links.txt", good, expired, tampered, sign_in, missing)
    out = tmp_path / "raw"
    run = dfd(tmp_path, "-v", "download", "--links", str(links), "--out", str(out))
    assert run.returncode == 1
    lines = run.stdout.splitlines()
    assert lines[0].startswith("part 00: fetched")
    assert lines[1:5] == [
        f"part 01: FAILED: part 01 (dfdc_train_part_01.zip): the link has expired "
        f"(HTTP 400 ExpiredToken): {FRESH}",
        f"part 02: FAILED: part 02 (dfdc_train_part_02.zip): the link was refused "
        f"(HTTP 403 SignatureDoesNotMatch); it may have expired: {FRESH}",
        f"part 03: FAILED: part 03 (dfdc_train_part_03.zip): it answered a web page (sign-in "
        f"or rules page), not the file: {FRESH}",
        f"part 07: FAILED: part 07 (dfdc_train_part_07.zip): nothing at that link "
        f"(HTTP 404 NoSuchKey): {FRESH}"]
    assert run.stderr.strip().splitlines()[-1] == \
        "dfd download: error: 4 of 5 part(s) failed: 01, 02, 03, 07"
    assert (out / dfdc.part_zip_name(0)).read_bytes() == parts[0]
    assert len(storage.log) == 5  # a refusal is final: never retried
    assert sorted(p.name for p in out.glob("*.zip")) == [dfdc.part_zip_name(0)]
    assert list((out / "_incoming").iterdir()) == []
    assert "StringToSign" not in run.stdout + run.stderr  # nothing of the error body
    assert_no_signature(tmp_path, links, run)


def test_wrong_bytes_and_server_errors_are_retried_from_scratch(tmp_path, storage, parts):
    name = dfdc.part_zip_name(2)
    storage.fault(Fault(corrupt=True), Fault(status=503))
    links = links_file(tmp_path / "links.txt", storage.link(name))
    out = tmp_path / "raw"
    run = dfd(tmp_path, "download", "--links", str(links), "--out", str(out), "--backoff", "0")
    assert run.returncode == 0, run.stderr
    assert f"{name}: crc32c mismatch" in run.stderr or f"{name}: md5 mismatch" in run.stderr
    assert f"{name}: HTTP 503; retrying" in run.stderr
    assert [(g.status, g.range) for g in storage.object_gets()] == [(200, None), (503, None),
                                                                    (200, None)]
    assert (out / name).read_bytes() == parts[2]

    # Out of retries: the wrong bytes never land under the final name, and no receipt.
    (out / name).unlink()
    (out / "_verified" / f"{name}.json").unlink()
    storage.fault(Fault(corrupt=True), Fault(corrupt=True))
    spent = dfd(tmp_path, "download", "--links", str(links), "--out", str(out), "--retries",
                "1", "--backoff", "0")
    assert spent.returncode == 1
    assert f"part 02: FAILED: {name}: gave up after 2 attempt(s): " in spent.stdout
    assert not (out / name).exists() and not (out / "_verified" / f"{name}.json").exists()
    assert_no_signature(tmp_path, links, run, spent)


def test_dfdc_train_all_zip_is_staged_as_its_parts(tmp_path, storage, parts):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for p in range(3):
            zf.writestr(f"dfdc_train_all/{dfdc.part_zip_name(p)}", parts[p])
    storage.add("dfdc_train_all.zip", buf.getvalue())
    links = links_file(tmp_path / "links.txt", storage.link("dfdc_train_all.zip"))
    out = tmp_path / "raw"
    run = dfd(tmp_path, "download", "--links", str(links), "--out", str(out), "--parts", "1-2")
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in out.glob("dfdc_train_part_*.zip")) == \
        [dfdc.part_zip_name(1), dfdc.part_zip_name(2)]
    for p in (1, 2):
        assert (out / dfdc.part_zip_name(p)).read_bytes() == parts[p]
        receipt = json.loads((out / "_verified" / f"{dfdc.part_zip_name(p)}.json").read_text())
        assert receipt["source"] == "dfdc_train_all.zip" and receipt["size"] == len(parts[p])
    assert "part 01: fetched" in run.stdout and "part 02: fetched" in run.stdout

    storage.log.clear()
    again = dfd(tmp_path, "download", "--links", str(links), "--out", str(out), "--parts", "1-2")
    assert again.returncode == 0, again.stderr
    assert storage.log == [] and again.stdout.count("already present and verified") == 3


def test_a_links_file_that_is_not_one_is_refused_in_one_line(tmp_path, storage):
    links = links_file(tmp_path / "links.txt", storage.link(dfdc.part_zip_name(0)),
                       "ftp://example.com/dfdc_train_part_01.zip?Signature=s3cr3tsignature")
    run = dfd(tmp_path, "download", "--links", str(links), "--out", str(tmp_path / "raw"))
    assert run.returncode == 1 and run.stdout == ""
    [line] = run.stderr.splitlines()
    assert line == (f"dfd download: error: {links} line 4: not an http(s) link: "
                    f"'ftp://example.com/dfdc_train_part_01.zip?***'")
    no_part = links_file(tmp_path / "few.txt", storage.link(dfdc.part_zip_name(0)))
    run = dfd(tmp_path, "download", "--links", str(no_part), "--out", str(tmp_path / "raw"),
              "--parts", "0-2")
    assert run.stderr.splitlines() == ["dfd download: error: the links file has no link for "
                                       "part(s) 1-2; it links part(s) 0"]
    assert storage.log == []


def test_links_download_into_a_bucket_and_a_second_run_transfers_nothing(tmp_path, storage,
                                                                         parts):
    from tests import object_stores

    with object_stores.moto_s3(tmp_path) as s3, object_stores.environ(s3.env):
        raw = s3.make_bucket("dfdc-raw") + "/parts"
        name, size = dfdc.part_zip_name(BIG), len(parts[BIG])
        storage.fault(Fault(drop_after=size // 2, name=name))
        links = links_file(tmp_path / "links.txt", storage.link(name),
                           storage.link(dfdc.part_zip_name(0)))
        scratch = tmp_path / "scratch"
        env = {**os.environ, **s3.env}
        run = subprocess.run([sys.executable, "-m", "dfd.cli", "download", "--links",
                              str(links), "--out", raw, "--scratch", str(scratch),
                              "--backoff", "0"], capture_output=True, text=True, timeout=120,
                             cwd=ROOT, env={**env, "HOME": str(tmp_path)})
        assert run.returncode == 0, run.stderr
        from dfd import storage as store

        for p in (BIG, 0):
            with store.open_read(f"{raw}/{dfdc.part_zip_name(p)}") as f:
                assert f.read() == parts[p]
            receipt = json.loads(store.read_text(f"{raw}/_verified/{dfdc.part_zip_name(p)}"
                                                 f".json"))
            assert receipt["size"] == len(parts[p])
        assert storage.bytes_served(name) <= size + CHUNK  # resumed from the scratch copy
        assert [p for p in scratch.rglob("*") if p.is_file()] == []

        storage.log.clear()
        again = subprocess.run([sys.executable, "-m", "dfd.cli", "download", "--links",
                                str(links), "--out", raw, "--scratch", str(scratch)],
                               capture_output=True, text=True, timeout=120, cwd=ROOT,
                               env={**env, "HOME": str(tmp_path)})
        assert again.returncode == 0, again.stderr
        assert again.stdout.count("already present and verified") == 2 and storage.log == []
        assert_no_signature(tmp_path, links, run, again)
