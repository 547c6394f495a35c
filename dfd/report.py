"""The evaluation report: one self-contained HTML page plus the PNGs it shows.

A predictions folder (what ``dfd infer`` writes) holds::

    frame_predictions.parquet   FRAME_PREDICTION records, one per face crop
    video_predictions.parquet   VIDEO_PREDICTION records, one per video (the model's score, or
                                the fallback score of a video the pipeline rejected)
    metrics.json                dfd.metrics.evaluate of the two, with coverage and the run

The report answers "how well does this model do on folders it never saw, how sure is that, and
why": first how many videos the figures stand on (coverage), then the figures over every video
and over the model-scored ones alone, with 95 % bootstrap intervals, per part (each part is a
folder the model may never have seen, flagged when too small to mean much), ROC curves, the
confusion matrix, score histograms by label, the most confident mistakes with the crops that
decided them, the training curves of the run, the aggregation rules side by side on the
same crops, and, for calibrated scores, log loss and reliability before and after. A
metrics.json of an older run, without coverage or intervals, still renders.
"""
from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
    """Video-level figures of every registered rule over the same crops (videos without a
    scored crop keep their fallback score under every rule)."""
    fallback = [{"video": v, "part": p, "label": lab, "reason": why, "p_fake": score}
                for v, p, lab, n, why, score in zip(
                    videos["video"], videos["part"], videos["label"], videos["n_faces"],
                    videos.get("reason", [None] * len(videos["video"])), videos["p_fake"])
                if n == 0]
    score = fallback[0]["p_fake"] if fallback else aggregate.FALLBACK_SCORE
    rows = []
    for rule in aggregate.names():
        records = aggregate.video_records(frames, model="", rule=rule, fallback=fallback,
                                          fallback_score=score)
        cols = {k: [r[k] for r in records] for k in ("label", "p_fake")}
        v = metrics.labelled(cols)
        rows.append({"rule": rule, **metrics.summarize(v["label"], v["p_fake"])})
    return rows


# ---- the most confident mistakes ------------------------------------------------------------

MISTAKES_PER_KIND = 8  # false positives and false negatives shown
CROPS_PER_MISTAKE = 6  # the crops that pushed the score furthest, per video
THUMBNAIL = 96  # pixels per side of a crop's thumbnail


def confident_mistakes(videos: Mapping[str, Any], *, threshold: float = metrics.THRESHOLD,
                       k: int = MISTAKES_PER_KIND) -> dict[str, list[dict]]:
    """The ``k`` most confident false positives (REAL videos with the highest p(FAKE) above
    the threshold) and false negatives (FAKE videos with the lowest p(FAKE) at or below it),
    among the videos the model scored; a fallback score decided nothing about its video."""
    n = len(videos["video"])
    by = videos.get("scored_by") or ["model" if c else "fallback" for c in videos["n_faces"]]
    rows = [{"video": v, "part": int(pt), "label": lab, "p_fake": float(p), "n_faces": c}
            for v, pt, lab, p, c, b in zip(videos["video"], videos["part"], videos["label"],
                                           videos["p_fake"], videos["n_faces"], by[:n])
            if lab is not None and b == "model"]
    fp = sorted((r for r in rows if r["label"] == 0 and r["p_fake"] > threshold),
                key=lambda r: (-r["p_fake"], r["part"], r["video"]))
    fn = sorted((r for r in rows if r["label"] == 1 and r["p_fake"] <= threshold),
                key=lambda r: (r["p_fake"], r["part"], r["video"]))
    return {"false_positives": fp[:k], "false_negatives": fn[:k]}


