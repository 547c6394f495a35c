"""Progress bars for a batch of downloads (tqdm, on stderr)."""
from __future__ import annotations

import contextlib
import threading
from pathlib import Path


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
