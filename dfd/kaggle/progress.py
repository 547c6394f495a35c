"""Progress bars for a batch of downloads (tqdm, on stderr)."""
from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Iterable
from pathlib import Path


class Progress:
    """A bar for the whole batch and one per file in flight (tqdm, on stderr).

    The kaggle downloader writes the file and keeps its own bar quiet, so the bars follow each
    file's size on disk. Files may be in flight together (parallel link downloads): each gets
    its own line, and the overall bar counts every one of them. A size not known before the
    download starts (a signed link says it only when it answers) is added with ``expect``.
    """

    def __init__(self, total_bytes: int, files: int, *, enabled: bool):
        from tqdm import tqdm

        self._tqdm = tqdm
        self.enabled = enabled
        self._lock = threading.Lock()
        self._done = 0
        self._in_flight: dict[str, int] = {}  # file -> bytes on disk
        self._lines: set[int] = set()
        self.overall = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024,
                            desc=f"overall (0/{files} files)", position=0, disable=not enabled,
                            dynamic_ncols=True)
        self._files = files
        self._finished = 0

    def expect(self, size: int) -> None:
        """Add a file's size, learnt once its download answered, to the overall total."""
        with self._lock:
            self.overall.total = (self.overall.total or 0) + size
            self.overall.refresh()

    def _take_line(self) -> int:
        with self._lock:
            line = next(i for i in range(1, len(self._lines) + 2) if i not in self._lines)
            self._lines.add(line)
            return line

    @contextlib.contextmanager
    def file(self, name: str, size: int, path: Path):
        line = self._take_line()
        bar = self._tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                         position=line, leave=False, disable=not self.enabled,
                         dynamic_ncols=True)
        stop = threading.Event()

        def show():
            try:
                on_disk = path.stat().st_size
            except OSError:  # not started yet, or removed after a mismatch
                on_disk = 0
            with self._lock:
                bar.n = on_disk
                bar.refresh()
                self._in_flight[name] = on_disk
                self.overall.n = self._done + sum(self._in_flight.values())
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
            with self._lock:
                self._in_flight.pop(name, None)
                self._lines.discard(line)
                bar.close()

    def finished(self, size: int) -> None:
        with self._lock:
            self._done += size
            self._finished += 1
            self.overall.n = self._done + sum(self._in_flight.values())
            self.overall.set_description(f"overall ({self._finished}/{self._files} files)")

    def close(self) -> None:
        self.overall.close()


def fetch_each(one: Callable[[object], list], items: Iterable, *, jobs: int, bars: Progress,
               thread_name: str) -> list:
    """``one(item)`` for every item on ``jobs`` threads, the lists it returns joined in item
    order; the progress bars are closed once all are done (or one raised)."""
    results: list = []
    try:
        with concurrent.futures.ThreadPoolExecutor(max(1, jobs),
                                                   thread_name_prefix=thread_name) as pool:
            for batch in pool.map(one, items):
                results.extend(batch)
    finally:
        bars.close()
    return results
