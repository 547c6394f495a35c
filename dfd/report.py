"""The evaluation report: one self-contained HTML page plus the PNGs it shows.

A predictions folder (what ``dfd infer`` writes) holds::

    frame_predictions.parquet   FRAME_PREDICTION records, one per face crop
    video_predictions.parquet   VIDEO_PREDICTION records, one per video (faceless ones at 0.5)
    metrics.json                dfd.metrics.evaluate of the two

The report answers "how well does this model do on folders it never saw, and why": the figures
per part (each part is a folder the model may never have seen), ROC curves, the confusion
matrix, score histograms by label, the training curves of the run, and the aggregation rules
side by side on the same crops.
"""
from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from dfd import aggregate, metrics
from dfd import run_dir as rundir
from dfd.submission import write_submission

FRAME_PREDICTIONS = "frame_predictions.parquet"
VIDEO_PREDICTIONS = "video_predictions.parquet"
METRICS = "metrics.json"
REPORT = "report.html"
SUBMISSION = "submission.csv"

TRAINING_CURVES = ("loss", "accuracy", "auc", "precision", "recall")
COLORS = {"REAL": "#2b7bba", "FAKE": "#d7301f"}


# ---- inputs ------------------------------------------------------------------------------------

def read_predictions(directory: str | Path) -> tuple[dict, dict, dict]:
    """(frame columns, video columns, metrics) of a predictions folder; metrics are computed
    when ``metrics.json`` is missing."""
    import pyarrow.parquet as pq

    import schemas

    directory = Path(directory)
    missing = [n for n in (FRAME_PREDICTIONS, VIDEO_PREDICTIONS) if not (directory / n).exists()]
    if missing:
        raise FileNotFoundError(f"{directory} has no {' or '.join(missing)}: "
                                f"is it the --out folder of `dfd infer`?")
    tables = []
    for name, schema in ((FRAME_PREDICTIONS, schemas.FRAME_PREDICTION),
                         (VIDEO_PREDICTIONS, schemas.VIDEO_PREDICTION)):
        table = pq.read_table(directory / name)
        schemas.check_arrow_schema(table.schema, schema)
        tables.append(table.to_pydict())
    frames, videos = tables
    path = directory / METRICS
    evaluated = json.loads(path.read_text()) if path.exists() else metrics.evaluate(frames, videos)
    return frames, videos, evaluated


def read_history(run_dir: str | Path | None) -> list[dict] | None:
    """The per-epoch metrics of a training run, or None when the run dir has none."""
    if run_dir is None:
        return None
    path = Path(rundir.history_path(str(run_dir)))
    if not path.exists():
        return None
    history = json.loads(path.read_text())
    if isinstance(history, dict):  # Keras' History.history layout: name -> list per epoch
        epochs = max((len(v) for v in history.values()), default=0)
        history = [{k: v[i] for k, v in history.items() if i < len(v)} for i in range(epochs)]
    return history


# ---- figures -----------------------------------------------------------------------------------

def _figure(width: float = 5.0, height: float = 4.0):
    # The object-oriented API without pyplot: no global state, no display backend needed.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")


def roc_figure(levels: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> bytes:
    """ROC curves, one per level (e.g. frame and video), AUC in the legend."""
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls=":", color="gray", lw=1, label="chance")
    drawn = False
    for name, (y, p) in levels.items():
        auc = metrics.roc_auc(y, p)
        if auc is None:
            continue
        fpr, tpr, _ = metrics.roc_curve(y, p)
        ax.plot(fpr, tpr, lw=2, label=f"{name} (AUC {auc:.3f})")
        drawn = True
    if not drawn:
        _note(ax, "needs both REAL and FAKE labels")
    ax.set(xlabel="false-positive rate (REAL called FAKE)",
           ylabel="true-positive rate (FAKE caught)", xlim=(0, 1), ylim=(0, 1.01),
           title="ROC")
    ax.legend(loc="lower right")
    return _png(fig)


def confusion_figure(cm: list[list[int]], title: str) -> bytes:
    fig = _figure(4.2, 3.6)
    ax = fig.add_subplot()
    cm = np.asarray(cm)
    ax.imshow(cm, cmap="Blues", vmin=0)
    total = cm.sum() or 1
    for (i, j), count in np.ndenumerate(cm):
        dark = count > cm.max() / 2
        ax.text(j, i, f"{count}\n{count / total:.1%}", ha="center", va="center",
                color="white" if dark else "black")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["REAL", "FAKE"],
           yticklabels=["REAL", "FAKE"], xlabel="called", ylabel="true label", title=title)
    return _png(fig)