def deciding_crops(frames: Mapping[str, Any], mistakes: list[Mapping], *,
                   k: int = CROPS_PER_MISTAKE) -> dict[tuple[int, str], list[dict]]:
    """Per mistaken (part, video), the crops that pushed its score furthest the wrong way: the
    most FAKE-looking crops of a false positive, the most REAL-looking of a false negative.
    One pass over the frame predictions, however many mistakes."""
    wanted = {(m["part"], m["video"]): m for m in mistakes}
    found: dict[tuple[int, str], list[dict]] = {key: [] for key in wanted}
    for v, pt, f, i, p in zip(frames["video"], frames["part"], frames["frame_index"],
                              frames["face_index"], frames["p_fake"]):
        key = (int(pt), v)
        if key in found:
            found[key].append({"frame_index": int(f), "face_index": int(i), "p_fake": float(p)})
    out = {}
    for key, crops in found.items():
        wrong_way = -1 if wanted[key]["label"] == 0 else 1
        out[key] = sorted(crops, key=lambda c, w=wrong_way: (w * c["p_fake"], c["frame_index"],
                                                              c["face_index"]))[:k]
    return out


def read_crop_images(data: str, wanted: Mapping[int, set[str]]) -> dict[tuple, bytes]:
    """(part, video, frame_index, face_index) -> encoded crop, for the videos ``wanted`` per
    part, from the face shards: the ``video`` column of each row group first, then the images
    of only the row groups that hold a wanted video, filtered to its rows."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from dfd import output_tree as ot
    from dfd import storage

    fs, root = storage.resolve(ot.format_dir(data, "parquet"))
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        raise FileNotFoundError(f"no parquet/ folder of face shards in {data}")
    found: dict[tuple, bytes] = {}
    for part, names in sorted(wanted.items()):
        value_set = pa.array(sorted(names), pa.string())
        fs, folder = storage.resolve(ot.part_dir(data, "parquet", part))
        for info in fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True)):
            meta = ot.parse_shard_name(info.base_name)
            if not meta or meta["format"] != "parquet":
                continue
            with fs.open_input_file(info.path) as f:
                shard = pq.ParquetFile(f)
                for g in range(shard.num_row_groups):
                    videos = shard.read_row_group(g, columns=["video"])["video"]
                    if not pc.any(pc.is_in(videos, value_set=value_set)).as_py():
                        continue
                    rows = shard.read_row_group(
                        g, columns=["video", "frame_index", "face_index", "image"])
                    chosen = rows.filter(pc.is_in(rows["video"], value_set=value_set))
                    for row in chosen.to_pylist():
                        key = (part, row["video"], row["frame_index"], row["face_index"])
                        found[key] = row["image"]
    return found


def thumbnail(image: bytes, size: int = THUMBNAIL) -> bytes:
    """A small JPEG of an encoded crop, so the page stays light with dozens of them inline."""
    import cv2

    pixels = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
    if pixels is None:
        raise ValueError("the crop does not decode")
    small = cv2.resize(pixels, (size, size), interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ValueError("the thumbnail did not encode")
    return encoded.tobytes()


def mistakes_section(frames: Mapping[str, Any], videos: Mapping[str, Any],
                     data: str | None, *, threshold: float = metrics.THRESHOLD) -> list[str]:
    """The report's 'Most confident mistakes': per video its part, score and the thumbnails of
    the crops that decided it, each with its crop score. Crops come from the face shards
    (``data``, from ``metrics.json["run"]["data"]``); when those cannot be read the section
    says so and lists the videos without pictures."""
    found = confident_mistakes(videos, threshold=threshold)
    chosen = [m for kind in found.values() for m in kind]
    out = ["<h2>Most confident mistakes</h2>",
           f"<p class=note>The {MISTAKES_PER_KIND} REAL videos with the highest p(FAKE) called "
           f"FAKE (p(FAKE) &gt; {threshold:g}), and the {MISTAKES_PER_KIND} FAKE videos with "
           f"the lowest called REAL, among the videos the model scored; beside each, up to "
           f"{CROPS_PER_MISTAKE} of its face crops, those that pushed its score furthest the "
           f"wrong way, with their crop scores.</p>"]
    if not chosen:
        return out + ["<p>No mistakes at the threshold among the model-scored videos.</p>"]
    images: dict[tuple, bytes] = {}
    if data is None:
        out.append("<p class=note>No crops shown: this metrics.json does not name the face "
                   "shards it was evaluated on (run.data).</p>")
    else:
        wanted: dict[int, set[str]] = {}
        for m in chosen:
            wanted.setdefault(m["part"], set()).add(m["video"])
        try:
            images = read_crop_images(data, wanted)
        except Exception as exc:  # noqa: BLE001 - any storage failure: say it, show the rest
            out.append(f"<p class='note warn'>No crops shown: the face shards at "
                       f"{html.escape(str(data))} could not be read "
                       f"({html.escape(type(exc).__name__)}: {html.escape(str(exc))}).</p>")
    crops_of = deciding_crops(frames, chosen)
    for kind, title in (("false_positives", "REAL called FAKE (false positives)"),
                        ("false_negatives", "FAKE called REAL (false negatives)")):
        rows = []
        for m in found[kind]:
            pictures = []
            for c in crops_of[(m["part"], m["video"])]:
                key = (m["part"], m["video"], c["frame_index"], c["face_index"])
                caption = f"frame {c['frame_index']}: {c['p_fake']:.2f}"
                try:
                    img = _img_jpeg(thumbnail(images[key]), caption) if key in images else ""
                except ValueError:
                    img = ""
                pictures.append(f"<figure>{img}<figcaption>{caption}</figcaption></figure>")
            rows.append(f"<tr><td class=l>{html.escape(m['video'])}</td><td>{m['part']}</td>"
                        f"<td>{m['p_fake']:.3f}</td><td>{m['n_faces']}</td>"
                        f"<td class='l crops'>{''.join(pictures)}</td></tr>")
        out.append(f"<h3>{title}</h3>")
        out.append("<table><tr><th class=l>video</th><th>part</th><th>p(FAKE)</th>"
                   "<th>crops</th><th class=l>deciding crops (crop p(FAKE))</th></tr>"
                   + "".join(rows) + "</table>" if rows else "<p>None.</p>")
    return out


# ---- HTML --------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f0f0f0} td.l,th.l{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:.3em}
.note{color:#555;font-size:.9em}
.warn{color:#a33}
td.crops figure{display:inline-block;margin:0 .2em;text-align:center;font-size:.8em}
td.crops img{margin:0;border:0}
"""


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return html.escape(str(x))


