"""Small URI helpers: local paths, file://, gs:// and s3://, all through pyarrow.fs.

``dfd/`` may not import Beam, so remote reads and writes here go through ``pyarrow.fs`` (already a
dependency, with GCS and S3 built in) rather than Beam's FileSystems; both address the same
objects, so what this module writes the Beam pipeline reads.

Commits are atomic in the way each store allows: a local file is written under a temporary
name and renamed; an object in GCS or S3 becomes visible only when its upload completes, so it
is written under its final name (a rename there is a full server-side copy).

Endpoints and credentials come only from the standard variables: ``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION`` for S3 (boto3,
pyarrow and so Beam and Ray all read them) and ``STORAGE_EMULATOR_HOST`` plus the usual Google
credentials for GCS. pyarrow's GCS filesystem ignores ``STORAGE_EMULATOR_HOST`` (it would go to
the real service), so ``filesystem`` bridges it here, the one place: every dfd reader and
writer, Ray Data and Ray Train get their filesystem from it.
"""
from __future__ import annotations

import datetime as dt
import errno
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pyarrow.fs as pafs

from dfd.errors import DfdError

_CHUNK = 8 * 2**20


def is_local(uri: str) -> bool:
    return "://" not in str(uri) or str(uri).startswith("file://")


def local_path(uri: str) -> Path:
    """The filesystem path of a local URI (a plain path or file://)."""
    uri = str(uri)
    if not is_local(uri):
        raise ValueError(f"{uri} is not a local path")
    return Path(uri[len("file://"):] if uri.startswith("file://") else uri).expanduser()


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem holding uri, and the path inside it."""
    if is_local(uri):
        return pafs.LocalFileSystem(), str(local_path(uri).absolute())
    if str(uri).startswith("gs://") and os.environ.get(GCS_EMULATOR):
        return _gcs_emulator(os.environ[GCS_EMULATOR]), str(uri)[len("gs://"):]
    try:
        return pafs.FileSystem.from_uri(uri)
    except (OSError, ValueError) as exc:  # pyarrow raises ArrowInvalid (a ValueError) and OSError
        raise ValueError(f"cannot open {uri}: {_cause(exc)}") from None


def filesystem(uri: str) -> pafs.FileSystem:
    """The pyarrow filesystem holding uri, for Ray Data's ``filesystem=`` and Ray Train's
    ``storage_filesystem=`` (paths passed with it are ``resolve(uri)[1]``, without scheme)."""
    return resolve(uri)[0]


GCS_EMULATOR = "STORAGE_EMULATOR_HOST"


def _gcs_emulator(host: str) -> pafs.GcsFileSystem:
    """google-cloud-storage sends every request to STORAGE_EMULATOR_HOST, unauthenticated;
    pyarrow is told the same. A dead emulator fails in a minute, not after GCS's 15 (and the
    commands' preflight, dfd.cli, finds it in seconds)."""
    scheme, _, address = host.rpartition("://")
    return pafs.GcsFileSystem(anonymous=True, endpoint_override=address.rstrip("/"),
                              scheme=scheme or "http",
                              retry_time_limit=dt.timedelta(seconds=60))


