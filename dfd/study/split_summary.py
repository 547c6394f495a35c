"""The split tables: both splits' models on their own validation set and on the held-out parts,
and how much the random image split inflates, as seed-paired differences."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from dfd.study import HELD_OUT, plots, summary
from dfd.study.result import (FIGURE_COLUMNS, PLOTTED, StudyResult, Table, by_figure,
                              describe_set, has_intervals)
from dfd.study.table import Column

VALIDATION = "validation"
ROWS = (("random", VALIDATION, "random image split", "validation (random images)"),
        ("random", HELD_OUT, "random image split", "held-out parts"),
        ("leak_free", VALIDATION, "leak-free split", "validation (by original)"),
        ("leak_free", HELD_OUT, "leak-free split", "held-out parts"))
INFLATION = (
    (("random", VALIDATION), ("random", HELD_OUT),
     "random-split validation − the same model on held-out parts"),
    (("random", VALIDATION), ("leak_free", VALIDATION),
     "random-split validation − leak-free validation"),
    (("random", VALIDATION), ("leak_free", HELD_OUT),
     "random-split validation − leak-free model on held-out parts"),
    (("leak_free", VALIDATION), ("leak_free", HELD_OUT),
     "leak-free validation − the same model on held-out parts"))
COLUMNS = [Column("split", "split", "text"), Column("evaluated on", "evaluated on", "text"),
           *FIGURE_COLUMNS, Column("frame_auc", "frame AUC"),
           Column("seen", "val. videos with frames in train", digits=2)]
INFLATION_COLUMNS = [Column("difference", "inflation (paired by seed)", "text"),
                     *[Column(c.key, c.title, "delta") for c in FIGURE_COLUMNS],
                     Column("frame_auc", "frame AUC", "delta")]


def summarize(results: Mapping[tuple[str, str], Mapping[int, dict]],
              described: Mapping[int, dict], *, parts: Sequence[int], settings: str
              ) -> StudyResult:
    """``results[(arm, split)][seed]``: a metrics.json (arm: random | leak_free, split:
    validation | test); ``described[seed]``: ``random_split.write_random_split``'s account;
    ``settings`` says how the models were trained."""
    figures = {key: {s: summary.figures(e) for s, e in by_seed.items()}
               for key, by_seed in results.items()}
    rows = []
    for arm, evaluated_on, arm_title, set_title in ROWS:
        row = {"split": arm_title, "evaluated on": set_title,
               **{n: summary.spread_with_interval(n, figures[(arm, evaluated_on)].values())
                  for n in summary.FIGURES}}
        if evaluated_on == VALIDATION:
            row["seen"] = summary.spread(
                d[arm]["validation_videos_seen_in_train"] / max(1, d[arm]["validation_videos"])
                for d in described.values())
        rows.append(row)
    inflation = [{"difference": title, **{
        n: summary.paired_difference({s: f[n] for s, f in figures[a].items()},
                                     {s: f[n] for s, f in figures[b].items()})
        for n in summary.FIGURES}} for a, b, title in INFLATION]
    held_out = next(iter(results[("leak_free", HELD_OUT)].values()))
    labels = {f"{arm.replace('_', '-')}\n{'held-out' if e == HELD_OUT else e}": figures[(arm, e)]
              for arm, e, _, _ in ROWS}
    pngs = {"split.png": plots.seeds_figure(by_figure(labels, PLOTTED), PLOTTED,
                                            title="Random image split vs leak-free split")}
    lines = notes(described, held_out, parts=parts, settings=settings)
    if has_intervals(rows):
        lines.append(summary.INTERVAL_NOTE)
    return StudyResult(
        lines,
        [Table("table", "Random image split vs leak-free split", COLUMNS, rows),
         Table("inflation", "How much the random split inflates", INFLATION_COLUMNS,
               inflation)],
        pngs)


def notes(described: Mapping[int, dict], held_out: dict, *, parts: Sequence[int],
          settings: str) -> list[str]:
    first = next(iter(described.values()))

    def mean_of(arm: str, key: str) -> str:
        value = float(np.mean([d[arm][key] for d in described.values()]))
        return f"{value:.0f}" if value == round(value) else f"{value:.1f}"

    def seen(arm: str) -> str:
        return (f"{mean_of(arm, 'validation_videos_seen_in_train')} of "
                f"{mean_of(arm, 'validation_videos')} (originals: "
                f"{mean_of(arm, 'validation_originals_seen_in_train')} of "
                f"{mean_of(arm, 'validation_originals')})")

    return [f"Held-out {describe_set(held_out, parts)}; the same for both splits.",
            f"Both splits deal the same {first['images']} train+validation crops, "
            f"{first['validation_images']} of them to validation: by original (leak-free, as "
            f"committed) or image by image at random (the paper's way; seed = training seed). "
            f"{settings}; cells are mean ± sd over seeds. Validation figures count only videos "
            f"with crops.",
            f"Validation videos with frames in train: random split {seen('random')}; "
            f"leak-free split {seen('leak_free')}."]
