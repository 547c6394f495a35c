"""Metadata parsing, zip member checks, balancing and the split rule: pure functions of names."""
import io
import json
import zipfile

import pytest

from dfd import dfdc, splits
from dfd.plan import plan_part


def meta(**entries):
    return json.dumps(entries).encode()


def test_metadata_entries_and_rejects():
    raw = meta(**{
        "aaaaaaaaaa.mp4": {"label": "REAL", "split": "train"},
        "bbbbbbbbbb.mp4": {"label": "FAKE", "split": "train", "original": "aaaaaaaaaa.mp4"},
        "cccccccccc.mp4": {"label": "MAYBE"},
        "../evil.mp4": {"label": "REAL"},
        "dddddddddd.mp4": {"label": "FAKE"},
        "eeeeeeeeee.mp4": "REAL",
    })
    entries, rejects = dfdc.parse_metadata(raw, part=4)
    assert entries == [dfdc.Entry("aaaaaaaaaa.mp4", 0, "aaaaaaaaaa.mp4"),
                       dfdc.Entry("bbbbbbbbbb.mp4", 1, "aaaaaaaaaa.mp4")]
    assert {r["video"]: r["reason"] for r in rejects} == {
        "cccccccccc.mp4": "unknown_label", "../evil.mp4": "bad_name",
        "dddddddddd.mp4": "bad_original", "eeeeeeeeee.mp4": "bad_entry"}
    assert all(r["part"] == 4 for r in rejects)


def test_duplicate_keys_are_rejected_not_silently_merged():
    raw = b'{"aaaaaaaaaa.mp4": {"label": "REAL"}, "aaaaaaaaaa.mp4": {"label": "FAKE"}}'
    entries, rejects = dfdc.parse_metadata(raw, part=0)
    assert entries == [] and [r["reason"] for r in rejects] == ["duplicate_entry"]


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_broken_metadata_breaks_the_part_with_a_clear_reason(raw):
    with pytest.raises(dfdc.BrokenPart, match="part 7: bad_metadata"):
        dfdc.parse_metadata(raw, part=7)


def _zip(members: dict[str, bytes], symlinks=()) -> zipfile.ZipFile:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name in symlinks:
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, "/etc/passwd")
    buf.seek(0)
    return zipfile.ZipFile(buf)


def test_zip_members_hostile_paths_symlinks_and_oversize_are_rejected():
    zf = _zip({"dfdc_train_part_3/metadata.json": b"{}",
               "dfdc_train_part_3/aaaaaaaaaa.mp4": b"x" * 10,
               "dfdc_train_part_3/bbbbbbbbbb.mp4": b"x" * 5000,
               "../outside.mp4": b"x", "/abs.mp4": b"x",
               "dfdc_train_part_3/synth_truth.json": b"{}"},
              symlinks=["dfdc_train_part_3/link.mp4"])
    members, rejects = dfdc.scan_zip(zf, part=3, max_member_bytes=1000)
    assert members.metadata == "dfdc_train_part_3/metadata.json"
    assert members.videos == {"aaaaaaaaaa.mp4": "dfdc_train_part_3/aaaaaaaaaa.mp4"}
    assert sorted((r["video"], r["reason"]) for r in rejects) == [
        ("../outside.mp4", "unsafe_member"), ("/abs.mp4", "unsafe_member"),
        ("bbbbbbbbbb.mp4", "member_too_large"),
        ("dfdc_train_part_3/link.mp4", "unsafe_member")]


def test_read_member_refuses_to_inflate_past_the_limit():
    zf = _zip({"p/bomb.mp4": b"\0" * 100_000})
    with pytest.raises(ValueError, match="zip bomb"):
        dfdc.read_member(zf, "p/bomb.mp4", max_bytes=1000)


def test_part_selection():
    assert dfdc.parse_part_selection("0-3,7") == {0, 1, 2, 3, 7}
    assert dfdc.parse_part_selection(None) is None
    with pytest.raises(ValueError):
        dfdc.parse_part_selection("3-1")
    assert dfdc.parse_part_name("dfdc_train_part_07.zip") == 7
    assert dfdc.parse_part_name("dfdc_train_part_7") == 7
    assert dfdc.parse_part_name("dfdc_train_part_7.tar") is None


