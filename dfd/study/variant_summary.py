"""The augmentation and backbone tables: each variant's held-out figures over seeds, and its
seed-paired difference to the first (baseline) variant."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from dfd.study import plots, summary
from dfd.study.result import (FIGURE_COLUMNS, PLOTTED, StudyResult, Table, by_figure,
                              has_intervals, spread_rows)
from dfd.study.table import Column
from dfd.study.variants import Variant

TITLES = {"augmentation": "Training-time augmentation",
          "backbone": "The paper's CNN vs an EfficientNet-B0 backbone"}


def curve_figures(histories: Sequence[Sequence[dict]]) -> dict:
    """The paper's B0 observation in numbers: validation accuracy after the first epoch, at its
    best, and at the end, each over seeds."""
    series = [[h["val_accuracy"] for h in run if h.get("val_accuracy") is not None]
              for run in histories]
    series = [s for s in series if s]
    return {"val_accuracy_first": summary.spread(s[0] for s in series),
            "val_accuracy_best": summary.spread(max(s) for s in series),
            "val_accuracy_last": summary.spread(s[-1] for s in series)}


def summarize(kind: str, chosen: Sequence[Variant], figures: Mapping[str, Mapping[int, dict]],
              histories: Mapping[str, Sequence[Sequence[dict]]], init: Mapping[str, str],
              notes: list[str]) -> StudyResult:
    """``figures[variant][seed]``: ``summary.figures`` of that run on the held-out parts;
    ``histories[variant]``: each seed's training history; ``init``: how each variant's
    weights started."""
    baseline = chosen[0].name
    spreads = spread_rows(figures, summary.FIGURES)
    rows = []
    for v in chosen:
        row = {"variant": v.name, **spreads[v.name], "paper": v.paper}
        for name in ("video_accuracy", "video_auc"):
            row[f"delta_{name}"] = None if v.name == baseline else summary.paired_difference(
                {s: f[name] for s, f in figures[v.name].items()},
                {s: f[name] for s, f in figures[baseline].items()})
        row.update(curve_figures(histories[v.name]))
        row["init"] = init[v.name]
        rows.append(row)
    columns = [Column("variant", "variant", "text"), *FIGURE_COLUMNS,
               Column("delta_video_accuracy", f"Δ video accuracy vs {baseline}", "delta"),
               Column("delta_video_auc", f"Δ video AUC vs {baseline}", "delta")]
    if kind == "backbone":
        columns += [Column("val_accuracy_first", "val. accuracy, epoch 1"),
                    Column("val_accuracy_best", "best val. accuracy"),
                    Column("val_accuracy_last", "last val. accuracy"),
                    Column("init", "initialisation", "text")]
    columns.append(Column("paper", "paper", "text"))
    title = TITLES[kind]
    pngs = {f"{kind}.png": plots.seeds_figure(by_figure(figures, PLOTTED), PLOTTED,
                                              title=f"{title}: held-out parts")}
    if kind == "backbone":
        pngs["curves.png"] = plots.curves_figure(
            {v.name: histories[v.name] for v in chosen}, "val_accuracy",
            title="Validation accuracy per epoch")
    if has_intervals(rows):
        notes = [*notes, summary.INTERVAL_NOTE]
    return StudyResult(notes, [Table("table", title, columns, rows)], pngs)
