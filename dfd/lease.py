"""A lease on an output folder, so that two scheduled runs never process the same parts.

    with Lease(output, purpose="sync") as lease:   # raises LeaseHeld if another run holds it
        ...
        lease.check()                              # raises LeaseLost if it was taken over

``<output>/_lease.json`` names its holder (a random id, host, pid, what it is doing) and when it
was acquired and expires. A background thread renews it every ``ttl_s / 4``; a lease whose
expiry has passed, or whose holder process is gone from this host, is stale and the next run
takes it over. Readers compare ``expires`` with their own clock: clocks must agree to well
within the TTL (NTP does).

Every change is a compare-and-swap on the store, so of two runs racing for the same lease
exactly one wins:

- local disk: the lease is created with exclusive-create semantics (the complete file is
  hard-linked into place, which fails with EEXIST if one exists: O_EXCL that also holds on
  NFS and never shows a half-written file); renewals, takeovers and releases re-read and
  replace it under ``flock`` on a sidecar ``_lease.json.lock``.
- ``gs://``: pyarrow.fs has no conditional writes, so the lease goes through
  google-cloud-storage with generation preconditions (``if_generation_match=0`` to create,
  ``=<generation read>`` to renew, take over or release).
- ``s3://``: likewise through boto3 with S3's conditional requests (``If-None-Match: *`` to
  create, ``If-Match: <ETag>`` to replace or delete).

The object-store clients come with the default install (Beam's ``[gcp]`` and ``[aws]``
extras) and find their endpoint and credentials in the standard variables. The S3 store is
tested against moto's S3 server, whose conditional writes behave as S3's (racers for a free or
a stale lease: exactly one wins). The GCS store is tested against gcp-storage-emulator for
everything but that race: the emulator ignores ``ifGenerationMatch``, so atomicity on GCS rests
on the real service's documented preconditions (tests/test_object_stores.py).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from dfd.errors import DfdError
from dfd.output_tree import join

log = logging.getLogger(__name__)

LEASE = "_lease.json"  # the leading "_" keeps it out of pyarrow's and Ray's listings
DEFAULT_TTL_S = 600.0


class LeaseHeld(DfdError):
    """Another live run holds the lease."""

    def __init__(self, uri: str, record: LeaseRecord):
        super().__init__(f"{uri} is leased by {record.describe()}")
        self.record = record


class LeaseLost(DfdError):
    """This run's lease expired and another run took it over (or it was removed)."""


class _Conflict(Exception):
    """The stored lease is not the one a compare-and-swap expected."""


