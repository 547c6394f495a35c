"""H.264 files the way DFDC ships them: libx264, yuv420p, about 3 Mbps at 1080p."""
from __future__ import annotations

from pathlib import Path

import numpy as np

DFDC_BITRATE_1080P = 3_000_000  # 119,154 clips of 10 s averaging 3.9 MB
MIN_BITRATE = 48_000
# Speed over compression efficiency: at a fixed bitrate the preset only trades encode time for
# a little quality, and synthetic sets are regenerated often.
X264_PRESET = "veryfast"


def dfdc_bitrate(width: int, height: int) -> int:
    """DFDC's bits per pixel carried over to another frame size."""
    return max(MIN_BITRATE, round(DFDC_BITRATE_1080P * width * height / (1920 * 1080)))


class H264Writer:
    """An mp4 file written frame by frame from RGB uint8 arrays.

    One encoder thread: callers parallelize across videos, and a fixed thread count keeps the
    bytes identical from run to run.
    """

    def __init__(self, path: str | Path, *, width: int, height: int, fps: int,
                 bitrate: int | None = None):
        import av

        self.path = Path(path)
        self._container = av.open(str(self.path), mode="w", format="mp4")
        stream = self._container.add_stream(
            "libx264", rate=fps, options={"preset": X264_PRESET, "threads": "1"})
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = bitrate or dfdc_bitrate(width, height)
        self._stream = stream
        self._frame_type = av.VideoFrame
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        frame = self._frame_type.from_ndarray(rgb, format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._container is None:
            return
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None

    def __enter__(self) -> H264Writer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
