"""dfd.video: sampling, single-pass decoding that matches a full reference decode, rotation,
every kind of source, and the typed failures the pipeline records."""
from __future__ import annotations

import io
import zipfile

import av
import numpy as np
import pytest

from dfd.config import Limits
from dfd.errors import DfdError
from dfd.video import (DecodeTimeout, FrameTooLarge, NoFrames, TooManyFrames, TruncatedVideo,
                       UnreadableVideo, VideoError, VideoInfo, VideoTooLarge, open_video,
                       probe_video, read_frames, sample_frame_indices)
from tests.video_fixtures import (clip, face_frames, noise_clip, reference_decode, truncated_copy,
                                  write_clip)

# ---- sampling -----------------------------------------------------------------------------------

def test_random_sample_is_k_distinct_sorted_indices_stable_per_seed_and_key():
    a = sample_frame_indices(300, 5, policy="random", seed=0, key="abcdefghij.mp4")
    assert len(a) == 5 and a == sorted(set(a)) and all(0 <= i < 300 for i in a)
    assert a == sample_frame_indices(300, 5, policy="random", seed=0, key="abcdefghij.mp4")
    others = {tuple(sample_frame_indices(300, 5, policy="random", seed=s, key=k))
              for s, k in [(1, "abcdefghij.mp4"), (0, "bbcdefghij.mp4"), (2, "x.mp4")]}
    assert tuple(a) not in others and len(others) == 3


def test_random_sample_covers_the_whole_clip_over_many_videos():
    hits = np.zeros(300, int)
    for n in range(400):
        hits[sample_frame_indices(300, 5, seed=0, key=f"{n:010d}.mp4")] += 1
    # 2000 draws over 300 frames: every third of the clip gets roughly its share.
    thirds = hits.reshape(3, 100).sum(axis=1)
    assert thirds.min() > 500 and (hits > 0).mean() > 0.95


def test_uniform_sample_spans_first_to_last_frame_evenly():
    idx = sample_frame_indices(300, 32, policy="uniform")
    assert idx[0] == 0 and idx[-1] == 299 and len(idx) == 32
    gaps = np.diff(idx)
    assert gaps.min() >= 9 and gaps.max() <= 10
    assert sample_frame_indices(300, 5, policy="uniform", key="a") == \
        sample_frame_indices(300, 5, policy="uniform", key="b") == [0, 75, 150, 224, 299]


@pytest.mark.parametrize("policy", ["random", "uniform"])
def test_short_clip_gives_every_frame(policy):
    assert sample_frame_indices(4, 5, policy=policy) == [0, 1, 2, 3]
    assert sample_frame_indices(0, 5, policy=policy) == []


def test_bad_sampling_arguments_are_refused():
    with pytest.raises(ValueError, match="policy"):
        sample_frame_indices(300, 5, policy="every")
    with pytest.raises(ValueError, match=">= 1"):
        sample_frame_indices(300, 0)


# ---- decoding -----------------------------------------------------------------------------------

def test_probe_reports_fps_frame_count_size_and_rotation():
    assert probe_video(clip("plain.mp4", 30)) == VideoInfo(fps=30.0, frame_count=30, width=320,
                                                           height=240, rotation=0)


def test_sampled_frames_are_bit_identical_to_a_full_reference_decode():
    path = clip("plain.mp4", 30)
    reference = reference_decode(path)
    indices = sample_frame_indices(30, 5, seed=3, key=path.name) + [0, 29]
    frames = read_frames(path, indices)
    assert sorted(frames) == sorted(set(indices))
    for i, frame in frames.items():
        assert frame.dtype == np.uint8 and frame.shape == (240, 320, 3)
        assert np.array_equal(frame, reference[i]), f"frame {i} differs"


def test_decoding_stops_after_the_last_sampled_frame_and_converts_only_sampled_frames():
    with open_video(clip("plain.mp4", 30)) as video:
        frames = video.read([2, 9])
        assert video.frames_decoded == 10
        assert sorted(frames) == [2, 9]
        # The same forward pass continues; going back would need a seek, which we never do.
        later = video.read([20])
        assert video.frames_decoded == 21 and list(later) == [20]
        with pytest.raises(ValueError, match="already passed"):
            video.read([5])


def test_decoder_runs_one_thread_by_default():
    with open_video(clip("plain.mp4", 30)) as video:
        assert video._stream.codec_context.thread_count == 1
    with open_video(clip("plain.mp4", 30), threads=2) as video:
        assert video._stream.codec_context.thread_count == 2


def test_index_beyond_the_clip_is_a_caller_error():
    with pytest.raises(ValueError, match="out of range"):
        read_frames(clip("plain.mp4", 30), [30])


@pytest.mark.parametrize("rotation,quarter_turns", [(90, 1), (-90, 3), (180, 2)])
def test_rotation_metadata_is_applied_so_frames_come_out_upright(rotation, quarter_turns):
    # A portrait clip stored landscape with a display matrix, as phones (and DFDC) write them.
    stored = face_frames(6, width=320, height=240)
    path = write_clip(clip("plain.mp4").parent / f"rot{rotation}.mp4", stored, rotation=rotation)
    info = probe_video(path)
    assert info.rotation == quarter_turns * 90
    assert (info.width, info.height) == ((240, 320) if quarter_turns % 2 else (320, 240))
    raw = reference_decode(path)  # PyAV's to_ndarray ignores the display matrix
    frames = read_frames(path, [1, 5])
    for i in (1, 5):
        assert frames[i].shape == (info.height, info.width, 3)
        assert frames[i].flags["C_CONTIGUOUS"]
        assert np.array_equal(frames[i], np.rot90(raw[i], quarter_turns))


