"""Training input (index, re-balancing, worker shares, tf.data) and the Ray Train job end to end."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from dfd import images, output_tree, train_input
from dfd.augment import build_augmenter
from dfd.config import TrainConfig
from dfd.errors import DfdError
from dfd.synth.face_shards import write_face_shards
from tests.proc_inspect import ray_train_workers

SPLITS = {"train": 8, "validation": 3}
FAKES_PER_ORIGINAL = 2  # as if the pipeline kept all fakes: re-balancing has work to do
FRAMES = 5


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[str, dict]:
    root = tmp_path_factory.mktemp("faces")
    counts = write_face_shards(root, parts=(0, 1), per_split=SPLITS,
                               fakes_per_original=FAKES_PER_ORIGINAL, frames=FRAMES,
                               formats=("parquet",))
    return str(root), counts


@pytest.fixture(scope="module")
def train_index(data) -> train_input.FaceIndex:
    return train_input.build_index(data[0], "train")


def records_by_key(root: str, split: str) -> dict:
    table = pq.read_table(output_tree.format_dir(root, "parquet"),
                          filters=[("split", "=", split)])
    return {(r["video"], r["frame_index"]): r for r in table.to_pylist()}


# ---- index -------------------------------------------------------------------------------------

def test_index_counts_every_committed_record(data, train_index):
    root, counts = data
    assert train_index.counts() == {"records": counts["records"]["train"],
                                    "real": counts["real"]["train"],
                                    "fake": counts["fake"]["train"]}
    assert len(train_index.files) == 2
    assert len(train_index.originals) == 2 * SPLITS["train"]
    assert len(train_index.videos) == 2 * SPLITS["train"] * (1 + FAKES_PER_ORIGINAL)


def test_index_skips_parts_the_manifest_does_not_list(tmp_path):
    write_face_shards(tmp_path, parts=(0,), per_split={"train": 2}, formats=("parquet",))
    manifest = (tmp_path / "manifest.json").read_text()
    write_face_shards(tmp_path, parts=(3,), per_split={"train": 2}, formats=("parquet",))
    (tmp_path / "manifest.json").write_text(manifest)  # part 3 written but never committed
    staging = Path(output_tree.part_dir(str(tmp_path), "parquet", 4, staging=True))
    staging.mkdir()
    index = train_input.build_index(str(tmp_path), "train")
    assert [Path(f).parent.name for f in index.files] == ["part-00"]


def test_index_refuses_a_tree_without_manifest(tmp_path):
    with pytest.raises(DfdError, match="no manifest.json"):
        train_input.build_index(str(tmp_path), "train")


# ---- per-epoch re-balancing --------------------------------------------------------------------

def test_each_epoch_is_balanced_and_rotates_through_every_fake(train_index):
    seen = set()
    for epoch in range(FAKES_PER_ORIGINAL):
        rows = train_input.epoch_rows(train_index, epoch=epoch)
        counts = train_index.counts(rows)
        assert counts["real"] == counts["fake"] == train_index.counts()["real"]
        fakes = rows[train_index.label[rows] == 1]
        # One fake video per original, with all its crops.
        per_original = {}
        for o, v in zip(train_index.original[fakes], train_index.video[fakes]):
            per_original.setdefault(o, set()).add(v)
        assert len(per_original) == 2 * SPLITS["train"]
        assert all(len(v) == 1 for v in per_original.values())
        assert not seen & set(fakes.tolist())
        seen |= set(fakes.tolist())
    assert seen == set(np.flatnonzero(train_index.label == 1).tolist())
    np.testing.assert_array_equal(train_input.epoch_rows(train_index, epoch=FAKES_PER_ORIGINAL),
                                  train_input.epoch_rows(train_index, epoch=0))


def test_balanced_data_and_no_rebalance_keep_every_record(tmp_path, train_index):
    write_face_shards(tmp_path, parts=(0,), per_split={"train": 3}, fakes_per_original=1,
                      formats=("parquet",))
    balanced = train_input.build_index(str(tmp_path), "train")
    assert not train_input.needs_rebalancing(balanced)
    assert len(train_input.epoch_rows(balanced, epoch=1)) == len(balanced)
    assert len(train_input.epoch_rows(train_index, epoch=1, rebalance=False)) == len(train_index)


# ---- worker shares -----------------------------------------------------------------------------

def test_training_shares_are_equal_disjoint_and_reshuffled_each_epoch(train_index):
    rows = train_input.epoch_rows(train_index, epoch=0)
    shares = [train_input.worker_rows(train_index, rows, rank=r, world=3, epoch=0, seed=0,
                                      shuffle=True, pad=False)[0] for r in range(3)]
    assert {len(s) for s in shares} == {len(rows) // 3}
    union = np.concatenate(shares)
    assert len(set(union.tolist())) == len(union)
    assert set(union.tolist()) <= set(rows.tolist())
    again = train_input.worker_rows(train_index, rows, rank=0, world=3, epoch=0, seed=0,
                                    shuffle=True, pad=False)[0]
    np.testing.assert_array_equal(again, shares[0])  # every worker computes the same plan
    later = train_input.worker_rows(train_index, rows, rank=0, world=3, epoch=1, seed=0,
                                    shuffle=True, pad=False)[0]
    assert not np.array_equal(later, shares[0])


def test_validation_shares_cover_every_record_once_with_padding_weighted_zero(train_index):
    rows = np.arange(len(train_index) - 1)  # not a multiple of the worker count
    shares = [train_input.worker_rows(train_index, rows, rank=r, world=4, epoch=0, seed=0,
                                      shuffle=False, pad=True) for r in range(4)]
    assert len({len(s[0]) for s in shares}) == 1
    weighted = np.concatenate([s[0][s[1] == 1] for s in shares])
    assert sorted(weighted.tolist()) == rows.tolist()
    assert sum(int((s[1] == 0).sum()) for s in shares) == -len(rows) % 4
    # Padded to a multiple of a worker's batch, every step gives every replica a full batch.
    shares = [train_input.worker_rows(train_index, rows, rank=r, world=4, epoch=0, seed=0,
                                      shuffle=False, pad=True, multiple=6) for r in range(4)]
    assert {len(s[0]) % 6 for s in shares} == {0} and len({len(s[0]) for s in shares}) == 1
    weighted = np.concatenate([s[0][s[1] == 1] for s in shares])
    assert sorted(weighted.tolist()) == rows.tolist()


# ---- tf.data -----------------------------------------------------------------------------------

def test_dataset_yields_the_records_images_and_labels(data, train_index):
    root, _ = data
    rows, weights = train_input.worker_rows(
        train_index, train_input.epoch_rows(train_index, epoch=0), rank=1, world=2, epoch=0,
        seed=0, shuffle=True, pad=False)
    ds = train_input.face_dataset(train_index, rows, weights, batch_size=8, training=False)
    decoded = {}
    for record in records_by_key(root, "train").values():
        decoded.setdefault(images.decode_crops([record["image"]])[0].tobytes(), []).append(record)
    n = 0
    for x, y, w in ds:
        assert x.shape[1:] == (256, 256, 3)
        for image, label in zip(x.numpy(), y.numpy()[:, 0]):
            matches = decoded[image.tobytes()]
            assert {m["label"] for m in matches} == {int(label)}
            n += 1
        assert np.all(w.numpy() == 1)
    assert n == len(rows)


def test_training_batches_are_full_shuffled_and_read_across_row_groups(tmp_path):
    write_face_shards(tmp_path, parts=(0,), per_split={"train": 3}, fakes_per_original=1,
                      formats=("parquet",))
    shard = output_tree.shard_path(str(tmp_path), "parquet", 0, "train", 0, 1)
    pq.write_table(pq.read_table(shard), shard, row_group_size=7)  # 30 rows -> 5 row groups
    index = train_input.build_index(str(tmp_path), "train")
    assert index.row_group.max() == 4
    rows, weights = train_input.worker_rows(index, np.arange(len(index)), rank=0, world=1,
                                            epoch=0, seed=0, shuffle=True, pad=False)
    ds = train_input.face_dataset(index, rows, weights, batch_size=4, training=True, seed=1)
    batches = list(ds)
    assert [len(b[0]) for b in batches] == [4] * (len(index) // 4)
    labels = np.concatenate([b[1].numpy()[:, 0] for b in batches])
    assert 0 < labels.mean() < 1
    by_key = records_by_key(str(tmp_path), "train")
    wanted = {images.decode_crops([r["image"]])[0].tobytes(): r["label"] for r in by_key.values()}
    for x, y, _ in batches:
        for image, label in zip(x.numpy(), y.numpy()[:, 0]):
            assert wanted[image.tobytes()] == label

    # The paper's augmentations run inside the pipeline, on training batches only.
    augmented = train_input.face_dataset(index, rows, weights, batch_size=4, training=True,
                                         seed=1, augment=build_augmenter("hflip+zoom", seed=0))
    changed = 0
    for x, _, _ in augmented:
        assert x.shape == (4, 256, 256, 3) and 0 <= x.numpy().min() <= x.numpy().max() <= 1
        changed += sum(image.tobytes() not in wanted for image in x.numpy())
    assert changed > 0


# ---- the job's checks before any Ray starts ----------------------------------------------------

def test_settings_that_cannot_train_are_refused_before_starting(data):
    from dfd import training_run

    with pytest.raises(DfdError, match="multiple of the 2 replicas"):
        training_run.check_config(TrainConfig(batch_size=15, workers=2))
    with pytest.raises(DfdError, match="unknown model"):
        training_run.check_config(TrainConfig(model="resnet"))
    with pytest.raises(DfdError, match="unknown augmentation"):
        training_run.check_config(TrainConfig(augment="shear"))
    with pytest.raises(DfdError, match="too few for a global batch"):
        train_input.load_indexes(data[0], seed=0, workers=2, batch_size=512)
    with pytest.raises(DfdError, match="unknown --select"):
        training_run.check_config(TrainConfig(select="val_accuracy"))
    with pytest.raises(DfdError, match="unknown --lr-schedule"):
        training_run.check_config(TrainConfig(lr_schedule="step"))
    # Workers sharing a GPU cannot all-reduce over NCCL; one worker on part of a GPU can train.
    with pytest.raises(DfdError, match="^--gpus-per-worker 0.5 with 2 workers: workers sharing"):
        training_run.check_config(TrainConfig(workers=2, gpus_per_worker=0.5))
    training_run.check_config(TrainConfig(workers=1, gpus_per_worker=0.5, batch_size=8))


# ---- model selection, learning-rate schedules, early stopping -----------------------------------

def _history(val_loss, val_auc=None):
    val_auc = val_auc or [0.5] * len(val_loss)
    return [{"epoch": e, "val_loss": v, "val_auc": a}
            for e, (v, a) in enumerate(zip(val_loss, val_auc))]


def test_learning_rate_schedules_follow_their_formulas():
    import math

    from dfd.model_selection import learning_rate

    history = _history([0.7, 0.6, 0.65, 0.62, 0.5, 0.55, 0.56, 0.57])
    assert [learning_rate(TrainConfig(learning_rate=0.01), e, history) for e in range(8)] == \
        [0.01] * 8
    cosine = TrainConfig(learning_rate=0.01, epochs=8, lr_schedule="cosine")
    assert [learning_rate(cosine, e, history) for e in range(8)] == pytest.approx(
        [0.005 * (1 + math.cos(math.pi * e / 8)) for e in range(8)])
    # Plateau: the rate halves after 2 epochs without a lower val_loss, counted again from
    # each drop and from each new best.
    plateau = TrainConfig(learning_rate=0.01, lr_schedule="plateau", plateau_patience=2,
                          plateau_factor=0.5)
    assert [learning_rate(plateau, e, history[:e]) for e in range(9)] == pytest.approx(
        [0.01, 0.01, 0.01, 0.01, 0.005, 0.005, 0.005, 0.0025, 0.0025])
    # Only the epochs before the asked one count, whatever the history holds after it.
    assert learning_rate(plateau, 4, history) == pytest.approx(0.005)


def test_selection_takes_the_best_epoch_or_the_last_and_early_stopping_counts_from_the_best():
    from dfd import model_selection

    history = _history([0.7, 0.5, 0.6, 0.5, 0.65], val_auc=[0.6, 0.9, 0.95, 0.95, 0.7])
    assert model_selection.selected_epoch(TrainConfig(), history) == 1  # earliest of equals
    assert model_selection.selected_epoch(TrainConfig(select="val_auc"), history) == 2
    assert model_selection.selected_epoch(TrainConfig(select="last"), history) == 4
    assert model_selection.early_stop(TrainConfig(), history) is None  # off by default
    assert model_selection.early_stop(TrainConfig(early_stopping=4), history) is None
    assert model_selection.early_stop(TrainConfig(early_stopping=3), history) == {
        "after_epoch": 4, "patience": 3, "metric": "val_loss", "best_epoch": 1}
    record = model_selection.selection_record(TrainConfig(epochs=10, early_stopping=3),
                                              history, exported_epoch=1)
    assert (record["epoch"], record["reason"]) == \
        (1, "the lowest val_loss (0.5000) of epochs 0-4")
    assert record["stopped_early"]["after_epoch"] == 4
    # Running out of epochs is not stopping early.
    assert model_selection.selection_record(TrainConfig(epochs=5, early_stopping=3), history,
                                            exported_epoch=1)["stopped_early"] is None


def test_tensorboard_log_holds_each_epochs_metrics_readable_by_tensorflow(tmp_path):
    import tensorflow as tf

    from dfd import run_dir as rundir
    from dfd import training_run

    history = [training_run.epoch_record(
        epoch, {"bce": 0.7 - epoch / 10, "accuracy": 0.5 + epoch / 10, "precision": 0.5,
                "recall": 0.25, "auc": 0.6},
        {"bce": 0.8, "accuracy": 0.4, "precision": 0.125, "recall": 0.75, "auc": 0.5 + epoch / 8},
        seconds=2.0, images=16, val_seconds=1.0) for epoch in range(3)]
    log = training_run.TensorBoardLog(str(tmp_path))
    for record in history:
        log.write(record)
    log.close()

    for kind, prefix in (("train", ""), ("validation", "val_")):
        found = {}
        for path in sorted(Path(rundir.tensorboard_dir(str(tmp_path), kind)).iterdir()):
            assert path.name.startswith("events.out.tfevents.")
            for event in tf.compat.v1.train.summary_iterator(str(path)):
                for value in event.summary.value:
                    found[(event.step, value.tag)] = value.simple_value
        assert found == pytest.approx({(h["epoch"] + 1, name): h[prefix + name]
                                       for h in history for name in training_run.METRICS})


def test_a_run_dir_keeps_its_config_and_refuses_other_settings(tmp_path, data):
    from dfd import run_dir as rundir
    from dfd import training_run

    run = str(tmp_path / "run")
    cfg = TrainConfig(epochs=2)
    training_run.write_run_config(run, cfg, data=data[0], data_hash="h1", counts={})
    written = json.loads(Path(rundir.config_path(run)).read_text())
    assert (written["train"]["epochs"], written["data"], written["data_manifest_hash"]) == \
        (2, data[0], "h1")
    # More epochs or workers continue the same experiment; another learning rate or data do not.
    training_run.write_run_config(run, TrainConfig(epochs=5, workers=1), data=data[0],
                                  data_hash="h1", counts={})
    with pytest.raises(DfdError, match="other settings \\(learning_rate\\)"):
        training_run.write_run_config(run, TrainConfig(learning_rate=0.5), data=data[0],
                                      data_hash="h1", counts={})
    with pytest.raises(DfdError, match="other settings \\(data\\)"):
        training_run.write_run_config(run, cfg, data=data[0], data_hash="h2", counts={})


# ---- Ray Train end to end ----------------------------------------------------------------------

class WorkerKiller(threading.Thread):
    """Kills one training worker once the run has finished ``after_epochs`` epochs."""

    def __init__(self, run_dir: Path, after_epochs: int):
        super().__init__(daemon=True)
        self.run_dir, self.after_epochs = run_dir, after_epochs
        self.epochs_done_at_kill: int | None = None
        self.stop = threading.Event()

    def run(self):
        history = self.run_dir / "history.json"
        while not self.stop.wait(0.2):
            try:
                done = len(json.loads(history.read_text()))
            except (OSError, ValueError):
                continue
            workers = ray_train_workers(os.getpid())
            if done >= self.after_epochs and workers:
                os.kill(max(workers), signal.SIGKILL)
                self.epochs_done_at_kill = done
                return


@pytest.fixture(scope="module")
def local_ray():
    import ray

    from ray_jobs import train

    started = train.init_ray(None, TrainConfig(workers=2))
    yield
    if started:
        ray.shutdown()


def untrained_auc(root: str, seed: int) -> float:
    import tf_keras as keras

    from dfd import models

    records = list(records_by_key(root, "validation").values())
    keras.utils.set_random_seed(seed)
    model = models.build_model("paper_cnn")
    x = images.decode_crops([r["image"] for r in records])
    return metrics_auc([r["label"] for r in records], model(x, training=False).numpy()[:, 0])


def metrics_auc(labels, scores) -> float:
    from dfd import metrics

    return float(metrics.roc_auc(np.asarray(labels), np.asarray(scores)))


def checkpoint_of_epoch(run_dir: Path, epoch: int) -> Path:
    """The Ray checkpoint folder written after ``epoch``."""
    found = [c for c in (run_dir / "ray").glob("checkpoint_*") if c.is_dir()
             and json.loads((c / "trainer.json").read_text())["epoch"] == epoch]
    assert len(found) == 1, (epoch, found)
    return found[0]


def same_weights(model_dir_a: Path, model_dir_b: Path) -> bool:
    from dfd import models

    a = models.load_model(str(model_dir_a)).get_weights()
    b = models.load_model(str(model_dir_b)).get_weights()
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def check_schedule_and_selection(run_dir: Path, cfg: TrainConfig,
                                 chosen_model: Path | None = None) -> dict:
    """The recorded learning rates follow cfg's schedule over the recorded history, and
    <run>/model is the chosen epoch's model (that epoch's checkpoint, or ``chosen_model``);
    selection.json."""
    from dfd import model_selection

    history = json.loads((run_dir / "history.json").read_text())
    assert [h["lr"] for h in history] == pytest.approx(
        [model_selection.learning_rate(cfg, h["epoch"], history) for h in history])
    selection = json.loads((run_dir / "selection.json").read_text())
    assert selection["epoch"] == model_selection.selected_epoch(cfg, history)
    assert selection["learning_rates"] == [h["lr"] for h in history]
    assert same_weights(run_dir / "model",
                        chosen_model or checkpoint_of_epoch(run_dir, selection["epoch"]))
    return selection


@pytest.mark.slow
def test_two_workers_learn_and_a_killed_worker_costs_at_most_one_epoch(data, local_ray, tmp_path):
    from dfd import models
    from ray_jobs import train

    root, _ = data
    run_dir = tmp_path / "run"
    # Every checkpoint kept, to compare the exported model with the chosen epoch's.
    cfg = TrainConfig(epochs=4, batch_size=8, workers=2, max_failures=2, seed=0,
                      lr_schedule="plateau", plateau_patience=1, checkpoints_to_keep=10)
    killer = WorkerKiller(run_dir, after_epochs=1)
    killer.start()
    try:
        summary = train.run(root, str(run_dir), cfg)
    finally:
        killer.stop.set()
    assert killer.epochs_done_at_kill is not None, "the worker was never killed"

    # The run restarted once, from the last checkpoint: at most the epoch in flight was lost.
    attempts = json.loads((run_dir / "attempts.json").read_text())
    assert [a["start_epoch"] for a in attempts][0] == 0 and len(attempts) == 2
    done = killer.epochs_done_at_kill
    assert done <= attempts[1]["start_epoch"] <= done + 1
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(cfg.epochs))
    for name in ("loss", "accuracy", "precision", "recall", "auc"):
        assert all(0 <= h[name] <= 1 or name == "loss" for h in history)
        assert all(f"val_{name}" in h for h in history)

    # The final model learned: validation AUC well above the untrained model's.
    model = models.load_model(str(run_dir / "model"))
    records = list(records_by_key(root, "validation").values())
    x = images.decode_crops([r["image"] for r in records])
    trained = metrics_auc([r["label"] for r in records], model(x, training=False).numpy()[:, 0])
    before = untrained_auc(root, cfg.seed)
    assert trained >= 0.8 and trained >= before + 0.25, (before, trained)
    assert summary["final"]["val_auc"] >= 0.8
    # The exported model is the epoch of lowest val_loss, and the plateau schedule, replayed
    # over the history of a run that was killed and resumed, gives the rates it trained with.
    selection = check_schedule_and_selection(run_dir, cfg)
    history = json.loads((run_dir / "history.json").read_text())
    assert selection["epoch"] == min(history, key=lambda h: h["val_loss"])["epoch"]
    assert summary["selection"] == selection and selection["stopped_early"] is None

    # Everything the inference job and the report read is in the run dir.
    assert {p.name for p in (run_dir / "plots").iterdir()} == {
        "accuracy.png", "auc_precision_recall.png", "loss.png"}
    assert list((run_dir / "tensorboard" / "validation").glob("events.out.tfevents.*"))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["model"] == "paper_cnn" and len(config["data_manifest_hash"]) == 16
    assert list((run_dir / "ray").glob("checkpoint_*"))

    # `dfd train` again on the same run dir with more epochs continues where it stopped, here
    # on one worker (the worker count may change between runs).
    from dfd.cli import main

    exported_before = tmp_path / "exported-after-4-epochs"
    shutil.copytree(run_dir / "model", exported_before)
    argv = ["train", "--data", root, "--run-dir", str(run_dir), "--epochs", "5",
            "--batch-size", "8", "--workers", "1", "--max-failures", "2",
            "--lr-schedule", "plateau", "--plateau-patience", "1"]
    assert main(argv) == 0
    attempts = json.loads((run_dir / "attempts.json").read_text())
    assert attempts[-1]["start_epoch"] == 4
    assert [h["epoch"] for h in json.loads((run_dir / "history.json").read_text())] == \
        list(range(5))
    # The continued run chose among all five epochs. Its checkpoints carried the chosen
    # epoch's weights: an earlier epoch is exported as it was before, even where Ray (keeping
    # two checkpoints now) has deleted that epoch's own checkpoint.
    history = json.loads((run_dir / "history.json").read_text())
    best = min(history, key=lambda h: h["val_loss"])["epoch"]
    again = check_schedule_and_selection(
        run_dir, dataclasses.replace(cfg, epochs=5),
        chosen_model=None if best == 4 else exported_before)
    assert again["epoch"] == best and (best == 4 or best == selection["epoch"])

    # ... but not with settings of another experiment.
    assert main(argv[:-2] + ["--learning-rate", "0.01"]) == 1


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    from dfd.cli import main

    assert main(["train", "--data", str(tmp_path / "missing"), "--run-dir",
                 str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("dfd train: error:") and "no manifest.json" in err
    assert "\n" not in err
    assert not (tmp_path / "run").exists()  # nothing written for a run that cannot start


@pytest.mark.slow
def test_early_stopping_stops_records_it_and_exports_the_best_epoch(data, local_ray, tmp_path):
    from ray_jobs import train

    # A learning rate of 0 leaves the weights, and so validation AUC, exactly as they were:
    # after epoch 0 nothing improves, and a patience of 1 stops after epoch 1 of 4.
    run_dir = tmp_path / "run"
    cfg = TrainConfig(epochs=4, batch_size=8, workers=1, learning_rate=0.0, select="val_auc",
                      early_stopping=1, checkpoints_to_keep=10)
    summary = train.run(data[0], str(run_dir), cfg)
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]
    selection = check_schedule_and_selection(run_dir, cfg)
    assert selection["epoch"] == 0 and selection["metric"] == "val_auc"
    assert selection["stopped_early"] == {"after_epoch": 1, "patience": 1, "metric": "val_auc",
                                          "best_epoch": 0}
    assert summary["epochs"] == 2 and summary["selection"] == selection


# ---- several replicas per worker ---------------------------------------------------------------

# One configuration trained with one replica per worker and with two: dropout off, so the two
# differ only in how each step's global batch is split and summed.
REPLICA_CFG = TrainConfig(epochs=2, batch_size=8, workers=2, dropout=0.0, seed=1, select="last",
                          lr_schedule="cosine", checkpoints_to_keep=10)


@pytest.fixture(scope="module")
def one_replica_run(data, local_ray, tmp_path_factory) -> Path:
    from ray_jobs import train

    run_dir = tmp_path_factory.mktemp("one-replica") / "run"
    train.run(data[0], str(run_dir), REPLICA_CFG)
    return run_dir


@pytest.mark.slow
def test_select_last_exports_the_last_epoch_and_cosine_follows_its_formula(one_replica_run):
    import math

    selection = check_schedule_and_selection(one_replica_run, REPLICA_CFG)
    assert selection["epoch"] == 1 and selection["reason"] == "the last epoch (1) of 2"
    assert selection["learning_rates"] == pytest.approx(
        [1e-3 * (1 + math.cos(math.pi * e / 2)) / 2 for e in range(2)])


@pytest.mark.slow
def test_two_replicas_per_worker_train_as_one_replica_per_worker(data, local_ray, tmp_path,
                                                                 one_replica_run, monkeypatch):
    from dfd import models
    from ray_jobs import train

    # Each of the 2 workers mirrors onto 2 logical CPUs, as a worker with 2 GPUs would.
    monkeypatch.setenv(train.CPU_REPLICAS_ENV, "2")
    run_dir = tmp_path / "run"
    train.run(data[0], str(run_dir), REPLICA_CFG)
    one = json.loads((one_replica_run / "history.json").read_text())
    two = json.loads((run_dir / "history.json").read_text())
    assert [h["replicas"] for h in one] == [2, 2] and [h["replicas"] for h in two] == [4, 4]
    # The same global batch (train_images = steps x batch_size) and steps per epoch.
    for key in ("epoch", "steps", "train_images", "lr"):
        assert [h[key] for h in two] == [h[key] for h in one], key
    # The same examples and gradients, summed in another order: the losses agree to rounding
    # (measured: 1e-4), AUC closely; accuracy may flip a crop or two scored near 0.5.
    tolerance = {"loss": 2e-3, "auc": 0.02, "accuracy": 0.05}
    for name, abs_tol in tolerance.items():
        for key in (name, f"val_{name}"):
            for a, b in zip(one, two):
                assert np.isfinite(b[key]) and b[key] == pytest.approx(a[key], abs=abs_tol), key
    check_schedule_and_selection(run_dir, REPLICA_CFG)
    records = list(records_by_key(data[0], "validation").values())
    x = images.decode_crops([r["image"] for r in records])
    scores = {run: models.load_model(str(run / "model"))(x, training=False).numpy()[:, 0]
              for run in (one_replica_run, run_dir)}
    np.testing.assert_allclose(scores[run_dir], scores[one_replica_run], atol=0.01)
