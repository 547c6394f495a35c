"""DFDC parts from Kaggle, through the `kaggle` package's own client and downloader.

    dfd download --parts 0-4 --out gs://bucket/dfdc-raw

Each file is listed with its size, downloaded by ``KaggleApi.download_file`` (which resumes a
partial file with an HTTP Range request), retried with exponential backoff, checked against the
listed size and the checksum the storage server advertises (``x-goog-hash`` / ``Content-MD5``),
and only then committed under its final name (see ``dfd.storage``). A receipt under
``<dest>/_verified/`` records what was checked, so later runs skip the part without reading it.
Partial downloads wait in ``<dest>/_incoming/`` (local destinations) or in a local scratch
folder (gs://, s3://); names starting with ``_`` are skipped by the pipeline's part listing.

Credentials come from where the kaggle client looks (KAGGLE_API_TOKEN, KAGGLE_USERNAME and
KAGGLE_KEY, ``kaggle.json``, ``~/.kaggle/access_token``, ``kaggle auth login``). They are never
printed, logged or written: messages name their source, never their value. ``import kaggle``
authenticates at import time and prints a banner when it cannot, so it is imported lazily,
after our own check, with its stdout swallowed.

For a Beam DoFn: build ``Competition`` once in ``setup()`` and call ``fetch_part`` per element,
or call the module-level ``fetch_part`` (which lists the competition on every call).
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import io
import json
import logging
import os
import random
import stat
import threading
import time
from pathlib import Path

from dfd import dfdc, storage
from dfd.errors import DfdError
from dfd.output_tree import join

log = logging.getLogger(__name__)

COMPETITION = "deepfake-detection-challenge"
INCOMING = "_incoming"
RECEIPTS = "_verified"
_PAGE_SIZE = 200
_HASH_CHUNK = 4 * 2**20
_RESUME_MARKER = ".kaggle-partial"  # the kaggle downloader's sidecar beside a partial file


class MissingCredentials(DfdError):
    """No usable Kaggle credentials where the kaggle client looks for them."""


class AccessDenied(DfdError):
    """Kaggle refused the credentials or the competition (rules not accepted): every file would
    fail the same way, so a batch stops at the first one."""


class FetchFailed(DfdError):
    """One file could not be fetched and verified within the retry budget."""


class _Mismatch(Exception):
    """The bytes on disk are not the file Kaggle lists; resuming would keep the bad bytes."""


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry one file (or one listing)."""
    attempts: int = 6
    backoff_s: float = 2.0  # wait after the first failure; doubles after each further one
    max_backoff_s: float = 300.0

    def __post_init__(self):
        if self.attempts < 1 or self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError(f"bad retry policy {self}")

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after the given number of consecutive failures."""
        if retry_after is not None:
            return min(retry_after, self.max_backoff_s)
        base = min(self.max_backoff_s, self.backoff_s * 2 ** (failures - 1))
        # Jitter spreads out parallel fetchers (Beam workers) that failed together.
        return base * random.uniform(0.5, 1.0)


@dataclasses.dataclass(frozen=True)
class CompetitionFile:
    """One file of a competition as Kaggle lists it."""
    name: str  # as Kaggle names it (may contain folders)
    size: int
    created: str | None = None  # ISO 8601, as listed

    @property
    def basename(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    @property
    def part(self) -> int | None:
        return dfdc.parse_part_name(self.basename)


@dataclasses.dataclass(frozen=True)
class FetchResult:
    file: CompetitionFile
    uri: str  # where the file is (or would be) committed
    status: str  # fetched | present | failed
    md5: str | None = None
    detail: str = ""
    seconds: float = 0.0


# --- credentials ------------------------------------------------------------------------------

def _kaggle_config_dir() -> Path:
    # The client's own search (fixed when `kaggle` is imported): KAGGLE_CONFIG_DIR, ~/.kaggle
    # if it exists, else the XDG config folder.
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"]).expanduser()
    home = Path.home() / ".kaggle"
    if home.exists():
        return home
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"


def _read_kaggle_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        # The message must not quote the file: it holds the key.
        raise MissingCredentials(f"{path} is not readable JSON; expected "
                                 '{"username": ..., "key": ...}') from None
    if not isinstance(data, dict):
        raise MissingCredentials(f"{path}: expected a JSON object with username and key")
    mode = path.stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("%s is readable by other users; run: chmod 600 %s", path, path)
    return data


def credential_source() -> str:
    """Where the kaggle client will find credentials, named without their values.

    Raises MissingCredentials (one line, no value in it) when there are none.
    """
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "the KAGGLE_API_TOKEN environment variable"
    for name in ("access_token", "access_token.txt"):
        path = Path.home() / ".kaggle" / name
        if path.is_file() and path.read_text().strip():
            return str(path)
    json_path = _kaggle_config_dir() / "kaggle.json"
    from_file = _read_kaggle_json(json_path)
    env_user, env_key = os.environ.get("KAGGLE_USERNAME"), os.environ.get("KAGGLE_KEY")
    user, key = env_user or from_file.get("username"), env_key or from_file.get("key")
    if user and key:
        if env_user and env_key:
            return "the KAGGLE_USERNAME and KAGGLE_KEY environment variables"
        if not (env_user or env_key):
            return str(json_path)
        return f"KAGGLE_USERNAME/KAGGLE_KEY and {json_path}"
    oauth = Path.home() / ".kaggle" / "credentials.json"
    if oauth.is_file():
        return f"{oauth} (kaggle auth login)"
    if user or key:
        missing = "KAGGLE_KEY" if user else "KAGGLE_USERNAME"
        raise MissingCredentials(
            f"incomplete Kaggle credentials: {missing} is not set and {json_path} does not "
            f"provide it")
    raise MissingCredentials(
        "no Kaggle credentials: set KAGGLE_USERNAME and KAGGLE_KEY (or KAGGLE_API_TOKEN), or "
        f"save kaggle.json from https://www.kaggle.com/settings/api as {json_path}")


@functools.lru_cache(maxsize=1)
def _api_class():
    with contextlib.redirect_stdout(io.StringIO()):
        import kaggle  # noqa: F401  (authenticates on import; prints a banner when it cannot)
        from kaggle.api.kaggle_api_extended import KaggleApi
    from kagglesdk.kaggle_client import KaggleClient
    from kagglesdk.kaggle_env import get_env

    class EnvAwareKaggleApi(KaggleApi):
        """KaggleApi whose HTTP client honours KAGGLE_API_ENVIRONMENT.

        kaggle 2.2's KaggleApi.build_kaggle_client picks PROD unless its own argv flags say
        otherwise, although kagglesdk reads the variable (TEST is http://localhost:7777). It is
        also never verbose here: the verbose client prints request headers, Authorization too.
        """

        def build_kaggle_client(self):
            try:
                env = get_env()
            except Exception as exc:  # kagglesdk raises a bare Exception for unknown values
                raise DfdError(str(exc)) from None
            values = self.config_values
            return KaggleClient(env=env, verbose=False,
                                username=values.get(self.CONFIG_NAME_USER),
                                password=values.get(self.CONFIG_NAME_KEY),
                                api_token=values.get(self.CONFIG_NAME_TOKEN))

    return EnvAwareKaggleApi


def _authenticated_api(source: str):
    api = _api_class()()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            api.authenticate()
    except SystemExit:  # the client prints help and calls exit(1)
        raise AccessDenied(f"Kaggle did not accept the credentials from {source}") from None
    except DfdError:
        raise
    except Exception as exc:  # a token is introspected over the network
        raise DfdError(f"could not check the Kaggle credentials from {source}: "
                       f"{_describe(exc)}") from None
    return api


# --- errors and retries -----------------------------------------------------------------------

def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    value = getattr(response, "headers", {}).get("Retry-After") if response is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _describe(exc: BaseException) -> str:
    """A reason for logs and errors. Never str(exc) of a network error: those quote URLs, and
    the download URL is a signed one."""
    import requests
    import urllib3.exceptions

    status = _http_status(exc)
    if status is not None:
        return f"HTTP {status}"
    if isinstance(exc, _Mismatch):
        return str(exc)
    if isinstance(exc, (requests.Timeout, urllib3.exceptions.TimeoutError)):
        return "timed out"
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError,
                        urllib3.exceptions.ProtocolError)):
        return "connection dropped mid-transfer"
    if isinstance(exc, requests.ConnectionError):
        return "could not connect"
    return type(exc).__name__


def _is_transient(exc: BaseException) -> bool:
    import http.client

    import requests
    import urllib3.exceptions

    status = _http_status(exc)
    if status is not None:
        return status in (408, 429) or status >= 500
    return isinstance(exc, (_Mismatch, requests.RequestException, http.client.HTTPException,
                            urllib3.exceptions.HTTPError))


# --- checksums and receipts -------------------------------------------------------------------

def _advertised_checksums(headers) -> dict[str, str]:
    """Hex digests the server vouches for: GCS's x-goog-hash (md5, crc32c) or Content-MD5."""
    found: dict[str, str] = {}
    for item in (headers.get("x-goog-hash") or "").split(","):
        algo, _, value = item.strip().partition("=")
        if algo in ("md5", "crc32c") and value:
            found[algo] = base64.b64decode(value).hex()
    if "md5" not in found and headers.get("Content-MD5"):
        found["md5"] = base64.b64decode(headers["Content-MD5"]).hex()
    if "crc32c" in found and _crc32c_module() is None:
        del found["crc32c"]
    return found


@functools.lru_cache(maxsize=1)
def _crc32c_module():
    try:
        import google_crc32c  # the GCS clients' implementation; optional here
    except ImportError:
        return None
    return google_crc32c


def _digests(stream, algos: set[str]) -> dict[str, str]:
    md5 = hashlib.md5()
    crc = _crc32c_module().Checksum() if "crc32c" in algos else None
    while chunk := stream.read(_HASH_CHUNK):
        md5.update(chunk)
        if crc is not None:
            crc.update(chunk)
    out = {"md5": md5.hexdigest()}
    if crc is not None:
        out["crc32c"] = crc.digest().hex()
    return out


def _verify(path: Path, file: CompetitionFile, advertised: dict[str, str]) -> dict[str, str]:
    size = path.stat().st_size
    if size != file.size:
        raise _Mismatch(f"size mismatch: {size} bytes downloaded, Kaggle lists {file.size}")
    with open(path, "rb") as f:
        digests = _digests(f, set(advertised))
    for algo, expected in advertised.items():
        if digests[algo] != expected:
            raise _Mismatch(f"{algo} mismatch: got {digests[algo]}, server advertised {expected}")
    return digests


def receipt_uri(dest_uri: str, name: str) -> str:
    return join(dest_uri, RECEIPTS, f"{name}.json")


def read_receipt(dest_uri: str, name: str) -> dict | None:
    """What was verified about dest_uri/name when it was committed, or None."""
    try:
        text = storage.read_text(receipt_uri(dest_uri, name))
        return json.loads(text) if text else None
    except ValueError:
        return None


def _receipt(competition: str, file: CompetitionFile, digests: dict, advertised: dict) -> bytes:
    body = {"competition": competition, "file": file.name, "size": file.size,
            "created": file.created, "md5": digests["md5"],
            "checked": ["size", *sorted(advertised)],
            "verified_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()


# --- progress ---------------------------------------------------------------------------------

class Progress:
    """A bar for the whole batch and one for the file in flight (tqdm, on stderr).

    The kaggle downloader writes the file and keeps its own bar quiet, so the bars follow the
    file's size on disk.
    """

    def __init__(self, total_bytes: int, files: int, *, enabled: bool):
        from tqdm import tqdm

        self._tqdm = tqdm
        self.enabled = enabled
        self._done = 0
        self.overall = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024,
                            desc=f"overall (0/{files} files)", position=0, disable=not enabled,
                            dynamic_ncols=True)
        self._files = files
        self._finished = 0

    @contextlib.contextmanager
    def file(self, name: str, size: int, path: Path):
        bar = self._tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                         position=1, leave=False, disable=not self.enabled, dynamic_ncols=True)
        stop = threading.Event()

        def show():
            try:
                on_disk = path.stat().st_size
            except OSError:  # not started yet, or removed after a mismatch
                on_disk = 0
            bar.n = on_disk
            bar.refresh()
            self.overall.n = self._done + on_disk
            self.overall.refresh()

        def follow():
            while not stop.wait(0.25):
                show()

        watcher = threading.Thread(target=follow, name=f"progress-{name}", daemon=True)
        if self.enabled:
            watcher.start()
        try:
            yield
        finally:
            stop.set()
            if self.enabled:
                watcher.join()
                show()
            bar.close()

    def finished(self, size: int) -> None:
        self._done += size
        self._finished += 1
        self.overall.n = self._done
        self.overall.set_description(f"overall ({self._finished}/{self._files} files)")

    def close(self) -> None:
        self.overall.close()