def test_every_kind_of_source_reads_the_same_frames(tmp_path):
    path = clip("plain.mp4", 30)
    data = path.read_bytes()
    archive = tmp_path / "dfdc_train_part_0.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("dfdc_train_part_0/plain.mp4", data)
    reference = read_frames(path, [4, 17])

    def zip_member():
        zf = zipfile.ZipFile(archive)
        return zf.open("dfdc_train_part_0/plain.mp4")

    sources = {"bytes": data, "stream": io.BytesIO(data), "opener": lambda: io.BytesIO(data),
               "zip member": zip_member, "str path": str(path)}
    for kind, source in sources.items():
        frames = read_frames(source, [4, 17])
        assert all(np.array_equal(frames[i], reference[i]) for i in (4, 17)), kind


def test_container_without_a_stored_frame_count_is_counted_by_demuxing(tmp_path):
    frames = face_frames(12)
    path = tmp_path / "clip.mkv"
    with av.open(str(path), mode="w", format="matroska") as c:
        s = c.add_stream("libx264", rate=25, options={"preset": "ultrafast"})
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    with av.open(str(path)) as c:
        assert c.streams.video[0].frames == 0  # what makes this case
    reference = reference_decode(path)
    for source in (path, path.read_bytes(), lambda: io.BytesIO(path.read_bytes())):
        with open_video(source) as video:
            assert video.info == VideoInfo(fps=25.0, frame_count=12, width=320, height=240)
            out = video.read([3, 11])
        assert all(np.array_equal(out[i], reference[i]) for i in (3, 11))
    # Counting stops at the frame limit rather than demuxing an endless stream.
    with pytest.raises(TooManyFrames, match="over 5"):
        open_video(path, limits=Limits(max_frames=5))


# ---- failures -----------------------------------------------------------------------------------

def _empty_mp4() -> bytes:
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        c.start_encoding()
    return buf.getvalue()


def _raise_oserror():
    raise OSError("bucket unreachable")


@pytest.mark.parametrize("make,kwargs,error,reason", [
    (lambda: b"not a video at all" * 50, {}, UnreadableVideo, "unreadable"),
    (lambda: "/no/such/video.mp4", {}, UnreadableVideo, "unreadable"),
    (lambda: _raise_oserror, {}, UnreadableVideo, "unreadable"),
    (lambda: truncated_copy(clip("fast.mp4", 30, faststart=True), 0.6), {}, TruncatedVideo,
     "truncated"),
    (_empty_mp4, {}, NoFrames, "no_frames"),
    (lambda: clip("plain.mp4", 30), {"limits": Limits(max_frame_pixels=320 * 239)},
     FrameTooLarge, "frame_too_large"),
    (lambda: clip("plain.mp4", 30), {"limits": Limits(max_frames=29)}, TooManyFrames,
     "too_many_frames"),
    (lambda: clip("plain.mp4", 30), {"limits": Limits(max_video_bytes=1000)}, VideoTooLarge,
     "too_large"),
    (lambda: clip("plain.mp4", 30), {"limits": Limits(max_decode_seconds=1e-9)}, DecodeTimeout,
     "decode_timeout"),
])
def test_unusable_videos_raise_a_typed_error_with_a_stable_reason(make, kwargs, error, reason):
    with pytest.raises(error) as caught:
        read_frames(make(), [0, 29], **kwargs)
    assert caught.value.reason == reason
    assert isinstance(caught.value, VideoError) and isinstance(caught.value, DfdError)
    assert caught.value.detail and "\n" not in caught.value.detail


def test_truncation_is_found_only_when_a_sampled_frame_lies_past_the_cut():
    cut = truncated_copy(clip("fast.mp4", 30, faststart=True), 0.6)
    full = reference_decode(clip("fast.mp4", 30, faststart=True))
    with open_video(cut) as video:
        assert video.info.frame_count == 30  # the header still promises every frame
        early = video.read([1, 3])
        assert all(np.array_equal(early[i], full[i]) for i in (1, 3))
        with pytest.raises(TruncatedVideo, match="frame"):
            video.read([29])


def test_size_limit_uses_the_size_given_for_streams_of_unknown_length():
    data = clip("plain.mp4", 30).read_bytes()
    with pytest.raises(VideoTooLarge):
        open_video(lambda: io.BytesIO(data), limits=Limits(max_video_bytes=len(data) - 1),
                   size=len(data))
    with open_video(lambda: io.BytesIO(data), limits=Limits(max_video_bytes=len(data)),
                    size=len(data)) as video:
        assert video.info.frame_count == 30


def test_a_clip_without_faces_decodes_normally():
    # no_face is decided by processing, not decoding: a faceless clip is a valid video.
    assert probe_video(noise_clip()).frame_count == 20
