"""A competition's files on Kaggle: listing, and fetching one file with retries, resume,
verification and an atomic commit; plus the batch and single-part entry points."""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path

from dfd import dfdc, storage
from dfd.errors import DfdError
from dfd.kaggle import checks
from dfd.kaggle.credentials import authenticated_api, credential_source
from dfd.kaggle.errors import AccessDenied, FetchFailed, Mismatch
from dfd.kaggle.progress import Progress, fetch_each
from dfd.kaggle.redact import redact
from dfd.kaggle.retries import (
    RetryPolicy,
    describe,
    http_status,
    is_transient,
    retry_after,
    retrying,
)
from dfd.output_tree import join

log = logging.getLogger(__name__)

COMPETITION = "deepfake-detection-challenge"
INCOMING = "_incoming"
# What Kaggle's API serves of DFDC: the labelled sample, the unlabelled test videos and the
# submission template (the data page's "Files" list). The 50 training parts are not among
# them: the data page links them instead ("not available directly on Kaggle").
API_FILES = ("train_sample_videos", "test_videos", "sample_submission.csv")
_PAGE_SIZE = 200
_RESUME_MARKER = ".kaggle-partial"  # the kaggle downloader's sidecar beside a partial file


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


class Competition:
    """One Kaggle competition's files, through an authenticated kaggle client."""

    def __init__(self, name: str = COMPETITION, *, retry: RetryPolicy = RetryPolicy(),
                 scratch_dir: str | Path | None = None):
        self.name = name
        self.retry = retry
        self.scratch_dir = Path(scratch_dir) if scratch_dir else _default_scratch()
        self.credentials = credential_source()
        self._api = authenticated_api(self.credentials)
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
        why = dfdc.unsafe_member_reason(file.name)
        if why:  # a listed name is joined onto a path: it must stay inside dest_uri
            raise DfdError(f"{self.name}: refusing the listed name {file.name!r}: {why}")
        return join(dest_uri, file.name)

    def is_current(self, file: CompetitionFile, dest_uri: str) -> bool:
        """The file is committed at dest_uri and its receipt matches what Kaggle lists now."""
        return self._current_receipt(file, dest_uri) is not None

    def _current_receipt(self, file: CompetitionFile, dest_uri: str) -> dict | None:
        receipt = checks.read_receipt(dest_uri, file.name)
        if not receipt or receipt.get("size") != file.size:
            return None
        if file.created and receipt.get("created") != file.created:
            return None  # Kaggle replaced the file since
        if storage.file_size(self.target_uri(file, dest_uri)) != file.size:
            return None
        return receipt

    def fetch(self, file: CompetitionFile, dest_uri: str, *,
              progress: Progress | None = None) -> FetchResult:
        """Download, verify and commit one file (or adopt a verified copy already there).

        Raises FetchFailed when the retries are spent, AccessDenied when Kaggle refuses.
        """
        target = self.target_uri(file, dest_uri)
        start = time.monotonic()
        receipt = self._current_receipt(file, dest_uri)
        if receipt:
            return FetchResult(file, target, "present", md5=receipt.get("md5"))
        progress = progress or Progress(file.size, 1, enabled=False)
        adopted = self._adopt(file, dest_uri)
        if adopted:
            progress.finished(file.size)
            return FetchResult(file, target, "present", md5=adopted)
        partial = self._partial_path(file, dest_uri)
        digests, advertised = self._download_verified(file, partial, progress)
        if not storage.is_local(target):
            log.info("%s: uploading %d bytes to %s", file.basename, file.size, target)
        storage.commit_file(partial, target)
        if not storage.is_local(target):
            partial.unlink(missing_ok=True)
        storage.write_bytes(checks.receipt_uri(dest_uri, file.name),
                            checks.receipt(self.name, file, digests, advertised))
        progress.finished(file.size)
        seconds = time.monotonic() - start
        log.info("%s: %d bytes fetched and verified (%s) in %.1fs -> %s", file.basename,
                 file.size, ", ".join(["size", *sorted(advertised)]), seconds, target)
        return FetchResult(file, target, "fetched", md5=digests["md5"], seconds=seconds)

    def _partial_path(self, file: CompetitionFile, dest_uri: str) -> Path:
        if storage.is_local(dest_uri):
            # Beside the destination, so that the commit is a rename on the same filesystem.
            return storage.local_path(dest_uri) / INCOMING / file.name
        return self.scratch_dir / self.name / file.name

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
            digests = checks.file_digests(f, set(advertised))
        if any(digests[a] != v for a, v in advertised.items()):
            log.warning("%s: the copy at %s does not match Kaggle's checksum; fetching it again",
                        file.basename, target)
            return None
        storage.write_bytes(checks.receipt_uri(dest_uri, file.name),
                            checks.receipt(self.name, file, digests, advertised))
        log.info("%s: found at %s, verified (%s)", file.basename, target,
                 ", ".join(["size", *sorted(advertised)]))
        return digests["md5"]

    def _advertised(self, file: CompetitionFile) -> dict[str, str]:
        with self._api.build_kaggle_client() as client:
            response = self._request_download(client, file)
            response.close()
        return checks.advertised_checksums(response.headers)

    def _request_download(self, client, file: CompetitionFile):
        from kagglesdk.competitions.types.competition_api_service import ApiDownloadDataFileRequest

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
                advertised = checks.advertised_checksums(response.headers)
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
        def attempt():
            try:
                advertised = self._download_once(file, partial, progress)
            except ValueError as exc:
                if str(exc).startswith("Downloaded file size"):
                    # The kaggle downloader's own check against Content-Length.
                    raise Mismatch(f"size mismatch: {exc}") from None
                raise
            return checks.verify(partial, file.size, advertised), advertised

        def start_over():  # wrong bytes must not be resumed from
            partial.unlink(missing_ok=True)
            Path(str(partial) + _RESUME_MARKER).unlink(missing_ok=True)

        return retrying(attempt, policy=self.retry, what=file.basename, log=log,
                        fatal=lambda exc: self._raise_if_fatal(exc, file),
                        on_mismatch=start_over)

    def _raise_if_fatal(self, exc: BaseException, file: CompetitionFile | None) -> None:
        if isinstance(exc, DfdError):
            raise exc
        status = http_status(exc)
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
            if file is not None and (file.part is not None
                                     or file.basename == "dfdc_train_all.zip"):
                raise DfdError(parts_not_served(self.name)) from None
            raise DfdError(f"{self.name}: {what} not found on Kaggle (HTTP 404)") from None
        if not is_transient(exc):
            import requests

            if isinstance(exc, requests.RequestException) or status is not None:
                # Its text can quote the signed download URL.
                raise FetchFailed(f"{self.name}: {what}: "
                                  f"{describe(exc) if status else redact(repr(exc))}") from None
            raise exc

    def _with_retries(self, what: str, call):
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return call()
            except Exception as exc:
                self._raise_if_fatal(exc, None)
                if attempt == self.retry.attempts:
                    raise FetchFailed(f"{self.name}: {what} failed after {attempt} attempt(s): "
                                      f"{describe(exc)}") from None
                wait = self.retry.delay(attempt, retry_after(exc))
                log.warning("%s: %s: %s; retrying in %.1fs", self.name, what, describe(exc),
                            wait)
                time.sleep(wait)
        raise AssertionError("unreachable")


