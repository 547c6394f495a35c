"""Evaluation of a model on face shards, without Ray: which shards, which videos count, the
frame and video predictions, the metrics, and the files that hold them.

``dfd infer`` (``ray_jobs.infer``), ``dfd study`` (``ray_jobs.study``) and ``dfd sync``'s
generalization report all evaluate through these functions; only the scoring of the crops
(a Ray Data actor pool) lives with Ray. An evaluation folder holds::

    <out>/frame_predictions.parquet   one FRAME_PREDICTION per scored face crop
    <out>/video_predictions.parquet   one VIDEO_PREDICTION per video: the model's score, or the
                                      fallback score (0.5) of a video the pipeline rejected
    <out>/rejected_crops.parquet      REJECT records of crops that did not decode (if any)
    <out>/metrics.json                frame, video and per-part figures; written last, so its
                                      presence marks the folder complete
    <out>/report/                     report.html, its PNGs, submission.csv

Every labelled video of the selection counts: a video the preprocessing rejected (no face,
unreadable, truncated, original missing, ... in ``errors/part-NN.parquet``, which also holds its
label) gets the fallback score, and ``metrics.json["coverage"]`` says how many of each there
are. Nothing here reads the raw parts.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import posixpath
import tempfile
from pathlib import Path
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq

import schemas
from dfd import aggregate, dfdc, metrics, report, shards, storage
from dfd import manifest as mf
from dfd import output_tree as ot
from dfd.errors import DfdError
from dfd.splits import assign_split

log = logging.getLogger(__name__)

REJECTED_CROPS = "rejected_crops.parquet"
REPORT_SUBDIR = "report"
NO_FACE_REASON = "no_face"  # the reject reason of a video in which no face was found
BAD_CROP_REASON = "bad_crop"  # the reject reason of a stored crop that did not decode
# Only what scoring and the prediction records need: bbox and the rest stay on disk.
FACE_COLUMNS = ["video", "part", "label", "frame_index", "face_index", "image"]


# ---- choosing the shards -----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ShardSelection:
    files: list[str]  # Parquet shard URIs
    total_bytes: int  # their size on storage
    parts: list[int]  # parts that have at least one selected shard
    whole_parts: frozenset[int]  # parts all of whose shards are selected (every split)
    split: str | None = None  # the split selected (None: every split)


def select_shards(data: str, *, parts: set[int] | None, split: str | None) -> ShardSelection:
    """The committed Parquet face shards of the chosen parts (None: all) and split (None: all).

    Staged folders and files (leading '_' or '.') are not shards and are never listed."""
    if split is not None and split not in schemas.SPLITS:
        raise DfdError(f"unknown split {split!r}; one of {list(schemas.SPLITS)}")
    fs, root = storage.resolve(ot.format_dir(data, "parquet"))
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        raise DfdError(f"{data} has no parquet/ folder of face shards: is it the --out of "
                       f"`dfd preprocess`?")
    found: dict[int, list[tuple[str, str]]] = {}
    sizes: dict[str, int] = {}
    for info in fs.get_file_info(pafs.FileSelector(root)):
        part = ot.parse_part_folder(info.base_name)
        if part is None or info.type != pafs.FileType.Directory:
            continue
        for shard in fs.get_file_info(pafs.FileSelector(info.path)):
            meta = ot.parse_shard_name(shard.base_name)
            if meta and meta["format"] == "parquet":
                found.setdefault(part, []).append((meta["split"], shard.path))
                sizes[shard.path] = shard.size or 0
    files, chosen, whole = [], [], set()
    for part in sorted(found):
        if parts is not None and part not in parts:
            continue
        picked = [p for s, p in sorted(found[part], key=lambda sp: sp[1])
                  if split is None or s == split]
        if picked:
            chosen.append(part)
            files += picked
            if len(picked) == len(found[part]):
                whole.add(part)
    if not files:
        available = {p: sorted({s for s, _ in v}) for p, v in sorted(found.items())}
        raise DfdError(f"no face shards in {data} for parts "
                       f"{'all' if parts is None else sorted(parts)} and split "
                       f"{split or 'any'}; found {available or 'none'}")
    if parts is not None and sorted(parts) != chosen:
        log.warning("parts without shards of split %s: %s", split or "any",
                    sorted(set(parts) - set(chosen)))
    uri_of = (lambda p: p) if storage.is_local(data) else (lambda p: _uri(data, p))
    return ShardSelection([uri_of(f) for f in files], sum(sizes[f] for f in files), chosen,
                          frozenset(whole), split)


def _uri(data: str, path: str) -> str:
    scheme = data.split("://", 1)[0]
    return f"{scheme}://{path}"


def shard_key(uri: str) -> str:
    """A shard as Ray Data's ``path`` column names it: the path inside its file system."""
    return storage.resolve(uri)[1]


