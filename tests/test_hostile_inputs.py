"""Every hostile input at once, through `dfd preprocess` on the real Beam DirectRunner.

One run over seven parts (tests/hostile_corpus.py): a folder part and a zipped part that mix
good face videos with every per-video, per-entry and per-member case, and five parts broken
as a whole. The run uses the limit flags, so the same run shows that they reach the workers.
The other tests here need no pipeline: limits refusing header claims before memory is
allocated, zip bombs refused without inflating, and the limit flags' parsing.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import subprocess
import sys
import tracemalloc
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import tensorflow as tf

import schemas
from dfd import config, dfdc
from dfd import output_tree as ot
from dfd.cli import build_parser, main
from dfd.video import BadZipMember, FrameTooLarge, TooManyFrames, UnreadableVideo, open_video
from pipelines import sources
from pipelines.commit import RUN_SUMMARY
from tests.hostile_corpus import (LANDS, MAX_FRAME_PIXELS, MAX_FRAMES, MAX_MEMBER_BYTES,
                                  MAX_VIDEO_BYTES, HostileSource, build_hostile_source,
                                  claim_frame_count, claim_frame_size, in_folder, lying_zip_bomb,
                                  member, plain_clip, write_zip_part, zip_bomb)

slow = pytest.mark.slow  # the tests of the one pipeline run
FRAMES = 3  # sampled uniformly, so the last frame (gone from the truncated clip) is among them


@dataclasses.dataclass
class Run:
    root: Path
    out: Path
    source: HostileSource
    status: int
    stdout: str
    stderr: str
    before: dict
    after: dict


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under root: relative path -> (size, mtime)."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            st = path.lstat()
            found[str(path.relative_to(root))] = (st.st_size if name in files else 0,
                                                  st.st_mtime_ns)
    return found


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    root = tmp_path_factory.mktemp("hostile")
    source = build_hostile_source(root)
    sibling = root / "sibling"
    sibling.mkdir()
    (sibling / "sentinel.txt").write_text("nothing may touch this")
    out = root / "out"
    before = snapshot(root)
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main(["preprocess", "--input", str(source.src), "--output", str(out),
                       "--frames-per-video", str(FRAMES), "--sampling", "uniform",
                       *source.limit_flags, "--direct_num_workers", "2"])
    return Run(root, out, source, status, stdout.getvalue(), stderr.getvalue(), before,
               snapshot(root))


def errors_of(run: Run, part: int) -> list[dict]:
    return pq.read_table(ot.errors_path(str(run.out), part)).to_pylist()


def faces_of(run: Run) -> list[dict]:
    return pq.read_table(run.out / "parquet").drop_columns(["image"]).to_pylist()


def manifest_of(run: Run) -> dict:
    return json.loads((run.out / "manifest.json").read_text())


# ---- the one pipeline run -----------------------------------------------------------------------

@slow
def test_every_bad_video_entry_and_member_is_recorded_with_its_own_reason(run):
    for part, outcomes in run.source.outcomes.items():
        reasons: dict[str, set] = {}
        for r in errors_of(run, part):
            assert r["part"] == part and r["detail"] and "\n" not in r["detail"]
            reasons.setdefault(r["video"], set()).add(r["reason"])
        expected = {v: {o} for v, o in outcomes.items() if o != LANDS}
        # every case has exactly its reason (no second, vaguer one), and nothing else is there
        assert reasons == expected, part


@slow
def test_good_videos_land_next_to_the_bad_ones(run):
    rows = faces_of(run)
    one_of = set(run.source.either_fake)
    for part, outcomes in run.source.outcomes.items():
        landed = Counter(r["video"] for r in rows if r["part"] == part)
        good = {v for v, o in outcomes.items() if o == LANDS}
        assert good <= set(landed) and set(landed) - good <= one_of, part
        assert set(landed.values()) == {FRAMES}  # a face in every sampled frame
    # balancing kept exactly one of the two fakes of goodreal00 and never decoded the other
    assert len(one_of & {r["video"] for r in rows if r["part"] == 0}) == 1
    for r in rows:
        assert r["original"] == (r["video"] if r["label"] == 0 else
                                 {"goodfake10.mp4": "goodreal01.mp4"}.get(r["video"],
                                                                          "goodreal00.mp4"))


@slow
def test_broken_parts_fail_alone_with_a_one_line_reason_recorded_for_the_part(run):
    assert run.status == 1  # a failed part fails the command, for a scheduler to notice
    failed = {}
    for line in run.stdout.splitlines():
        if "FAILED" in line:
            part = int(line.split(":")[0].split()[1])
            failed[part] = line
    assert sorted(failed) == sorted(run.source.broken)
    for part, reason in run.source.broken.items():
        assert f"FAILED ({reason}): " in failed[part]
        [record] = errors_of(run, part)
        assert (record["video"], record["reason"]) == (dfdc.METADATA, reason)
        for fmt in ot.FORMATS:
            assert not Path(ot.part_dir(str(run.out), fmt, part)).exists()
    committed = json.loads((run.out / RUN_SUMMARY).read_text())["committed"]
    assert [s["part"] for s in committed] == [0, 1]
    assert sorted(manifest_of(run)["parts"]) == ["00", "01"]


@slow
def test_accounting_holds_for_every_committed_part_and_nothing_is_lost(run):
    rows = faces_of(run)
    for key, entry in manifest_of(run)["parts"].items():
        part = int(key)
        outcomes = run.source.outcomes[part]
        listed_rejects = {v for v, o in outcomes.items()
                          if o not in (LANDS, "not_in_metadata")}
        landed = {r["video"] for r in rows if r["part"] == part}
        assert entry["videos_in_metadata"] == run.source.listed[part]
        assert entry["videos_with_records"] == len(landed)
        assert entry["videos_rejected"] == len(listed_rejects)
        assert entry["fakes_left_out"] == (1 if part == 0 else 0)
        assert entry["videos_in_metadata"] == (entry["videos_with_records"]
                                               + entry["videos_rejected"]
                                               + entry["fakes_left_out"])
        assert not landed & listed_rejects  # no video both landed and rejected
        assert entry["records"] == sum(1 for r in rows if r["part"] == part)


@slow
def test_an_evaluation_of_the_hostile_parts_counts_every_labelled_video(run, tmp_path):
    """dfd infer over both committed parts: each labelled video the pipeline rejected
    (truncated, unreadable, empty, missing, orphaned, faceless, ...) is scored by the fallback
    with its reason, and the figures are what scikit-learn computes over every row."""
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    from tests.infer_fixtures import make_run_dir

    run_dir = make_run_dir(tmp_path / "run")
    pred = tmp_path / "pred"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["infer", "--data", str(run.out), "--run-dir", str(run_dir), "--out",
                     str(pred), "--parts", "0,1", "--actors", "1", "--no-report"]) == 0
    evaluated = json.loads((pred / "metrics.json").read_text())
    videos = pq.read_table(pred / "video_predictions.parquet").to_pylist()
    by_key = {(v["part"], v["video"]): v for v in videos}
    for key, entry in manifest_of(run)["parts"].items():
        part = int(key)
        errors = pq.read_table(ot.errors_path(str(run.out), part)).to_pylist()
        labelled = {r["video"]: r for r in errors if r["label"] is not None}
        for name, r in labelled.items():
            v = by_key[(part, name)]
            assert (v["scored_by"], v["reason"], v["p_fake"], v["label"]) == (
                "fallback", r["reason"], 0.5, r["label"]), name
        cover = evaluated["coverage"]["per_part"][key]
        unlisted = sum(1 for r in errors if r["reason"] == "not_in_metadata")
        assert cover["listed"] == entry["videos_in_metadata"]
        assert cover["scored_by_model"] == entry["videos_with_records"]
        assert sum(cover["scored_by_fallback"].values()) == len(labelled)
        # Every listed video is scored, left out by balancing, or has no label to score by.
        assert cover["listed"] == (cover["scored_by_model"]
                                   + sum(cover["scored_by_fallback"].values())
                                   + cover["fakes_left_out"]
                                   + cover["unscorable_no_label"] - unlisted)
    rows = [v for v in videos if v["label"] is not None]
    y, p = [v["label"] for v in rows], [v["p_fake"] for v in rows]
    assert evaluated["video"]["n"] == len(rows)
    assert evaluated["video"]["auc"] == pytest.approx(roc_auc_score(y, p))
    assert evaluated["video"]["log_loss"] == pytest.approx(log_loss(y, p, labels=[0, 1]))
    assert evaluated["video"]["accuracy"] == pytest.approx(
        accuracy_score(y, [int(x > 0.5) for x in p]))
    model_rows = [v for v in rows if v["scored_by"] == "model"]
    assert evaluated["video_model_only"]["n"] == len(model_rows) < len(rows)


@slow
def test_a_name_repeated_across_parts_is_kept_once_in_each_part(run):
    rows = faces_of(run)
    keys = Counter((r["part"], r["video"], r["frame_index"], r["face_index"]) for r in rows)
    assert max(keys.values()) == 1  # no record doubled
    shared = Counter(r["part"] for r in rows if r["video"] == "sharedname.mp4")
    assert shared == {0: FRAMES, 1: FRAMES}  # none lost
    # TFRecord holds the same records as Parquet
    spec = schemas.feature_spec(schemas.FACE)
    files = tf.io.gfile.glob(ot.shard_glob(str(run.out), "tfrecord"))
    ds = tf.data.TFRecordDataset(files).map(lambda x: tf.io.parse_single_example(x, spec))
    tf_keys = Counter((int(p["part"]), p["video"].numpy().decode(), int(p["frame_index"]),
                       int(p["face_index"])) for p in ds)
    assert tf_keys == keys


@slow
def test_nothing_is_written_outside_the_output_and_the_input_is_untouched(run):
    changed = {p for p, v in run.after.items() if run.before.get(p) != v}
    removed = set(run.before) - set(run.after)
    assert not removed
    assert changed and all(p == "out" or p.startswith("out/") for p in changed), \
        sorted(p for p in changed if not p.startswith("out"))
    for path in run.source.escapes:  # where '../', absolute and '..\' members would land
        assert not path.exists(), path
    names = {"escaped00.mp4", "absolute00.mp4", "winescape0.mp4", "drive00000.mp4"}
    assert not [p for p in run.after if Path(p).name in names]
    assert not (Path.cwd() / "escaped00.mp4").exists()
    assert not [p for p in run.after if p.startswith("out/") and
                any(piece.startswith("_") and piece != RUN_SUMMARY
                    for piece in Path(p).parts)], "staged files left visible"


@slow
def test_limit_flags_reach_the_workers(run):
    """Each limit flag refused the one video planted beyond it, with the flag's value."""
    details = {(r["video"], r["reason"]): r["detail"] for part in (0, 1)
               for r in errors_of(run, part)}
    assert details["longclip00.mp4", "too_many_frames"] == \
        f"{MAX_FRAMES + 8} frames, limit {MAX_FRAMES}"
    assert details["bigframe00.mp4", "frame_too_large"] == \
        f"640x480 exceeds {MAX_FRAME_PIXELS} pixels"
    assert details["bigfile000.mp4", "too_large"].endswith(f"bytes, limit {MAX_VIDEO_BYTES}")
    assert details["zipbomb000.mp4", "member_too_large"].startswith(
        f"{2**30} bytes uncompressed from ")
    assert f"limit {MAX_MEMBER_BYTES}" in details["zipbomb000.mp4", "member_too_large"]
    # header claims are judged before decoding (by default limits too: tests below)
    assert details["claims16k0.mp4", "frame_too_large"] == \
        f"15360x8632 exceeds {MAX_FRAME_PIXELS} pixels"
    assert details["claimsbn00.mp4", "too_many_frames"] == \
        f"{10**9} frames, limit {MAX_FRAMES}"


