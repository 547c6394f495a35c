"""A local stand-in for Kaggle's API, speaking the routes the installed kaggle 2.2 client calls.

It serves what the real API serves of DFDC, and nothing more:

- the labelled sample (``train_sample_videos/``: mp4s and ``metadata.json``), the unlabelled
  ``test_videos/`` and ``sample_submission.csv``, listed one file per path as Kaggle mounts
  them in notebooks (``../input/deepfake-detection-challenge/train_sample_videos/metadata.json``)
  or, with ``add_file("test_videos.zip", ...)``, as the zips the data page's "Files" list names
  (``train_sample_videos.zip``, ``test_videos.zip``);
- never the 50 training parts: the data page says the training set "is not available directly
  on Kaggle" and links them as signed cloud-storage URLs instead (see standins/links.py),
  and asking the API for one by name answers 404 (kaggle-cli issue #413, for
  ``dfdc_train_all.zip``). ``add_file`` refuses a part's name, and a download request for one
  answers 404 like any file the competition does not list.

The client (kagglesdk) POSTs JSON to ``/api/v1/<Service>/<Method>`` on http://localhost:7777
when ``KAGGLE_API_ENVIRONMENT=TEST``:

- ``competitions.CompetitionApiService/ListDataFiles`` -> ``{"files": [...], "nextPageToken"}``,
  paged by ``pageSize`` / ``pageToken``;
- ``competitions.CompetitionApiService/DownloadDataFile`` -> a 302 to signed storage, which
  the client follows with a GET and streams; ``KaggleApi.download_file`` then resumes with
  ``Range: bytes=N-`` and ``If-Range: <ETag>``;
- ``security.OAuthService/IntrospectToken`` for KAGGLE_API_TOKEN.

Storage answers like GCS: Content-Length, ETag, Last-Modified, Accept-Ranges and
``x-goog-hash: crc32c=..,md5=..``. Faults queued with ``fault()`` hit the next storage GETs
in order, so a test can drop a connection midway, serve a short or corrupted object, or fail
with a status.

    python -m standins.kaggle sample_submission.csv ...   # serve files by hand
"""
from __future__ import annotations

import base64
import dataclasses
import email.utils
import functools
import hashlib
import json
import re
import socket
import sys
import threading
from pathlib import Path

from standins._server import LoopbackServer, QuietHandler

PORT = 7777
_API = "/api/v1/"
_CREATED = "2019-12-11T18:30:00.000Z"
_LAST_MODIFIED = email.utils.formatdate(1576089000, usegmt=True)


@dataclasses.dataclass
class Fault:
    """What the next storage GET does instead of serving the file faithfully."""
    drop_after: int | None = None  # send this many body bytes, then cut the connection
    truncate_to: int | None = None  # serve a shorter object (consistent Content-Length)
    corrupt: bool = False  # flip bytes, same length
    status: int | None = None  # answer with this HTTP status
    retry_after: float | None = None


@dataclasses.dataclass
class Served:
    """One request as the stand-in saw it."""
    method: str
    path: str
    status: int
    range: str | None = None
    body_bytes: int = 0
    authorized: bool = False


class KaggleStandIn(LoopbackServer):
    """Serves competition files on localhost:7777 in a background thread."""

    thread_name = "kaggle-standin"

    def __init__(self, competition: str, *, username: str = "dfd-tester",
                 key: str = "0123456789abcdef", token: str | None = None,
                 rules_accepted: bool = True, page_cap: int = 20):
        self.competition = competition
        self.username, self.key, self.token = username, key, token
        self.rules_accepted = rules_accepted
        self.page_cap = page_cap
        super().__init__(_Handler, port=PORT)
        self.files: dict[str, bytes] = {}

    # setup

    def add_file(self, name: str, data: bytes) -> None:
        base = name.rsplit("/", 1)[-1]
        if base == "dfdc_train_all.zip" or re.fullmatch(r"dfdc_train_part_\d+\.zip", base):
            raise ValueError(f"Kaggle's API does not serve {name}: serve it as a signed link "
                             f"(standins/links.py)")
        self.files[name] = data

    def add_folder(self, folder: str, files: dict[str, bytes]) -> None:
        """A folder of the competition, one listed file per path (``folder/<name>``)."""
        for name, data in files.items():
            self.add_file(f"{folder}/{name}", data)

    def reset(self) -> None:
        with self._lock:
            self.files.clear()
            self._faults.clear()
            self.log.clear()
            self.rules_accepted = True

    def storage_gets(self) -> list[Served]:
        return [s for s in self.log if s.method == "GET" and s.path.startswith("/storage/")]

    # behaviour

    def _next_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    def authorized(self, header: str | None) -> bool:
        if not header:
            return False
        kind, _, value = header.partition(" ")
        if kind == "Basic":
            return base64.b64decode(value).decode() == f"{self.username}:{self.key}"
        return kind == "Bearer" and self.token is not None and value == self.token


