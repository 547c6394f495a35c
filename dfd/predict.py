"""Scoring raw videos end to end: sample frames, detect and crop faces exactly as the
preprocessing pipeline does (``dfd.process.process_group``), score the crops, aggregate.

A video inside a DFDC part folder (one with ``metadata.json``) is processed with its group,
as the pipeline does: a fake is decoded at its original's sampled frames and cropped with its
original's boxes when the original is in the same folder, and the folder name gives the part.
Anywhere else a video is its own original (what Kaggle's hidden test set looks like).
"""
from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from dfd import aggregate, dfdc, storage
from dfd import config as dfd_config
from dfd import manifest as mf
from dfd import output_tree as ot
from dfd import run_dir as rundir
from dfd.config import PreprocessConfig
from dfd.errors import DfdError

log = logging.getLogger(__name__)

VIDEO_SUFFIX = ".mp4"
NO_FACE_REASON = "no_face"
NO_PART = -1  # the part of a video outside any DFDC part folder (e.g. Kaggle's test_videos/)


@dataclasses.dataclass(frozen=True)
class VideoInput:
    path: Path
    part: int | None  # the DFDC part of its folder, if it is one
    label: int | None  # from metadata.json, if listed
    original: str  # the REAL video it derives from; itself when unknown


@dataclasses.dataclass(frozen=True)
class VideoFailure:
    path: Path
    reason: str
    detail: str

    def line(self) -> str:
        return f"{self.path}: {self.reason}: {self.detail}"


# ---- settings ----------------------------------------------------------------------------------

def _training_manifest(run_dir: str | None) -> tuple[dict | None, str]:
    """The manifest of the data a run was trained on, or None and why it is not there."""
    if run_dir is None:
        return None, "no run dir"
    text = storage.read_text(rundir.config_path(run_dir))
    if not text:
        return None, f"{run_dir} has no {rundir.CONFIG}"
    data = json.loads(text).get("data")
    if not data:
        return None, f"{rundir.CONFIG} names no training data"
    try:
        return mf.read(data, required=True), ot.manifest_path(data)
    except (OSError, DfdError) as exc:
        return None, f"the training data's manifest is unreadable ({exc})"


def recorded_settings(run_dir: str | None) -> tuple[PreprocessConfig | None, str]:
    """The preprocessing settings of the data a run was trained on, as its manifest records
    them, and a description of where they came from (or why they could not be found)."""
    manifest, where = _training_manifest(run_dir)
    if manifest is None:
        return None, where
    recorded = mf.recorded_settings(manifest)
    if len(recorded) == 1:
        return dfd_config.from_dict(PreprocessConfig, recorded[0]), f"recorded in {where}"
    if recorded:
        return None, f"{where} records {len(recorded)} different settings for its parts"
    return None, f"{where} does not record them"


def data_config_hashes(run_dir: str | None) -> set[str]:
    """The config hashes the training data's manifest lists for its parts (empty if none)."""
    manifest, _ = _training_manifest(run_dir)
    return {p["config_hash"] for p in manifest["parts"].values()} if manifest else set()


def part_config_hashes(cfg: PreprocessConfig) -> set[str]:
    """The config hashes a part preprocessed with cfg carries in the manifest, held out or not."""
    return {dfd_config.part_config_hash(cfg, 0, held_out=held_out) for held_out in (True, False)}


# ---- finding the videos ------------------------------------------------------------------------

def find_videos(paths: Iterable[str | Path]) -> tuple[list[VideoInput], list[VideoFailure]]:
    """The mp4 files named or inside the named folders (not recursive), with what their
    folder's metadata.json says about them; each path that is neither is a failure."""
    found: list[Path] = []
    failures: list[VideoFailure] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            videos = sorted(p for p in path.iterdir()
                            if p.suffix.lower() == VIDEO_SUFFIX and p.is_file())
            if not videos:
                failures.append(VideoFailure(path, "no_videos", "folder holds no .mp4 file"))
            found += videos
        elif path.is_file():
            found.append(path)
        else:
            failures.append(VideoFailure(path, "not_found", "no such file or folder"))
    inputs, seen = [], set()
    metadata_cache: dict[Path, dict[str, dfdc.Entry]] = {}
    for path in found:
        key = path.resolve()
        if key in seen:
            continue
        seen.add(key)
        folder = path.resolve().parent
        entries = metadata_cache.setdefault(folder, _folder_metadata(folder))
        entry = entries.get(path.name)
        inputs.append(VideoInput(path=path, part=dfdc.parse_part_name(folder.name),
                                 label=entry.label if entry else None,
                                 original=entry.original if entry else path.name))
    return inputs, failures