def histogram_figure(levels: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> bytes:
    """Score distributions by true label, one panel per level."""
    fig = _figure(5.0 * len(levels), 3.6)
    bins = np.linspace(0, 1, 26)
    for k, (name, (y, p)) in enumerate(levels.items()):
        ax = fig.add_subplot(1, len(levels), k + 1)
        for label, value in (("REAL", 0), ("FAKE", 1)):
            scores = p[y == value]
            if scores.size:
                ax.hist(scores, bins=bins, alpha=0.6, color=COLORS[label],
                        label=f"{label} (n={scores.size})")
        ax.axvline(metrics.THRESHOLD, color="gray", ls=":", lw=1)
        ax.set(xlabel="p(FAKE)", ylabel="count", title=f"{name} scores by true label",
               xlim=(0, 1))
        if y.size:
            ax.legend()
        else:
            _note(ax, "no labelled predictions")
    return _png(fig)


def training_figure(history: list[dict]) -> bytes:
    names = [n for n in TRAINING_CURVES if any(n in e or f"val_{n}" in e for e in history)]
    fig = _figure(3.4 * max(len(names), 1), 3.2)
    epochs = np.arange(1, len(history) + 1)
    for k, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), k + 1)
        for key, style in ((name, "-"), (f"val_{name}", "--")):
            ys = [e.get(key) for e in history]
            if any(v is not None for v in ys):
                ax.plot(epochs, [np.nan if v is None else v for v in ys], style,
                        label="validation" if key.startswith("val_") else "train")
        ax.set(xlabel="epoch", title=name)
        ax.legend()
    return _png(fig)


def aggregation_figure(rows: list[dict]) -> bytes:
    fig = _figure(8.0, 3.4)
    names = [r["rule"] for r in rows]
    x = np.arange(len(names))
    for k, (key, title) in enumerate((("log_loss", "video log loss (lower is better)"),
                                      ("accuracy", "video accuracy"), ("auc", "video AUC"))):
        ax = fig.add_subplot(1, 3, k + 1)
        values = [np.nan if r[key] is None else r[key] for r in rows]
        ax.bar(x, values, color="#5e8fb5")
        ax.set_xticks(x, names, rotation=20)
        ax.set_title(title, fontsize=10)
        if key == "log_loss" and rows and rows[0]["chance_log_loss"] is not None:
            ax.axhline(rows[0]["chance_log_loss"], color="gray", ls=":", lw=1,
                       label="chance")
            ax.legend(fontsize=8)
    return _png(fig)


# ---- analysis ----------------------------------------------------------------------------------

def compare_aggregations(frames: Mapping[str, Any], videos: Mapping[str, Any]) -> list[dict]:
    """Video-level figures of every registered rule over the same crops (faceless videos at
    0.5 under every rule)."""
    faceless = [{"video": v, "part": p, "label": lab}
                for v, p, lab, n in zip(videos["video"], videos["part"], videos["label"],
                                        videos["n_faces"]) if n == 0]
    rows = []
    for rule in aggregate.names():
        records = aggregate.video_records(frames, model="", rule=rule, faceless=faceless)
        cols = {k: [r[k] for r in records] for k in ("label", "p_fake")}
        v = metrics.labelled(cols)
        rows.append({"rule": rule, **metrics.summarize(v["label"], v["p_fake"])})
    return rows


