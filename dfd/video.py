"""Video access: probe a clip, choose the frames to sample, decode only what those frames need.

H.264 decoding is the floor of the whole pipeline's cost (DESIGN.md), so a clip is decoded once,
sequentially, from its first frame: unsampled frames are decoded but never colour-converted,
decoding stops after the last sampled frame, and nothing seeks (a seek re-decodes from the
previous keyframe). One decoder thread per process by default, because the pipeline already
runs one process per core.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

import av
import numpy as np

from dfd.config import Limits
from dfd.errors import DfdError

VideoSource = str | os.PathLike | bytes | Callable[[], BinaryIO] | BinaryIO
"""A path, the file's bytes, an opener returning a binary stream, or an open binary stream."""

SAMPLING_POLICIES = ("random", "uniform")


# ---- typed failures ----------------------------------------------------------------------------

class VideoError(DfdError):
    """A video that cannot be used; ``reason`` is the short stable string recorded in rejects."""
    reason = "video_error"

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class UnreadableVideo(VideoError):
    """The container cannot be opened, holds no video stream, or not even its first frame
    decodes (a header FFmpeg refuses, such as an SPS claiming 60000x60000)."""
    reason = "unreadable"


class BadZipMember(VideoError):
    """A zip member whose bytes contradict its header: a CRC or size that lies (as zip bombs
    do) or damaged data. Raised by an opener; zipfile never inflates past the declared size."""
    reason = "bad_member"


class TruncatedVideo(VideoError):
    """The stream ends, or stops decoding, before a frame the container promised."""
    reason = "truncated"


class NoFrames(VideoError):
    """The container opens but holds no video frames (an empty or audio-only file)."""
    reason = "no_frames"


class FrameTooLarge(VideoError):
    reason = "frame_too_large"


class TooManyFrames(VideoError):
    reason = "too_many_frames"


class VideoTooLarge(VideoError):
    """More bytes than ``Limits.max_video_bytes``; refused before anything is read."""
    reason = "too_large"


class DecodeTimeout(VideoError):
    reason = "decode_timeout"


class NoFace(VideoError):
    """No face in any sampled frame: the video contributes nothing to train on."""
    reason = "no_face"


