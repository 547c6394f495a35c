"""The models, their safe on-disk form, the crop decoder they share, augmentations and curves."""
from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest
import tf_keras as keras

from dfd import augment, curves, images, models
from dfd.synth.photos import portrait_pixels

# The paper's Fig. 2, row by row: layer, output shape, parameters.
PAPER_CNN = [
    ("conv2d_1", "Conv2D", (86, 86, 75), 3675),
    ("conv2d_2", "Conv2D", (43, 43, 50), 33800),
    ("max_pooling2d_1", "MaxPooling2D", (21, 21, 50), 0),
    ("dropout_1", "Dropout", (21, 21, 50), 0),
    ("conv2d_3", "Conv2D", (21, 21, 25), 5025),
    ("max_pooling2d_2", "MaxPooling2D", (10, 10, 25), 0),
    ("dropout_2", "Dropout", (10, 10, 25), 0),
    ("flatten_1", "Flatten", (2500,), 0),
    ("dense_1", "Dense", (200,), 500200),
    ("dropout_3", "Dropout", (200,), 0),
    ("dense_2", "Dense", (100,), 20100),
    ("dropout_4", "Dropout", (100,), 0),
    ("dense_3", "Dense", (1,), 101),
]


def encode(rgb: np.ndarray, ext: str = ".jpg") -> bytes:
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def crops() -> list[bytes]:
    face = cv2.resize(portrait_pixels("astronaut")[40:300, 120:380], (256, 256))
    return [encode(face), encode(face[:, ::-1].copy(), ".png")]


def test_paper_cnn_is_fig_2_layer_by_layer():
    model = models.build_model("paper_cnn")
    assert model.input_shape == (None, 256, 256, 3)
    got = [(layer.name, type(layer).__name__, tuple(layer.output_shape[1:]), layer.count_params())
           for layer in model.layers]
    assert got == PAPER_CNN
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 562_901
    assert not model.non_trainable_weights
    assert model.layers[-1].activation is keras.activations.sigmoid


def test_paper_cnn_dropout_rates_are_options():
    model = models.build_model("paper_cnn", dropout=0.5, conv_dropout=0.1)
    rates = {layer.name: layer.rate for layer in model.layers if "dropout" in layer.name}
    assert rates == {"dropout_1": 0.1, "dropout_2": 0.1, "dropout_3": 0.5, "dropout_4": 0.5}


def test_unknown_model_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown model 'vgg'.*paper_cnn"):
        models.build_model("vgg")


def test_registry_has_the_paper_model_its_transfer_model_and_a_stronger_backbone():
    assert {"paper_cnn", "efficientnet_b0", "xception", "efficientnet_b4"} <= set(models.MODELS)


def test_saved_model_loads_back_identical_without_pickle(tmp_path, crops):
    keras.utils.set_random_seed(1)
    model = models.build_model("paper_cnn", dropout=0.4)
    models.save_model(model, str(tmp_path), name="paper_cnn", options={"dropout": 0.4})

    spec = json.loads((tmp_path / "model.json").read_text())
    assert spec == {"name": "paper_cnn", "options": {"dropout": 0.4},
                    "input_shape": [256, 256, 3], "format_version": 1}
    assert (tmp_path / "weights.h5").read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"  # HDF5, no pickle
    loaded = models.load_model(str(tmp_path))
    x = images.decode_crops(crops)
    np.testing.assert_array_equal(loaded(x, training=False).numpy(),
                                  model(x, training=False).numpy())
    assert loaded.layers[-2].rate == 0.4