# --- the competition --------------------------------------------------------------------------

class Competition:
    """One Kaggle competition's files, through an authenticated kaggle client."""

    def __init__(self, name: str = COMPETITION, *, retry: RetryPolicy = RetryPolicy(),
                 scratch_dir: str | Path | None = None):
        self.name = name
        self.retry = retry
        self.scratch_dir = Path(scratch_dir) if scratch_dir else _default_scratch()
        self.credentials = credential_source()
        self._api = _authenticated_api(self.credentials)
        self._files: list[CompetitionFile] | None = None

    # listing

    def files(self) -> list[CompetitionFile]:
        """Every file of the competition with its size (listed once per instance)."""
        if self._files is None:
            self._files = self._with_retries("listing files", self._list_all)
        return self._files

    def parts(self) -> dict[int, CompetitionFile]:
        """The DFDC parts among the files, by part number."""
        return {f.part: f for f in self.files() if f.part is not None}

    def part_file(self, part: int) -> CompetitionFile:
        listed = self.parts()
        if part not in listed:
            raise DfdError(f"{self.name} has no part {part} ({dfdc.part_zip_name(part)}); it "
                           f"lists parts {_ranges(sorted(listed)) or 'none'}")
        return listed[part]

    def _list_all(self) -> list[CompetitionFile]:
        files, token = [], None
        while True:
            page = self._api.competition_list_files(self.name, token, _PAGE_SIZE)
            for f in page.files:
                created = f.creation_date.isoformat() if f.creation_date else None
                files.append(CompetitionFile(f.name, int(f.total_bytes or 0), created))
            token = page.next_page_token
            if not token:
                return files

    # fetching

    def fetch_part(self, part: int, dest_uri: str, *, progress: Progress | None = None) -> str:
        """Fetch one DFDC part into dest_uri unless it is already there and verified; its URI."""
        result = self.fetch(self.part_file(part), dest_uri, progress=progress)
        return result.uri

    def target_uri(self, file: CompetitionFile, dest_uri: str) -> str:
        return join(dest_uri, file.basename)

    def is_current(self, file: CompetitionFile, dest_uri: str) -> bool:
        """The file is committed at dest_uri and its receipt matches what Kaggle lists now."""
        receipt = read_receipt(dest_uri, file.basename)
        if not receipt or receipt.get("size") != file.size:
            return False
        if file.created and receipt.get("created") != file.created:
            return False  # Kaggle replaced the file since
        return storage.file_size(self.target_uri(file, dest_uri)) == file.size

    def fetch(self, file: CompetitionFile, dest_uri: str, *,
              progress: Progress | None = None) -> FetchResult:
        """Download, verify and commit one file (or adopt a verified copy already there).

        Raises FetchFailed when the retries are spent, AccessDenied when Kaggle refuses.
        """
        target = self.target_uri(file, dest_uri)
        start = time.monotonic()
        if self.is_current(file, dest_uri):
            return FetchResult(file, target, "present")
        adopted = self._adopt(file, dest_uri)
        if adopted:
            return FetchResult(file, target, "present", md5=adopted)
        partial = self._partial_path(file, dest_uri)
        progress = progress or Progress(file.size, 1, enabled=False)
        digests, advertised = self._download_verified(file, partial, progress)
        storage.commit_file(partial, target)
        if not storage.is_local(target):
            partial.unlink(missing_ok=True)
        storage.write_bytes(receipt_uri(dest_uri, file.basename),
                            _receipt(self.name, file, digests, advertised))
        progress.finished(file.size)
        seconds = time.monotonic() - start
        log.info("%s: %d bytes fetched and verified (%s) in %.1fs -> %s", file.basename,
                 file.size, ", ".join(["size", *sorted(advertised)]), seconds, target)
        return FetchResult(file, target, "fetched", md5=digests["md5"], seconds=seconds)

    def _partial_path(self, file: CompetitionFile, dest_uri: str) -> Path:
        if storage.is_local(dest_uri):
            # Beside the destination, so that the commit is a rename on the same filesystem.
            return storage.local_path(dest_uri) / INCOMING / file.basename
        return self.scratch_dir / self.name / file.basename

    def _adopt(self, file: CompetitionFile, dest_uri: str) -> str | None:
        """A file of the listed size already at the target without a (current) receipt, e.g.
        one fetched by hand with the kaggle CLI: keep it if it matches the advertised checksum.
        """
        target = self.target_uri(file, dest_uri)
        if storage.file_size(target) != file.size:
            return None
        advertised = self._with_retries(f"checking {file.basename}",
                                        lambda: self._advertised(file))
        if "md5" not in advertised and "crc32c" not in advertised:
            return None  # size alone is not proof enough to skip a download
        with storage.open_read(target) as f:
            digests = _digests(f, set(advertised))
        if any(digests[a] != v for a, v in advertised.items()):
            log.warning("%s: the copy at %s does not match Kaggle's checksum; fetching it again",
                        file.basename, target)
            return None
        storage.write_bytes(receipt_uri(dest_uri, file.basename),
                            _receipt(self.name, file, digests, advertised))
        log.info("%s: found at %s, verified (%s)", file.basename, target,
                 ", ".join(["size", *sorted(advertised)]))
        return digests["md5"]

    def _advertised(self, file: CompetitionFile) -> dict[str, str]:
        with self._api.build_kaggle_client() as client:
            response = self._request_download(client, file)
            response.close()
        return _advertised_checksums(response.headers)

    def _request_download(self, client, file: CompetitionFile):
        from kagglesdk.competitions.types.competition_api_service import (
            ApiDownloadDataFileRequest)

        request = ApiDownloadDataFileRequest()
        request.competition_name = self.name
        request.file_name = file.name
        # Kaggle answers with a redirect to signed storage; the response streams from there.
        return client.competitions.competition_api_client.download_data_file(request)

    def _download_once(self, file: CompetitionFile, partial: Path,
                       progress: Progress) -> dict[str, str]:
        partial.parent.mkdir(parents=True, exist_ok=True)
        marker = Path(str(partial) + _RESUME_MARKER)
        with self._api.build_kaggle_client() as client:
            response = self._request_download(client, file)
            try:
                advertised = _advertised_checksums(response.headers)
                if partial.exists() and partial.stat().st_size == file.size \
                        and not marker.exists():
                    return advertised  # complete from an earlier run that stopped before commit
                with progress.file(file.basename, file.size, partial):
                    # max_retries=0: our loop owns retries, so that a size or checksum
                    # mismatch restarts cleanly and the backoff is ours to set.
                    self._api.download_file(response, str(partial), client.http_client(),
                                            quiet=True, resume=True, max_retries=0)
            finally:
                response.close()
        return advertised

    def _download_verified(self, file: CompetitionFile, partial: Path,
                           progress: Progress) -> tuple[dict, dict]:
        for attempt in range(1, self.retry.attempts + 1):
            try:
                advertised = self._download_once(file, partial, progress)
                return _verify(partial, file, advertised), advertised
            except Exception as exc:
                if isinstance(exc, ValueError) and str(exc).startswith("Downloaded file size"):
                    # The kaggle downloader's own check against Content-Length.
                    exc = _Mismatch(f"size mismatch: {exc}")
                self._raise_if_fatal(exc, file)
                failure = exc
            if isinstance(failure, _Mismatch):
                # Wrong bytes must not be resumed from: start the next attempt from zero.
                partial.unlink(missing_ok=True)
                Path(str(partial) + _RESUME_MARKER).unlink(missing_ok=True)
            if attempt == self.retry.attempts:
                raise FetchFailed(f"{file.basename}: gave up after {attempt} attempt(s): "
                                  f"{_describe(failure)}")
            wait = self.retry.delay(attempt, _retry_after(failure))
            log.warning("%s: %s; retrying in %.1fs (attempt %d of %d)", file.basename,
                        _describe(failure), wait, attempt + 1, self.retry.attempts)
            time.sleep(wait)
        raise AssertionError("unreachable")

    def _raise_if_fatal(self, exc: BaseException, file: CompetitionFile | None) -> None:
        if isinstance(exc, DfdError):
            raise exc
        status = _http_status(exc)
        what = file.basename if file else "its files"
        if status == 401:
            raise AccessDenied(f"Kaggle rejected the credentials from {self.credentials} "
                               f"(HTTP 401)") from None
        if status == 403:
            raise AccessDenied(
                f"Kaggle refused access to {self.name} (HTTP 403): accept the competition's "
                f"rules at https://www.kaggle.com/competitions/{self.name}/rules with the "
                f"account whose credentials are used ({self.credentials})") from None
        if status == 404:
            raise DfdError(f"{self.name}: {what} not found on Kaggle (HTTP 404)") from None
        if not _is_transient(exc):
            raise exc

    def _with_retries(self, what: str, call):
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return call()
            except Exception as exc:
                self._raise_if_fatal(exc, None)
                if attempt == self.retry.attempts:
                    raise FetchFailed(f"{self.name}: {what} failed after {attempt} attempt(s): "
                                      f"{_describe(exc)}") from None
                wait = self.retry.delay(attempt, _retry_after(exc))
                log.warning("%s: %s: %s; retrying in %.1fs", self.name, what, _describe(exc),
                            wait)
                time.sleep(wait)
        raise AssertionError("unreachable")


