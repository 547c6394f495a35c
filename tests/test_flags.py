"""Command-line flags that restate config fields are derived from the dataclasses: each flag
reaches its field with the field's type, an unset flag keeps the preset's value, and every
command starts from the same default preset."""
import dataclasses

import pytest

from dfd import config
from dfd.cli import build_parser
from dfd.cli import _flags


def parse(*argv: str):
    return build_parser().parse_known_args(list(argv))[0]


def test_flags_reach_their_fields_typed_and_unset_ones_keep_the_preset():
    args = parse("train", "--data", "d", "--run-dir", "r", "--epochs", "3",
                 "--learning-rate", "0.01", "--no-rebalance", "--augment", "hflip")
    cfg = _flags.from_args(args, "train")
    assert cfg == dataclasses.replace(config.preset("train", config.DEFAULT_PRESET), epochs=3,
                                      learning_rate=0.01, rebalance=False, augment="hflip")
    assert _flags.from_args(parse("train", "--data", "d", "--run-dir", "r", "--preset",
                                  "smoke"), "train") == config.preset("train", "smoke")


def test_a_bad_value_is_refused_by_the_parser():
    with pytest.raises(SystemExit):
        parse("infer", "--data", "d", "--run-dir", "r", "--out", "o", "--aggregation", "vote")
    with pytest.raises(SystemExit):
        parse("train", "--data", "d", "--run-dir", "r", "--epochs", "three")


def test_a_study_gives_training_and_inference_only_their_own_flags():
    from dfd.cli.study import INFER_FLAGS, TRAIN_FLAGS

    args = parse("study", "augmentation", "--data", "d", "--out", "o", "--batch-size", "8",
                 "--actors", "1")
    train = _flags.from_args(args, "train", names=TRAIN_FLAGS)
    infer = _flags.from_args(args, "infer", names=INFER_FLAGS)
    assert train.batch_size == 8 and infer.actors == 1
    assert infer.batch_size == config.preset("infer", config.DEFAULT_PRESET).batch_size


def test_preprocess_flags_and_their_old_spelling():
    from dfd.cli.preprocess import config_from_args

    cfg = config_from_args(parse("preprocess", "--input", "i", "--output", "o", "--shards", "4",
                                 "--sampling", "uniform", "--fakes-per-original", "all",
                                 "--test-parts", "3-4"))
    assert (cfg.shards_per_split, cfg.sampling, cfg.fakes_per_original, cfg.test_parts) == \
        (4, "uniform", None, (3, 4))


def test_every_command_starts_from_the_same_preset():
    commands = {"preprocess": ["--output", "o"], "train": ["--data", "d", "--run-dir", "r"],
                "infer": ["--data", "d", "--run-dir", "r", "--out", "o"],
                "study": ["split", "--data", "d", "--out", "o"], "synth": ["--out", "o"],
                "sync": ["--output", "o"], "config": ["train"]}
    for command, argv in commands.items():
        assert parse(command, *argv).preset == config.DEFAULT_PRESET, command