def test_load_model_refuses_an_unknown_format(tmp_path):
    models.save_model(models.build_model("paper_cnn"), str(tmp_path), name="paper_cnn", options={})
    spec = json.loads((tmp_path / "model.json").read_text())
    (tmp_path / "model.json").write_text(json.dumps({**spec, "format_version": 99}))
    with pytest.raises(ValueError, match="format_version 99"):
        models.load_model(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not a saved dfd model"):
        models.load_model(str(tmp_path / "nowhere"))


def test_backbone_imagenet_weights_come_from_the_cache_else_random_with_a_warning(
        tmp_path, monkeypatch, caplog, crops):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    real_lookup = models.imagenet_weights
    monkeypatch.setattr(models, "imagenet_weights", lambda name: None)
    with caplog.at_level(logging.WARNING, logger="dfd.models"):
        unreachable = models.build_model("efficientnet_b0", weights="imagenet")
    assert "ImageNet weights are neither cached" in caplog.text
    assert "random initialization" in caplog.text

    # Whatever keras' cache holds under the ImageNet file name is what the backbone starts from.
    cached = unreachable.get_layer("efficientnetb0")
    (tmp_path / "keras" / "models").mkdir(parents=True)
    cached.save_weights(str(tmp_path / "keras" / "models" / "efficientnetb0_notop.h5"))
    monkeypatch.setattr(models, "imagenet_weights", real_lookup)
    model = models.build_model("efficientnet_b0", weights="imagenet")
    for got, want in zip(model.get_layer("efficientnetb0").weights, cached.weights):
        np.testing.assert_array_equal(got.numpy(), want.numpy())

    # It takes the shared [0, 1] input and rescales it to the [0, 255] EfficientNet expects.
    assert model.get_layer("to_backbone_range").scale == 255.0
    x = images.decode_crops(crops)
    p = model(x, training=False).numpy()
    assert p.shape == (2, 1) and np.all((p >= 0) & (p <= 1))

    # A saved backbone model loads its own weights and never looks for ImageNet's.
    models.save_model(model, str(tmp_path / "saved"), name="efficientnet_b0",
                      options={"weights": "imagenet", "dropout": 0.25})

    def no_fetch(name):
        raise AssertionError("load_model must not look for ImageNet weights")

    monkeypatch.setattr(models, "imagenet_weights", no_fetch)
    loaded = models.load_model(str(tmp_path / "saved"))
    np.testing.assert_allclose(loaded(x, training=False).numpy(), p, rtol=1e-6)


# ---- decoding ----------------------------------------------------------------------------------

def test_decode_crops_gives_rgb_in_unit_range(crops):
    x = images.decode_crops(crops)
    assert x.shape == (2, 256, 256, 3) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    png = cv2.cvtColor(cv2.imdecode(np.frombuffer(crops[1], np.uint8), cv2.IMREAD_COLOR),
                       cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(x[1], png.astype(np.float32) / 255.0)  # PNG is lossless


def test_tensorflow_decoder_matches_decode_crops_exactly(crops):
    import tensorflow as tf

    x = images.decode_crops(crops)
    for encoded, expected in zip(crops, x):
        np.testing.assert_array_equal(images.decode_crop_tensor(tf.constant(encoded)).numpy(),
                                      expected)


def test_other_crop_sizes_are_resized_to_the_model_input():
    import tensorflow as tf

    small = encode(cv2.resize(portrait_pixels("camera"), (252, 252)), ".png")
    x = images.decode_crops([small])
    assert x.shape == (1, 256, 256, 3)
    t = images.decode_crop_tensor(tf.constant(small)).numpy()
    assert np.abs(t - x[0]).max() <= 1.0 / 255 + 1e-6


def test_undecodable_crop_is_named():
    with pytest.raises(ValueError, match="crop 1 is not a decodable"):
        images.decode_crops([encode(np.zeros((256, 256, 3), np.uint8)), b"not an image"])


# ---- training state ----------------------------------------------------------------------------

@pytest.mark.slow
def test_training_state_restores_weights_and_optimizer_moments(tmp_path, crops):
    x = images.decode_crops(crops)
    y = np.array([[0.0], [1.0]], np.float32)
    keras.utils.set_random_seed(0)
    model = models.build_model("paper_cnn")
    models.compile_classifier(model, learning_rate=1e-3)
    model.fit(x, y, epochs=2, verbose=0)
    models.save_training_state(model, str(tmp_path), name="paper_cnn", options={},
                               trainer={"epoch": 1, "history": [{"epoch": 0}, {"epoch": 1}]})

    keras.utils.set_random_seed(99)
    fresh = models.build_model("paper_cnn")
    models.compile_classifier(fresh, learning_rate=1e-3)
    trainer = models.restore_training_state(fresh, str(tmp_path))
    assert trainer == {"epoch": 1, "history": [{"epoch": 0}, {"epoch": 1}]}
    for got, want in zip(fresh.weights, model.weights):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    assert int(fresh.optimizer.iterations.numpy()) == 2
    for got, want in zip(fresh.optimizer.variables(), model.optimizer.variables()):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    # The checkpoint is also a plain saved model.
    assert models.read_model_spec(str(tmp_path))["name"] == "paper_cnn"


def test_metrics_ignore_weight_zero_padding(crops):
    x = images.decode_crops(crops * 3)
    y = np.array([[0], [1], [1], [0], [0], [1]], np.float32)
    model = models.build_model("paper_cnn")
    models.compile_classifier(model, learning_rate=1e-3)
    w = np.array([1, 1, 1, 1, 0, 0], np.float32)
    padded = model.evaluate(x, y, sample_weight=w, batch_size=3, verbose=0, return_dict=True)
    plain = model.evaluate(x[:4], y[:4], batch_size=3, verbose=0, return_dict=True)
    for name in ("bce", "accuracy", "precision", "recall", "auc"):
        assert padded[name] == pytest.approx(plain[name], abs=1e-6), name


# ---- augmentation ------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, names", [("none", ()), ("", ()), ("hflip", ("hflip",)),
                                         ("zoom+hflip", ("hflip", "zoom")),
                                         ("hflip+rotation+zoom", ("hflip", "rotation", "zoom"))])