def _folder_metadata(folder: Path) -> dict[str, dfdc.Entry]:
    path = folder / dfdc.METADATA
    if not path.is_file():
        return {}
    try:
        entries, _ = dfdc.parse_metadata(path.read_bytes(),
                                         part=dfdc.parse_part_name(folder.name) or 0)
    except dfdc.BrokenPart as exc:
        log.warning("%s ignored: %s", path, exc)
        return {}
    return {e.name: e for e in entries}


# ---- the model ---------------------------------------------------------------------------------

def read_model_files(run_dir: str) -> tuple[dict[str, bytes], str]:
    """The saved model's files and its identifier (``<model name>@<run dir name>``); the run
    dir may be local, gs:// or s3://."""
    from dfd.models import MODEL_JSON, WEIGHTS_H5

    files = {}
    for name in (MODEL_JSON, WEIGHTS_H5):
        blob = _read_bytes(rundir.model_file(run_dir, name))
        if blob is None:
            raise DfdError(f"{run_dir} holds no trained model ({rundir.MODEL}/{name} is "
                           f"missing): is it the run dir of `dfd train`?")
        files[name] = blob
    spec = check_model_files(files, run_dir)
    run_name = (storage.local_path(run_dir).resolve().name if storage.is_local(run_dir)
                else run_dir.rstrip("/").rsplit("/", 1)[-1])
    return files, f"{spec['name']}@{run_name}"


def check_model_files(files: dict[str, bytes], run_dir: str) -> dict:
    """The model's spec, once ``dfd.models``' checks pass on these files; a DfdError naming
    the run dir otherwise. Done here, on the driver, so that a refused model is one line
    rather than a failure inside every inference actor."""
    import tempfile

    from dfd.models import WEIGHTS_H5, check_weights_file, read_model_spec

    with tempfile.TemporaryDirectory(prefix="dfd-model-") as tmp:
        for name, blob in files.items():
            Path(tmp, name).write_bytes(blob)
        try:
            spec = read_model_spec(tmp)
            check_weights_file(Path(tmp, WEIGHTS_H5))
        except (ValueError, OSError) as exc:
            raise DfdError(f"{run_dir}/{rundir.MODEL}: "
                           f"{str(exc).replace(tmp + '/', '').replace(tmp, '')}") from None
    return spec


def load_model_files(files: dict[str, bytes]):
    """A model from the files ``read_model_files`` returned (written to a scratch folder,
    since Keras loads weights from a path)."""
    import tempfile

    from dfd.models import load_model

    with tempfile.TemporaryDirectory(prefix="dfd-model-") as tmp:
        for name, blob in files.items():
            Path(tmp, name).write_bytes(blob)
        return load_model(tmp)


