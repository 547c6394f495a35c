"""Property-based tests (hypothesis) of the code that reads untrusted input: metadata.json
parsing, zip member names, zip scanning and reading, and planning's accounting.

Each property is what a user relies on: only the documented error escapes, every listed video
is accepted or rejected (none vanish), a reject can always be stored, and no accepted member
name resolves outside the part folder on POSIX or on Windows.
"""
from __future__ import annotations

import io
import json
import ntpath
import posixpath
import re
import tempfile
import zipfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import schemas
from dfd import dfdc, shards
from dfd.plan import plan_part
from pipelines import sources
from tests.hostile_corpus import (Member, member, metadata_json, symlink, write_zip_part, zip_bomb,
                                  zip_bytes)

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
FEWER = settings(FUZZ, max_examples=80)

# ---- strategies ---------------------------------------------------------------------------------

video_names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,12}\.mp4", fullmatch=True)
# Anything a JSON string can hold, lone surrogates included (json.dumps escapes them).
any_text = st.text(max_size=40)
names = st.one_of(video_names, any_text, video_names.map(lambda n: n + "\n"),
                  st.sampled_from(["", "../a.mp4", "/abs.mp4", "a/b.mp4", "\ud800.mp4",
                                   "__duplicate_keys__", "x" * 300 + ".mp4"]))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12)
labels = st.one_of(st.sampled_from(["REAL", "FAKE", "real", "Fake", "", "REAL "]), json_values)
entries = st.one_of(
    json_values,
    st.fixed_dictionaries({"label": labels},
                          optional={"original": st.one_of(names, json_values),
                                    "split": st.sampled_from(["train", "test"])}))
metadata_objects = st.dictionaries(names, entries, max_size=12)


def check_parsed(parsed, raw_keys: list[str]) -> None:
    """The invariants of parse_metadata's output for an object with these keys (in order)."""
    found, rejects = parsed
    distinct = list(dict.fromkeys(raw_keys))
    assert len(found) + len(rejects) == len(distinct)  # every name accepted or rejected
    assert len({e.name for e in found}) == len(found)
    for e in found:
        assert dfdc.is_video_name(e.name) and e.name in distinct
        assert e.label in (0, 1)
        assert (e.original == e.name) if e.label == 0 else dfdc.is_video_name(e.original)
    for r in rejects:
        assert schemas.validate(r, schemas.REJECT) == r
        assert r["reason"] in {"bad_name", "bad_entry", "unknown_label", "bad_original",
                               "duplicate_entry"}
        assert len(r["video"]) <= 240 and len(r["detail"]) <= 500
    # every reject can be stored: the errors file is Parquet, whose strings are UTF-8
    shards.parquet_bytes(rejects, schemas.REJECT)


# ---- metadata.json ------------------------------------------------------------------------------

@FUZZ
@given(value=st.one_of(metadata_objects, json_values))
def test_any_json_value_is_parsed_or_refused_as_a_broken_part(value):
    raw = json.dumps(value).encode()
    try:
        parsed = dfdc.parse_metadata(raw, part=3)
    except dfdc.BrokenPart as exc:
        assert not isinstance(value, dict)
        assert exc.part == 3 and exc.reason == "bad_metadata" and "\n" not in str(exc)
        return
    assert isinstance(value, dict)
    check_parsed(parsed, list(value))
    for e in parsed[0]:  # accepted entries say what the file said
        assert value[e.name]["label"] == ("REAL", "FAKE")[e.label]


@FUZZ
@given(pairs=st.lists(st.tuples(names, entries), max_size=10))
def test_names_listed_twice_are_rejected_once_and_never_accepted(pairs):
    raw = metadata_json(pairs)
    found, rejects = dfdc.parse_metadata(raw, part=0)
    check_parsed((found, rejects), [k for k, _ in pairs])
    twice = {k for k in (k for k, _ in pairs) if [p[0] for p in pairs].count(k) > 1}
    assert not twice & {e.name for e in found}
    assert len([r for r in rejects if r["reason"] == "duplicate_entry"]) == len(twice)


_JSONISH = st.text(alphabet='{}[]":,0123456789.eE+-truefalsn \\uFAKEREAL.mp4\ud800',
                   max_size=60)


