"""A study's table as Markdown (for people) and CSV (for tools) from the same rows.

A row maps column keys to a label or note (text) or to a ``summary.spread`` dict (a figure
over seeds, with ``ci95`` when the runs' bootstrap intervals are known). Markdown shows a figure
as ``mean ± sd [lo, hi]``; CSV gives each statistic its own column.
"""
from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Sequence

from dfd.metrics import interval_digits

STATS = ("mean", "sd", "min", "max", "n")


@dataclasses.dataclass(frozen=True)
class Column:
    key: str
    title: str
    kind: str = "stat"  # stat | delta (a signed difference) | text
    digits: int = 3


def format_spread(cell: dict | None, *, digits: int = 3, signed: bool = False) -> str:
    """'0.760 ± 0.225'; with a bootstrap interval (``ci95``), '0.76 ± 0.23 [0.55, 0.93]' at
    the precision the interval supports, never finer than ``digits``."""
    if not cell or cell.get("mean") is None:
        return "–"
    ci = cell.get("ci95")
    if ci:
        digits = min(digits, interval_digits(ci))
    sign = "+" if signed else ""
    # Adding 0.0 turns a -0.0 left by rounding into 0.0: no "-0.000" in a table.
    text = f"{round(cell['mean'], digits) + 0.0:{sign}.{digits}f}"
    if cell.get("sd") is not None:
        text += f" ± {cell['sd']:.{digits}f}"
    if ci:
        text += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return text


def _cell(row: dict, column: Column) -> str:
    value = row.get(column.key)
    if column.kind == "text":
        return "–" if value in (None, "") else str(value).replace("|", "\\|")
    return format_spread(value, digits=column.digits, signed=column.kind == "delta")


def markdown(rows: Sequence[dict], columns: Sequence[Column]) -> str:
    lines = ["| " + " | ".join(c.title for c in columns) + " |",
             "|" + "|".join("---" if c.kind == "text" else "---:" for c in columns) + "|"]
    lines += ["| " + " | ".join(_cell(r, c) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def csv_text(rows: Sequence[dict], columns: Sequence[Column]) -> str:
    """One column per statistic; a figure with a bootstrap interval in any row adds
    ``KEY_ci95_lo`` and ``KEY_ci95_hi``."""
    with_ci = {c.key for c in columns if c.kind != "text"
               and any((r.get(c.key) or {}).get("ci95") for r in rows)}
    header = []
    for c in columns:
        header += [c.key] if c.kind == "text" else [f"{c.key}_{s}" for s in STATS]
        if c.key in with_ci:
            header += [f"{c.key}_ci95_lo", f"{c.key}_ci95_hi"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        out = []
        for c in columns:
            value = row.get(c.key)
            if c.kind == "text":
                out.append("" if value is None else value)
            else:
                out += ["" if not value or value.get(s) is None else
                        (value[s] if s == "n" else f"{value[s]:.6g}") for s in STATS]
            if c.key in with_ci:
                ci = (value or {}).get("ci95")
                out += [f"{b:.6g}" for b in ci] if ci else ["", ""]
        writer.writerow(out)
    return buf.getvalue()
