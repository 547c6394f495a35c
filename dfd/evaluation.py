"""Evaluation of a model on face shards, without Ray: which shards, which videos count, the
frame and video predictions, the metrics, and the files that hold them.

``dfd infer`` (``ray_jobs.infer``), ``dfd study`` (``ray_jobs.study``) and ``dfd sync``'s
generalization report all evaluate through these functions; only the scoring of the crops
(a Ray Data actor pool) lives with Ray. An evaluation folder holds::

    <out>/frame_predictions.parquet   one FRAME_PREDICTION per scored face crop
    <out>/video_predictions.parquet   one VIDEO_PREDICTION per video, faceless videos at 0.5
    <out>/rejected_crops.parquet      REJECT records of crops that did not decode (if any)
    <out>/metrics.json                frame, video and per-part figures; written last, so its
                                      presence marks the folder complete
    <out>/report/                     report.html, its PNGs, submission.csv

Videos the preprocessing rejected for having no face (``errors/part-NN.parquet``) are scored
0.5 and counted; their labels come from the part's metadata.json, found through the
``source`` the manifest recorded for the part.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import posixpath
import tempfile
import zipfile
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq

import schemas
from dfd import aggregate, dfdc, metrics, report, shards, storage
from dfd import manifest as mf
from dfd import output_tree as ot
from dfd.config import Limits
from dfd.errors import DfdError

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
                          frozenset(whole))


def _uri(data: str, path: str) -> str:
    scheme = data.split("://", 1)[0]
    return f"{scheme}://{path}"


def shard_key(uri: str) -> str:
    """A shard as Ray Data's ``path`` column names it: the path inside its file system."""
    return storage.resolve(uri)[1]


# ---- videos without a face ---------------------------------------------------------------------

def _read_metadata(source: str, part: int, *, max_bytes: int) -> dict[str, dfdc.Entry]:
    """The metadata.json entries of a part's zip or folder, by video name, read no further
    than ``max_bytes`` (the pipeline's member limit)."""
    fs, path = storage.resolve(source)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        meta = fs.get_file_info(posixpath.join(path, dfdc.METADATA))
        if meta.size is not None and meta.size > max_bytes:
            raise ValueError(f"{dfdc.METADATA} holds {meta.size} bytes, over the limit of "
                             f"{max_bytes}")
        with fs.open_input_stream(meta.path) as f:
            raw = f.read(max_bytes + 1)
        if len(raw) > max_bytes:
            raise ValueError(f"{dfdc.METADATA} is over the limit of {max_bytes} bytes")
    else:
        with fs.open_input_file(path) as f, zipfile.ZipFile(f) as zf:
            names = [n for n in zf.namelist()
                     if posixpath.basename(n) == dfdc.METADATA and n.count("/") <= 1]
            if not names:
                raise ValueError(f"{source} holds no {dfdc.METADATA}")
            raw = dfdc.read_member(zf, names[0], max_bytes=max_bytes)
    entries, _ = dfdc.parse_metadata(raw, part=part)
    return {e.name: e for e in entries}


def faceless_videos(data: str, selection: ShardSelection, *,
                    max_metadata_bytes: int = Limits.max_member_bytes) -> list[dict]:
    """Videos of the selected parts rejected for having no face, with their labels.

    A faceless video belongs to the selection when its whole part is selected, or when its
    original's group has face records in the chosen split (a split never separates a fake
    from its original). Labels come from the source metadata; when it cannot be read the
    video is kept with an unknown label, shown but not counted."""
    manifest = mf.read(data)
    sources = {int(k): v["source"] for k, v in manifest["parts"].items()}
    originals_in_split: dict[int, set[str]] | None = None
    out = []
    for part in selection.parts:
        errors = storage.resolve(ot.errors_path(data, part))
        if errors[0].get_file_info(errors[1]).type != pafs.FileType.File:
            continue
        rejects = pq.read_table(errors[1], filesystem=errors[0]).to_pylist()
        names = [r["video"] for r in rejects if r["reason"] == NO_FACE_REASON]
        if not names:
            continue
        try:
            if part not in sources:
                raise ValueError("the manifest lists no source for the part")
            entries = _read_metadata(sources[part], part, max_bytes=max_metadata_bytes)
        except Exception as exc:  # any unreadable source: the videos stay, unlabelled
            log.warning("part %d: %d faceless videos left unlabelled, not counted: their "
                        "metadata.json is unreadable (%s)", part, len(names), exc)
            entries = {}
        for name in names:
            entry = entries.get(name)
            if part not in selection.whole_parts:
                if entry is None:
                    continue  # neither split nor label known
                if originals_in_split is None:
                    originals_in_split = _originals(selection)
                if entry.original not in originals_in_split.get(part, set()):
                    continue
            out.append({"video": name, "part": part,
                        "label": entry.label if entry else None})
    return out


def _originals(selection: ShardSelection) -> dict[int, set[str]]:
    found: dict[int, set[str]] = {}
    for uri in selection.files:
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
            rejected.append(dfdc.reject(video, part, BAD_CROP_REASON,
                                        f"frame {frame} face {face}: {error}"))
            continue
        label = crops["label"][i]
        frames.append({"video": video, "part": part, "frame_index": frame, "face_index": face,
                       "label": None if label is None else int(label),
                       "p_fake": float(p_fake[i]), "model": model})
    return frames, rejected


# ---- videos and metrics ------------------------------------------------------------------------

def evaluate_model(frames: Sequence[Mapping], *, model: str, rule: str,
                   faceless: Sequence[Mapping] = ()) -> tuple[list[dict], dict]:
    """Video records and ``metrics.evaluate`` of one model's frame records; ``faceless``
    videos (no face found by the preprocessing) are scored 0.5 and counted."""
    aggregate.get(rule)  # an unknown rule fails here, not after scoring
    columns = {k: [f[k] for f in frames] for k in ("video", "part", "label", "p_fake")}
    videos = aggregate.video_records(columns, model=model, rule=rule, faceless=faceless)
    return videos, evaluate_predictions(columns, videos)


def evaluate_predictions(frames: Mapping[str, Sequence] | Sequence[Mapping],
                         videos: Mapping[str, Sequence] | Sequence[Mapping]) -> dict:
    """``metrics.evaluate`` over frame and video predictions, given as records or columns."""
    cols = ("label", "p_fake", "part")
    return metrics.evaluate(_columns(frames, cols), _columns(videos, cols))


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