# ---- videos the pipeline could not score ---------------------------------------------------------

def rejected_videos(data: str, selection: ShardSelection) -> list[dict]:
    """The videos of the selection that the preprocessing rejected (``errors/part-NN.parquet``:
    no face, unreadable, truncated, original missing, ...), one per (part, video), with their
    label, original and reason.

    A rejected video belongs to the selection when its whole part is selected, or when its
    original's group has face records in the chosen split (a split never separates a fake
    from its original); a group without any face record falls in the split the split rule
    gives its original, with the validation fraction the manifest records for the part.
    Errors files of reject schema 1 carry no labels: their videos are kept unlabelled (counted
    as unscorable) and a warning says to re-run the part."""
    manifest = mf.read(data)
    out, seen = [], set()
    for part in selection.parts:
        fs, path = storage.resolve(ot.errors_path(data, part))
        if fs.get_file_info(path).type != pafs.FileType.File:
            continue
        table = pq.read_table(path, filesystem=fs)
        if "label" not in table.column_names:
            log.warning("part %d: its errors file predates labelled rejects (reject schema 1); "
                        "its %d rejected videos count as unscorable: re-run `dfd preprocess "
                        "--force --parts %d` to label them", part, table.num_rows, part)
        rejects = table.to_pylist()
        if part not in selection.whole_parts:
            belongs = _in_selection(data, part, manifest, selection)
            rejects = [r for r in rejects if belongs(r.get("original"))]
        for r in rejects:
            key = (part, r["video"])
            if key in seen:  # both copies of a duplicated member: one video
                continue
            seen.add(key)
            out.append({"video": r["video"], "part": part, "label": r.get("label"),
                        "original": r.get("original"), "reason": r["reason"]})
    return out


def _in_selection(data: str, part: int, manifest: dict,
                  selection: ShardSelection) -> Callable[[str | None], bool]:
    """Whether a rejected video of a partly selected part belongs to the selection, judged by
    its original: its group has records in the selected split, or has none in any split and
    the split rule puts it there."""
    mine = [f for f in selection.files if f"/{ot.part_folder(part)}/" in f]
    selected = _originals(mine).get(part, set())
    every = select_shards(data, parts={part}, split=None).files
    with_records = _originals(every).get(part, set())
    held_out = any(ot.parse_shard_name(posixpath.basename(f))["split"] == "test"
                   for f in every)
    entry = manifest["parts"].get(mf.part_key(part))
    settings = manifest["settings"].get(entry["config_hash"]) if entry else None

    if settings is None and not held_out:
        log.warning("part %d: its manifest entry predates recorded settings, so a rejected "
                    "video whose group has no face record cannot be placed in a split; such "
                    "videos count only when the whole part is evaluated", part)

    def split_of(original: str) -> str | None:
        if held_out:
            return "test"
        if settings is None:
            return None
        return assign_split(part, original, test_parts=(),
                            validation_fraction=settings["validation_fraction"])

    def belongs(original: str | None) -> bool:
        if original is None:
            return False
        if original in selected:
            return True
        return original not in with_records and split_of(original) == selection.split

    return belongs


def _originals(files: Sequence[str]) -> dict[int, set[str]]:
    found: dict[int, set[str]] = {}
    for uri in files:
        fs, path = storage.resolve(uri)
        table = pq.read_table(path, filesystem=fs, columns=["part", "original"])
        for part, original in zip(table["part"].to_pylist(), table["original"].to_pylist()):
            found.setdefault(part, set()).add(original)
    return found


# ---- crops -------------------------------------------------------------------------------------