def parts_not_served(competition: str) -> str:
    """What to say when DFDC parts are asked of Kaggle's API, which does not serve them."""
    return (f"Kaggle's API does not serve the DFDC training parts (the data page: \"not "
            f"available directly on Kaggle\"): accept the rules at https://www.kaggle.com/"
            f"competitions/{competition}/rules, save the part links of its data page into a "
            f"file, one per line, and use --links FILE (dfd download, dfd preprocess, "
            f"dfd sync)")


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
    if not set(listed) - {dfdc.SAMPLE_PART}:  # the labelled sample is no training part
        raise DfdError(parts_not_served(competition))
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
            try:
                results.append(comp.fetch(f, dest_uri, progress=bars))
            except FetchFailed as exc:
                log.error("%s", exc)
                results.append(FetchResult(f, comp.target_uri(f, dest_uri), "failed",
                                           detail=str(exc)))
    finally:
        bars.close()
    return results


def select_api_files(files: list[CompetitionFile], wanted: list[str]) -> list[CompetitionFile]:
    """The listed files that make up each wanted item, whatever shape the listing has: one
    file (``sample_submission.csv``), a folder's files (``test_videos/<name>.mp4``) or one
    zip of it (``test_videos.zip``)."""
    chosen: list[CompetitionFile] = []
    for item in wanted:
        item = item.strip().rstrip("/")
        found = [f for f in files if f.name == item or f.name.startswith(item + "/")
                 or f.name == item + ".zip"]
        if not found:
            served = sorted({f.name.split("/")[0] for f in files})
            raise DfdError(f"the competition lists no {item!r}; it serves "
                           f"{', '.join(served) or 'nothing'}")
        chosen.extend(f for f in found if f not in chosen)
    return chosen


