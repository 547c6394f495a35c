"""Face shards to per-worker training input: an index, per-epoch re-balancing, tf.data.

The index holds, per face record of a split, where it lives (file, row group, row) and its label,
video and original, read from the Parquet shards' small columns without touching the images.
From it every worker computes the same plan for an epoch on its own:

1. ``epoch_rows``: the records of the epoch. When the data kept every fake (DFDC has about five
   per original), each original contributes one of its fakes per epoch, a different one each
   epoch, so the epoch is balanced and over k epochs every fake is seen.
2. ``worker_rows``: this worker's equal share. Row groups are put in a fresh random order each
   epoch and the sequence is cut into equal contiguous pieces, so each worker reads whole row
   groups and all workers run the same number of steps (MultiWorkerMirroredStrategy hangs
   otherwise). Validation is padded to equal pieces with weight-0 rows instead of dropping any.
3. ``face_dataset``: a tf.data pipeline that reads those rows' images, shuffles, decodes and
   batches them.
"""
from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Iterator

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq

import schemas
from dfd import manifest, output_tree, splits, storage
from dfd.errors import DfdError
from schemas.records import CROP_SIZE, LABEL_FAKE, LABEL_REAL

INDEX_COLUMNS = ("video", "original", "label")
SHUFFLE_BUFFER = 2048  # encoded crops (about 20 KB each) held for the local shuffle


def find_shards(data: str, split: str) -> list[str]:
    """The Parquet shards of one split in the committed parts of a face-shard tree, sorted."""
    fs, root = storage.resolve(data)
    parts = sorted(int(k) for k in manifest.read(data, required=True)["parts"])
    pattern = output_tree.shard_glob(root, "parquet", split).rsplit("/", 1)[1]
    found = []
    for part in parts:
        folder = output_tree.part_dir(root, "parquet", part)
        infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        found += sorted(i.path for i in infos
                        if i.type == pafs.FileType.File and fnmatch.fnmatch(i.base_name, pattern))
    return found


@dataclasses.dataclass(frozen=True, eq=False)
class FaceIndex:
    """Where each face record of one split lives, and what it is. One entry per record."""
    data: str
    split: str
    files: tuple[str, ...]
    file: np.ndarray  # int32 index into files
    row_group: np.ndarray  # int32
    row: np.ndarray  # int32, row inside its row group
    label: np.ndarray  # int8, 1 = FAKE
    video: np.ndarray  # int32 index into videos
    original: np.ndarray  # int32 index into originals
    videos: tuple[str, ...]
    originals: tuple[str, ...]
    fake_rank: np.ndarray  # int32: a fake video's place among its original's fakes; -1 if REAL
    fake_count: np.ndarray  # int32: fakes of the record's original

    def __len__(self) -> int:
        return len(self.label)

    def counts(self, rows: np.ndarray | None = None) -> dict[str, int]:
        labels = self.label if rows is None else self.label[rows]
        return {"records": int(len(labels)), "real": int(np.sum(labels == LABEL_REAL)),
                "fake": int(np.sum(labels == LABEL_FAKE))}


def build_index(data: str, split: str, *, seed: int = 0) -> FaceIndex:
    """Index one split of a face-shard tree from its Parquet shards' small columns."""
    fs, _ = storage.resolve(data)
    files = find_shards(data, split)
    pieces = {k: [] for k in ("file", "row_group", "row", "label", "video", "original")}
    for file_id, path in enumerate(files):
        with fs.open_input_file(path) as f:
            pf = pq.ParquetFile(f)
            schemas.check_arrow_schema(pf.schema_arrow, schemas.FACE)
            sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
            table = pf.read(columns=list(INDEX_COLUMNS))
        pieces["file"].append(np.full(table.num_rows, file_id, np.int32))
        pieces["row_group"].append(np.repeat(np.arange(len(sizes), dtype=np.int32), sizes))
        pieces["row"].append(np.concatenate([np.arange(n, dtype=np.int32) for n in sizes])
                             if sizes else np.zeros(0, np.int32))
        pieces["label"].append(table.column("label").to_numpy().astype(np.int8))
        pieces["video"].append(table.column("video").to_numpy(zero_copy_only=False))
        pieces["original"].append(table.column("original").to_numpy(zero_copy_only=False))
    cat = {k: (np.concatenate(v) if v else np.zeros(0, np.int32)) for k, v in pieces.items()}
    videos, video_ids = np.unique(cat["video"].astype(str), return_inverse=True)
    originals, original_ids = np.unique(cat["original"].astype(str), return_inverse=True)
    fake_rank, fake_count = _rank_fakes(videos, video_ids, original_ids, cat["label"], seed=seed)
    return FaceIndex(data=data, split=split, files=tuple(files), file=cat["file"],
                     row_group=cat["row_group"], row=cat["row"], label=cat["label"].astype(np.int8),
                     video=video_ids.astype(np.int32), original=original_ids.astype(np.int32),
                     videos=tuple(videos), originals=tuple(originals),
                     fake_rank=fake_rank, fake_count=fake_count)


