"""A local stand-in for the signed cloud-storage links of the DFDC data page, on 127.0.0.1.

What it imitates, and the public evidence for it:

- Kaggle's data page links each training part to a time-limited signed URL of the form
  ``…/kaggle-competitions-detached-data/16880/dfdc_train_part_00.zip?GoogleAccessId=…&Expires=
  …&Signature=…`` (GCS V2 signing; the data page says the training set "is not available
  directly on Kaggle" and that the rules must be accepted to reach the links).
- A stale link answers HTTP 400 with an XML ``<Error><Code>ExpiredToken</Code>…`` body; a bad
  or tampered signature answers 403 ``SignatureDoesNotMatch`` quoting the string to sign
  (django-storages issue #1021 shows that body); a visitor who is not signed in gets Kaggle's
  sign-in page: HTTP 200, ``text/html``.
- Objects answer like GCS: ``Content-Length``, ``ETag``, ``Last-Modified``, ``Accept-Ranges``,
  ``x-goog-hash: crc32c=…,md5=…`` (the format googleapis/python-storage parses in
  ``_extract_headers_from_download``), crc32c alone for composite objects ("composite objects
  provide only crc32c hashes", GCS ObjectChecksums reference), or ``Content-MD5`` alone, as a
  team's own mirror may answer (RFC 1864); ``Range`` answers 206 with
  ``Content-Range``, and ``If-Range`` with a stale validator answers the whole object (RFC 9110).

Faults queued with ``fault()`` hit the next object GETs in order (a connection cut mid-body,
a status). Every request is logged with the bytes it carried, so tests can count transfers.

    python -m standins.links dfdc_train_part_00.zip ...   # serve files, print links
"""
from __future__ import annotations

import base64
import dataclasses
import email.utils
import functools
import hashlib
import hmac
import socket
import sys
import threading
import time
import urllib.parse
from pathlib import Path

from standins._server import LoopbackServer, QuietHandler

BUCKET = "kaggle-competitions-detached-data"
COMPETITION_ID = "16880"
ACCESS_ID = "kaggle-datasets@kaggle-161607.iam.gserviceaccount.com"
_LAST_MODIFIED = email.utils.formatdate(1576089000, usegmt=True)
_SIGN_IN_PAGE = (b"<!DOCTYPE html>\n<html lang=\"en\"><head><title>Sign In | Kaggle</title>"
                 b"</head><body><h1>Sign in</h1><p>Sign in or register to accept the "
                 b"competition rules and download the data.</p></body></html>\n")


@dataclasses.dataclass
class Fault:
    """What the next object GET does instead of serving faithfully."""
    drop_after: int | None = None  # send this many body bytes, then cut the connection
    status: int | None = None  # answer with this status (empty body)
    corrupt: bool = False  # flip bytes in the middle, same length and headers (bit rot)
    name: str | None = None  # only a GET of this object (default: the next GET of any)


@dataclasses.dataclass
class Served:
    path: str  # without the query string
    status: int
    range: str | None = None
    if_range: str | None = None
    body_bytes: int = 0


@dataclasses.dataclass
class StoredObject:
    data: bytes
    crc32c_only: bool = False  # a composite object: no md5 in x-goog-hash
    content_md5: bool = False  # a mirror that answers Content-MD5, not x-goog-hash

    @functools.cached_property
    def etag(self) -> str:
        return '"' + hashlib.md5(self.data).hexdigest() + '"'

    @functools.cached_property
    def goog_hash(self) -> str:
        import google_crc32c

        crc = base64.b64encode(google_crc32c.Checksum(self.data).digest()).decode()
        if self.crc32c_only:
            return f"crc32c={crc}"
        return f"crc32c={crc},md5={base64.b64encode(hashlib.md5(self.data).digest()).decode()}"


class LinksStandIn(LoopbackServer):
    """Serves objects at signed links on 127.0.0.1 (a free port) in a background thread."""

    thread_name = "links-standin"

    def __init__(self, *, port: int = 0):
        super().__init__(_Handler, port=port)
        self.objects: dict[str, StoredObject] = {}
        self.sign_in_names: set[str] = set()  # links that answer the sign-in page
        self._key = b"standin-signing-key"

    # setup

    def add(self, name: str, data: bytes, *, crc32c_only: bool = False,
            content_md5: bool = False) -> None:
        self.objects[name] = StoredObject(data, crc32c_only, content_md5)

    def reset(self) -> None:
        with self._lock:
            self.objects.clear()
            self.sign_in_names.clear()
            self._faults.clear()
            self.log.clear()

    def link(self, name: str, *, expires_in: float = 3600.0) -> str:
        """A signed link to the object, valid for expires_in seconds (negative: expired)."""
        expires = int(time.time() + expires_in)
        path = f"/{BUCKET}/{COMPETITION_ID}/{name}"
        query = urllib.parse.urlencode({"GoogleAccessId": ACCESS_ID, "Expires": expires,
                                        "Signature": self._sign(path, expires)})
        return f"http://127.0.0.1:{self.port}{path}?{query}"

    def sign_in_link(self, name: str) -> str:
        """A link that answers Kaggle's sign-in page (rules not accepted, not signed in)."""
        self.sign_in_names.add(name)
        return f"http://127.0.0.1:{self.port}/c/deepfake-detection-challenge/data/{name}"

    def object_gets(self) -> list[Served]:
        return [s for s in self.log if s.path.startswith(f"/{BUCKET}/")]

    def bytes_served(self, name: str) -> int:
        return sum(s.body_bytes for s in self.object_gets() if s.path.endswith("/" + name))

    def _sign(self, path: str, expires: int) -> str:
        digest = hmac.new(self._key, f"GET\n\n\n{expires}\n{path}".encode(), "sha256").digest()
        return base64.b64encode(digest).decode()

    def _next_fault(self, name: str) -> Fault | None:
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.name in (None, name):
                    return self._faults.pop(i)
            return None


