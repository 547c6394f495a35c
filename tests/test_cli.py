import json
import subprocess
import sys
from pathlib import Path

from dfd import config
from tests.chatter import chatter_in


def dfd(*args):
    return subprocess.run([sys.executable, "-m", "dfd.cli", *args], capture_output=True,
                          text=True, timeout=120)


def test_help_and_usage_exit_codes():
    assert dfd("--help").returncode == 0
    r = dfd("no-such-command")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_config_prints_a_preset_and_its_hash():
    r = dfd("config", "preprocess", "--preset", "paper")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["frames_per_video"] == 5
    h = dfd("config", "preprocess", "--preset", "paper", "--hash").stdout.strip()
    assert h == config.config_hash(config.preset("preprocess", "paper"))


def test_override_keeps_preset_for_none_and_rejects_unknown_fields():
    base = config.preset("train", "smoke")
    cfg = config.override(base, epochs=3, batch_size=None)
    assert cfg.epochs == 3 and cfg.batch_size == base.batch_size
    try:
        config.override(base, epoch=3)
    except ValueError as e:
        assert "epoch" in str(e)
    else:
        raise AssertionError("unknown field accepted")


def test_config_round_trips_through_dict():
    cfg = config.preset("preprocess", "full")
    assert config.from_dict(type(cfg), json.loads(json.dumps(config.to_dict(cfg)))) == cfg


# ---- quiet runs --------------------------------------------------------------------------------

def test_a_quiet_command_keeps_library_chatter_in_its_log_and_errors_in_one_line(tmp_path):
    # `dfd train` loads TensorFlow and Ray (whose C++ start-up lines go straight to file
    # descriptor 2) and then fails on data that is not a face-shard tree.
    (tmp_path / "data").mkdir()
    run = tmp_path / "run"
    argv = ("train", "--data", str(tmp_path / "data"), "--run-dir", str(run))
    quiet = dfd(*argv)
    assert quiet.returncode == 1
    assert quiet.stdout == ""
    [line] = quiet.stderr.splitlines()
    message, log = line.rsplit(" (log: ", 1)
    assert message == (f"dfd train: error: {tmp_path / 'data'} has no manifest.json: not a "
                       f"face-shard tree (make one with `dfd preprocess`)")
    # A run that cannot start leaves no run dir behind: its log stays in the temp folder.
    log = Path(log.rstrip(")"))
    assert not run.exists() and log.parent.name == "dfd-logs"
    held = log.read_text()
    assert chatter_in(held), held[:2000]  # TensorFlow's start-up lines are in the log ...
    assert "Traceback" in held and "DfdError" in held  # ... with the error's traceback
    log.unlink()

    verbose = dfd("--verbose", *argv)
    assert verbose.returncode == 1
    assert chatter_in(verbose.stderr) and "Traceback" in verbose.stderr
    assert verbose.stderr.splitlines()[-1] == message  # no log to name


def test_command_output_routes_descriptor_2_and_child_processes_to_the_log(tmp_path, capfd):
    import logging
    import os

    from dfd.cli import logs

    with logs.command_output("demo", directory=str(tmp_path)) as output:
        os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on\n")
        subprocess.run([sys.executable, "-c", "import sys; print('child chatter', "
                        "file=sys.stderr)"], check=True)
        print("python stderr chatter", file=sys.stderr)
        logging.getLogger("ray.data").warning("streaming_executor: starting")
        logging.getLogger("dfd.demo").info("stage one done")
        logging.getLogger("pipelines.preprocess").warning("part 3 failed")
        print("error line", file=logs.terminal())
        print("a result")
    path = output.path  # the command's dir exists: the log was moved into it
    assert path == tmp_path / "dfd-demo.log"
    out, err = capfd.readouterr()
    assert out == "a result\n"
    assert [line.split(" ", 1)[1] for line in err.splitlines()[:2]] == [
        "INFO dfd.demo: stage one done", "WARNING pipelines.preprocess: part 3 failed"]
    assert err.splitlines()[2:] == ["error line"]
    held = path.read_text()
    for line in ("oneDNN custom operations", "child chatter", "python stderr chatter",
                 "streaming_executor: starting", "stage one done"):
        assert line in held
    # Afterwards descriptor 2 is the terminal again.
    os.write(2, b"back\n")
    assert capfd.readouterr().err == "back\n"
