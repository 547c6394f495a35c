"""H.264 files the way DFDC ships them: libx264, yuv420p, about 3 Mbps at 1080p."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

DFDC_BITRATE_1080P = 3_000_000  # 119,154 clips of 10 s averaging 3.9 MB
MIN_BITRATE = 48_000
# Speed over compression efficiency: at a fixed bitrate the preset only trades encode time for
# a little quality, and synthetic sets are regenerated often.
X264_PRESET = "veryfast"
# x264's AVX-512 kernels made the same frames decode to different pixels from run to run and
# with the worker count (seen on AMD EPYC and Intel Xeon; the same frames encoded with every
# other kernel gave one result in every process). On such CPUs x264 is told to stop at AVX2, the
# kernels every other x86-64 machine of ours uses.
X264_WITHOUT_AVX512 = "MMX2,SSE2Fast,SSSE3,SSE4.2,AVX,FMA3,BMI2,AVX2"
_X264_AVX512_FLAGS = {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}  # what x264 checks


@functools.cache
def x264_options() -> dict[str, str]:
    """libx264's options: one thread (callers parallelize across videos) and, on AVX-512 CPUs,
    no AVX-512 kernels, so a clip's pixels depend only on its frames."""
    options = {"preset": X264_PRESET, "threads": "1"}
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith("flags")), [])
    except OSError:  # not Linux: x264 picks its kernels itself
        flags = []
    if _X264_AVX512_FLAGS <= set(flags):
        options["x264-params"] = f"asm={X264_WITHOUT_AVX512}"
    return options


def dfdc_bitrate(width: int, height: int) -> int:
    """DFDC's bits per pixel carried over to another frame size."""
    return max(MIN_BITRATE, round(DFDC_BITRATE_1080P * width * height / (1920 * 1080)))


class H264Writer:
    """An mp4 file written frame by frame from RGB uint8 arrays.

    One encoder thread and a fixed set of x264 kernels (`x264_options`) keep the decoded pixels
    identical from run to run and for any number of workers.
    """

    def __init__(self, path: str | Path, *, width: int, height: int, fps: int,
                 bitrate: int | None = None):
        import av

        self.path = Path(path)
        self._container = av.open(str(self.path), mode="w", format="mp4")
        stream = self._container.add_stream(
            "libx264", rate=fps, options=x264_options())
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
