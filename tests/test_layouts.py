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


@pytest.mark.slow
def test_preprocess_reads_the_real_layouts_and_records_what_it_doubted(tmp_path):
    """Through `dfd preprocess` on real synthetic parts: the labelled sample as part 99 (a
    fake whose original is outside it rejected as original_missing and counted), a zip
    holding another part's folder committed with a warning, and two copies of one part
    failing that part alone, naming both."""
    import shutil
    import subprocess
    import sys

    from dfd import config, synth

    made = synth.generate(tmp_path / "synth", config.SynthConfig(
        parts=2, originals=2, fakes_per_original=1, width=320, height=180, frames=12, seed=5,
        zipped=True, portrait_fraction=0.0, workers=1))
    raw = tmp_path / "raw"
    raw.mkdir()
    # Part 0 as the sample: its folder renamed, and one fake's original left out.
    with zipfile.ZipFile(made[0]) as zf:
        sample = raw / dfdc.SAMPLE_FOLDER
        sample.mkdir()
        meta = json.loads(zf.read(f"{dfdc.part_folder_name(0)}/{dfdc.METADATA}"))
        for member in zf.namelist():
            if member.endswith(".mp4"):
                (sample / member.rsplit("/", 1)[-1]).write_bytes(zf.read(member))
    [real, *_] = [name for name, m in meta.items() if m["label"] == "REAL"]
    orphan = next(name for name, m in meta.items() if m.get("original") == real)
    (sample / real).unlink()
    meta.pop(real)
    (sample / dfdc.METADATA).write_text(json.dumps(meta))
    # Part 1's zip saved under part 4's name; and part 1 twice, as _1 and _01.
    shutil.copy(made[1], raw / "dfdc_train_part_04.zip")
    shutil.copy(made[1], raw / "dfdc_train_part_1.zip")
    shutil.copy(made[1], raw / "dfdc_train_part_01.zip")

    root = Path(__file__).resolve().parents[1]
    run = subprocess.run(
        [sys.executable, "-m", "dfd.cli", "preprocess", "--input", str(raw), "--output",
         str(tmp_path / "out"), "--preset", "smoke", "--frames-per-video", "3",
         "--direct_running_mode", "in_memory", "--direct_num_workers", "1"],
        capture_output=True, text=True, timeout=600, cwd=root)
    assert run.returncode == 1, run.stderr[-3000:]
    assert ("part  1: FAILED (ambiguous_part): dfdc_train_part_01.zip and "
            "dfdc_train_part_1.zip both name part 1") in run.stdout
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())["parts"]
    assert sorted(manifest) == ["04", "99"]
    assert manifest["04"]["warnings"] == (
        "dfdc_train_part_04.zip holds folder dfdc_train_part_1/, not dfdc_train_part_4/: "
        "read as part 4, the number in its file name")
    sample_entry = manifest["99"]
    assert sample_entry["warnings"] is None
    assert sample_entry["videos_in_metadata"] == len(meta)
    import pyarrow.parquet as pq

    errors = pq.read_table(tmp_path / "out" / "errors" / "part-99.parquet").to_pylist()
    assert {(e["video"], e["reason"]) for e in errors} >= {(orphan, "original_missing")}
    assert (sample_entry["videos_with_records"] + sample_entry["videos_rejected"]
            + sample_entry["fakes_left_out"]) == sample_entry["videos_in_metadata"]


def test_dfdc_train_all_zip_as_input_stages_its_nested_parts(tmp_path):
    from pipelines.fetch import AllPartsZip, source_of, stage_parts

    parts = tmp_path / "parts"
    parts.mkdir()
    all_zip = tmp_path / "dfdc_train_all.zip"
    with zipfile.ZipFile(all_zip, "w", zipfile.ZIP_STORED) as zf:
        for p in (0, 1, 2):
            zf.write(write_zip(parts / dfdc.part_zip_name(p), dfdc.part_folder_name(p)),
                     f"dfdc_train_all/{dfdc.part_zip_name(p)}")
    assert source_of(str(all_zip), None) == AllPartsZip(str(all_zip))
    staging = tmp_path / "staging"
    manifest = {"parts": {"00": {"config_hash": "h"}}}  # part 0 committed under this config

    def stage(selection):
        return stage_parts(AllPartsZip(str(all_zip)), staging=str(staging), selection=selection,
                           manifest=manifest, config_hash_of=lambda p: "h", beam_args=[])

    staged = stage(None)
    assert (staged["to_process"], staged["up_to_date"], staged["failed"]) == ([1, 2], [0], [])
    for p in (1, 2):
        assert (staging / dfdc.part_zip_name(p)).read_bytes() == \
            (parts / dfdc.part_zip_name(p)).read_bytes()
    assert not (staging / dfdc.part_zip_name(0)).exists()
    assert [s.part for s in discover_parts(str(staging))] == [1, 2]
    again = stage({1, 7})  # staged already: nothing is streamed out again
    assert [(r["part"], r["status"]) for r in again["staged"]] == [(1, "present")]
    assert again["failed"] == [{"part": 7, "reason": "not_in_archive",
                                "detail": f"{all_zip} holds no part 7"}]


def test_dfdc_train_all_zip_as_input_needs_somewhere_to_stage_its_parts(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-m", "dfd.cli", "preprocess", "--input",
                          str(tmp_path / "dfdc_train_all.zip"), "--output", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120, cwd=root)
    assert run.returncode == 1
    [line] = run.stderr.splitlines()
    assert line.startswith(f"dfd preprocess: error: {tmp_path / 'dfdc_train_all.zip'} needs "
                           f"--staging: a folder or gs:// / s3:// URI where the fetched parts "
                           f"are kept")