@dataclasses.dataclass(frozen=True)
class LeaseRecord:
    holder: str
    host: str
    pid: int
    purpose: str
    acquired: str  # ISO 8601, UTC
    expires: str

    @classmethod
    def parse(cls, data: bytes) -> LeaseRecord | None:
        try:
            raw = json.loads(data)
            return cls(**{f.name: raw[f.name] for f in dataclasses.fields(cls)})
        except (ValueError, KeyError, TypeError):
            return None

    def to_bytes(self) -> bytes:
        return (json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n").encode()

    def expires_at(self) -> float:
        return dt.datetime.fromisoformat(self.expires).timestamp()

    def stale(self, now: float) -> bool:
        return now >= self.expires_at() or self._holder_gone()

    def _holder_gone(self) -> bool:
        """The holder ran on this host and its process no longer exists (it crashed)."""
        if self.host != socket.gethostname() or self.pid == os.getpid():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, someone else's
            return False
        return False

    def describe(self) -> str:
        return (f"{self.purpose} {self.holder[:8]} on {self.host} (pid {self.pid}), acquired "
                f"{self.acquired}, expires {self.expires}")


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")


class Lease:
    """The lease ``<output>/_lease.json``; a context manager that acquires, renews while the
    block runs, and releases."""

    def __init__(self, output: str, *, ttl_s: float = DEFAULT_TTL_S, purpose: str = "sync"):
        if ttl_s <= 0:
            raise ValueError(f"lease ttl must be positive, got {ttl_s}")
        self.uri = join(output, LEASE)
        self.ttl_s = ttl_s
        self.purpose = purpose
        self.holder = uuid.uuid4().hex
        self.record: LeaseRecord | None = None
        self._store = _store_for(self.uri)
        self._token = None
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # the three operations

    def acquire(self) -> LeaseRecord:
        """Take the lease, taking over a stale one; raises LeaseHeld if a live run holds it."""
        for _ in range(5):  # each retry follows a lost race, which ends with someone holding it
            now = time.time()
            mine = self._new_record(now, acquired=now)
            current = self._store.read()
            try:
                if current is None:
                    self._token = self._store.create(mine.to_bytes())
                else:
                    data, token = current
                    theirs = LeaseRecord.parse(data)
                    if theirs is not None and not theirs.stale(now):
                        raise LeaseHeld(self.uri, theirs)
                    log.warning("taking over the stale lease on %s (%s)", self.uri,
                                theirs.describe() if theirs else "unreadable")
                    self._token = self._store.replace(mine.to_bytes(), token)
            except _Conflict:
                continue
            self.record = mine
            log.info("lease on %s acquired until %s", self.uri, mine.expires)
            return mine
        current = self._store.read()
        record = LeaseRecord.parse(current[0]) if current else None
        if record is None:
            raise DfdError(f"could not acquire the lease on {self.uri}: it kept changing")
        raise LeaseHeld(self.uri, record)

    def renew(self) -> None:
        """Push the expiry out by one TTL; raises LeaseLost if this run no longer holds it."""
        with self._lock:
            if self.record is None:
                raise LeaseLost(f"the lease on {self.uri} is not held")
            now = time.time()
            mine = dataclasses.replace(self.record, expires=_iso(now + self.ttl_s))
            try:
                self._token = self._store.replace(mine.to_bytes(), self._token)
            except _Conflict:
                current = self._store.read()
                theirs = LeaseRecord.parse(current[0]) if current else None
                why = f"now held by {theirs.describe()}" if theirs else "it was removed"
                self._lost = f"lost the lease on {self.uri}: {why}"
                self.record = None
                raise LeaseLost(self._lost) from None
            self.record = mine

    def release(self) -> None:
        """Give the lease up if this run still holds it."""
        with self._lock:
            if self.record is None:
                return
            try:
                self._store.delete(self._token)
                log.info("lease on %s released", self.uri)
            except _Conflict:
                log.warning("lease on %s was no longer ours to release", self.uri)
            self.record = None

    # while running

    @property
    def lost(self) -> str | None:
        """Why the lease was lost, or None while it is held."""
        return self._lost

    def check(self) -> None:
        """Raise LeaseLost if renewing found the lease taken; call it before each stage."""
        if self._lost:
            raise LeaseLost(self._lost)

    def _renew_loop(self) -> None:
        interval = self.ttl_s / 4
        while not self._stop.wait(interval):
            try:
                self.renew()
            except LeaseLost as exc:
                log.error("%s", exc)
                return
            except Exception as exc:  # a flaky store: keep trying until the lease expires
                log.warning("renewing the lease on %s failed: %s", self.uri, exc)

    def __enter__(self) -> Lease:
        if self.record is None:
            self.acquire()
        self._thread = threading.Thread(target=self._renew_loop, name="dfd-lease",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.release()

    def _new_record(self, now: float, *, acquired: float) -> LeaseRecord:
        return LeaseRecord(holder=self.holder, host=socket.gethostname(), pid=os.getpid(),
                           purpose=self.purpose, acquired=_iso(acquired),
                           expires=_iso(now + self.ttl_s))


def read_lease(output: str) -> LeaseRecord | None:
    """The lease record in an output folder, if any (held or stale)."""
    current = _store_for(join(output, LEASE)).read()
    return LeaseRecord.parse(current[0]) if current else None


# ---- stores: read, and compare-and-swap create / replace / delete -----------------------------

def _store_for(uri: str):
    from dfd import storage  # pyarrow: not loaded by every `dfd` command that imports this

    if storage.is_local(uri):
        return _LocalStore(storage.local_path(uri))
    if uri.startswith("gs://"):
        return _GcsStore(uri)
    if uri.startswith("s3://"):
        return _S3Store(uri)
    raise DfdError(f"no lease store for {uri}: use a local path, gs:// or s3://")


class _LocalStore:
    """Tokens are content digests: every record differs (holder, expiry), so equal digests
    mean the same record."""

    def __init__(self, path: Path):
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")

    def read(self):
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        return data, hashlib.sha256(data).hexdigest()

    def create(self, data: bytes) -> str:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._write_tmp(data)
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            raise _Conflict() from None
        finally:
            tmp.unlink(missing_ok=True)
        return hashlib.sha256(data).hexdigest()

    def replace(self, data: bytes, token: str) -> str:
        with self._locked():
            self._expect(token)
            tmp = self._write_tmp(data)
            os.replace(tmp, self.path)
        return hashlib.sha256(data).hexdigest()

    def delete(self, token: str) -> None:
        with self._locked():
            self._expect(token)
            self.path.unlink()

    def _expect(self, token: str) -> None:
        current = self.read()
        if current is None or current[1] != token:
            raise _Conflict()

    def _write_tmp(self, data: bytes) -> Path:
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    @contextlib.contextmanager
    def _locked(self):
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the flock


class _GcsStore:
    """Tokens are object generations (google-cloud-storage, imported when first used)."""

    def __init__(self, uri: str):
        bucket, _, self.name = uri[len("gs://"):].partition("/")
        try:
            from google.cloud import storage as gcs
        except ImportError:
            raise DfdError("a lease on gs:// needs google-cloud-storage for its generation "
                           "preconditions (pip install google-cloud-storage, or "
                           "apache-beam[gcp])") from None
        self._bucket = gcs.Client().bucket(bucket)

    def read(self):
        from google.api_core.exceptions import NotFound, PreconditionFailed

        blob = self._bucket.get_blob(self.name)
        if blob is None:
            return None
        try:
            return blob.download_as_bytes(if_generation_match=blob.generation), blob.generation
        except (NotFound, PreconditionFailed):  # replaced between the two calls: read again
            return self.read()

    def create(self, data: bytes):
        return self._upload(data, 0)

    def replace(self, data: bytes, token):
        return self._upload(data, token)

    def delete(self, token) -> None:
        from google.api_core.exceptions import NotFound, PreconditionFailed

        try:
            self._bucket.blob(self.name).delete(if_generation_match=token)
        except (NotFound, PreconditionFailed):
            raise _Conflict() from None

    def _upload(self, data: bytes, generation):
        from google.api_core.exceptions import PreconditionFailed

        blob = self._bucket.blob(self.name)
        try:
            blob.upload_from_string(data, content_type="application/json",
                                    if_generation_match=generation)
        except PreconditionFailed:
            raise _Conflict() from None
        return blob.generation


class _S3Store:
    """Tokens are ETags (boto3, imported when first used)."""

    def __init__(self, uri: str):
        self.bucket, _, self.key = uri[len("s3://"):].partition("/")
        try:
            import boto3
        except ImportError:
            raise DfdError("a lease on s3:// needs boto3 for S3's conditional writes "
                           "(pip install boto3, or apache-beam[aws])") from None
        self._s3 = boto3.client("s3")

    def read(self):
        try:
            got = self._s3.get_object(Bucket=self.bucket, Key=self.key)
        except self._s3.exceptions.NoSuchKey:
            return None
        return got["Body"].read(), got["ETag"]

    def create(self, data: bytes):
        return self._put(data, IfNoneMatch="*")

    def replace(self, data: bytes, token):
        return self._put(data, IfMatch=token)

    def delete(self, token) -> None:
        self._conditional(lambda: self._s3.delete_object(Bucket=self.bucket, Key=self.key,
                                                         IfMatch=token))

    def _put(self, data: bytes, **condition):
        put = self._conditional(lambda: self._s3.put_object(
            Bucket=self.bucket, Key=self.key, Body=data, ContentType="application/json",
            **condition))
        return put["ETag"]

    def _conditional(self, call):
        from botocore.exceptions import ClientError

        try:
            return call()
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            # 412: the precondition failed; 409: a concurrent conditional write won.
            if status in (409, 412) or exc.response.get("Error", {}).get("Code") == "NoSuchKey":
                raise _Conflict() from None
            raise


__all__ = ["DEFAULT_TTL_S", "LEASE", "Lease", "LeaseHeld", "LeaseLost", "LeaseRecord",
           "read_lease"]