# ---- without a pipeline -------------------------------------------------------------------------

_PEAK_RSS = """
import sys
from dfd.config import Limits
from dfd.video import VideoError, open_video
data = open(sys.argv[1], "rb").read()
def peak():  # MiB; ru_maxrss would carry the forking parent's peak across exec
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) // 1024
start = peak()
try:
    open_video(data)
except VideoError as exc:
    print(exc.reason, peak() - start)
open_video(data, limits=Limits(max_frame_pixels=10**9)).close()
print("opened", peak() - start)
"""


def test_a_header_claiming_a_16k_frame_is_refused_before_the_frame_is_allocated(tmp_path):
    path = tmp_path / "claims16k.mp4"
    path.write_bytes(claim_frame_size(plain_clip("hostile-faceless.mp4"), 15360, 8640))
    assert len(path.read_bytes()) < 20_000  # the claim costs nothing to make
    # A fresh process, so that its peak memory is this video's alone.
    done = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(path)], capture_output=True,
                          text=True, timeout=120, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr
    refused, opened = [line.split() for line in done.stdout.splitlines()]
    # Refused, it costs only the decoder's tables for a 16K picture (about 46 MiB)...
    assert refused[0] == "frame_too_large" and int(refused[1]) < 100
    # ...where with the limit raised, merely opening it decodes a 15360x8632 probe frame.
    assert opened[0] == "opened" and int(opened[1]) > 300


