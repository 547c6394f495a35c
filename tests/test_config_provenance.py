"""The `paper` preset says, field by field, what the paper states and what we assume."""
import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dfd import config

README = Path(__file__).resolve().parent.parent / "README.md"


def dfd(*args):
    return subprocess.run([sys.executable, "-m", "dfd.cli", *args], capture_output=True,
                          text=True, timeout=120)


def test_every_field_of_every_paper_preset_is_marked_stated_or_assumed():
    for job, cls in config.JOBS.items():
        fields = {f.name for f in dataclasses.fields(cls)}
        assert set(config.PAPER_PROVENANCE[job]) == fields, job
        for name, (source, why) in config.PAPER_PROVENANCE[job].items():
            assert source in (config.STATED, config.ASSUMED) and why, (job, name)


def test_what_the_paper_never_states_is_marked_as_our_assumption():
    train = config.paper_provenance("train")
    for name in ("batch_size", "learning_rate", "dropout", "activation", "optimizer", "loss"):
        assert train[name]["source"] == config.ASSUMED, name
    for name in ("model", "epochs", "input"):
        assert train[name]["source"] == config.STATED, name
    assert train["epochs"]["value"] == 130  # 100 + 30 (§3.3)
    pre = config.paper_provenance("preprocess")
    assert pre["frames_per_video"] == {"value": 5, "source": config.STATED,
                                       "why": config.PAPER_PROVENANCE["preprocess"]
                                       ["frames_per_video"][1]}
    assert pre["detector"]["source"] == config.ASSUMED


def test_config_command_prints_the_provenance_of_the_paper_preset_only():
    r = dfd("config", "train", "--preset", "paper", "--provenance")
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    cfg = config.preset("train", "paper")
    for f in dataclasses.fields(cfg):
        assert shown[f.name]["value"] == getattr(cfg, f.name)
        assert shown[f.name]["source"] == config.PAPER_PROVENANCE["train"][f.name][0]
    assert shown["optimizer"] == {"value": "Adam", "source": config.ASSUMED,
                                  "why": "not given", "in_code": True}
    # The plain output stays the preset itself.
    plain = json.loads(dfd("config", "train", "--preset", "paper").stdout)
    assert plain == config.to_dict(cfg)
    refused = dfd("config", "train", "--preset", "smoke", "--provenance")
    assert refused.returncode == 2 and "paper preset only" in refused.stderr


def _table_rows() -> list[str]:
    rows = []
    for job in ("preprocess", "train", "infer"):
        for name, e in config.paper_provenance(job).items():
            if e["why"] == config._ENGINEERING:
                continue
            value = e["value"] if e.get("in_code") else f"`{e['value']}`"
            field = f"{name} (in code)" if e.get("in_code") else f"`{name}`"
            rows.append(f"| {job} | {field} | {value} | {e['source']} | {e['why']} |")
    return rows


def test_the_readme_paper_table_says_what_the_config_says():
    page = README.read_text(encoding="utf-8")
    section = page[page.index("| job | field | `paper` value | source | why |"):]
    section = section[:section.index("\n\n")]
    shown = section.splitlines()[2:]
    expected = _table_rows()
    assert shown == expected, "\n".join(["README's paper table should read:"] + expected)
    assert not re.search(r"`paper` \(the published setup\)", page)


@pytest.mark.parametrize("job", sorted(config.JOBS))
def test_provenance_values_are_the_preset_values(job):
    cfg = config.preset(job, "paper")
    marks = config.paper_provenance(job)
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        expected = config.to_dict(value) if dataclasses.is_dataclass(value) else value
        assert marks[f.name]["value"] == expected
