"""A study's figures as PNG bytes: figures per variant over seeds, training curves, and the
occlusion-sensitivity maps."""
from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np

TITLES = {"video_auc": "video AUC", "video_log_loss": "video log loss",
          "video_accuracy": "video accuracy", "frame_auc": "frame AUC",
          "frame_accuracy": "frame accuracy", "val_accuracy": "validation accuracy",
          "val_auc": "validation AUC"}


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: no global state, no display

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def seeds_figure(values: Mapping[str, Mapping[str, Sequence[float | None]]],
                 figures: Sequence[str], *, title: str) -> bytes:
    """One panel per figure; per row label, every seed as a dot and mean ± sd as a bar.

    ``values[label][figure]`` lists the figure's value for each seed (None: undefined)."""
    labels = list(values)
    fig = _figure(max(3.0, min(6.0, 0.8 + 0.75 * len(labels))) * len(figures), 3.8)
    axes = fig.subplots(1, len(figures), squeeze=False)[0]
    rng = np.random.default_rng(0)  # fixed jitter: the same figure on every run
    for ax, name in zip(axes, figures):
        for x, label in enumerate(labels):
            y = np.array([v for v in values[label].get(name, []) if v is not None], float)
            if not y.size:
                continue
            ax.scatter(x + rng.uniform(-0.12, 0.12, y.size), y, s=14, color="#999999",
                       zorder=2)
            sd = y.std(ddof=1) if y.size > 1 else 0.0
            ax.errorbar(x, y.mean(), yerr=sd, fmt="o", color="#1b6ca8", capsize=4, zorder=3)
        ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 4 else 0,
                      ha="right" if len(labels) > 4 else "center")
        ax.set_title(TITLES.get(name, name))
        ax.set_xlim(-0.5, len(labels) - 0.5)
        ax.grid(axis="y", alpha=0.3)
        if name.endswith(("auc", "accuracy")):
            ax.set_ylim(min(0.4, ax.get_ylim()[0]), 1.02)
    fig.suptitle(title + "  (dots: seeds; bars: mean ± sd)")
    return _png(fig)


def curves_figure(histories: Mapping[str, Sequence[Sequence[dict]]], key: str, *,
                  title: str) -> bytes:
    """``key`` per epoch for each label: every seed's run thin, their mean thick."""
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot()
    colors = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e"]
    for k, (label, runs) in enumerate(histories.items()):
        color = colors[k % len(colors)]
        series = [[h[key] for h in run if h.get(key) is not None] for run in runs]
        series = [s for s in series if s]
        for s in series:
            ax.plot(range(1, len(s) + 1), s, color=color, alpha=0.3, lw=1)
        if series:
            n = min(len(s) for s in series)
            mean = np.mean([s[:n] for s in series], axis=0)
            ax.plot(range(1, n + 1), mean, color=color, lw=2.2, marker="." if n < 30 else None,
                    label=f"{label} (mean of {len(series)})")
    from matplotlib.ticker import MaxNLocator

    ax.set(xlabel="epoch", ylabel=TITLES.get(key, key), title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if key.endswith(("accuracy", "auc")):
        ax.set_ylim(0.0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def heatmap_figure(maps: Mapping[str, np.ndarray], backgrounds: Mapping[str, np.ndarray], *,
                   patch: int, title: str, counts: Mapping[str, int]) -> bytes:
    """Occlusion sensitivity per label: each map over the mean crop of that label, one shared
    diverging scale (red: the hidden patch was evidence for the true label)."""
    fig = _figure(5.2 * len(maps), 4.6)
    axes = fig.subplots(1, len(maps), squeeze=False)[0]
    limit = max([float(np.nanmax(np.abs(m))) for m in maps.values() if m.size] + [1e-6])
    image = None
    for ax, (name, heat) in zip(axes, maps.items()):
        size = heat.shape[0] * patch
        ax.imshow(backgrounds[name].mean(axis=-1), cmap="gray", vmin=0, vmax=1,
                  extent=(0, size, size, 0))
        image = ax.imshow(heat, cmap="RdBu_r", vmin=-limit, vmax=limit, alpha=0.6,
                          extent=(0, size, size, 0), interpolation="nearest")
        ax.set_title(f"{name} crops (n={counts.get(name, 0)})")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=list(axes), shrink=0.8,
                 label="drop in p(true label) when the patch is grey")
    fig.suptitle(title)
    return _png(fig)