def _read_bytes(uri: str) -> bytes | None:
    import pyarrow.fs as pafs

    fs, path = storage.resolve(uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return f.read()


# ---- scoring -----------------------------------------------------------------------------------

def score_crops(model, x: np.ndarray) -> np.ndarray:
    """p(FAKE) of each crop of a decoded batch (``dfd.images.decode_crops``), float64."""
    # A direct call rather than model.predict, which builds a tf.data pipeline per call and
    # costs more than a small batch's inference.
    p = np.asarray(model(x, training=False), dtype=np.float64).reshape(-1)
    return np.clip(p, 0.0, 1.0)


def score_records(model, images: Sequence[bytes], *, batch_size: int) -> np.ndarray:
    from dfd.images import decode_crops

    out = np.empty(len(images), np.float64)
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        out[start:start + len(chunk)] = score_crops(model, decode_crops(chunk))
    return out


def _refs(inputs: Sequence[VideoInput]):
    """Per group, as the pipeline forms them: (the original's ref or None, the fakes' refs,
    the members asked for, whether the original itself was asked for)."""
    from dfd.process import VideoRef

    def ref(path: Path, v: VideoInput | None, name: str, original: str, label: int):
        return VideoRef(name=name, part=v.part if v and v.part is not None else 0,
                        label=label, original=original, source=str(path))

    groups: dict[tuple[Path, str], list[VideoInput]] = {}
    for v in inputs:
        groups.setdefault((v.path.resolve().parent, v.original), []).append(v)
    for (folder, original), members in groups.items():
        first = members[0]
        originals = [v for v in members if v.path.name == original]
        fakes = [v for v in members if v.path.name != original]
        helper = None
        if originals:
            helper = ref(originals[0].path, originals[0], original, original, 0)
        elif fakes and first.label is not None and (folder / original).is_file():
            # The original is beside its fake but was not asked for: decode it anyway, for
            # the frames and boxes the pipeline would have reused.
            helper = ref(folder / original, first, original, original, 0)
        yield helper, [ref(v.path, v, v.path.name, original, v.label or 0) for v in fakes], \
            members, bool(originals)


def _part(video: VideoInput) -> int:
    return NO_PART if video.part is None else video.part


def video_prediction(result: dict) -> dict:
    """A predict_videos result as a VIDEO_PREDICTION record (a video without a face scored
    by the fallback, where the schema says how a video was scored)."""
    import schemas

    record = {"video": result["video"], "part": NO_PART if result["part"] is None
              else result["part"], "label": result["label"], "p_fake": result["p_fake"],
              "n_faces": result["n_faces"], "aggregation": result["aggregation"],
              "model": result["model"],
              "scored_by": "model" if result["n_faces"] else "fallback",
              "reason": None if result["n_faces"] else NO_FACE_REASON}
    return {k: v for k, v in record.items() if k in schemas.VIDEO_PREDICTION.names}


def predict_videos(paths: Iterable[str | Path], *, model, model_name: str,
                   cfg: PreprocessConfig, detector, rule: str = aggregate.DEFAULT,
                   batch_size: int = 64,
                   crops: list | None = None) -> tuple[list[dict], list[VideoFailure]]:
    """Score every video found under ``paths``; return one result per scored video (sorted
    by path) and one failure per file or path that could not be scored. A video without a
    face scores ``aggregate.NO_FACE_SCORE``. A ``crops`` list receives a FRAME_PREDICTION
    record per scored face crop (part ``NO_PART`` outside a DFDC part folder)."""
    from dfd.process import process_group

    aggregate.get(rule)
    inputs, failures = find_videos(paths)
    results = []
    for helper, fakes, members, original_asked in _refs(inputs):
        # A group's REAL member is processed alone; a fake with a helper reuses its boxes.
        result = process_group(helper, fakes, split="test", cfg=cfg, detector=detector)
        crops_of: dict[str, list[bytes]] = {}
        for r in result.records:
            crops_of.setdefault(r["video"], []).append(r["image"])
        rejects = {r["video"]: r for r in result.rejects}
        for v in members:
            reject = rejects.get(v.path.name)
            if reject and reject["reason"] != NO_FACE_REASON:
                failures.append(VideoFailure(v.path, reject["reason"], reject["detail"]))
                continue
            images = crops_of.get(v.path.name, [])
            scores = score_records(model, images, batch_size=batch_size) if images else []
            if crops is not None:
                faces = [r for r in result.records if r["video"] == v.path.name]
                crops.extend({"video": v.path.name, "part": _part(v),
                              "frame_index": r["frame_index"], "face_index": r["face_index"],
                              "label": v.label, "p_fake": float(score), "model": model_name}
                             for r, score in zip(faces, scores))
            results.append({"path": str(v.path), "video": v.path.name, "part": v.part,
                            "label": v.label, "p_fake": aggregate.aggregate(scores, rule),
                            "n_faces": len(images), "aggregation": rule,
                            "model": model_name})
        if helper is not None and not original_asked and helper.name in rejects:
            log.info("original %s of %s could not be used: %s", helper.name,
                     [f.name for f in fakes], rejects[helper.name]["reason"])
    results.sort(key=lambda r: r["path"])
    failures.sort(key=lambda f: str(f.path))
    return results, failures
