"""What every stand-in shares: an HTTP server on 127.0.0.1 in a background thread, a log of
what it served, and a request handler that keeps test output clean."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackServer:
    """Serves ``handler`` (a subclass of ``QuietHandler``, given this stand-in as ``standin``)
    on 127.0.0.1:``port`` (0: a free port, known after ``start``) in a background thread;
    ``log`` holds one record per request, appended with ``_record``; ``fault`` queues faults
    for the requests to come."""

    thread_name = "standin"

    def __init__(self, handler: type[BaseHTTPRequestHandler], *, port: int = 0):
        self.port = port
        self.log: list = []
        self._faults: list = []
        self._handler = handler
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self) -> None:
        handler = type("Handler", (self._handler,), {"standin": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = None

    def fault(self, *faults) -> None:
        """Faults the next requests meet, in order (each stand-in says which it has)."""
        with self._lock:
            self._faults.extend(faults)

    def _record(self, served) -> None:
        with self._lock:
            self.log.append(served)


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1, no access log, and a client that abandons a stream (a downloader does on
    resume or on a cut) is not an error."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def handle(self):
        try:
            super().handle()
        except (ConnectionResetError, BrokenPipeError):
            pass