FRAME_ROW = "frame"
_COLUMNS = ("n", "n_fake", "n_real", "accuracy", "precision", "recall", "f1", "auc", "ap",
            "log_loss", "chance_log_loss")


def _figure_cell(block: Mapping, key: str, digits: int | None = None) -> str:
    """A figure at the precision its row's intervals support, with its own 95 % interval when
    the block has one: four decimals where the interval is ±0.2 would claim what is not known.
    A block without intervals prints ``digits`` decimals (four when None)."""
    ci, n = block.get("ci95") or {}, block.get("n")
    if key in metrics.CI_FIGURES and ci.get(key):
        return html.escape(metrics.format_interval(block.get(key), ci[key], n=n)
                           .replace("-", "–"))
    if not ci and digits is not None:
        return _fmt(block.get(key), digits)
    # Figures without their own interval (precision, recall, ...) move with accuracy.
    return _fmt(block.get(key), metrics.interval_digits(ci.get("accuracy"), n=n))


def _table(rows: list[tuple[str, Mapping]], first: str, *, small: bool = False,
           digits: int | None = None) -> str:
    """One row per summary block; ``small`` adds a column saying when a block is too small
    for its figures to mean much (``metrics.too_small``; a block without a label mix, like the
    frame level, gets none); ``digits`` fixes the decimals of blocks without intervals."""
    head = "".join(f"<th>{c}</th>" for c in _COLUMNS) + ("<th class=l>reliability</th>"
                                                         if small else "")
    body = ""
    for name, block in rows:
        cells = "".join(f"<td>{_figure_cell(block, c, digits)}</td>" for c in _COLUMNS)
        if small:
            # A crop count is not a video count: the frame level is judged by its videos.
            why = metrics.too_small(block) if name != FRAME_ROW else None
            cells += (f"<td class='l warn'>too small: {html.escape(why)}</td>" if why
                      else "<td class=l>–</td>")
        body += f"<tr><td class=l>{html.escape(name)}</td>{cells}</tr>"
    return f"<table><tr><th class=l>{first}</th>{head}</tr>{body}</table>"


