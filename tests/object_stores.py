"""S3 and GCS servers on 127.0.0.1 that speak the real APIs, for tests of the bucket paths.

- S3: moto in server mode (``python -m moto.server``). It implements S3's conditional writes
  (``If-None-Match: *`` to create, ``If-Match: <ETag>`` to replace or delete): checked in
  tests/test_object_stores.py.
- GCS: gcp-storage-emulator (``gcp-storage-emulator start --in-memory``). It serves create,
  read, list, delete, but ignores every generation precondition (``ifGenerationMatch``): a
  second create with ``if_generation_match=0`` succeeds there, where real GCS answers 412.

Each server runs as its own process (Beam and Ray workers in other processes reach it over
HTTP) and is stopped after. Clients find it only through the standard variables, which
``env`` lists: nothing dfd-specific.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 60
# google-auth and the AWS SDKs probe a cloud metadata server when they find no credentials;
# these keep every such probe on loopback (a closed port) or off.
NO_METADATA = {"AWS_EC2_METADATA_DISABLED": "true", "NO_GCE_CHECK": "True",
               "GCE_METADATA_HOST": "127.0.0.1:9", "GCE_METADATA_IP": "127.0.0.1:9"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Server:
    scheme: str  # "s3" or "gs"
    endpoint: str  # http://127.0.0.1:PORT
    env: dict[str, str]  # the standard variables that point clients at it
    process: subprocess.Popen

    def uri(self, bucket: str, *path: str) -> str:
        return "/".join([f"{self.scheme}://{bucket}", *path])

    def make_bucket(self, name: str) -> str:
        """Create a bucket through the store's own client; returns its URI."""
        with environ(self.env):
            if self.scheme == "s3":
                import boto3

                boto3.client("s3").create_bucket(Bucket=name)
            else:
                from google.cloud import storage as gcs

                gcs.Client().create_bucket(name)
        return self.uri(name)


@contextlib.contextmanager
def environ(values: dict[str, str]):
    """os.environ with values set, restored after."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _wait_until_up(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} server exited: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up: {log.read_text()[-2000:]}") from None
            time.sleep(0.2)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def moto_s3(workdir: Path, **server_env: str):
    """moto's S3 server on 127.0.0.1; yields its Server. server_env configures moto itself
    (INITIAL_NO_AUTH_ACTION_COUNT=N: check credentials after the first N calls)."""
    port = free_port()
    log = workdir / "moto.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                 "-p", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **server_env}, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(proc, endpoint + "/", log)
        yield Server("s3", endpoint, {
            "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            **NO_METADATA}, proc)
    finally:
        _stop(proc)


def authorized_user_file(folder: Path) -> Path:
    """Application-default credentials of the kind gcloud writes, holding a token valid for a
    day, so that google-auth loads them without asking a token server (Beam's GCS client
    looks for credentials first and retries for about 20 s before going anonymous)."""
    path = folder / "application_default_credentials.json"
    expiry = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    path.write_text(json.dumps({
        "type": "authorized_user", "client_id": "dfd-tests", "client_secret": "unused",
        "refresh_token": "unused", "token": "emulator-ignores-it",
        "expiry": expiry.strftime("%Y-%m-%dT%H:%M:%SZ")}))
    return path


# gcp-storage-emulator serves one request at a time (http.server.HTTPServer); pyarrow's GCS
# client copies a folder over parallel connections and times out waiting (CURL error 28 on
# GetObjectMetadata, seen restoring a Ray Train checkpoint). GCS serves requests concurrently,
# so the emulator runs here with the threading variant of the same server.
_THREADED_EMULATOR = (
    "import http.server, sys; http.server.HTTPServer = http.server.ThreadingHTTPServer; "
    "from gcp_storage_emulator.__main__ import main; sys.exit(main(sys.argv[1:]))")


@contextlib.contextmanager
def gcs_emulator(workdir: Path):
    """gcp-storage-emulator on 127.0.0.1, in memory; yields its Server."""
    port = free_port()
    log = workdir / "gcs-emulator.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", _THREADED_EMULATOR, "start", "-H",
                                 "127.0.0.1", "--port", str(port), "--in-memory", "-q"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(proc, endpoint + "/storage/v1/b", log)
        yield Server("gs", endpoint, {
            "STORAGE_EMULATOR_HOST": endpoint,
            "GOOGLE_APPLICATION_CREDENTIALS": str(authorized_user_file(workdir)),
            "GOOGLE_CLOUD_PROJECT": "dfd-tests", **NO_METADATA}, proc)
    finally:
        _stop(proc)
