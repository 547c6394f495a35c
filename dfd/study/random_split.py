"""The paper's split, rebuilt from committed crops: images assigned to train or validation at
random, whatever video or original they come from.

Che & Ingham split their 10,278 face images at random (7,364 / 1,426 / 1,488). Five frames of
one video, and the frames of a fake and of the real video it was made from, then land on both
sides, and the held-out score measures recall of seen faces as much as detection. The leak-free
rule of DESIGN.md splits by original instead. ``write_random_split`` pools every train and
validation crop of a face-shard tree and deals exactly as many of them to validation as the
leak-free split has, at random, into a new tree of the same layout; held-out (test) parts are
left out, so both splits are scored on the same held-out folders.
"""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

import schemas
from dfd import manifest as mf
from dfd import output_tree, shards, storage
from dfd.errors import DfdError

POOLED = ("train", "validation")
DESCRIPTION = "random_split.json"


def random_validation(n_images: int, n_validation: int, *, seed: int) -> np.ndarray:
    """A bool mask choosing exactly ``n_validation`` of ``n_images`` at random."""
    if not 0 <= n_validation <= n_images:
        raise ValueError(f"cannot choose {n_validation} of {n_images} images")
    chosen = np.zeros(n_images, bool)
    chosen[np.random.default_rng(seed).permutation(n_images)[:n_validation]] = True
    return chosen


def leakage(videos: np.ndarray, originals: np.ndarray, splits: np.ndarray) -> dict:
    """How much of validation the training side has already seen: validation videos with
    frames in train, and validation originals (a real video and its fakes) with any video's
    frames in train."""
    videos, originals, splits = (np.asarray(a).astype(str) for a in (videos, originals, splits))
    val, train = splits == "validation", splits == "train"
    val_videos, val_originals = set(videos[val]), set(originals[val])
    return {"validation_images": int(val.sum()), "train_images": int(train.sum()),
            "validation_videos": len(val_videos),
            "validation_videos_seen_in_train": len(val_videos & set(videos[train])),
            "validation_originals": len(val_originals),
            "validation_originals_seen_in_train": len(val_originals & set(originals[train]))}


def _part_shards(data: str, part: int) -> list[str]:
    fs, _ = storage.resolve(data)
    folder = storage.resolve(output_tree.part_dir(data, "parquet", part))[1]
    infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    found = []
    for info in infos:
        meta = output_tree.parse_shard_name(info.base_name)
        if meta and meta["format"] == "parquet" and meta["split"] in POOLED:
            found.append(info.path)
    return sorted(found)


def _read(data: str, paths: list[str], columns: list[str] | None = None) -> pa.Table:
    fs, _ = storage.resolve(data)
    tables = []
    for path in paths:
        with fs.open_input_file(path) as f:
            table = pq.read_table(f, columns=columns)
        if columns is None:
            schemas.check_arrow_schema(table.schema, schemas.FACE)
        tables.append(table)
    return pa.concat_tables(tables) if tables else pa.table({})


def pooled_keys(data: str) -> dict:
    """The small columns of every train and validation crop, part by part in shard order:
    what the random assignment and the leakage figures need, without the images."""
    manifest = mf.read(data, required=True)
    parts, columns = [], {"part": [], "video": [], "original": [], "split": []}
    for key in sorted(manifest["parts"]):
        part = int(key)
        paths = _part_shards(data, part)
        if not paths:
            continue  # a held-out part, or one without records
        table = _read(data, paths, columns=["video", "original", "split"])
        parts.append((part, paths, table.num_rows))
        columns["part"].append(np.full(table.num_rows, part))
        for name in ("video", "original", "split"):
            columns[name].append(table.column(name).to_numpy(zero_copy_only=False).astype(str))
    if not parts:
        raise DfdError(f"{data} has no committed train or validation crops to split")
    out = {k: np.concatenate(v) for k, v in columns.items()}
    out["parts"] = parts
    out["manifest"] = manifest
    return out


def write_random_split(data: str, out: str, *, seed: int) -> dict:
    """Write the random image-level split of ``data``'s train and validation crops to ``out``
    (a face-shard tree); return its description (also ``<out>/random_split.json``). An
    existing tree made from the same data with the same seed is kept."""
    keys = pooled_keys(data)
    source_hash = mf.content_hash(keys["manifest"])
    previous = storage.read_text(output_tree.join(out, DESCRIPTION))
    if previous and storage.read_text(output_tree.manifest_path(out)):
        described = json.loads(previous)
        if described.get("source_hash") == source_hash and described.get("seed") == seed:
            return described
    n = len(keys["split"])
    n_validation = int(np.sum(keys["split"] == "validation"))
    validation = random_validation(n, n_validation, seed=seed)
    new_split = np.where(validation, "validation", "train")

    entries, at = [], 0
    for part, paths, rows in keys["parts"]:
        table = _read(data, paths)
        split = pa.array(new_split[at:at + rows], pa.string())
        table = table.set_column(table.schema.get_field_index("split"),
                                 table.schema.field("split"), split)
        for name in POOLED:
            subset = table.filter(pc.equal(table["split"], name))
            if subset.num_rows:
                storage.write_bytes(output_tree.shard_path(out, "parquet", part, name, 0, 1),
                                    _parquet_bytes(subset))
        entry = dict(keys["manifest"]["parts"][mf.part_key(part)])
        # A different config hash gives the tree its own data hash, so training runs on it
        # are never mistaken for runs on the leak-free split.
        entry["config_hash"] = f"random-image-split-{seed}-{entry['config_hash']}"
        entry["records"] = rows
        entries.append(entry)
        at += rows
    described = {"source": data, "source_hash": source_hash, "seed": seed,
                 "images": n, "validation_images": n_validation,
                 "leak_free": leakage(keys["video"], keys["original"], keys["split"]),
                 "random": leakage(keys["video"], keys["original"], new_split)}
    storage.write_bytes(output_tree.join(out, DESCRIPTION),
                        (json.dumps(described, indent=1, sort_keys=True) + "\n").encode())
    # The manifest last: it is what makes the tree's parts committed.
    mf.write(out, mf.with_parts(mf.empty(), entries))
    return described


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=shards.PARQUET_COMPRESSION)
    return sink.getvalue().to_pybytes()