def _coverage_row(name: str, block: Mapping) -> str:
    fallback = block.get("scored_by_fallback") or {}
    reasons = ", ".join(f"{html.escape(str(k))} {v}" for k, v in sorted(fallback.items()))
    cells = (block.get("listed"), block.get("fakes_left_out"), block.get("scored_by_model"),
             sum(fallback.values()), reasons or None, block.get("unscorable_no_label"))
    return (f"<tr><td class=l>{html.escape(name)}</td>"
            + "".join(f"<td{' class=l' if k == 4 else ''}>{_fmt(c)}</td>"
                      for k, c in enumerate(cells)) + "</tr>")


def coverage_section(evaluated: Mapping) -> str:
    """The coverage table: how many videos each figure stands on, per part and overall. A
    metrics.json written before coverage was counted renders a note instead."""
    cov = evaluated.get("coverage")
    if not cov:
        return ("<h2>Coverage</h2><p class=note>This metrics.json predates coverage "
                "accounting: it does not say how many videos of the evaluated parts were "
                "rejected by the pipeline and left out of the figures.</p>")
    score = cov.get("fallback_score", aggregate.FALLBACK_SCORE)
    head = ("<tr><th class=l>part</th><th>listed in metadata</th><th>fakes left out by "
            "balancing</th><th>scored by the model</th><th>scored by the fallback</th>"
            "<th class=l>fallback reasons</th><th>unscorable (no label)</th></tr>")
    rows = [_coverage_row(f"part {int(k)}", b)
            for k, b in sorted((cov.get("per_part") or {}).items(), key=lambda kv: int(kv[0]))]
    rows.append(_coverage_row("overall", cov.get("overall") or {}))
    return ("<h2>Coverage</h2>"
            f"<p class=note>Every labelled video of the evaluated selection counts: a video "
            f"the pipeline could not score (no face, unreadable, truncated, ...) gets the "
            f"fallback score {score:g}, as Kaggle scored every test video. Fakes left out by "
            f"balancing were never processed and count nowhere; videos without a label are "
            f"scored but count in no figure. – under <i>listed</i>: the selection takes only "
            f"part of that part (one split), so its metadata count is not the denominator."
            f"</p><table>{head}{''.join(rows)}</table>")


def _intervals_note(evaluated: Mapping) -> str:
    boot = evaluated.get("bootstrap")
    if not boot:
        return ("<p class=note>This metrics.json predates bootstrap intervals: the figures "
                "carry no uncertainty; re-run the evaluation to get them.</p>")
    return (f"<p class=note>[lo, hi] is a 95 % interval from {boot['resamples']} bootstrap "
            f"resamples of the videos (seed {boot['seed']}), drawn within each label so every "
            f"resample keeps the set's FAKE and REAL counts; figures are printed to the "
            f"precision their interval supports. It measures how much a figure could move on "
            f"another draw of such videos, not on another training run. A set is flagged "
            f"<i>too small</i> below {metrics.SMALL_VIDEOS} labelled videos, below "
            f"{metrics.SMALL_PER_LABEL} of either label, or when its AUC interval is wider "
            f"than {metrics.SMALL_AUC_WIDTH:g}: its figures are shown but mean little. Frame "
            f"figures carry no interval: the crops of one video are not independent draws."
            f"</p>")


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _img_jpeg(jpeg: bytes, alt: str) -> str:
    data = base64.b64encode(jpeg).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/jpeg;base64,{data}">'


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