def download_files(wanted: list[str], dest_uri: str, *, competition: str = COMPETITION,
                   retry: RetryPolicy = RetryPolicy(), scratch_dir: str | Path | None = None,
                   jobs: int = 4, progress: bool = False) -> list[FetchResult]:
    """Fetch what Kaggle's API serves (e.g. API_FILES) into dest_uri with the kaggle client,
    `jobs` files at a time, keeping the listed paths (``test_videos/<name>.mp4``). A folder
    listed as one zip is unpacked beside it. Verified files are skipped; a failed file is
    reported and the rest go on; refused access stops the batch."""

    comp = Competition(competition, retry=retry, scratch_dir=scratch_dir)
    files = select_api_files(comp.files(), wanted)
    todo = [f for f in files if not comp.is_current(f, dest_uri)]
    bars = Progress(sum(f.size for f in todo), len(todo), enabled=progress)

    def one(f: CompetitionFile) -> list[FetchResult]:
        try:
            result = comp.fetch(f, dest_uri, progress=bars)
        except FetchFailed as exc:
            log.error("%s", exc)
            return [FetchResult(f, join(dest_uri, f.name), "failed", detail=str(exc))]
        if f.name.endswith(".zip") and f.name[:-len(".zip")] in API_FILES:
            unpack_zip(result.uri, dest_uri)
        return [result]

    return fetch_each(one, files, jobs=jobs, bars=bars, thread_name="kaggle")


def open_seekable(uri: str):
    """A seekable binary file over uri (local, gs://, s3://): zipfile reads the central
    directory at the end, then each member by ranged reads, never the whole archive."""
    fs, path = storage.resolve(uri)
    return fs.open_input_file(path)


def unpack_zip(zip_uri: str, dest_uri: str) -> int:
    """Unpack a zip's safe members (no absolute paths, no '..') into dest_uri, streaming each
    one (never whole in memory); members already there with their size are kept. Returns the
    number written."""
    import shutil
    import tempfile
    import zipfile

    written = 0
    scratch = None
    if storage.is_local(dest_uri):  # beside the files, so that the commit is a rename
        scratch = storage.local_path(dest_uri)
        scratch.mkdir(parents=True, exist_ok=True)
    with open_seekable(zip_uri) as f, zipfile.ZipFile(f) as zf:
        for info in zf.infolist():
            if info.is_dir() or dfdc.unsafe_member_reason(info.filename):
                continue
            target = join(dest_uri, info.filename.replace("\\", "/"))
            if storage.file_size(target) == info.file_size:
                continue
            with tempfile.NamedTemporaryFile(prefix=".unpack-", delete=False,
                                             dir=scratch) as out:
                with zf.open(info) as member:  # zipfile checks the CRC-32 at the end
                    shutil.copyfileobj(member, out, 2**20)
            storage.commit_file(Path(out.name), target)
            Path(out.name).unlink(missing_ok=True)
            written += 1
    return written