def _cause(exc: BaseException) -> str:
    """The last line of a store's error, which names the cause (pyarrow puts it last)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]


def check_access(uri: str, *, write: bool = False) -> None:
    """Fail with one line naming uri and the cause when its bucket cannot be used: no such
    bucket, refused credentials, no permission to list (or, with write, to create objects)
    under it, an endpoint that does not answer. Local paths are not checked.

    Commands call it on each URI they are given before any work starts (``dfd.cli``). It asks
    the store's own client (boto3, google-cloud-storage), whose errors name the cause where
    pyarrow's say only "access denied"; with write it creates and deletes one hidden object.
    """
    if is_local(uri):
        return
    scheme, _, rest = str(uri).partition("://")
    bucket, _, prefix = rest.partition("/")
    if scheme not in ("s3", "gs") or not bucket:
        raise DfdError(f"{uri}: not a bucket URI (use s3://BUCKET/... or gs://BUCKET/...)")
    probe = "/".join(p for p in (prefix.rstrip("/"), f"_dfd-access-check-{uuid.uuid4().hex}")
                     if p)
    try:
        (_check_s3 if scheme == "s3" else _check_gcs)(bucket, prefix, probe if write else None)
    except _Refused as refused:
        raise DfdError(f"{uri}: {refused}") from None


class _Refused(Exception):
    """Why a bucket cannot be used, in a few words."""


def _check_s3(bucket: str, prefix: str, probe: str | None) -> None:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    # Few, short tries: a preflight must answer in seconds, not after the SDK's patience.
    s3 = boto3.client("s3", config=Config(connect_timeout=5, read_timeout=20,
                                          retries={"max_attempts": 2, "mode": "standard"}))
    step = "list"
    try:
        s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        if probe:
            step = "write"
            s3.put_object(Bucket=bucket, Key=probe, Body=b"")
            s3.delete_object(Bucket=bucket, Key=probe)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code, message = error.get("Code", "?"), error.get("Message", "")
        if code == "NoSuchBucket":
            raise _Refused(f"bucket s3://{bucket} does not exist") from None
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
                    "ExpiredToken"):
            raise _Refused(f"the credentials were refused ({code}: {message})") from None
        if code in ("AccessDenied", "403", "AllAccessDisabled"):
            raise _Refused(f"permission denied to {step} objects ({code})") from None
        raise _Refused(f"{code}: {message}") from None
    except BotoCoreError as exc:  # no endpoint, no credentials, a timeout
        raise _Refused(f"cannot reach S3 ({exc})") from None


def _check_gcs(bucket: str, prefix: str, probe: str | None) -> None:
    from google.api_core import exceptions as gexc
    from google.auth.exceptions import GoogleAuthError
    from google.cloud import storage as gcs
    import requests

    step = "list"
    try:
        client = gcs.Client()
        blobs = client.bucket(bucket).list_blobs(prefix=prefix, max_results=1, timeout=20,
                                                 retry=None)
        list(blobs)
        if probe:
            step = "write"
            blob = client.bucket(bucket).blob(probe)
            blob.upload_from_string(b"", timeout=20, retry=None)
            blob.delete(timeout=20, retry=None)
    except gexc.NotFound:
        raise _Refused(f"bucket gs://{bucket} does not exist") from None
    except gexc.Unauthorized as exc:
        raise _Refused(f"the credentials were refused ({exc.message})") from None
    except gexc.Forbidden as exc:
        raise _Refused(f"permission denied to {step} objects ({exc.message})") from None
    except gexc.GoogleAPIError as exc:
        raise _Refused(f"{type(exc).__name__}: {exc}") from None
    except GoogleAuthError as exc:
        raise _Refused(f"no usable Google credentials ({exc})") from None
    except requests.RequestException as exc:
        raise _Refused(f"cannot reach GCS ({_cause(exc)})") from None


def file_size(uri: str) -> int | None:
    """Size in bytes of the file at uri, or None if there is no file there."""
    fs, path = resolve(uri)
    info = fs.get_file_info(path)
    return info.size if info.type == pafs.FileType.File else None


def read_text(uri: str) -> str | None:
    """The text of the file at uri, or None if there is no file there."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def open_read(uri: str):
    """A binary stream over the file at uri."""
    fs, path = resolve(uri)
    return fs.open_input_stream(path)


def write_bytes(uri: str, data: bytes) -> None:
    """Write a small file so that readers see either the old content or all of the new."""
    if is_local(uri):
        path = local_path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        # A unique name opened with "x" (not mkstemp) so the file gets the usual umask mode.
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return
    fs, path = resolve(uri)
    with fs.open_output_stream(path) as f:
        f.write(data)


def commit_file(src: Path, uri: str, *, on_bytes: Callable[[int], None] | None = None) -> None:
    """Move a finished local file to uri, atomically.

    Locally this is a rename when src is on the same filesystem (the caller should stage it
    beside the destination); otherwise a copy under a temporary name, then a rename. Remotely
    it is one streamed upload, which the store publishes only once complete; src is left for
    the caller to delete.
    """
    src = Path(src)
    if is_local(uri):
        dest = local_path(uri)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(src, dest)
            return
        except OSError as exc:
            if exc.errno != errno.EXDEV:  # src is on another filesystem: copy instead
                raise
        tmp = dest.with_name(f".{dest.name}.incoming")
        _copy_stream(src, pafs.LocalFileSystem(), str(tmp), on_bytes)
        os.replace(tmp, dest)
        src.unlink()
        return
    fs, path = resolve(uri)
    _copy_stream(src, fs, path, on_bytes)


def _copy_stream(src: Path, fs: pafs.FileSystem, path: str,
                 on_bytes: Callable[[int], None] | None) -> None:
    parent = path.rsplit("/", 1)[0]
    if parent and parent != path:
        fs.create_dir(parent, recursive=True)
    with open(src, "rb") as fin, fs.open_output_stream(path) as fout:
        while chunk := fin.read(_CHUNK):
            fout.write(chunk)
            if on_bytes:
                on_bytes(len(chunk))


def remove(uri: str) -> None:
    """Delete the file at uri if there is one."""
    fs, path = resolve(uri)
    if fs.get_file_info(path).type == pafs.FileType.File:
        fs.delete_file(path)


def local_copy(uri: str, names: tuple[str, ...], scratch: Path) -> Path:
    """A local folder holding the named files of the folder uri: uri itself when local, else
    scratch with whichever of them exist there (for tools that read only local files)."""
    if is_local(uri):
        return local_path(uri)
    scratch.mkdir(parents=True, exist_ok=True)
    fs, root = resolve(uri)
    for name in names:
        path = f"{root.rstrip('/')}/{name}"
        if fs.get_file_info(path).type == pafs.FileType.File:
            with fs.open_input_stream(path) as f:
                (scratch / name).write_bytes(f.read())
    return scratch


def publish_folder(local: Path, uri: str) -> None:
    """Copy every file of a local folder (not its subfolders) into the folder uri."""
    for f in sorted(Path(local).iterdir()):
        if f.is_file():
            commit_file(f, f"{str(uri).rstrip('/')}/{f.name}")