def _scored_by_text(videos: Mapping[str, Any]) -> str:
    """'22 scored by the model, 3 by the fallback score 0.5 (no_face 2, truncated 1)'; older
    prediction files without ``scored_by`` count their faceless videos."""
    n = len(videos["video"])
    if "scored_by" not in videos:
        faceless = [p for c, p in zip(videos["n_faces"], videos["p_fake"]) if c == 0]
        score = f"{faceless[0]:g}" if faceless else "0.5"
        return f"{len(faceless)} without a face, scored {score}"
    rows = [(r, p) for by, r, p in zip(videos["scored_by"], videos.get("reason", [None] * n),
                                        videos["p_fake"]) if by == "fallback"]
    reasons: dict[str, int] = {}
    for r, _ in rows:
        reasons[str(r)] = reasons.get(str(r), 0) + 1
    text = f"{n - len(rows)} scored by the model"
    if rows:
        text += (f", {len(rows)} by the fallback score {rows[0][1]:g} ("
                 + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) + ")")
    return html.escape(text)


NO_LABELS = ("no metrics: none of these {n} videos has a label (Kaggle never published the "
             "labels of its test_videos), so there is nothing to measure the scores against; "
             "the scores are in " + SUBMISSION)


def _render_unlabelled(frames: Mapping[str, Any], videos: Mapping[str, Any], out: Path) -> Path:
    """The report of videos without labels: what was scored, the submission, and why there
    are no metrics."""
    model = sorted(set(videos["model"]))
    page = ("<!doctype html><html><head><meta charset=utf-8><title>dfd report</title>"
            f"<style>{_CSS}</style></head><body><h1>Deepfake detection report</h1>"
            f"<p>model: {html.escape(', '.join(model) or '–')}; {len(videos['video'])} videos "
            f"({_scored_by_text(videos)}), {len(frames['video'])} face crops."
            f"</p><p class=note>{html.escape(NO_LABELS.format(n=len(videos['video'])))}.</p>"
            "</body></html>\n")
    path = out / REPORT
    tmp = out / f".{REPORT}.tmp"
    tmp.write_text(page)
    os.replace(tmp, path)
    write_submission(dict(zip(videos["video"], videos["p_fake"])), out / SUBMISSION)
    return path


def reliability_figure(block: Mapping[str, Any]) -> bytes:
    """The reliability diagram of ``metrics.json["calibration"]``: per score bin, the share of
    FAKE videos against the mean score, before and after calibration."""
    fig = _figure(5.0, 4.0)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="gray", lw=1, ls="--", label="perfect calibration")
    for when, marker in (("before", "o"), ("after", "s")):
        bins = [b for b in block["reliability"][when] if b["n"]]
        ax.plot([b["mean_p_fake"] for b in bins], [b["fake_rate"] for b in bins],
                marker=marker, label=f"{when} (log loss {block['log_loss'][when]:.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean p(FAKE) in the bin",
           ylabel="share of FAKE videos", title="reliability (videos scored by the model)")
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def calibration_section(evaluated: Mapping[str, Any], out: Path) -> list[str]:
    """The report's calibration section (``dfd.calibration``), when metrics.json has one:
    log loss and a reliability diagram before and after, and the threshold of the calls."""
    block = evaluated.get("calibration")
    if not block:
        return []
    text = (f"<p class=note>Method: <b>{html.escape(block['method'])}</b> (temperature "
            f"{block['temperature']:.3f}, fitted on the validation split by `dfd calibrate`), "
            f"applied to {html.escape(block['applies_to'])}. A call is FAKE when p(FAKE) &gt; "
            f"{block['threshold']:.4g} ({html.escape(block['threshold_source'])}).</p>")
    if not block.get("log_loss"):
        return ["<h2>Calibration</h2>", text]
    (out / "reliability.png").write_bytes(reliability_figure(block))
    rows = "".join(f"<tr><td>{when}</td><td>{block['log_loss'][when]:.4f}</td></tr>"
                   for when in ("before", "after"))
    return ["<h2>Calibration</h2>", text,
            f"<table><tr><th>video log loss ({block['videos']} videos scored by "
            f"the model)</th><th>nats</th></tr>{rows}</table>",
            _img((out / "reliability.png").read_bytes(), "reliability diagram")]