def test_augment_specs_parse(spec, names):
    assert augment.parse_augment(spec) == names


@pytest.mark.parametrize("spec", ["shear", "hflip+hflip", "hflip+"])
def test_bad_augment_specs_are_refused(spec):
    with pytest.raises(ValueError, match="augmentation"):
        augment.parse_augment(spec)


def test_hflip_mirrors_some_crops_and_leaves_the_rest(crops):
    x = np.repeat(images.decode_crops(crops[:1]), 16, axis=0)
    out = augment.build_augmenter("hflip", seed=0)(x).numpy()
    flipped = [np.array_equal(o, x[0, :, ::-1]) for o in out]
    kept = [np.array_equal(o, x[0]) for o in out]
    assert all(f or k for f, k in zip(flipped, kept))
    assert any(flipped) and any(kept)


def test_rotation_and_zoom_change_crops_but_not_shape_or_range(crops):
    x = images.decode_crops(crops)
    assert augment.build_augmenter("none") is None
    out = augment.build_augmenter("rotation+zoom", seed=0)(x).numpy()
    assert out.shape == x.shape and out.min() >= 0.0 and out.max() <= 1.0
    assert not np.allclose(out, x)


# ---- curves ------------------------------------------------------------------------------------

def test_training_curves_are_the_papers_figures():
    history = [{"epoch": e, "loss": 0.7 - e / 10, "accuracy": 0.5 + e / 10, "auc": 0.5 + e / 9,
                "precision": 0.6, "recall": 0.5, "val_loss": 0.7, "val_accuracy": 0.5,
                "val_auc": 0.6, "val_precision": 0.5, "val_recall": 0.4} for e in range(4)]
    figures = curves.training_curves(history)
    assert set(figures) == {"accuracy.png", "auc_precision_recall.png", "loss.png"}
    for png in figures.values():
        image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (400, 640, 3)
    with pytest.raises(ValueError, match="no epochs"):
        curves.training_curves([])
