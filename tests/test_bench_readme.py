"""README's benchmark figures are what bench-results/*.json say (benchmarks._readme)."""
import json
import re
import shutil

import pytest

from benchmarks import _readme as readme


def test_every_benchmark_block_of_the_readme_is_what_its_json_gives():
    page = readme.README.read_text(encoding="utf-8")
    assert readme.stale(page) == [], "README's benchmark blocks are stale: " \
        "`.venv/bin/python -m benchmarks._readme --check` says which"
    found = readme.blocks_in(page)
    assert set(found) == set(readme.BLOCKS)
    for name, text in found.items():
        assert text == readme.render(name)


def test_the_four_figures_the_issue_found_wrong_now_follow_their_source():
    page = readme.README.read_text(encoding="utf-8")
    per_video = readme.load("per_video")
    synth = readme.load("synth")
    n = per_video["clips"]
    flat = " ".join(page.split())
    bd = per_video["b_breakdown_wall_s"]
    assert f"decoding {bd['decode_s'] / n:.2f} s" in flat
    assert f"{bd['detect_s'] / n:.2f} s" in flat
    big = synth["1080p_60_frames_1_real_2_fake"]
    assert f"{big['seconds']:.1f} s: {3 * 60 / big['seconds']:.1f} encoded frames/s" in flat
    assert f"in {synth['seed_0']['generate']['seconds']:.1f} s wall" in flat
    outside = [v for s in ("seed_0", "seed_2") for k, v in synth[s]["label_locality"].items()
               if k.startswith("outside")]
    assert f"outside the box scores {min(outside):.2f}–{max(outside):.2f}" in flat
    assert "150 crops" not in flat


def test_a_changed_measurement_makes_its_block_stale_and_write_mends_it(tmp_path):
    results = tmp_path / "bench-results"
    shutil.copytree(readme.RESULTS, results)
    page = tmp_path / "README.md"
    page.write_text(readme.README.read_text(encoding="utf-8"), encoding="utf-8")
    before = set(readme.stale(page.read_text(), results))  # empty when the README is current
    payload = json.loads((results / "sync.json").read_text())
    payload["figures"]["sync_nothing_new_cli_s"] = 12.34
    (results / "sync.json").write_text(json.dumps(payload))
    assert readme.main(["--check", "--page", str(page), "--results", str(results)]) == 1
    assert set(readme.stale(page.read_text(), results)) - before == {"sync"}
    assert readme.main(["--write", "--page", str(page), "--results", str(results)]) == 0
    text = page.read_text()
    assert "takes 12.3 s" in " ".join(text.split())
    assert set(readme.stale(text, results)) == before - {"sync"}
    # Only the block changed: the rest of the page is untouched.
    outside = re.compile(r"<!-- bench:sync -->.*?<!-- /bench:sync -->", re.S)
    assert outside.sub("", text) == outside.sub("", readme.README.read_text(encoding="utf-8"))


def test_a_block_whose_measurement_is_missing_is_named_and_left_alone(tmp_path):
    results = tmp_path / "bench-results"
    results.mkdir()
    page = tmp_path / "README.md"
    page.write_text("x\n<!-- bench:sync -->\nold\n<!-- /bench:sync -->\n")
    assert readme.stale(page.read_text(), results)[0] == "sync (no bench-results/sync.json)"
    assert readme.main(["--check", "--page", str(page), "--results", str(results)]) == 1
    assert readme.main(["--write", "--page", str(page), "--results", str(results)]) == 0
    assert "\nold\n" in page.read_text()


def test_a_block_without_a_renderer_is_refused(tmp_path):
    page = tmp_path / "README.md"
    page.write_text("x\n<!-- bench:nope -->\nold\n<!-- /bench:nope -->\n")
    with pytest.raises(SystemExit, match="'nope' has no renderer"):
        readme.main(["--write", "--page", str(page)])