def _xml_error(code: str, message: str, extra: str = "") -> bytes:
    return (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
            f"<Message>{message}</Message>{extra}</Error>").encode()


class _Handler(QuietHandler):
    standin: LinksStandIn

    def _answer(self, status: int, body: bytes, content_type: str, **headers) -> None:
        # Logged before it is sent: a client that has its answer finds it in the log.
        self._served(status, len(body))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _served(self, status: int, body_bytes: int) -> None:
        self.standin._record(Served(self.path.split("?", 1)[0], status,
                                    self.headers.get("Range"), self.headers.get("If-Range"),
                                    body_bytes))

    def do_GET(self):
        s = self.standin
        parsed = urllib.parse.urlsplit(self.path)
        name = parsed.path.rsplit("/", 1)[-1]
        if parsed.path.startswith("/c/") and name in s.sign_in_names:
            return self._answer(200, _SIGN_IN_PAGE, "text/html; charset=utf-8")
        prefix = f"/{BUCKET}/{COMPETITION_ID}/"
        if not parsed.path.startswith(prefix):
            return self._answer(404, _xml_error("NoSuchKey", "The specified key does not "
                                                "exist."), "application/xml; charset=UTF-8")
        query = dict(urllib.parse.parse_qsl(parsed.query))
        try:
            expires = int(query["Expires"])
        except (KeyError, ValueError):
            return self._answer(400, _xml_error("MissingSecurityHeader", "Your request was "
                                                "missing a required header."),
                                "application/xml; charset=UTF-8")
        if not hmac.compare_digest(query.get("Signature", ""), s._sign(parsed.path, expires)):
            to_sign = f"GET\n\n\n{expires}\n{parsed.path}"
            return self._answer(403, _xml_error(
                "SignatureDoesNotMatch", "The request signature we calculated does not match "
                "the signature you provided.", f"<StringToSign>{to_sign}</StringToSign>"),
                "application/xml; charset=UTF-8")
        if expires < time.time():
            return self._answer(400, _xml_error(
                "ExpiredToken", "The provided token has expired.",
                f"<Details>Request signature expired at: "
                f"{time.strftime('%Y-%m-%dT%H:%M:%S+00:00', time.gmtime(expires))}"
                f"</Details>"), "application/xml; charset=UTF-8")
        if name not in s.objects:
            return self._answer(404, _xml_error("NoSuchKey", "The specified key does not "
                                                "exist."), "application/xml; charset=UTF-8")
        self._serve_object(name, s.objects[name])

    def _serve_object(self, name: str, obj: StoredObject) -> None:
        fault = self.standin._next_fault(name) or Fault()
        if fault.status:
            return self._answer(fault.status, b"", "text/plain")
        data = obj.data
        if fault.corrupt:
            middle = len(data) // 2
            data = data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 64]) \
                + data[middle + 64:]
        start, status = 0, 200
        wanted, if_range = self.headers.get("Range"), self.headers.get("If-Range")
        if wanted and wanted.startswith("bytes=") and if_range in (None, obj.etag,
                                                                   _LAST_MODIFIED):
            start = int(wanted[len("bytes="):].split("-", 1)[0])
            if start >= len(data):
                return self._answer(416, b"", "text/plain",
                                    Content_Range=f"bytes */{len(data)}")
            status = 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", obj.etag)
        self.send_header("Last-Modified", _LAST_MODIFIED)
        if obj.content_md5:  # RFC 1864; the header of the whole object, as on a full GET
            self.send_header("Content-MD5",
                             base64.b64encode(hashlib.md5(obj.data).digest()).decode())
        else:
            self.send_header("x-goog-hash", obj.goog_hash)
            self.send_header("x-goog-stored-content-length", str(len(data)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if fault.drop_after is not None:
            sent = self._send(body[:fault.drop_after])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)  # a cut connection, mid-body
            self.close_connection = True
            return self._served(status, sent)
        self._served(status, self._send(body))

    def _send(self, body: bytes) -> int:
        sent = 0
        view = memoryview(body)
        try:
            for i in range(0, len(body), 256 * 1024):
                chunk = view[i:i + 256 * 1024]
                self.wfile.write(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        return sent


def main(argv: list[str] | None = None) -> int:
    files = [Path(p) for p in (argv if argv is not None else sys.argv[1:])]
    standin = LinksStandIn()
    for f in files:
        standin.add(f.name, f.read_bytes())
        # GCS stores an object's hashes with it: compute them before the first request.
        standin.objects[f.name].etag, standin.objects[f.name].goog_hash
    with standin:
        for f in files:
            print(standin.link(f.name))
        print(f"# serving {len(files)} file(s) on 127.0.0.1:{standin.port}; Ctrl-C stops",
              file=sys.stderr)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
