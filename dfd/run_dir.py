"""Names in a training run dir: the one place that spells its files and folders.

    <run>/config.json          TrainConfig, the data URI and the data manifest's hash
    <run>/history.json         one dict per epoch: loss, accuracy, precision, recall, auc, val_*
    <run>/attempts.json        each (re)start of the worker group and the epoch it started at
    <run>/model/               the exported model: dfd.models' model.json and weights.h5
    <run>/selection.json       which epoch <run>/model is, chosen by which rule, and whether
                               training stopped early (dfd.model_selection)
    <run>/calibration.json     `dfd calibrate`'s temperature and threshold, fitted on the
                               validation split's video scores (dfd.calibration)
    <run>/calibration/         `dfd calibrate`'s scoring of the validation split
    <run>/tensorboard/{train,validation}/   TensorBoard scalars
    <run>/plots/*.png          training curves
    <run>/ray/                 Ray Train's checkpoints (its run name under the storage path)
    <run>/study-run.json       written by `dfd study` once it has a run's final history
    <run>/eval/<name>/         `dfd study`'s evaluations of the run, one folder each
    <run>/dfd-train.log        the libraries' output during `dfd train` (named by dfd.cli.logs,
                               as in every command's folder; `dfd calibrate` writes
                               dfd-calibrate.log beside it)

Like ``dfd.output_tree`` (whose ``join`` it uses), names are joined with '/' so that they work
for local paths and gs:// or s3:// URIs, and every piece below the run dir is checked to stay
inside it.
"""
from __future__ import annotations

import re

from dfd.output_tree import UnsafePath, check_relative, join

CONFIG = "config.json"
HISTORY = "history.json"
ATTEMPTS = "attempts.json"
MODEL = "model"
TENSORBOARD = "tensorboard"
TENSORBOARD_KINDS = ("train", "validation")
PLOTS = "plots"
RAY = "ray"
STUDY_FINISHED = "study-run.json"
SELECTION = "selection.json"
CALIBRATION = "calibration.json"
CALIBRATION_EVAL = "calibration"
EVAL = "eval"

_PLOT_RE = re.compile(r"^[A-Za-z0-9_.-]+\.png$")


def config_path(run_dir: str) -> str:
    return join(run_dir, CONFIG)


def history_path(run_dir: str) -> str:
    return join(run_dir, HISTORY)


def attempts_path(run_dir: str) -> str:
    return join(run_dir, ATTEMPTS)


def selection_path(run_dir: str) -> str:
    return join(run_dir, SELECTION)


def calibration_path(run_dir: str) -> str:
    return join(run_dir, CALIBRATION)


def calibration_eval_dir(run_dir: str) -> str:
    """Where `dfd calibrate` writes its predictions and metrics on the validation split."""
    return join(run_dir, CALIBRATION_EVAL)


def model_dir(run_dir: str) -> str:
    return join(run_dir, MODEL)


def model_file(run_dir: str, name: str) -> str:
    """A file of the saved model (its names come from dfd.models: model.json, weights.h5)."""
    if "/" in check_relative(name):
        raise UnsafePath(f"model file name must be a plain name, got {name!r:.80}")
    return join(run_dir, MODEL, name)


def tensorboard_dir(run_dir: str, kind: str) -> str:
    if kind not in TENSORBOARD_KINDS:
        raise ValueError(f"unknown TensorBoard run {kind!r}; one of {list(TENSORBOARD_KINDS)}")
    return join(run_dir, TENSORBOARD, kind)


def tensorboard_file(run_dir: str, kind: str, name: str) -> str:
    """An event file (``events.out.tfevents.*``) of one TensorBoard run."""
    if "/" in check_relative(name):
        raise UnsafePath(f"event file name must be a plain name, got {name!r:.80}")
    return join(tensorboard_dir(run_dir, kind), name)


def plot_path(run_dir: str, name: str) -> str:
    if not isinstance(name, str) or not _PLOT_RE.match(name) or name.startswith("."):
        raise UnsafePath(f"plot name must be a plain *.png file name, got {name!r:.80}")
    return join(run_dir, PLOTS, name)


def study_finished_path(run_dir: str) -> str:
    return join(run_dir, STUDY_FINISHED)


def eval_dir(run_dir: str, name: str) -> str:
    """One evaluation's folder; ``name`` is a single folder name."""
    if "/" in check_relative(name):
        raise UnsafePath(f"evaluation folder must be a plain name, got {name!r:.80}")
    return join(run_dir, EVAL, name)