def decode_batch(images: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indices of the crops that decode, their arrays, an error per crop: '' when it decoded).
    One bad crop must not cost the batch: on a failure the crops are decoded one by one."""
    from dfd.images import decode_crops

    images = list(images)
    error = np.full(len(images), "", dtype=object)
    try:
        return np.arange(len(images)), decode_crops(images), error
    except ValueError:
        good, arrays = [], []
        for i, image in enumerate(images):
            try:
                arrays.append(decode_crops([image]))
                good.append(i)
            except ValueError as exc:
                error[i] = str(exc)
    x = np.concatenate(arrays) if arrays else np.zeros((0, 1, 1, 3), np.float32)
    return np.asarray(good, dtype=np.int64), x, error


def crop_order(crops: Mapping[str, np.ndarray]) -> np.ndarray:
    """The order that sorts crops by (part, video, frame, face): actor pools finish batches
    in any order, and sorted records make every output the same on each run."""
    return np.lexsort((crops["face_index"], crops["frame_index"],
                       np.asarray(crops["video"]).astype(str), crops["part"]))


def crop_records(crops: Mapping[str, np.ndarray], p_fake: np.ndarray, *, model: str
                 ) -> tuple[list[dict], list[dict]]:
    """FRAME_PREDICTION records of the crops that were scored and REJECT records of those that
    did not decode (a NaN score; ``crops["error"]`` says why), both in (part, video, frame,
    face) order."""
    frames, rejected = [], []
    errors = crops.get("error")
    for i in crop_order(crops):
        video, part = str(crops["video"][i]), int(crops["part"][i])
        frame, face = int(crops["frame_index"][i]), int(crops["face_index"][i])
        if not np.isfinite(p_fake[i]):
            error = str(errors[i]) if errors is not None else "not scored"
            label = crops["label"][i]
            rejected.append(dfdc.reject(video, part, BAD_CROP_REASON,
                                        f"frame {frame} face {face}: {error}",
                                        label=None if label is None else int(label)))
            continue
        label = crops["label"][i]
        frames.append({"video": video, "part": part, "frame_index": frame, "face_index": face,
                       "label": None if label is None else int(label),
                       "p_fake": float(p_fake[i]), "model": model})
    return frames, rejected


# ---- videos and metrics ------------------------------------------------------------------------

def evaluate_model(frames: Sequence[Mapping], *, model: str, rule: str,
                   rejected: Sequence[Mapping] = (), bad_crops: Sequence[Mapping] = (),
                   fallback_score: float = aggregate.FALLBACK_SCORE,
                   listed: Mapping[int, Mapping] | None = None,
                   calibration=None) -> tuple[list[dict], dict]:
    """Video records and metrics of one model's frame records.

    Every video counts: the model scores the videos with crops; each ``rejected`` video (from
    ``rejected_videos``) and each video whose crops all failed to decode (``bad_crops``, the
    REJECT records of ``crop_records``) gets ``fallback_score``, as Kaggle scored every test
    video. ``metrics.json["video"]`` is over all of them, ``["video_model_only"]`` over the
    model's alone, and ``["coverage"]`` counts them per part and overall; ``listed`` (the
    manifest's entries of the wholly selected parts) adds the videos listed and the fakes left
    out by balancing. A ``dfd.calibration.Calibration`` maps the model's video scores and sets
    the threshold of the calls (``metrics.json["calibration"]`` says how, and what it did)."""
    aggregate.get(rule)  # an unknown rule fails here, not after scoring
    columns = {k: [f[k] for f in frames] for k in ("video", "part", "label", "p_fake")}
    fallback = list(rejected) + [{**r, "reason": BAD_CROP_REASON} for r in bad_crops]
    videos = aggregate.video_records(columns, model=model, rule=rule, fallback=fallback,
                                     fallback_score=fallback_score)
    block, thresholds = None, {}
    if calibration is not None:
        videos, block = calibration.apply_to_videos(videos)
        thresholds = {"threshold": calibration.threshold,
                      "frame_threshold": calibration.raw_threshold}
    evaluated = evaluate_predictions(columns, videos, **thresholds)
    evaluated["video_model_only"] = evaluate_predictions(
        columns, [v for v in videos if v["scored_by"] == "model"], **thresholds)["video"]
    if block is not None:
        evaluated["calibration"] = block
    evaluated["coverage"] = coverage(videos, listed=listed or {},
                                     fallback_score=fallback_score)
    return videos, evaluated


def coverage(videos: Sequence[Mapping], *, listed: Mapping[int, Mapping],
             fallback_score: float) -> dict:
    """How many videos the figures stand on, per part and overall: scored by the model, by
    the fallback (by reason), unscorable (no label), and, for wholly selected parts, the videos
    metadata.json lists and the fakes balancing left out (which are never scored)."""
    def block(rows: list[Mapping], entry: Mapping | None) -> dict:
        labelled = [v for v in rows if v["label"] is not None]
        by_reason: dict[str, int] = {}
        for v in labelled:
            if v["scored_by"] == "fallback":
                by_reason[v["reason"]] = by_reason.get(v["reason"], 0) + 1
        return {"listed": entry["videos_in_metadata"] if entry else None,
                "fakes_left_out": entry["fakes_left_out"] if entry else None,
                "scored_by_model": sum(v["scored_by"] == "model" for v in labelled),
                "scored_by_fallback": dict(sorted(by_reason.items())),
                "unscorable_no_label": len(rows) - len(labelled)}

    parts = sorted({int(v["part"]) for v in videos} | {int(p) for p in listed})
    per_part = {mf.part_key(p): block([v for v in videos if int(v["part"]) == p],
                                      listed.get(p)) for p in parts}
    overall = block(list(videos), None)
    if parts and all(p in listed for p in parts):
        overall["listed"] = sum(listed[p]["videos_in_metadata"] for p in parts)
        overall["fakes_left_out"] = sum(listed[p]["fakes_left_out"] for p in parts)
    return {"fallback_score": fallback_score, "overall": overall, "per_part": per_part}


def listed_parts(data: str, selection: ShardSelection) -> dict[int, dict]:
    """The manifest entries of the parts the selection takes whole (their counts are the
    coverage's denominators)."""
    manifest = mf.read(data)
    return {p: manifest["parts"][mf.part_key(p)] for p in selection.whole_parts
            if mf.part_key(p) in manifest["parts"]}


def evaluate_predictions(frames: Mapping[str, Sequence] | Sequence[Mapping],
                         videos: Mapping[str, Sequence] | Sequence[Mapping], *,
                         threshold: float = metrics.THRESHOLD,
                         frame_threshold: float | None = None) -> dict:
    """``metrics.evaluate`` over frame and video predictions, given as records or columns;
    crops (uncalibrated) are called at ``frame_threshold``, the same call on their scale."""
    cols = ("label", "p_fake", "part")
    evaluated = metrics.evaluate(_columns(frames, cols), _columns(videos, cols),
                                 threshold=threshold)
    if frame_threshold is not None and frame_threshold != threshold:
        f = metrics.labelled(_columns(frames, cols))
        evaluated["frame"] = metrics.summarize(f["label"], f["p_fake"],
                                               threshold=frame_threshold)
    return evaluated


def _columns(rows: Mapping[str, Sequence] | Sequence[Mapping],
             names: Sequence[str]) -> dict[str, list]:
    if isinstance(rows, Mapping):
        return {k: list(rows[k]) for k in names}
    return {k: [r[k] for r in rows] for k in names}


# ---- the files ---------------------------------------------------------------------------------

def write_evaluation(directory: str, frames: Iterable[Mapping], videos: Iterable[Mapping],
                     evaluated: dict, *, rejected: Sequence[Mapping] = ()) -> None:
    """The files of an evaluation folder; ``metrics.json`` last, since its presence is what
    marks the folder complete. A rejected-crops file of an earlier evaluation into the same
    folder is removed when this one has none."""
    for name, records, schema in ((report.FRAME_PREDICTIONS, frames, schemas.FRAME_PREDICTION),
                                  (report.VIDEO_PREDICTIONS, videos, schemas.VIDEO_PREDICTION),
                                  (REJECTED_CROPS, rejected, schemas.REJECT)):
        uri = ot.join(directory, name)
        if name == REJECTED_CROPS and not rejected:
            storage.remove(uri)
            continue
        storage.write_bytes(uri, shards.parquet_bytes(records, schema))
    storage.write_bytes(ot.join(directory, report.METRICS),
                        (json.dumps(evaluated, indent=2, sort_keys=True) + "\n").encode())


def read_evaluation(directory: str) -> dict | None:
    """An evaluation folder's metrics, or None when it is not complete."""
    text = storage.read_text(ot.join(directory, report.METRICS))
    return json.loads(text) if text else None


def write_report(out: str, run_dir: str | None) -> None:
    """``<out>/report/`` rendered from the evaluation folder ``out`` (local or a bucket) and
    the run's training history."""
    with tempfile.TemporaryDirectory(prefix="dfd-report-") as tmp:
        run_local = _local_run_files(run_dir, Path(tmp, "run")) if run_dir else None
        if storage.is_local(out):
            local = storage.local_path(out)
            report.render_report(local, local / REPORT_SUBDIR, run_dir=run_local)
            return
        fs, path = storage.resolve(out)
        preds = Path(tmp, "predictions")
        preds.mkdir()
        for name in (report.FRAME_PREDICTIONS, report.VIDEO_PREDICTIONS, report.METRICS):
            with fs.open_input_stream(posixpath.join(path, name)) as f:
                (preds / name).write_bytes(f.read())
        report.render_report(preds, preds / REPORT_SUBDIR, run_dir=run_local)
        for f in sorted((preds / REPORT_SUBDIR).iterdir()):
            storage.commit_file(f, ot.join(out, REPORT_SUBDIR, f.name))


def _local_run_files(run_dir: str, scratch: Path) -> Path:
    """A local folder holding the run's history.json and config.json, for the report."""
    from dfd import run_dir as rd

    if storage.is_local(run_dir):
        return storage.local_path(run_dir)
    scratch.mkdir(parents=True, exist_ok=True)
    for name, uri in ((rd.HISTORY, rd.history_path(run_dir)),
                      (rd.CONFIG, rd.config_path(run_dir))):
        text = storage.read_text(uri)
        if text is not None:
            (scratch / name).write_text(text)
    return scratch
