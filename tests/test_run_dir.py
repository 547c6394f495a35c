"""dfd.run_dir: the names of a training run dir, and that none leads outside it."""
import pytest

from dfd import run_dir as rundir
from dfd.output_tree import UnsafePath


def test_run_dir_names_match_the_documented_layout():
    run = "s3://bucket/runs/r1"
    assert rundir.config_path(run) == "s3://bucket/runs/r1/config.json"
    assert rundir.history_path(run) == "s3://bucket/runs/r1/history.json"
    assert rundir.attempts_path(run) == "s3://bucket/runs/r1/attempts.json"
    assert rundir.model_file(run, "weights.h5") == "s3://bucket/runs/r1/model/weights.h5"
    assert rundir.tensorboard_file("/r/", "validation", "events.out.tfevents.1.host") == \
        "/r/tensorboard/validation/events.out.tfevents.1.host"
    assert rundir.plot_path("/r", "loss.png") == "/r/plots/loss.png"
    assert rundir.study_finished_path("/r") == "/r/study-run.json"
    assert rundir.eval_dir("/r", "parts-2-mean-abc") == "/r/eval/parts-2-mean-abc"


@pytest.mark.parametrize("call", [
    lambda: rundir.model_file("/r", "../weights.h5"),
    lambda: rundir.model_file("/r", "sub/model.json"),
    lambda: rundir.plot_path("/r", "../../etc/x.png"),
    lambda: rundir.plot_path("/r", "loss.svg"),
    lambda: rundir.tensorboard_file("/r", "train", "/abs/events"),
    lambda: rundir.eval_dir("/r", ".."),
    lambda: rundir.eval_dir("/r", "a/b"),
])
def test_a_name_that_would_leave_the_run_dir_is_refused(call):
    with pytest.raises(UnsafePath):
        call()


def test_tensorboard_runs_are_train_and_validation_only():
    with pytest.raises(ValueError, match="unknown TensorBoard run"):
        rundir.tensorboard_dir("/r", "test")