@FUZZ
@given(raw=st.one_of(st.binary(max_size=200), _JSONISH.map(lambda t: t.encode(
    "utf-8", "surrogatepass")), st.integers(1, 6000).map(lambda n: b"[" * n),
    st.integers(4000, 6000).map(lambda n: b"1" * n)))
def test_any_bytes_are_parsed_or_refused_as_a_broken_part(raw):
    try:
        parsed = dfdc.parse_metadata(raw, part=1)
    except dfdc.BrokenPart as exc:
        assert exc.reason == "bad_metadata"
        return
    check_parsed(parsed, list(json.loads(raw.decode("utf-8-sig"))))


# ---- zip member names ---------------------------------------------------------------------------

_PIECES = ["a.mp4", "dfdc_train_part_1", ".", "..", "", " ", "...", ".. ", " ..", "..\t",
           "C:", "c:..", "\\", "é.mp4", "\u202e4pm.exe", "x" * 120]
hostile_names = st.one_of(
    st.text(max_size=30),
    st.lists(st.sampled_from(_PIECES), min_size=1, max_size=6).flatmap(
        lambda pieces: st.sampled_from(["/", "\\"]).map(lambda sep: sep.join(pieces))),
    st.sampled_from(["/", "\\"]).flatmap(lambda lead: st.text(max_size=10).map(
        lambda t: lead + t)))


def resolves_inside(name: str) -> bool:
    """Whether extracting name into a folder keeps it there (or names the folder itself), read
    as POSIX and as Windows paths (Windows also drops trailing dots and spaces from each
    piece)."""
    posix = posixpath.normpath(posixpath.join("/part", name))
    if not (posix == "/part" or posix.startswith("/part/")):
        return False
    pieces = re.split(r"[\\/]", name)
    windows = "\\".join(p if p in (".", "..") else p.rstrip(". ") for p in pieces)
    if ntpath.splitdrive(windows)[0] or windows.startswith("\\"):
        return False
    resolved = ntpath.normpath(ntpath.join("C:\\part", windows))
    return resolved == "C:\\part" or resolved.startswith("C:\\part\\")


@FUZZ
@given(name=hostile_names)
def test_a_member_name_judged_safe_resolves_inside_the_part_folder(name):
    if dfdc.unsafe_member_reason(name) is None:
        assert resolves_inside(name), name


# ---- zip scanning and reading -------------------------------------------------------------------

zip_members = st.lists(st.tuples(
    st.one_of(hostile_names, video_names.map(lambda n: f"dfdc_train_part_1/{n}"),
              st.just("dfdc_train_part_1/metadata.json")),
    st.sampled_from(["small", "empty", "symlink", "bomb", "liar", "encrypted"])), max_size=8)


def _as_member(name: str, kind: str) -> Member:
    name = name.encode("utf-8", "replace").decode("utf-8")  # a zip name is bytes on disk
    if kind == "symlink":
        return symlink(name, "/etc/passwd")
    if kind == "bomb":
        return zip_bomb(name, mib=4)
    made = member(name, b"" if kind == "empty" else b"\x00" * 100)
    if kind == "liar":
        return Member(made.name, made.payload, 10, made.crc, made.method)
    if kind == "encrypted":
        return Member(made.name, made.payload, made.size, made.crc, made.method, flags=0x1)
    return made


@FUZZ
@given(spec=zip_members, limit=st.sampled_from([50, 1000, 2**30]))
def test_scan_zip_accepts_only_safe_members_and_accounts_for_every_video(spec, limit):
    data = zip_bytes([_as_member(n, k) for n, k in spec])
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        stored = [i.filename for i in zf.infolist() if not i.filename.endswith(("/", "\\"))]
        for by_file in (False, True):
            members, rejects = dfdc.scan_zip(zf, part=1, max_member_bytes=limit,
                                             name_by_file=by_file)
            accepted = list(members.videos.values()) + [m for m in [members.metadata] if m]
            for name in accepted:
                assert dfdc.unsafe_member_reason(name) is None and resolves_inside(name)
                info = zf.getinfo(name)
                assert 0 < info.file_size <= limit
            shards.parquet_bytes(rejects, schemas.REJECT)
    files = [dfdc.member_file_name(n) for n in stored]
    rejected = {r["video"] for r in rejects}
    for file_name in set(files):
        if file_name.endswith(".mp4") or file_name == dfdc.METADATA:
            taken = file_name in members.videos or (
                members.metadata is not None
                and dfdc.member_file_name(members.metadata) == file_name)
            shown = dfdc.reject(file_name, 1, "", "")["video"]
            assert taken != (shown in rejected), file_name