def _rank_fakes(videos, video_ids, original_ids, labels, *, seed: int):
    """Order each original's fake videos by a stable hash, the rotation order of re-balancing."""
    fake_rank = np.full(len(labels), -1, np.int32)
    fake_count = np.zeros(len(labels), np.int32)
    fake = labels == LABEL_FAKE
    by_original: dict[int, set[int]] = {}
    for o, v in zip(original_ids[fake].tolist(), video_ids[fake].tolist()):
        by_original.setdefault(o, set()).add(v)
    rank_of_video = np.full(len(videos), -1, np.int32)
    count_of_original = np.zeros(int(original_ids.max(initial=-1)) + 1, np.int32)
    for o, vs in by_original.items():
        ordered = sorted(vs, key=lambda v: (splits.stable_fraction("epoch-fake", seed, videos[v]),
                                            videos[v]))
        for r, v in enumerate(ordered):
            rank_of_video[v] = r
        count_of_original[o] = len(ordered)
    if len(labels):
        fake_rank[fake] = rank_of_video[video_ids[fake]]
        fake_count[:] = count_of_original[original_ids]
    return fake_rank, fake_count


def needs_rebalancing(index: FaceIndex) -> bool:
    """Whether some original has more than one fake video (the data kept all fakes)."""
    return bool(index.fake_count.max(initial=0) > 1)


def epoch_rows(index: FaceIndex, *, epoch: int, rebalance: bool = True) -> np.ndarray:
    """The records of one epoch: all REAL ones and, when re-balancing, one fake per original."""
    if not rebalance or not needs_rebalancing(index):
        return np.arange(len(index), dtype=np.int64)
    keep = (index.label == LABEL_REAL) | (
        index.fake_rank == epoch % np.maximum(index.fake_count, 1))
    return np.flatnonzero(keep)