# ---- probing and sampling ----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What a clip is. ``width`` and ``height`` are those of the upright frames read_frames
    returns; ``rotation`` is the counter-clockwise turn (0, 90, 180, 270) applied to get them."""
    fps: float
    frame_count: int
    width: int
    height: int
    rotation: int = 0


def sample_frame_indices(frame_count: int, k: int, *, policy: str = "random", seed: int = 0,
                         key: str = "") -> list[int]:
    """k distinct sorted frame indices out of frame_count (all of them when k >= frame_count).

    ``random`` draws k frames from a generator seeded by (seed, key), so a video's sample is the
    same on every run and every machine (the paper's 5 random frames; key is the video name).
    ``uniform`` spaces k frames evenly from the first to the last (the DFDC winners' 32).
    """
    if policy not in SAMPLING_POLICIES:
        raise ValueError(f"unknown sampling policy {policy!r}; one of {list(SAMPLING_POLICIES)}")
    if k < 1:
        raise ValueError(f"frames to sample must be >= 1, got {k}")
    if frame_count <= 0:
        return []
    if k >= frame_count:
        return list(range(frame_count))
    if policy == "uniform":
        return sorted({int(round(x)) for x in np.linspace(0, frame_count - 1, k)})
    # Python's hash() is salted per process; a digest keeps the sample stable across workers.
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    return sorted(int(i) for i in rng.choice(frame_count, size=k, replace=False))


def source_size(source: VideoSource) -> int | None:
    """Bytes of the source when they are known without reading it."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return len(source)
    if isinstance(source, (str, os.PathLike)):
        try:
            return os.path.getsize(source)
        except OSError:
            return None
    return None


# ---- decoding ----------------------------------------------------------------------------------

def _open_stream(source: VideoSource):
    """(what av.open takes, whether we own it and must close it)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(source), True
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source), False
    if hasattr(source, "read"):
        return source, False
    if callable(source):
        return source(), True
    raise TypeError(f"cannot read a video from {type(source).__name__}")


def _rotation_of(frame: av.VideoFrame) -> int:
    # PyAV reports the display matrix as a counter-clockwise angle in (-180, 180].
    return int(round((getattr(frame, "rotation", 0) or 0) / 90.0)) % 4 * 90


class VideoReader:
    """One open video, decoded in a single forward pass.

    ``info`` is known on opening (the first frame is decoded then, to learn the rotation);
    ``read(indices)`` continues the same pass, so later calls may only ask for later frames.
    Use as a context manager, or call ``close()``.
    """

    def __init__(self, source: VideoSource, *, limits: Limits = Limits(), threads: int = 1,
                 size: int | None = None):
        self.limits = limits
        self._source = source
        self._threads = threads
        self._owned = None
        self._container = None
        size = size if size is not None else source_size(source)
        if size is not None and size > limits.max_video_bytes:
            raise VideoTooLarge(f"{size} bytes, limit {limits.max_video_bytes}")
        # One budget for the whole video, however many read() calls it takes.
        self._deadline = time.monotonic() + limits.max_decode_seconds
        try:
            self._open()
            self.info = self._probe()
        except BaseException:
            self.close()
            raise

    # -- opening

    def _open(self) -> None:
        try:
            target, owned = _open_stream(self._source)
        except VideoError:  # an opener that knows why (e.g. BadZipMember)
            raise
        except Exception as exc:  # an opener's own failure (missing member, network, size)
            raise UnreadableVideo(f"cannot open source: {type(exc).__name__}: {exc}") from None
        self._owned = target if owned else None
        # Opening decodes a first frame to probe the stream, at whatever size its header
        # claims (a 16K SPS costs 350 MB there). FFmpeg's own pixel cap, with room for its
        # stride alignment, keeps that and every later frame near our limit; the exact check
        # is ours, in _probe and _decode_next.
        guard = {"max_pixels": str(min(2 * self.limits.max_frame_pixels, 2**31 - 1))}
        try:
            self._container = av.open(target, mode="r", metadata_errors="ignore",
                                      options=guard)
        except Exception as exc:
            raise UnreadableVideo(f"cannot open container: {exc}") from None
        if not self._container.streams.video:
            raise NoFrames("the container holds no video stream with frames")
        self._stream = self._container.streams.video[0]
        ctx = self._stream.codec_context
        ctx.thread_count = self._threads
        ctx.thread_type = "NONE" if self._threads == 1 else "AUTO"
        ctx.options = {**ctx.options, **guard}
        self._short_packet = False
        self._any_decoded = False
        self._frames: Iterator[av.VideoFrame] = self._decoded_frames()
        self._next_index = 0
        self._pending: av.VideoFrame | None = None

    def _decoded_frames(self) -> Iterator[av.VideoFrame]:
        # What container.decode does, keeping sight of the packets: FFmpeg flags a packet cut
        # short by the end of the file as corrupt, which tells truncation from a bad header.
        for packet in self._container.demux(self._stream):
            self._short_packet = self._short_packet or packet.is_corrupt
            yield from packet.decode()

    def _count_frames(self) -> int:
        """Frames by demuxing alone, for containers that do not store the count; then reopen."""
        n = 0
        try:
            for packet in self._container.demux(self._stream):
                n += 1 if packet.size else 0
                if n > self.limits.max_frames:
                    raise TooManyFrames(f"over {self.limits.max_frames} frames")
        except av.error.FFmpegError as exc:
            raise TruncatedVideo(f"cannot demux: {exc}") from None
        self._close_container()
        if self._owned is None and hasattr(self._source, "seek"):
            self._source.seek(0)
        self._open()
        return n

    def _probe(self) -> VideoInfo:
        limits = self.limits
        ctx = self._stream.codec_context
        if (ctx.width or 0) * (ctx.height or 0) > limits.max_frame_pixels:
            raise FrameTooLarge(f"{ctx.width}x{ctx.height} exceeds {limits.max_frame_pixels} "
                                f"pixels")
        frame_count = self._stream.frames or self._count_frames()
        stream = self._stream  # counting reopens the container: only now is it final
        if frame_count <= 0:
            raise NoFrames("the video stream has no frames")
        if frame_count > limits.max_frames:
            raise TooManyFrames(f"{frame_count} frames, limit {limits.max_frames}")
        first = self._decode_next()
        if first is None:
            raise NoFrames(f"container lists {frame_count} frames, none decodes")
        self._pending = first
        rate = stream.average_rate or stream.guessed_rate
        rotation = _rotation_of(first)
        width, height = first.width, first.height
        if rotation in (90, 270):
            width, height = height, width
        return VideoInfo(fps=float(rate) if rate else 0.0, frame_count=int(frame_count),
                         width=width, height=height, rotation=rotation)

    # -- decoding

    def _decode_next(self) -> av.VideoFrame | None:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        if time.monotonic() > self._deadline:
            raise DecodeTimeout(f"over {self.limits.max_decode_seconds} s decoding, at frame "
                                f"{self._next_index}")
        try:
            frame = next(self._frames)
        except StopIteration:
            return None
        except av.error.FFmpegError as exc:
            if self._short_packet or self._any_decoded:
                raise TruncatedVideo(f"decoding stopped at frame {self._next_index}: {exc}") \
                    from None
            # Whole packets and still no frame: the stream's header is bad (e.g. an SPS
            # claiming a size FFmpeg refuses to allocate).
            raise UnreadableVideo(f"no frame decodes: {exc}") from None
        self._any_decoded = True
        if frame.width * frame.height > self.limits.max_frame_pixels:
            raise FrameTooLarge(f"frame {self._next_index} is {frame.width}x{frame.height}, over "
                                f"{self.limits.max_frame_pixels} pixels")
        return frame

    def _upright_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        rgb = frame.to_ndarray(format="rgb24")
        quarter_turns = self.info.rotation // 90
        if quarter_turns:
            rgb = np.ascontiguousarray(np.rot90(rgb, quarter_turns))
        return rgb

    def read(self, indices: Iterable[int]) -> dict[int, np.ndarray]:
        """Upright RGB uint8 frames at the given indices, keyed by index."""
        wanted = sorted(set(int(i) for i in indices))
        if not wanted:
            return {}
        if wanted[0] < self._next_index:
            raise ValueError(f"frame {wanted[0]} was already passed (one forward pass)")
        if wanted[-1] >= self.info.frame_count:
            raise ValueError(f"frame {wanted[-1]} out of range: the video has "
                             f"{self.info.frame_count} frames")
        todo = set(wanted)
        out: dict[int, np.ndarray] = {}
        while self._next_index <= wanted[-1]:
            frame = self._decode_next()
            if frame is None:
                raise TruncatedVideo(f"stream ends after {self._next_index} of "
                                     f"{self.info.frame_count} frames; frame {min(todo)} missing")
            if self._next_index in todo:
                out[self._next_index] = self._upright_rgb(frame)
                todo.discard(self._next_index)
            self._next_index += 1
        return out

    @property
    def frames_decoded(self) -> int:
        return self._next_index

    # -- closing

    def _close_container(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        if self._owned is not None and hasattr(self._owned, "close"):
            self._owned.close()

    def close(self) -> None:
        self._close_container()
        self._owned = None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_video(source: VideoSource, *, limits: Limits = Limits(), threads: int = 1,
               size: int | None = None) -> VideoReader:
    """Open a video for one forward pass; raises a VideoError subclass when it is unusable."""
    return VideoReader(source, limits=limits, threads=threads, size=size)


def probe_video(source: VideoSource, *, limits: Limits = Limits()) -> VideoInfo:
    """fps, frame count, upright size and rotation of a video."""
    with open_video(source, limits=limits) as video:
        return video.info


def read_frames(source: VideoSource, indices: Iterable[int], *, limits: Limits = Limits(),
                threads: int = 1) -> dict[int, np.ndarray]:
    """Upright RGB uint8 frames at the given indices, in one sequential decode that converts only
    those frames and stops after the last of them."""
    with open_video(source, limits=limits, threads=threads) as video:
        return video.read(indices)
