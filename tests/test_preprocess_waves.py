"""A run of many parts processes and commits them in waves (pipelines.preprocess.waves), so a
failure late in the run loses at most one wave's processing: the parts of earlier waves are
committed, and the next run redoes only the failed wave's parts."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dfd import config
from pipelines.preprocess import PARTS_PER_WAVE, waves

ROOT = Path(__file__).resolve().parents[1]
HOOKS = Path(__file__).resolve().parent / "fault_injection"
SYNTH = config.SynthConfig(parts=3, originals=2, fakes_per_original=1, width=320, height=180,
                           frames=12, seed=5, zipped=True, portrait_fraction=0.0, workers=1)
FLAGS = ["--preset", "smoke", "--frames-per-video", "3",
         "--direct_running_mode=in_memory", "--direct_num_workers=1"]


def test_parts_are_cut_into_waves_in_order():
    assert waves(list(range(12)), 5) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11]]
    assert waves([], 5) == [] and waves([7], 1) == [[7]]
    assert PARTS_PER_WAVE <= 5  # a failure in a 50-part run loses at most a tenth of it
    with pytest.raises(Exception, match="at least 1"):
        waves([1], 0)


@pytest.mark.slow
def test_a_failure_in_a_late_wave_keeps_the_earlier_waves_committed(tmp_path):
    from dfd.synth import generate

    source, out = tmp_path / "src", tmp_path / "out"
    generate(source, SYNTH)
    argv = [sys.executable, "-m", "dfd.cli", "preprocess", "--input", str(source), "--output",
            str(out), "--parts-per-wave", "1", *FLAGS]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HOOKS), str(ROOT)]))
    failed = subprocess.run(argv, cwd=ROOT, env=dict(env, DFD_FAULT="fail_writing_part:2"),
                            capture_output=True, text=True, timeout=600)
    assert failed.returncode == 1, failed.stderr[-3000:]
    last = failed.stderr.strip().splitlines()[-1]
    assert "part(s) 02 not committed; a new run processes them again" in last
    assert sorted(json.loads((out / "manifest.json").read_text())["parts"]) == ["00", "01"]
    assert sorted(p.name for p in (out / "parquet").iterdir() if not p.name.startswith("_")) \
        == ["part-00", "part-01"]

    again = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.splitlines()[:3] == ["part  2: 4 videos, 4 with faces, 0 rejected, "
                                             "0 fakes left out; 12 records (test 12)",
                                             "part  0: already committed, skipped",
                                             "part  1: already committed, skipped"]
    assert sorted(json.loads((out / "manifest.json").read_text())["parts"]) == ["00", "01", "02"]
