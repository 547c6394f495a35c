"""The layouts DFDC really comes in, as input: padded outer folders, `_0` and `_00` of one part,
a zip holding another part's folder, and Kaggle's labelled sample as a part of its own."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from dfd import dfdc
from pipelines.sources import discover_parts, read_part

LIMIT = 2**20
META = {"aaaaaaaaaa.mp4": {"label": "REAL", "split": "train"},
        "bbbbbbbbbb.mp4": {"label": "FAKE", "split": "train", "original": "aaaaaaaaaa.mp4"},
        # the sample's fakes often name an original that is not in the sample
        "cccccccccc.mp4": {"label": "FAKE", "split": "train", "original": "zzzzzzzzzz.mp4"}}


def write_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / dfdc.METADATA).write_text(json.dumps(META))
    for name in META:
        (folder / name).write_bytes(b"\x00\x00\x00\x18ftypmp42" + name.encode())
    return folder


def write_zip(path: Path, folder: str) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{folder}/{dfdc.METADATA}", json.dumps(META))
        for name in META:
            zf.writestr(f"{folder}/{name}", b"\x00\x00\x00\x18ftypmp42" + name.encode())
    return path


def test_a_padded_outer_folder_is_read_as_its_part(tmp_path):
    write_folder(tmp_path / "dfdc_train_part_00" / "dfdc_train_part_0")
    write_folder(tmp_path / "dfdc_train_part_01" / "dfdc_train_part_7")
    [zero, one] = discover_parts(str(tmp_path))
    assert (zero.part, zero.kind, zero.warnings) == (0, "folder", ())
    assert zero.uri == str(tmp_path / "dfdc_train_part_00" / "dfdc_train_part_0")
    raw, openers, rejects = read_part(zero, max_member_bytes=LIMIT)
    assert json.loads(raw) == META and sorted(openers) == sorted(META) and rejects == []
    assert one.part == 1 and one.warnings == (
        "dfdc_train_part_01/ holds folder dfdc_train_part_7/: read as part 1, the number of "
        "the outer folder",)


def test_two_sources_of_one_part_fail_that_part_naming_both(tmp_path):
    write_zip(tmp_path / "dfdc_train_part_0.zip", "dfdc_train_part_0")
    write_zip(tmp_path / "dfdc_train_part_00.zip", "dfdc_train_part_0")
    write_folder(tmp_path / "dfdc_train_part_3")
    write_folder(tmp_path / "dfdc_train_part_03")
    write_zip(tmp_path / "dfdc_train_part_05.zip", "dfdc_train_part_5")
    write_folder(tmp_path / "dfdc_train_part_5")  # a zip and what it unpacks to: the zip
    specs = {s.part: s for s in discover_parts(str(tmp_path))}
    assert sorted(specs) == [0, 3, 5]
    assert (specs[5].kind, specs[5].uri) == ("zip", str(tmp_path / "dfdc_train_part_05.zip"))
    for part, names in ((0, "dfdc_train_part_0.zip and dfdc_train_part_00.zip"),
                        (3, "dfdc_train_part_03 and dfdc_train_part_3")):
        assert specs[part].kind == "ambiguous"
        with pytest.raises(dfdc.BrokenPart) as broken:
            read_part(specs[part], max_member_bytes=LIMIT)
        assert broken.value.reason == "ambiguous_part"
        assert str(broken.value) == (f"part {part}: ambiguous_part: {names} both name part "
                                     f"{part}: remove or rename one, so that it is never a "
                                     f"silent choice")


def test_a_zip_holding_another_parts_folder_is_read_with_a_warning(tmp_path):
    write_zip(tmp_path / "dfdc_train_part_04.zip", "dfdc_train_part_14")
    [spec] = discover_parts(str(tmp_path))
    assert spec.part == 4 and spec.warnings == (
        "dfdc_train_part_04.zip holds folder dfdc_train_part_14/, not dfdc_train_part_4/: "
        "read as part 4, the number in its file name",)
    _, openers, rejects = read_part(spec, max_member_bytes=LIMIT)
    assert sorted(openers) == sorted(META) and rejects == []


@pytest.mark.parametrize("zipped", [False, True])
def test_the_labelled_sample_is_a_part_of_its_own(tmp_path, zipped):
    if zipped:
        write_zip(tmp_path / "train_sample_videos.zip", "train_sample_videos")
    else:
        write_folder(tmp_path / "train_sample_videos")
    write_zip(tmp_path / "dfdc_train_part_02.zip", "dfdc_train_part_2")
    assert [s.part for s in discover_parts(str(tmp_path))] == [2, dfdc.SAMPLE_PART]
    [sample] = discover_parts(str(tmp_path), {dfdc.SAMPLE_PART})
    assert sample.part == 99 and sample.warnings == ()
    raw, openers, _ = read_part(sample, max_member_bytes=LIMIT)
    entries, rejects = dfdc.parse_metadata(raw, part=sample.part)
    assert [e.label for e in entries] == [0, 1, 1] and rejects == []
    assert sorted(openers) == sorted(META)