def render_report(predictions_dir: str | Path, out_dir: str | Path, *,
                  run_dir: str | Path | None = None) -> Path:
    """Write ``report.html``, its PNGs and a Kaggle ``submission.csv`` of the video scores
    into ``out_dir``; return the HTML path."""
    frames, videos, evaluated = read_predictions(predictions_dir)
    data = (evaluated.get("run") or {}).get("data")
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
        "confusion.png": confusion_figure(
            evaluated["video"]["confusion_matrix"],
            f"videos (threshold {evaluated['video'].get('threshold', metrics.THRESHOLD):g})"),
        "scores.png": histogram_figure(levels),
        "aggregation.png": aggregation_figure(rules),
    }
    history = read_history(run_dir)
    if history:
        figures["training.png"] = training_figure(history)
    mistakes = mistakes_section(frames, videos, data, threshold=evaluated["video"].get(
        "threshold", metrics.THRESHOLD))
    for name, png in figures.items():
        (out / name).write_bytes(png)

    rule_used = sorted(set(videos["aggregation"])) or [aggregate.DEFAULT]
    model = sorted(set(videos["model"]))
    per_part = sorted(evaluated["per_part"].items(), key=lambda kv: int(kv[0]))
    eps = evaluated["video"].get("log_loss_eps", metrics.LOG_LOSS_EPS)
    overall = [("video: every scored video (fallbacks included, as Kaggle scored)",
                evaluated["video"])]
    if evaluated.get("video_model_only"):
        overall.append(("video: scored by the model only", evaluated["video_model_only"]))
    overall.append((FRAME_ROW, evaluated["frame"]))
    # Frame figures and the rules' figures carry no interval of their own: the crops of a
    # video are not independent draws, so they are printed at the video figures' precision.
    video_digits = metrics.interval_digits((evaluated["video"].get("ci95") or {})
                                           .get("accuracy"), n=evaluated["video"]["n"])
    sections = [
        f"<h1>Deepfake detection report</h1>"
        f"<p>model: {html.escape(', '.join(model) or '–')}; video score: "
        f"<b>{html.escape(', '.join(rule_used))}</b> of the face-crop scores; "
        f"{len(videos['video'])} videos ({_scored_by_text(videos)}), "
        f"{len(frames['video'])} face crops.</p>",
        _run_summary(run_dir),
        coverage_section(evaluated),
        "<h2>Overall</h2>",
        _table(overall, "level", small=True, digits=video_digits),
        f"<p class=note>A call is FAKE when p(FAKE) &gt; "
        f"{evaluated['video'].get('threshold', metrics.THRESHOLD):g}. Log loss is in "
        f"nats with probabilities clipped to [{eps:g}, 1 − {eps:g}]; chance_log_loss is what "
        f"always answering the label mix would score (0.693 on a balanced set, 0.441 on "
        f"DFDC's natural 1:5.2 mix), so compare log loss with it, not with zero.</p>",
        _intervals_note(evaluated),
        "<h2>Per part (video level)</h2>",
        "<p class=note>Each part is a separate DFDC folder; parts held out of training show "
        "how the model generalizes to folders it never saw. Every scored video counts, "
        "fallbacks included.</p>",
        _table([(f"part {k}", block) for k, block in per_part], "part", small=True),
        *mistakes,
        "<h2>ROC and confusion matrix</h2>",
        _img(figures["roc.png"], "ROC curves") + _img(figures["confusion.png"],
                                                      "confusion matrix"),
        "<h2>Scores by true label</h2>",
        _img(figures["scores.png"], "score histograms"),
        "<h2>Aggregation rules</h2>",
        "<p class=note>The same face-crop scores turned into video scores by each rule. "
        "<i>confident</i> is the DFDC winner's rule; it needs more than 11 confident crops "
        "to call a confident FAKE, so with few frames per video it acts on confident REALs "
        "only. Figures are printed to the precision of the overall video intervals above: "
        "differences between rules smaller than those intervals may be noise.</p>",
        _table([(r["rule"], r) for r in rules], "rule", digits=video_digits),
        _img(figures["aggregation.png"], "aggregation rules"),
        *calibration_section(evaluated, out),
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
