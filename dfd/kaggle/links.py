"""DFDC parts from the signed links of the competition's data page.

    dfd download --links dfdc-links.txt --out gs://bucket/dfdc-raw [--parts 0-4]

Kaggle's API does not serve the 50 training parts (the data page: the training set "is not
available directly on Kaggle"; asking the API for one answers 404, kaggle-cli issue #413).
Once the rules are accepted, the data page links each ``dfdc_train_part_NN.zip`` and
``dfdc_train_all.zip`` to a time-limited signed cloud-storage URL. A links file holds those
URLs, one per line (``#`` comments allowed); a file's name is the last piece of the URL's path.

Each link is downloaded with the same retries, checks, receipts and redaction as the Kaggle
API's files (``dfd.kaggle.retries``, ``checks``, ``redact``): a cut connection resumes with
``Range`` + ``If-Range`` (the ETag), so a resumed part transfers about its size once; the bytes
are hashed as they arrive and checked against ``Content-Length`` and ``x-goog-hash`` (crc32c
and/or md5) or ``Content-MD5``; only then is the file committed under its name, with a receipt
under ``_verified/``. A file with a receipt is never requested again (its link may long have
expired), so a second run transfers nothing.

A link that answers something other than the file (an HTML sign-in or rules page, an expired
or forbidden signature) is refused with one line naming the part and what to do; it is never
retried, and the other links go on. The signature is a credential: no message, log line or
receipt shows a URL's query string.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
import urllib.parse
import zipfile
from pathlib import Path

from dfd import dfdc, storage
from dfd.errors import DfdError
from dfd.kaggle import checks
from dfd.kaggle.competition import (
    COMPETITION,
    INCOMING,
    CompetitionFile,
    FetchResult,
    _default_scratch,
    _ranges,
    open_seekable,
)
from dfd.kaggle.errors import FetchFailed, Mismatch
from dfd.kaggle.progress import Progress, fetch_each
from dfd.kaggle.redact import redact, redact_http_logs, register_secret
from dfd.kaggle.retries import RetryPolicy, describe, http_status, is_transient, retrying
from dfd.output_tree import join

log = logging.getLogger(__name__)

ALL_PARTS_ZIP = dfdc.ALL_PARTS_ZIP  # the 50 part zips, nested in one
RULES_URL = f"https://www.kaggle.com/competitions/{COMPETITION}/rules"
FRESH_LINKS = (f"accept the rules at {RULES_URL} and copy fresh links from the competition's "
               f"data page")
# What a cut connection can lose of the chunk in flight: small against a 10 GB part.
_CHUNK = 256 * 2**10
_STATE = ".link.json"  # beside a partial download: the validator and size it resumes against
_ERROR_CODE_RE = re.compile(r"<Code>\s*([A-Za-z]{1,64})\s*</Code>")


class LinkRefused(DfdError):
    """The link answered, but not with the file (a web page, an expired or forbidden
    signature): another attempt would get the same answer."""


@dataclasses.dataclass(frozen=True)
class PartLink:
    """One line of a links file."""
    url: str = dataclasses.field(repr=False)  # signed: never shown
    name: str  # the last piece of the URL's path
    line: int

    @property
    def part(self) -> int | None:
        return dfdc.parse_part_name(self.name)

    @property
    def where(self) -> str:
        """The URL without its query string (the signature): safe to show and record."""
        parsed = urllib.parse.urlsplit(self.url)
        host = parsed.hostname or ""
        if parsed.port:
            host = f"{host}:{parsed.port}"
        return urllib.parse.urlunsplit((parsed.scheme, host, parsed.path, "", ""))

    @property
    def label(self) -> str:
        return f"part {self.part:02d}" if self.part is not None else self.name


def parse_links(text: str, *, source: str = "links file") -> list[PartLink]:
    """The links of a links file's text; a name given twice keeps its last line (the
    freshest copy). Raises DfdError, naming the line but never quoting a signature."""
    by_name: dict[str, PartLink] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parsed = urllib.parse.urlsplit(line)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise DfdError(f"{source} line {number}: not an http(s) link: "
                           f"{redact(line)[:120]!r}")
        for _, value in urllib.parse.parse_qsl(parsed.query):
            register_secret(value)  # blanked wherever it might appear
        name = urllib.parse.unquote(parsed.path.rstrip("/").rsplit("/", 1)[-1])
        if not name or dfdc.unsafe_member_reason(name) or "/" in name:
            raise DfdError(f"{source} line {number}: the link's path names no file: "
                           f"{redact(line)[:120]!r}")
        if name in by_name:
            log.info("%s: line %d replaces line %d (%s)", source, number,
                     by_name[name].line, name)
        by_name[name] = PartLink(line, name, number)
    return sorted(by_name.values(), key=lambda link: (link.part is None, link.part or 0,
                                                       link.name))


def read_links(uri: str) -> list[PartLink]:
    """The links in a links file (local, gs:// or s3://)."""
    text = storage.read_text(uri)
    if text is None:
        raise DfdError(f"no links file at {uri}")
    links = parse_links(text, source=uri)
    if not links:
        raise DfdError(f"{uri} holds no links: save the links of the competition's data page "
                       f"into it, one per line")
    return links


def select(links: list[PartLink], parts: set[int] | None) -> list[PartLink]:
    """The links to fetch for a part selection (None: every link). dfdc_train_all.zip is kept
    when a selected part is not linked on its own: it holds every part."""
    if parts is None:
        return list(links)
    chosen = [link for link in links if link.part in parts]
    missing = parts - {link.part for link in chosen}
    nested = [link for link in links if link.name == ALL_PARTS_ZIP]
    if missing and nested:
        return chosen + nested
    if missing:
        raise DfdError(f"the links file has no link for part(s) {_ranges(sorted(missing))}; it "
                       f"links part(s) {_ranges(sorted(p for p in _parts(links))) or 'none'}")
    return chosen


def _parts(links: list[PartLink]) -> set[int]:
    return {link.part for link in links if link.part is not None}


class PartLinks:
    """Fetching files from their signed links: resume, verification, atomic commit."""

    def __init__(self, links: list[PartLink], *, retry: RetryPolicy = RetryPolicy(),
                 scratch_dir: str | Path | None = None, timeout_s: float = 60.0):
        self.links = {link.name: link for link in links}
        self.retry = retry
        self.scratch_dir = Path(scratch_dir) if scratch_dir else _default_scratch()
        self.timeout_s = timeout_s
        redact_http_logs()

    def parts(self) -> dict[int, PartLink]:
        return {link.part: link for link in self.links.values() if link.part is not None}

    def target_uri(self, link: PartLink, dest_uri: str) -> str:
        return join(dest_uri, link.name)

    def committed(self, link: PartLink, dest_uri: str) -> dict | None:
        """The receipt of a verified copy at dest_uri, or None."""
        receipt = checks.read_receipt(dest_uri, link.name)
        if not receipt or storage.file_size(self.target_uri(link, dest_uri)) != receipt["size"]:
            return None
        return receipt

    def fetch(self, link: PartLink, dest_uri: str, *,
              progress: Progress | None = None) -> FetchResult:
        """Download, verify and commit one linked file unless a verified copy is there.

        Raises LinkRefused when the link does not give the file, FetchFailed when the
        retries are spent."""
        target = self.target_uri(link, dest_uri)
        receipt = self.committed(link, dest_uri)
        if receipt:
            return FetchResult(CompetitionFile(link.name, receipt["size"], receipt.get("created")),
                               target, "present", md5=receipt.get("md5"))
        start = time.monotonic()
        progress = progress or Progress(0, 1, enabled=False)
        partial = self._partial_path(link, dest_uri)
        state = Path(str(partial) + _STATE)

        def start_over():
            partial.unlink(missing_ok=True)
            state.unlink(missing_ok=True)

        try:
            file, digests, advertised = retrying(
                lambda: self._download_once(link, partial, state, progress),
                policy=self.retry, what=link.name, log=log,
                fatal=lambda exc: _raise_if_fatal(exc, link), on_mismatch=start_over)
        except LinkRefused:
            if not (partial.exists() and partial.stat().st_size):
                start_over()  # nothing worth resuming: leave no trace
            raise
        if not storage.is_local(target):
            log.info("%s: uploading %d bytes to %s", link.name, file.size, target)
        storage.commit_file(partial, target)
        if not storage.is_local(target):
            partial.unlink(missing_ok=True)
        state.unlink(missing_ok=True)
        storage.write_bytes(checks.receipt_uri(dest_uri, link.name),
                            checks.receipt(None, file, digests, advertised, source="link",
                                           link=link.where))
        progress.finished(file.size)
        seconds = time.monotonic() - start
        log.info("%s: %d bytes fetched and verified (%s) in %.1fs -> %s", link.name, file.size,
                 ", ".join(["size", *sorted(advertised)]), seconds, target)
        return FetchResult(file, target, "fetched", md5=digests["md5"], seconds=seconds)

    def _partial_path(self, link: PartLink, dest_uri: str) -> Path:
        if storage.is_local(dest_uri):
            return storage.local_path(dest_uri) / INCOMING / link.name
        return self.scratch_dir / "links" / link.name

    def _download_once(self, link: PartLink, partial: Path, state: Path,
                       progress: Progress) -> tuple[CompetitionFile, dict, dict]:
        import requests

        partial.parent.mkdir(parents=True, exist_ok=True)
        known = _read_state(state) if partial.exists() else None
        have = partial.stat().st_size if known else 0
        headers = {"Accept-Encoding": "identity"}
        if have and known.get("validator"):
            headers.update({"Range": f"bytes={have}-", "If-Range": known["validator"]})
        with requests.get(link.url, headers=headers, stream=True,
                          timeout=(10, self.timeout_s)) as response:
            _check_answer(link, response)
            if response.status_code == 206:
                first, total = _content_range(response.headers.get("Content-Range"))
                if first != have:
                    raise Mismatch(f"the server resumed at byte {first}, not {have}")
                mode = "ab"
            else:
                total, mode, have = _content_length(response), "wb", 0
            advertised = checks.advertised_checksums(response.headers)
            if known and mode == "ab":
                advertised = advertised or known.get("advertised", {})
            validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
            file = CompetitionFile(link.name, total, response.headers.get("Last-Modified"))
            state.write_text(json.dumps({"validator": validator, "size": total,
                                         "advertised": advertised}))
            if not known or known.get("size") != total:
                progress.expect(total)
            digests = checks.Digests(set(advertised))
            if have:
                with open(partial, "rb") as f:
                    digests.feed(f)
            with progress.file(link.name, total, partial), open(partial, mode) as out:
                # A zip starts with "PK"; a page served as something else starts with "<".
                first_chunk = mode == "wb" and link.name.endswith(".zip")
                for chunk in response.iter_content(_CHUNK):
                    if first_chunk and chunk.lstrip()[:1] == b"<":
                        raise LinkRefused(_refusal(link, "it answered a web page (sign-in or "
                                                         "rules page), not the file"))
                    first_chunk = False
                    out.write(chunk)
                    digests.update(chunk)
        size = partial.stat().st_size
        if size != total:
            raise Mismatch(f"size mismatch: {size} bytes downloaded, the server announced "
                           f"{total}")
        found = digests.hexdigests()
        checks.check_digests(found, advertised)
        return file, found, advertised


def _read_state(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _content_length(response) -> int:
    try:
        return int(response.headers["Content-Length"])
    except (KeyError, ValueError):
        raise Mismatch("the server announced no Content-Length: the download cannot be "
                       "checked") from None


def _content_range(value: str | None) -> tuple[int, int]:
    m = re.fullmatch(r"bytes (\d+)-\d+/(\d+)", (value or "").strip())
    if not m:
        raise Mismatch(f"a partial answer without a usable Content-Range ({value!r})")
    return int(m.group(1)), int(m.group(2))


def _refusal(link: PartLink, why: str) -> str:
    return f"{link.label} ({link.name}): {why}: {FRESH_LINKS}"


def _check_answer(link: PartLink, response) -> None:
    """Raise unless the response carries the file (or a part of it)."""

    status = response.status_code
    kind = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if status in (200, 206):
        if kind in ("text/html", "application/xhtml+xml"):
            raise LinkRefused(_refusal(link, "it answered a web page (sign-in or rules page), "
                                             "not the file"))
        return
    if status == 416:
        raise Mismatch("the partial download is longer than the file")
    if status in (408, 429) or status >= 500:
        response.raise_for_status()  # transient: retried (describe() never shows the URL)
    code = _error_code(response) if "xml" in kind else ""
    shown = f"HTTP {status}{' ' + code if code else ''}"
    if status == 400 and "expired" in code.lower():
        raise LinkRefused(_refusal(link, f"the link has expired ({shown})"))
    if status in (400, 401, 403):
        raise LinkRefused(_refusal(link, f"the link was refused ({shown}); it may have expired"))
    if status == 404:
        raise LinkRefused(_refusal(link, f"nothing at that link ({shown})"))
    raise LinkRefused(_refusal(link, f"unexpected answer ({shown})"))


def _error_code(response) -> str:
    """The <Code> of a cloud-storage XML error, e.g. ExpiredToken; nothing else of the body is
    shown (it can quote the signed request)."""
    try:
        body = next(response.iter_content(4096), b"").decode("utf-8", "replace")
    except Exception:
        return ""
    m = _ERROR_CODE_RE.search(body)
    return m.group(1) if m else ""


def _raise_if_fatal(exc: BaseException, link: PartLink) -> None:
    if isinstance(exc, DfdError):
        raise exc
    if isinstance(exc, Mismatch) or is_transient(exc):
        return
    import requests

    if isinstance(exc, requests.RequestException) or http_status(exc) is not None:
        raise FetchFailed(f"{link.name}: {describe(exc)}") from None
    raise exc


# ---- dfdc_train_all.zip ----------------------------------------------------------------------

def nested_parts(all_zip: zipfile.ZipFile) -> dict[int, zipfile.ZipInfo]:
    """The part zips nested in dfdc_train_all.zip, by part number. Two members for one part
    (``_0.zip`` and ``_00.zip``) are an error naming both."""
    found: dict[int, zipfile.ZipInfo] = {}
    for info in all_zip.infolist():
        base = dfdc.member_file_name(info.filename)
        part = dfdc.parse_part_name(base) if base.endswith(".zip") else None
        if part is None or dfdc.unsafe_member_reason(info.filename):
            continue
        if part in found:
            raise DfdError(f"{ALL_PARTS_ZIP} holds part {part} twice: "
                           f"{found[part].filename!r} and {info.filename!r}")
        found[part] = info
    return found


def unpack_nested_parts(all_zip_uri: str, dest_uri: str, *, parts: set[int] | None = None,
                        scratch_dir: str | Path | None = None) -> list[FetchResult]:
    """Stage the part zips nested in dfdc_train_all.zip as ordinary parts in dest_uri, each
    streamed out (1 MiB at a time, never whole in memory), its CRC-32 checked by zipfile,
    committed atomically with a receipt. Parts already staged from this archive are skipped."""
    results = []
    with open_seekable(all_zip_uri) as f, zipfile.ZipFile(f) as zf:
        nested = nested_parts(zf)
        wanted = sorted(nested) if parts is None else sorted(p for p in parts if p in nested)
        for part in wanted:
            info = nested[part]
            name = dfdc.part_zip_name(part)
            target = join(dest_uri, name)
            file = CompetitionFile(name, info.file_size, None)
            receipt = checks.read_receipt(dest_uri, name)
            if receipt and receipt.get("crc32") == f"{info.CRC:08x}" \
                    and storage.file_size(target) == info.file_size:
                results.append(FetchResult(file, target, "present", md5=receipt.get("md5")))
                continue
            start = time.monotonic()
            if storage.is_local(dest_uri):
                partial = storage.local_path(dest_uri) / INCOMING / name
            else:
                partial = Path(scratch_dir or _default_scratch()) / "links" / name
            partial.parent.mkdir(parents=True, exist_ok=True)
            digests = checks.Digests()
            with zf.open(info) as member, open(partial, "wb") as out:
                while chunk := member.read(_CHUNK):  # zipfile checks the CRC-32 at the end
                    out.write(chunk)
                    digests.update(chunk)
            storage.commit_file(partial, target)
            if not storage.is_local(dest_uri):
                partial.unlink(missing_ok=True)
            found = digests.hexdigests()
            storage.write_bytes(checks.receipt_uri(dest_uri, name),
                                checks.receipt(None, file, found, {}, source=ALL_PARTS_ZIP,
                                               member=info.filename, crc32=f"{info.CRC:08x}"))
            log.info("%s: staged from %s (%d bytes, CRC-32 checked)", name, ALL_PARTS_ZIP,
                     info.file_size)
            results.append(FetchResult(file, target, "fetched", md5=found["md5"],
                                       seconds=time.monotonic() - start))
    return results


# ---- the batch -------------------------------------------------------------------------------

def download_links(links: list[PartLink], dest_uri: str, *, parts: set[int] | None = None,
                   jobs: int = 4, retry: RetryPolicy = RetryPolicy(),
                   scratch_dir: str | Path | None = None,
                   progress: bool = False) -> list[FetchResult]:
    """Fetch the selected links into dest_uri, `jobs` at a time, skipping verified copies.

    Every link gets its own result: a refused or failed one (status "failed", with the one
    line that says why) never stops the others. A fetched dfdc_train_all.zip is unpacked into
    its parts (the selected ones) beside it."""
    chosen = select(links, parts)
    fetcher = PartLinks(links, retry=retry, scratch_dir=scratch_dir)
    todo = [link for link in chosen if not fetcher.committed(link, dest_uri)]
    bars = Progress(0, len(todo), enabled=progress)

    def one(link: PartLink) -> list[FetchResult]:
        try:
            result = fetcher.fetch(link, dest_uri, progress=bars)
        except DfdError as exc:  # LinkRefused, FetchFailed
            log.error("%s", exc)
            return [FetchResult(CompetitionFile(link.name, 0), fetcher.target_uri(link, dest_uri),
                                "failed", detail=str(exc))]
        except Exception as exc:  # one link's surprise must not stop the others
            detail = redact(f"{link.name}: {type(exc).__name__}: {exc}")
            log.error("%s", detail)
            return [FetchResult(CompetitionFile(link.name, 0), fetcher.target_uri(link, dest_uri),
                                "failed", detail=detail)]
        if link.name != ALL_PARTS_ZIP:
            return [result]
        selected = None if parts is None else parts - _parts(chosen)
        try:
            return [result, *unpack_nested_parts(result.uri, dest_uri, parts=selected,
                                                 scratch_dir=scratch_dir)]
        except (DfdError, zipfile.BadZipFile, OSError) as exc:
            detail = f"{ALL_PARTS_ZIP}: unpacking failed: {type(exc).__name__}: {exc}"
            log.error("%s", detail)
            return [result, FetchResult(result.file, result.uri, "failed", detail=detail)]

    return fetch_each(one, chosen, jobs=jobs, bars=bars, thread_name="link")


def default_jobs() -> int:
    return min(4, (os.cpu_count() or 1) * 2)