@functools.lru_cache(maxsize=16)  # hashing a big file on every GET would dominate timings
def etag(data: bytes) -> str:
    return '"' + hashlib.md5(data).hexdigest() + '"'


@functools.lru_cache(maxsize=16)
def goog_hash(data: bytes) -> str:
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    try:
        import google_crc32c
        crc = base64.b64encode(google_crc32c.Checksum(data).digest()).decode()
        return f"crc32c={crc},md5={md5}"
    except ImportError:
        return f"md5={md5}"


class _Handler(QuietHandler):
    standin: KaggleStandIn

    # plumbing

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        # Logged before it is sent: a client that has its answer finds it in the log.
        self._served(status, body_bytes=len(data))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"code": status, "message": message})

    def _served(self, status: int, **kw) -> None:
        self.standin._record(Served(self.command, self.path, status,
                                    range=self.headers.get("Range"),
                                    authorized=self.standin.authorized(
                                        self.headers.get("Authorization")), **kw))

    # API

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if not self.path.startswith(_API):
            return self._error(404, "no such route")
        method = self.path[len(_API):]
        if method == "security.OAuthService/IntrospectToken":
            s = self.standin
            active = s.token is not None and body.get("token") == s.token
            return self._json(200, {"active": active, "username": s.username if active else ""})
        if not self.standin.authorized(self.headers.get("Authorization")):
            return self._error(401, "Unauthenticated")
        if body.get("competitionName") != self.standin.competition:
            return self._error(404, "Competition not found")
        if not self.standin.rules_accepted:
            return self._error(403, "You must accept this competition's rules")
        if method == "competitions.CompetitionApiService/ListDataFiles":
            return self._list(body)
        if method == "competitions.CompetitionApiService/DownloadDataFile":
            return self._redirect(body)
        return self._error(404, f"no such route {method}")

    def _list(self, body: dict) -> None:
        names = sorted(self.standin.files)
        start = int(body.get("pageToken") or 0)
        size = min(int(body.get("pageSize") or 20), self.standin.page_cap)
        page = names[start:start + size]
        files = [{"ref": n, "name": n, "totalBytes": len(self.standin.files[n]),
                  "creationDate": _CREATED} for n in page]
        following = start + size
        self._json(200, {"files": files,
                         "nextPageToken": str(following) if following < len(names) else ""})

    def _redirect(self, body: dict) -> None:
        name = body.get("fileName")
        if name not in self.standin.files:  # a training part included: kaggle-cli issue #413
            return self._error(404, "File not found")
        self.send_response(302)
        # A signed URL, like GCS's: the client must never print or log it.
        self.send_header("Location", f"/storage/{self.standin.competition}/{name}"
                                     f"?X-Goog-Signature=standin-signature-do-not-log")
        self.send_header("Content-Length", "0")
        self.end_headers()
        self._served(302)

    # storage

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        prefix = f"/storage/{self.standin.competition}/"
        name = path[len(prefix):] if path.startswith(prefix) else None
        if name not in self.standin.files:
            return self._error(404, "No such object")
        data = self.standin.files[name]
        advertised = data
        fault = self.standin._next_fault() or Fault()
        if fault.status:
            self.send_response(fault.status)
            if fault.retry_after is not None:
                self.send_header("Retry-After", str(fault.retry_after))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return self._served(fault.status)
        if fault.truncate_to is not None:
            data = advertised = data[:fault.truncate_to]
        if fault.corrupt:
            middle = len(data) // 2
            data = data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 64]) \
                + data[middle + 64:]
        start, status = 0, 200
        wanted = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if wanted and wanted.startswith("bytes=") and (if_range in (None, etag(advertised))):
            start = int(wanted[len("bytes="):].split("-", 1)[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return self._served(416)
            status = 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag(advertised))
        self.send_header("Last-Modified", _LAST_MODIFIED)
        self.send_header("x-goog-hash", goog_hash(advertised))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if fault.drop_after is not None:
            sent = self._send(body[:fault.drop_after])
            # Cut the connection mid-body, as a flaky network or a killed proxy would.
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return self._served(status, body_bytes=sent)
        self._served(status, body_bytes=self._send(body))

    def _send(self, body: bytes) -> int:
        sent = 0
        try:
            for i in range(0, len(body), 64 * 1024):
                self.wfile.write(body[i:i + 64 * 1024])
                sent += min(64 * 1024, len(body) - i)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client stopped reading: a resume abandons it
        return sent


def main(argv: list[str] | None = None) -> int:
    files = [Path(p) for p in (argv if argv is not None else sys.argv[1:])]
    standin = KaggleStandIn("deepfake-detection-challenge")
    for f in files:
        standin.add_file(f.name, f.read_bytes())
    print(f"serving {len(files)} file(s) on http://localhost:{PORT} as competition "
          f"{standin.competition}; credentials {standin.username} / <the default test key>; "
          f"set KAGGLE_API_ENVIRONMENT=TEST. Ctrl-C stops.")
    with standin:
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
