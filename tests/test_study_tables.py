"""Study tables carry the held-out set's own uncertainty beside the spread over seeds."""
import csv
import io

import numpy as np
import pytest

from dfd import metrics
from dfd.study import summary, table, variant_summary
from dfd.study.result import render_markdown
from dfd.study.table import Column
from dfd.study.variants import AUGMENTATION


def _evaluated(seed: int, n: int = 40) -> dict:
    """metrics.json of one run on n held-out videos (crop = video here)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    p = np.clip(0.5 + 0.2 * (y - 0.5) + rng.normal(0, 0.25, n), 0.01, 0.99)
    cols = {"label": y, "p_fake": p, "part": np.full(n, 2)}
    return metrics.evaluate(cols, cols)


def test_a_variant_row_shows_the_runs_mean_bootstrap_interval_at_its_precision():
    chosen = AUGMENTATION[:2]
    evaluated = {(v.name, s): _evaluated(10 * k + s) for k, v in enumerate(chosen)
                 for s in range(3)}
    figures = {v.name: {s: summary.figures(evaluated[(v.name, s)]) for s in range(3)}
               for v in chosen}
    out = variant_summary.summarize(
        "augmentation", chosen, figures, {v.name: [[{"val_accuracy": 0.5}]] * 3 for v in chosen},
        {v.name: "random" for v in chosen}, ["notes"])
    row = out.tables[0].rows[0]
    for name, key in (("video_auc", "auc"), ("video_log_loss", "log_loss"),
                      ("video_accuracy", "accuracy")):
        bounds = np.array([evaluated[("none", s)]["video"]["ci95"][key] for s in range(3)])
        assert row[name]["ci95"] == pytest.approx(list(bounds.mean(axis=0)))
        assert row[name]["mean"] == pytest.approx(
            np.mean([evaluated[("none", s)]["video"][key] for s in range(3)]))
    # 40 videos: intervals about 0.3 wide, so two decimals, not three.
    text = render_markdown("augmentation", out)
    lo, hi = row["video_auc"]["ci95"]
    assert f"{row['video_auc']['mean']:.2f} ± {row['video_auc']['sd']:.2f} " \
           f"[{lo:.2f}, {hi:.2f}]" in text
    assert summary.INTERVAL_NOTE in text
    parsed = list(csv.DictReader(io.StringIO(table.csv_text(out.tables[0].rows,
                                                            out.tables[0].columns))))
    assert float(parsed[0]["video_auc_ci95_lo"]) == pytest.approx(lo, abs=1e-5)
    assert float(parsed[0]["video_auc_ci95_hi"]) == pytest.approx(hi, abs=1e-5)
    assert "frame_accuracy_ci95_lo" not in parsed[0]  # crops are not resampled


def test_runs_without_intervals_keep_the_old_table():
    old = _evaluated(1)
    for block in [old["video"], *old["per_part"].values()]:
        del block["ci95"]
    f = summary.figures(old)
    assert f["video_auc_ci95"] is None
    cell = summary.spread_with_interval("video_auc", [f, f])
    assert "ci95" not in cell
    assert table.format_spread(cell) == f"{f['video_auc']:.3f} ± 0.000"
    rows = [{"v": "x", "video_auc": cell}]
    header = table.csv_text(rows, [Column("v", "v", "text"), Column("video_auc", "AUC")])
    assert "ci95" not in header


def test_format_spread_never_prints_finer_than_the_interval_or_the_column():
    cell = {"mean": 0.81234, "sd": 0.05, "ci95": [0.61, 0.97]}
    assert table.format_spread(cell) == "0.81 ± 0.05 [0.61, 0.97]"
    narrow = {"mean": 0.81234, "sd": 0.001, "ci95": [0.8101, 0.8142]}
    assert table.format_spread(narrow) == "0.812 ± 0.001 [0.810, 0.814]"  # column: 3 digits
    assert table.format_spread({"mean": -0.00001, "sd": None}, signed=True) == "+0.000"


def test_the_split_table_shows_intervals_and_says_what_they_are():
    from dfd.study import HELD_OUT, split_summary

    results = {(arm, s): {seed: _evaluated(seed + (0 if s == HELD_OUT else 50) + 7 * k)
                          for seed in range(2)}
               for k, arm in enumerate(("random", "leak_free"))
               for s in (split_summary.VALIDATION, HELD_OUT)}
    account = {"validation_videos": 10, "validation_videos_seen_in_train": 4,
               "validation_originals": 8, "validation_originals_seen_in_train": 3}
    described = {seed: {"images": 100, "validation_images": 20, "random": account,
                        "leak_free": {**account, "validation_videos_seen_in_train": 0,
                                      "validation_originals_seen_in_train": 0}}
                 for seed in range(2)}
    out = split_summary.summarize(results, described, parts=[2], settings="2 epochs")
    held_out = out.tables[0].rows[3]  # leak-free model on the held-out parts
    bounds = np.array([results[("leak_free", HELD_OUT)][s]["video"]["ci95"]["auc"]
                       for s in range(2)])
    assert held_out["video_auc"]["ci95"] == pytest.approx(list(bounds.mean(axis=0)))
    assert summary.INTERVAL_NOTE in out.notes
    # Paired differences are differences of runs: no bootstrap interval is claimed for them.
    assert "ci95" not in out.tables[1].rows[0]["video_auc"]
