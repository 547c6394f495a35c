"""What a study hands back, and how it is written: notes, tables (Markdown and CSV), figures."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from dfd.config import TrainConfig
from dfd.study import summary
from dfd.study.table import Column, csv_text, markdown

PLOTTED = ("video_auc", "video_log_loss", "video_accuracy")  # the three figures
FIGURE_COLUMNS = [Column("video_auc", "video AUC"), Column("video_log_loss", "video log loss"),
                  Column("video_accuracy", "video accuracy"),
                  Column("frame_accuracy", "frame accuracy")]


@dataclasses.dataclass
class Table:
    name: str  # file stem of its CSV
    title: str
    columns: list[Column]
    rows: list[dict]


@dataclasses.dataclass
class StudyResult:
    notes: list[str]  # lines above the tables
    tables: list[Table]
    figures: dict[str, bytes]  # PNG file name -> bytes
    record: dict = dataclasses.field(default_factory=dict)  # more for study.json
    files: dict[str, bytes] = dataclasses.field(default_factory=dict)  # other outputs


def describe_set(evaluated: Mapping, parts: Sequence[int]) -> str:
    """'parts 2: 12 videos (6 FAKE, 6 REAL), 60 crops' from one metrics.json."""
    v, f = evaluated["video"], evaluated["frame"]
    return (f"parts {', '.join(str(p) for p in parts)}: {v['n']} videos ({v['n_fake']} FAKE, "
            f"{v['n_real']} REAL), {f['n']} crops")


def budget(cfg: TrainConfig) -> str:
    return (f"{cfg.epochs} epochs, global batch {cfg.batch_size}, learning rate "
            f"{cfg.learning_rate:g}, dropout {cfg.dropout:g}, {cfg.workers} worker(s)")


def seeds_text(seeds: Sequence[int]) -> str:
    return ", ".join(str(s) for s in seeds)


def spread_rows(values: Mapping[str, Mapping[int, Mapping]], names: Sequence[str]
                ) -> dict[str, dict]:
    """Per row label, each figure's spread over the seeds (or models), with the runs' mean
    bootstrap interval for the video figures."""
    return {label: {name: summary.spread_with_interval(name, by_seed.values())
                    for name in names}
            for label, by_seed in values.items()}


def has_intervals(rows: Sequence[Mapping]) -> bool:
    """Whether any cell of these rows carries a bootstrap interval (then the table says what
    it is)."""
    return any(isinstance(v, Mapping) and v.get("ci95") for r in rows for v in r.values())


def by_figure(values: Mapping[str, Mapping[int, Mapping]], names: Sequence[str]
              ) -> dict[str, dict[str, list]]:
    """``plots.seeds_figure``'s input: per row label and figure, the value of every seed."""
    return {label: {name: [f[name] for f in by_seed.values()] for name in names}
            for label, by_seed in values.items()}


def render_markdown(kind: str, result: StudyResult) -> str:
    lines = [f"# dfd study {kind}", "", *result.notes]
    for table in result.tables:
        lines += ["", f"## {table.title}", "", markdown(table.rows, table.columns).rstrip()]
    return "\n".join(lines) + "\n"


def output_files(kind: str, result: StudyResult) -> dict[str, bytes]:
    """Every file of the study's --out folder but study.json, by name."""
    files = {"table.md": render_markdown(kind, result).encode()}
    for table in result.tables:
        files[f"{table.name}.csv"] = csv_text(table.rows, table.columns).encode()
    return {**files, **result.figures, **result.files}
