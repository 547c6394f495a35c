import json
import subprocess
import sys

from dfd import config


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
