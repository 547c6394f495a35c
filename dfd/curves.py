"""Training curves from a run's history, as the paper draws them.

Fig. 3: training and validation accuracy per epoch. Fig. 4: AUC, precision and recall per epoch.
``history`` is the run dir's ``history.json``: one dict per epoch with ``epoch`` (0-based) and
metric values, validation ones prefixed ``val_``.
"""
from __future__ import annotations

import io
from collections.abc import Sequence

ACCURACY_FIGURE = "accuracy.png"  # the paper's Fig. 3
METRICS_FIGURE = "auc_precision_recall.png"  # the paper's Fig. 4
LOSS_FIGURE = "loss.png"
_COLORS = {"auc": "#1b9e77", "precision": "#d95f02", "recall": "#7570b3", "accuracy": "#e7298a",
           "loss": "#666666"}


def _series(history: Sequence[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(e["epoch"] + 1, e[key]) for e in history if e.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _plot(history: Sequence[dict], names: Sequence[str], title: str, ylabel: str,
          *, unit_range: bool) -> bytes:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    ax = fig.add_subplot()
    for name in names:
        for key, style, label in ((name, "-", "train"), (f"val_{name}", "--", "validation")):
            x, y = _series(history, key)
            if x:
                ax.plot(x, y, style, color=_COLORS.get(name), marker="." if len(x) < 30 else None,
                        label=f"{name} ({label})" if len(names) > 1 else label)
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    if unit_range:
        ax.set_ylim(0.0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def training_curves(history: Sequence[dict]) -> dict[str, bytes]:
    """The figures as PNG bytes, by file name."""
    if not history:
        raise ValueError("no epochs in the history: nothing to plot")
    return {
        ACCURACY_FIGURE: _plot(history, ["accuracy"], "Accuracy per epoch", "accuracy",
                               unit_range=True),
        METRICS_FIGURE: _plot(history, ["auc", "precision", "recall"],
                              "AUC, precision and recall per epoch", "value", unit_range=True),
        LOSS_FIGURE: _plot(history, ["loss"], "Binary cross-entropy per epoch", "loss",
                           unit_range=False),
    }