def test_header_claims_of_absurd_sizes_and_lengths_get_their_reasons():
    faceless = plain_clip("hostile-faceless.mp4")
    with pytest.raises(TooManyFrames, match=f"{10**9} frames"):
        open_video(claim_frame_count(faceless, 10**9))
    # FFmpeg itself refuses an SPS this large: nothing decodes, nothing is allocated for it
    with pytest.raises(UnreadableVideo, match="no frame decodes"):
        open_video(claim_frame_size(faceless, 60000, 60000, in_sample_entry=True))
    with pytest.raises(FrameTooLarge):
        open_video(claim_frame_size(faceless, 15360, 8640))


def test_zip_bombs_are_refused_without_inflating_them(tmp_path):
    good = plain_clip("hostile-faceless.mp4")
    write_zip_part(tmp_path, 9, [
        member(in_folder(9, "metadata.json"), b"{}"),
        member(in_folder(9, "goodvideo0.mp4"), good),
        zip_bomb(in_folder(9, "zipbomb000.mp4")),
        lying_zip_bomb(in_folder(9, "zipliar000.mp4"))])
    [spec] = sources.discover_parts(str(tmp_path))
    tracemalloc.start()
    try:
        _, openers, rejects = sources.read_part(spec, max_member_bytes=200 * 2**20)
        assert [(r["video"], r["reason"]) for r in rejects] == [
            ("zipbomb000.mp4", "member_too_large")]
        assert "(1,011:1)" in rejects[0]["detail"]  # 1 GiB from 1 MiB
        with pytest.raises(BadZipMember, match="CRC"):
            openers["zipliar000.mp4"]()
        assert openers["goodvideo0.mp4"]().read() == good
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20  # the liar inflates to 1 GiB: zipfile stopped at its 64 KiB