def _default_scratch() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "dfd" / "kaggle"


def _ranges(parts: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5' (the --parts syntax)."""
    out, run = [], []
    for p in parts:
        if run and p == run[-1] + 1:
            run.append(p)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [p]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


# --- entry points -----------------------------------------------------------------------------

def fetch_part(competition: str, part: int, dest_uri: str, *,
               retry: RetryPolicy = RetryPolicy(), scratch_dir: str | Path | None = None) -> str:
    """Fetch DFDC part `part` of `competition` into dest_uri (local, gs:// or s3://), skipping
    it if already there and verified; returns the URI of the committed zip."""
    return Competition(competition, retry=retry, scratch_dir=scratch_dir).fetch_part(part,
                                                                                     dest_uri)


def download_parts(parts: set[int] | None, dest_uri: str, *, competition: str = COMPETITION,
                   retry: RetryPolicy = RetryPolicy(), scratch_dir: str | Path | None = None,
                   progress: bool = False) -> list[FetchResult]:
    """Fetch the selected parts (None: all listed) in order, skipping verified ones.

    A part that fails after its retries is reported as failed and the rest go on; refused
    access stops the batch (every part would fail the same way).
    """
    comp = Competition(competition, retry=retry, scratch_dir=scratch_dir)
    listed = comp.parts()
    if not listed:
        raise DfdError(f"{competition} lists no DFDC parts ({dfdc.part_zip_name(0)} ...)")
    wanted = sorted(listed) if parts is None else sorted(parts)
    missing = [p for p in wanted if p not in listed]
    if missing:
        raise DfdError(f"{competition} has no part(s) {_ranges(missing)}; it lists parts "
                       f"{_ranges(sorted(listed))}")
    files = [listed[p] for p in wanted]
    current = {f.name for f in files if comp.is_current(f, dest_uri)}
    todo = [f for f in files if f.name not in current]
    bars = Progress(sum(f.size for f in todo), len(todo), enabled=progress)
    results = []
    try:
        for f in files:
            if f.name in current:
                results.append(FetchResult(f, comp.target_uri(f, dest_uri), "present"))
                continue
            try:
                results.append(comp.fetch(f, dest_uri, progress=bars))
            except FetchFailed as exc:
                log.error("%s", exc)
                results.append(FetchResult(f, comp.target_uri(f, dest_uri), "failed",
                                           detail=str(exc)))
    finally:
        bars.close()
    return results