def _entries(n_originals=20, fakes_each=4):
    out = []
    for i in range(n_originals):
        orig = f"real{i:06d}.mp4"
        out.append(dfdc.Entry(orig, 0, orig))
        out += [dfdc.Entry(f"fake{i:03d}{j:03d}.mp4", 1, orig) for j in range(fakes_each)]
    return out


def test_plan_balances_and_never_splits_a_fake_from_its_original():
    entries = _entries()
    plan = plan_part(1, entries, {e.name for e in entries}, fakes_per_original=1, seed=0,
                     test_parts=(), validation_fraction=0.3, shards_per_split=2)
    assert len(plan.units) == 20 and all(len(u.fakes) == 1 for u in plan.units)
    assert len(plan.left_out) == 60 and plan.rejects == []
    for u in plan.units:
        assert all(f.original == u.original.name for f in u.fakes)
    assert {u.split for u in plan.units} == {"train", "validation"}
    # the accounting rule on the plan: every listed video is processed or left out
    processed = sum(1 + len(u.fakes) for u in plan.units)
    assert processed + len(plan.left_out) == plan.videos_in_metadata


def test_plan_is_deterministic_and_seeded():
    entries = _entries()
    kw = dict(test_parts=(), validation_fraction=0.1, shards_per_split=1)
    a = plan_part(1, entries, {e.name for e in entries}, fakes_per_original=1, seed=0, **kw)
    b = plan_part(1, list(reversed(entries)), {e.name for e in entries}, fakes_per_original=1,
                  seed=0, **kw)
    c = plan_part(1, entries, {e.name for e in entries}, fakes_per_original=1, seed=1, **kw)
    assert a.units == b.units
    assert a.units != c.units  # another seed picks other fakes


def test_plan_keeps_all_fakes_when_asked_and_holds_out_test_parts():
    entries = _entries(3, 2)
    plan = plan_part(5, entries, {e.name for e in entries}, fakes_per_original=None, seed=0,
                     test_parts=(5,), validation_fraction=0.5, shards_per_split=1)
    assert [len(u.fakes) for u in plan.units] == [2, 2, 2]
    assert {u.split for u in plan.units} == {"test"}


def test_plan_rejects_missing_files_extra_files_and_orphan_fakes():
    entries = [dfdc.Entry("real000000.mp4", 0, "real000000.mp4"),
               dfdc.Entry("fake000000.mp4", 1, "real000000.mp4"),
               dfdc.Entry("orphan0000.mp4", 1, "gone000000.mp4"),
               dfdc.Entry("nofile0000.mp4", 0, "nofile0000.mp4")]
    files = {"real000000.mp4", "fake000000.mp4", "orphan0000.mp4", "extra00000.mp4"}
    plan = plan_part(0, entries, files, fakes_per_original=1, seed=0, test_parts=(),
                     validation_fraction=0.1, shards_per_split=1)
    assert {r["video"]: r["reason"] for r in plan.rejects} == {
        "extra00000.mp4": "not_in_metadata", "nofile0000.mp4": "no_file",
        "orphan0000.mp4": "original_missing"}
    assert [u.original.name for u in plan.units] == ["real000000.mp4"]


def test_split_rule_is_a_function_of_the_original_only():
    names = [f"v{i}.mp4" for i in range(2000)]
    fr = [splits.assign_split(0, n, test_parts=(), validation_fraction=0.2) for n in names]
    assert 0.15 < fr.count("validation") / 2000 < 0.25
    # The part number is ignored outside the held-out parts: an original (and so each of its
    # fakes) gets the same split in whichever part it is listed.
    for part in (1, 7, 49):
        assert [splits.assign_split(part, n, test_parts=(3,), validation_fraction=0.2)
                for n in names] == fr
    # Held-out parts are test whole, whatever the original.
    assert {splits.assign_split(3, n, test_parts=(3,), validation_fraction=0.2)
            for n in names} == {"test"}