def worker_rows(index: FaceIndex, rows: np.ndarray, *, rank: int, world: int, epoch: int,
                seed: int, shuffle: bool, pad: bool,
                multiple: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """This worker's rows (in reading order) and their weights; every worker gets as many.

    Without ``pad`` the at most ``world - 1`` rows left over are dropped this epoch (a different
    few each epoch); with it, short pieces are filled with weight-0 copies, up to a
    ``multiple`` of rows (a worker's batch: with several replicas per worker, a last step too
    short to give every replica a row fails in TF).
    """
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside 0..{world - 1}")
    rows = np.asarray(rows, np.int64)
    if shuffle and len(rows):
        rng = np.random.default_rng([seed, epoch])
        block = index.file[rows].astype(np.int64) << 32 | index.row_group[rows]
        blocks, block_ids = np.unique(block, return_inverse=True)
        block_order = rng.permutation(len(blocks))
        rows = rows[np.lexsort((index.row[rows], block_order[block_ids]))]
        rows = np.roll(rows, -int(rng.integers(len(rows))))
    n = len(rows)
    if pad:
        share = -(-n // world)
        piece = rows[rank * share:(rank + 1) * share]
        per = -(-share // multiple) * multiple
        weights = np.ones(per, np.float32)
        weights[len(piece):] = 0.0
        filler = piece[-1:] if len(piece) else rows[:1]
        piece = np.concatenate([piece, np.repeat(filler, per - len(piece))])
        return piece, weights
    per = n // world
    return rows[rank * per:(rank + 1) * per], np.ones(per, np.float32)


def read_images(index: FaceIndex, rows: np.ndarray) -> Iterator[np.ndarray]:
    """The encoded images of rows, in order, as object arrays (one per run of a row group)."""
    fs, _ = storage.resolve(index.data)
    if not len(rows):
        return
    block = index.file[rows].astype(np.int64) << 32 | index.row_group[rows]
    starts = np.flatnonzero(np.r_[True, block[1:] != block[:-1]])
    ends = np.r_[starts[1:], len(rows)]
    open_file, handle, parquet = None, None, None
    try:
        for s, e in zip(starts, ends):
            file_id, group = int(index.file[rows[s]]), int(index.row_group[rows[s]])
            if open_file != file_id:
                if handle is not None:
                    handle.close()
                handle = fs.open_input_file(index.files[file_id])
                parquet, open_file = pq.ParquetFile(handle), file_id
            column = parquet.read_row_group(group, columns=["image"]).column("image")
            yield column.take(index.row[rows[s:e]]).to_numpy(zero_copy_only=False)
    finally:
        if handle is not None:
            handle.close()


def face_dataset(index: FaceIndex, rows: np.ndarray, weights: np.ndarray, *, batch_size: int,
                 training: bool, augment=None, seed: int = 0,
                 shuffle_buffer: int = SHUFFLE_BUFFER, threads: int | None = None):
    """A tf.data pipeline of (images, labels, weights) batches for these rows.

    ``images`` is what ``dfd.images.decode_crops`` returns; labels are float32 (N, 1), 1 = FAKE.
    Training batches are shuffled, full (the last partial one is dropped) and augmented.
    """
    import tensorflow as tf

    from dfd.images import decode_crop_tensor

    rows = np.asarray(rows, np.int64)
    labels = index.label[rows].astype(np.float32)
    weights = np.asarray(weights, np.float32)

    def chunks():
        at = 0
        for images in read_images(index, rows):
            n = len(images)
            yield images, labels[at:at + n], weights[at:at + n]
            at += n

    ds = tf.data.Dataset.from_generator(chunks, output_signature=(
        tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.float32),
        tf.TensorSpec([None], tf.float32)))
    ds = ds.unbatch()
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=False)
    ds = ds.map(lambda image, label, weight: (decode_crop_tensor(image), tf.reshape(label, [1]),
                                              weight),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
    ds = ds.batch(batch_size, drop_remainder=training)
    if training and augment is not None:
        ds = ds.map(lambda x, y, w: (augment(x), y, w), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(lambda x, y, w: (tf.ensure_shape(x, [None, CROP_SIZE, CROP_SIZE, 3]), y, w))
    options = tf.data.Options()
    # Rows are already split by worker: the strategy must not shard them again.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    if threads:
        options.threading.private_threadpool_size = threads
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def describe(index: FaceIndex) -> dict:
    """Counts for logs and config.json."""
    return {"split": index.split, "files": len(index.files), **index.counts(),
            "videos": len(index.videos), "originals": len(index.originals),
            "rebalanced": needs_rebalancing(index)}


def load_indexes(data: str, *, seed: int, workers: int, batch_size: int,
                 rebalance: bool = True) -> tuple[FaceIndex, FaceIndex]:
    """The train and validation indexes of a face-shard tree, refused (DfdError) when they
    cannot train: a split without records or with one label, or too few train crops for one
    global batch across the workers."""
    train = build_index(data, "train", seed=seed)
    validation = build_index(data, "validation", seed=seed)
    for index in (train, validation):
        if not len(index):
            raise DfdError(f"{data} has no committed {index.split} face records")
        if len(set(index.label.tolist())) < 2:
            raise DfdError(f"{data}: the {index.split} records are all of one label; "
                           f"training needs REAL and FAKE crops")
    per_worker = len(epoch_rows(train, epoch=0, rebalance=rebalance)) // workers
    if per_worker < batch_size // workers:
        raise DfdError(f"{len(train)} train crops are too few for a global batch of "
                       f"{batch_size} on {workers} workers")
    return train, validation