# ---- limits as flags ----------------------------------------------------------------------------

def parse(*flags: str):
    return build_parser().parse_known_args(["preprocess", "--input", "i", "--output", "o",
                                            *flags])[0]


def test_limit_flags_override_the_preset_limits_and_nothing_else():
    from dfd.cli.preprocess import config_from_args

    base = config.preset("preprocess", "paper")
    assert config_from_args(parse()) == base  # no flag, same config and config hash
    cfg = config_from_args(parse("--max-video-bytes", "50M", "--max-frame-pixels", "1920x1080",
                                 "--max-frames", "300", "--max-decode-seconds", "7.5",
                                 "--max-member-bytes", "1.5GiB"))
    assert cfg.limits == config.Limits(max_video_bytes=50 * 2**20, max_frame_pixels=1920 * 1080,
                                       max_frames=300, max_decode_seconds=7.5,
                                       max_member_bytes=3 * 2**29)
    assert dataclasses.replace(cfg, limits=base.limits) == base
    sync = build_parser().parse_known_args(["sync", "--source", "s", "--output", "o",
                                            "--max-frames", "9"])[0]
    assert sync.max_frames == 9  # dfd sync shares the processing flags


@pytest.mark.parametrize("flag,value", [("--max-video-bytes", "lots"),
                                        ("--max-video-bytes", "0"),
                                        ("--max-frames", "-3"),
                                        ("--max-decode-seconds", "nan"),
                                        ("--max-frame-pixels", "0x1080")])
def test_bad_limit_values_are_usage_errors(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse(flag, value)
    assert exit_.value.code == 2 and flag in capsys.readouterr().err


def test_help_names_every_limit_with_its_default_and_reason(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["preprocess", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    limits = config.Limits()
    for flag, shown, reason in [
            ("--max-video-bytes", "200M", "too_large"),
            ("--max-frame-pixels", str(limits.max_frame_pixels), "frame_too_large"),
            ("--max-frames", str(limits.max_frames), "too_many_frames"),
            ("--max-decode-seconds", f"{limits.max_decode_seconds:g}", "decode_timeout"),
            ("--max-member-bytes", "200M", "member_too_large")]:
        after = text.split(flag, 2)[-1]  # the help line (the usage line comes first)
        assert f"[{reason}] (default: {shown})" in after.split("--max")[0], flag
    assert limits.max_video_bytes == limits.max_member_bytes == 200 * 2**20