def _part_zip(folder: Path, members: list[Member]) -> sources.PartSpec:
    write_zip_part(folder, 1, members)
    [spec] = sources.discover_parts(str(folder))
    return spec


@FEWER
@given(spec=zip_members)
def test_reading_a_generated_part_zip_raises_only_broken_part(spec):
    with tempfile.TemporaryDirectory() as tmp:
        part = _part_zip(Path(tmp), [_as_member(n, k) for n, k in spec])
        try:
            _, openers, rejects = sources.read_part(part, max_member_bytes=2**20)
        except dfdc.BrokenPart as exc:
            assert exc.reason in {"no_metadata", "bad_metadata", "bad_archive"}
            return
        for opener in openers.values():
            try:
                assert opener().read()
            except sources.BadZipMember:
                pass


_GOOD_PART = zip_bytes([member("dfdc_train_part_1/metadata.json",
                               json.dumps({"aaaa.mp4": {"label": "REAL"}}).encode()),
                        member("dfdc_train_part_1/aaaa.mp4", b"\x01" * 3000),
                        member("dfdc_train_part_1/bbbb.mp4", b"\x02" * 10, deflate=False)])


# Damage lands where it changes how the archive is read: headers (flags, method, sizes,
# offsets, name lengths) far more often than payload bytes.
_HEADERS = sorted({at + i for sig, length in ((b"PK\x03\x04", 30), (b"PK\x01\x02", 46),
                                              (b"PK\x05\x06", 22))
                   for at in [m.start() for m in re.finditer(re.escape(sig), _GOOD_PART)]
                   for i in range(length)})
_DAMAGE_AT = st.one_of(st.sampled_from(_HEADERS), st.integers(0, len(_GOOD_PART) - 1))


@FEWER
@given(flips=st.lists(st.tuples(_DAMAGE_AT, st.integers(1, 255)), min_size=1, max_size=4),
       cut=st.one_of(st.none(), st.integers(0, len(_GOOD_PART))))
def test_a_damaged_part_zip_raises_only_broken_part_or_bad_member(flips, cut):
    data = bytearray(_GOOD_PART)
    for at, xor in flips:
        data[at] ^= xor
    data = bytes(data[:cut] if cut is not None else data)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / dfdc.part_zip_name(1)).write_bytes(data)
        specs = sources.discover_parts(tmp)
        assert [s.part for s in specs] == [1]  # found, whatever its state
        try:
            _, openers, _ = sources.read_part(specs[0], max_member_bytes=2**20)
        except dfdc.BrokenPart:
            return
        for opener in openers.values():
            try:
                opener().read()
            except sources.BadZipMember:
                pass


# ---- planning -----------------------------------------------------------------------------------

pool = st.sampled_from([f"v{i}.mp4" for i in range(8)])
plan_entries = st.lists(st.tuples(pool, st.integers(0, 1), pool), max_size=12,
                        unique_by=lambda t: t[0])


@FUZZ
@given(listed=plan_entries, files=st.sets(pool), rejected=st.sets(pool, max_size=2),
       per_original=st.sampled_from([None, 0, 1, 2]))
def test_planning_accounts_for_every_listed_video_exactly_once(listed, files, rejected,
                                                               per_original):
    found = [dfdc.Entry(n, label, n if label == 0 else original)
             for n, label, original in listed if n not in rejected]
    plan = plan_part(2, found, files, fakes_per_original=per_original, seed=0, test_parts=(),
                     validation_fraction=0.5, shards_per_split=2, rejected_entries=rejected)
    names = {e.name for e in found} | set(rejected)
    processed = [v.name for u in plan.units for v in (u.original, *u.fakes)]
    planned_rejects = [r["video"] for r in plan.rejects if r["video"] in names]
    outcome = processed + plan.left_out + planned_rejects
    # every entry parse_metadata accepted is processed, left out or rejected, exactly once
    assert sorted(outcome) == sorted(e.name for e in found)
    assert plan.videos_in_metadata == len(names)
    assert set(plan.extra_files) == set(files) - names
    assert {r["video"] for r in plan.rejects} - names == set(plan.extra_files)