# ---- HTML --------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f0f0f0} td.l,th.l{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:.3em}
.note{color:#555;font-size:.9em}
"""


def _fmt(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.4f}"
    return html.escape(str(x))


_COLUMNS = ("n", "n_fake", "n_real", "accuracy", "precision", "recall", "f1", "auc", "ap",
            "log_loss", "chance_log_loss")


def _table(rows: list[tuple[str, Mapping]], first: str) -> str:
    head = "".join(f"<th>{c}</th>" for c in _COLUMNS)
    body = "".join(
        f"<tr><td class=l>{html.escape(name)}</td>"
        + "".join(f"<td>{_fmt(block.get(c))}</td>" for c in _COLUMNS) + "</tr>"
        for name, block in rows)
    return f"<table><tr><th class=l>{first}</th>{head}</tr>{body}</table>"


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _run_summary(run_dir: str | Path | None) -> str:
    if run_dir is None:
        return ""
    path = Path(rundir.config_path(str(run_dir)))
    if not path.exists():
        return f"<p class=note>run dir: {html.escape(str(run_dir))}</p>"
    config = json.loads(path.read_text())
    text = json.dumps(config, indent=1, sort_keys=True, default=str)
    return (f"<details><summary>training run {html.escape(str(run_dir))}</summary>"
            f"<pre>{html.escape(text)}</pre></details>")


NO_LABELS = ("no metrics: none of these {n} videos has a label (Kaggle never published the "
             "labels of its test_videos), so there is nothing to measure the scores against; "
             "the scores are in " + SUBMISSION)


def _render_unlabelled(frames: Mapping[str, Any], videos: Mapping[str, Any], out: Path) -> Path:
    """The report of videos without labels: what was scored, the submission, and why there
    are no metrics."""
    model = sorted(set(videos["model"]))
    faceless = sum(1 for n in videos["n_faces"] if n == 0)
    page = ("<!doctype html><html><head><meta charset=utf-8><title>dfd report</title>"
            f"<style>{_CSS}</style></head><body><h1>Deepfake detection report</h1>"
            f"<p>model: {html.escape(', '.join(model) or '–')}; {len(videos['video'])} videos "
            f"({faceless} without a face, scored 0.5), {len(frames['video'])} face crops."
            f"</p><p class=note>{html.escape(NO_LABELS.format(n=len(videos['video'])))}.</p>"
            "</body></html>\n")
    path = out / REPORT
    tmp = out / f".{REPORT}.tmp"
    tmp.write_text(page)
    os.replace(tmp, path)
    write_submission(dict(zip(videos["video"], videos["p_fake"])), out / SUBMISSION)
    return path


def render_report(predictions_dir: str | Path, out_dir: str | Path, *,
                  run_dir: str | Path | None = None) -> Path:
    """Write ``report.html``, its PNGs and a Kaggle ``submission.csv`` of the video scores
    into ``out_dir``; return the HTML path."""
    frames, videos, evaluated = read_predictions(predictions_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    f = metrics.labelled(frames)
    v = metrics.labelled(videos)
    if videos["video"] and not len(v["label"]):
        return _render_unlabelled(frames, videos, out)
    levels = {"video": (v["label"], v["p_fake"]), "frame": (f["label"], f["p_fake"])}
    rules = compare_aggregations(frames, videos)
    figures = {
        "roc.png": roc_figure(levels),
        "confusion.png": confusion_figure(evaluated["video"]["confusion_matrix"],
                                          "videos (threshold 0.5)"),
        "scores.png": histogram_figure(levels),
        "aggregation.png": aggregation_figure(rules),
    }
    history = read_history(run_dir)
    if history:
        figures["training.png"] = training_figure(history)
    for name, png in figures.items():
        (out / name).write_bytes(png)

    rule_used = sorted(set(videos["aggregation"])) or [aggregate.DEFAULT]
    model = sorted(set(videos["model"]))
    per_part = sorted(evaluated["per_part"].items(), key=lambda kv: int(kv[0]))
    faceless = sum(1 for n in videos["n_faces"] if n == 0)
    eps = evaluated["video"].get("log_loss_eps", metrics.LOG_LOSS_EPS)
    sections = [
        f"<h1>Deepfake detection report</h1>"
        f"<p>model: {html.escape(', '.join(model) or '–')}; video score: "
        f"<b>{html.escape(', '.join(rule_used))}</b> of the face-crop scores; "
        f"{len(videos['video'])} videos ({faceless} without a face, scored 0.5), "
        f"{len(frames['video'])} face crops.</p>",
        _run_summary(run_dir),
        "<h2>Overall</h2>",
        _table([("video", evaluated["video"]), ("frame", evaluated["frame"])], "level"),
        f"<p class=note>A call is FAKE when p(FAKE) &gt; {metrics.THRESHOLD}. Log loss is in "
        f"nats with probabilities clipped to [{eps:g}, 1 − {eps:g}]; chance_log_loss is what "
        f"always answering the label mix would score (0.693 on a balanced set, 0.441 on "
        f"DFDC's natural 1:5.2 mix), so compare log loss with it, not with zero.</p>",
        "<h2>Per part (video level)</h2>",
        "<p class=note>Each part is a separate DFDC folder; parts held out of training show "
        "how the model generalizes to folders it never saw.</p>",
        _table([(f"part {k}", block) for k, block in per_part], "part"),
        "<h2>ROC and confusion matrix</h2>",
        _img(figures["roc.png"], "ROC curves") + _img(figures["confusion.png"],
                                                      "confusion matrix"),
        "<h2>Scores by true label</h2>",
        _img(figures["scores.png"], "score histograms"),
        "<h2>Aggregation rules</h2>",
        "<p class=note>The same face-crop scores turned into video scores by each rule. "
        "<i>confident</i> is the DFDC winner's rule; it needs more than 11 confident crops "
        "to call a confident FAKE, so with few frames per video it acts on confident REALs "
        "only.</p>",
        _table([(r["rule"], r) for r in rules], "rule"),
        _img(figures["aggregation.png"], "aggregation rules"),
    ]
    if history:
        sections += ["<h2>Training curves</h2>", _img(figures["training.png"], "training")]
    elif run_dir is not None:
        sections.append(f"<p class=note>{html.escape(str(run_dir))} has no {rundir.HISTORY}.</p>")
    page = ("<!doctype html><html><head><meta charset=utf-8><title>dfd report</title>"
            f"<style>{_CSS}</style></head><body>{''.join(sections)}</body></html>\n")
    path = out / REPORT
    tmp = out / f".{REPORT}.tmp"
    tmp.write_text(page)
    os.replace(tmp, path)

    write_submission(dict(zip(videos["video"], videos["p_fake"])), out / SUBMISSION)
    return path
