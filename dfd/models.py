"""Face-crop classifiers, looked up by name, and their safe on-disk form.

Every model takes the array ``dfd.images.decode_crops`` makes (float32 RGB in [0, 1], NHWC) and
outputs one sigmoid score, the probability of FAKE; each model rescales its input itself.
Models are written against ``tf_keras``: Keras 3 fails under MultiWorkerMirroredStrategy
(DESIGN.md). A saved model is ``model.json`` (name and options) plus ``weights.h5``, so loading
never unpickles anything.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tf_keras as keras

from schemas.records import CROP_SIZE

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MODEL_JSON = "model.json"
WEIGHTS_H5 = "weights.h5"
TRAINING_STATE = "training_state"  # TF checkpoint of weights and optimizer slots
TRAINER_JSON = "trainer.json"  # where training stands: epoch, history
SELECTED = "selected"  # the chosen epoch's model.json and weights.h5, and its epoch.json

ModelBuilder = Callable[..., keras.Model]
MODELS: dict[str, ModelBuilder] = {}


def register(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    def add(builder: ModelBuilder) -> ModelBuilder:
        MODELS[name] = builder
        return builder
    return add


def build_model(name: str, **options: Any) -> keras.Model:
    """A fresh, uncompiled model from the registry."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; one of {sorted(MODELS)}")
    return MODELS[name](**options)


@register("paper_cnn")
def paper_cnn(*, dropout: float = 0.25, conv_dropout: float | None = None,
              input_size: int = CROP_SIZE) -> keras.Model:
    """The CNN of Che & Ingham's Fig. 2: 562,901 parameters on a 256x256x3 input.

    ``dropout`` is the rate after the dense layers; ``conv_dropout`` the rate after the
    pooling layers (defaults to ``dropout``). The paper gives neither rate.
    """
    conv_dropout = dropout if conv_dropout is None else conv_dropout
    L = keras.layers
    # 'same' padding is what reproduces the figure's 86 -> 43 -> 21 feature-map sides.
    return keras.Sequential([
        keras.Input((input_size, input_size, 3)),
        L.Conv2D(75, 4, strides=3, padding="same", activation="relu", name="conv2d_1"),
        L.Conv2D(50, 3, strides=2, padding="same", activation="relu", name="conv2d_2"),
        L.MaxPooling2D(2, name="max_pooling2d_1"),
        L.Dropout(conv_dropout, name="dropout_1"),
        L.Conv2D(25, 2, padding="same", activation="relu", name="conv2d_3"),
        L.MaxPooling2D(2, name="max_pooling2d_2"),
        L.Dropout(conv_dropout, name="dropout_2"),
        L.Flatten(name="flatten_1"),
        L.Dense(200, activation="relu", name="dense_1"),
        L.Dropout(dropout, name="dropout_3"),
        L.Dense(100, activation="relu", name="dense_2"),
        L.Dropout(dropout, name="dropout_4"),
        L.Dense(1, activation="sigmoid", name="dense_3"),
    ], name="paper_cnn")


# ---- ImageNet backbones ------------------------------------------------------------------------
# Each entry: the tf_keras.applications constructor, the file name keras caches its no-top
# ImageNet weights under, and the affine map from our [0, 1] input to what the backbone expects.
_BACKBONES = {
    # EfficientNets normalize internally from [0, 255].
    "efficientnet_b0": ("EfficientNetB0", "efficientnetb0_notop.h5", (255.0, 0.0)),
    "efficientnet_b4": ("EfficientNetB4", "efficientnetb4_notop.h5", (255.0, 0.0)),
    # Xception expects [-1, 1].
    "xception": ("Xception", "xception_weights_tf_dim_ordering_tf_kernels_notop.h5", (2.0, -1.0)),
}
DOWNLOAD_TIMEOUT_S = 20.0


def keras_cache_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def imagenet_weights(name: str) -> Path | None:
    """A backbone model's no-top ImageNet weights file: from keras' cache, else downloaded;
    None if neither (the model then starts from random weights)."""
    constructor, filename, _ = _BACKBONES[name]
    cached = keras_cache_dir() / filename
    if cached.is_file():
        return cached
    url = "https://storage.googleapis.com/"
    url += ("keras-applications/" if constructor.startswith("EfficientNet")
            else "tensorflow/keras-applications/xception/")
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # an offline cluster should fail fast, not hang
    try:
        return Path(keras.utils.get_file(filename, url + filename, cache_subdir="models"))
    except Exception as exc:  # any network or file failure means "not available"
        log.debug("ImageNet weights download failed: %s", exc)
        return None
    finally:
        socket.setdefaulttimeout(previous)


def _backbone_classifier(name: str, *, weights: str | None = "imagenet", dropout: float = 0.25,
                         freeze_backbone: bool = False, input_size: int = CROP_SIZE
                         ) -> keras.Model:
    constructor, filename, (scale, offset) = _BACKBONES[name]
    if weights not in ("imagenet", None):
        raise ValueError(f"{name}: weights must be 'imagenet' or None, got {weights!r}")
    inputs = keras.Input((input_size, input_size, 3))
    x = keras.layers.Rescaling(scale, offset, name="to_backbone_range")(inputs)
    backbone = getattr(keras.applications, constructor)(
        include_top=False, weights=None, input_shape=(input_size, input_size, 3), pooling="avg")
    if weights == "imagenet":
        path = imagenet_weights(name)
        if path is None:
            log.warning("%s: ImageNet weights are neither cached in %s nor downloadable; "
                        "training from random initialization", name, keras_cache_dir())
        else:
            backbone.load_weights(str(path))
    backbone.trainable = not freeze_backbone
    x = backbone(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="p_fake")(x)
    return keras.Model(inputs, outputs, name=name)


for _name in _BACKBONES:
    register(_name)(lambda _n=_name, **options: _backbone_classifier(_n, **options))


# ---- saving and loading ------------------------------------------------------------------------

def save_model(model: keras.Model, directory: str, *, name: str, options: dict) -> None:
    """Write ``model.json`` and ``weights.h5`` into directory (created if missing)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; one of {sorted(MODELS)}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    spec = {"name": name, "options": dict(options),
            "input_shape": [int(d) for d in model.input_shape[1:]],
            "format_version": FORMAT_VERSION}
    model.save_weights(str(out / WEIGHTS_H5), save_format="h5")
    (out / MODEL_JSON).write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")


class UnsafeModel(ValueError):
    """A saved model in a form dfd does not load: anything but model.json naming a registered
    model with plain options, and weights.h5 holding weights only."""


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_SPEC_KEYS = {"name", "options", "input_shape", "format_version"}
# Files other tools save models as; every one can run code when loaded (pickle outright; a
# Keras config or SavedModel through Lambda layers and custom objects). Named in errors only.
_OTHER_FORMATS = {".pkl": "a pickle", ".pickle": "a pickle", ".joblib": "a joblib pickle",
                  ".pt": "a PyTorch pickle", ".pth": "a PyTorch pickle",
                  ".keras": "a Keras archive", ".pb": "a TensorFlow SavedModel",
                  ".hdf5": "an HDF5 model", ".npy": "a NumPy file"}


def _other_formats(directory: Path) -> str:
    if not directory.is_dir():
        return ""
    found = sorted(f"{p.name} ({_OTHER_FORMATS[p.suffix.lower()]})" for p in directory.iterdir()
                   if p.suffix.lower() in _OTHER_FORMATS)
    if not found:
        return ""
    return (f"; it holds {', '.join(found)}, which dfd never loads: a model is rebuilt from "
            f"{MODEL_JSON} and {WEIGHTS_H5} only, so loading one cannot run code")


def _builder_options(name: str) -> set[str] | None:
    """The keyword options a registered model takes (None: it takes any)."""
    import inspect

    builder = functools.partial(_backbone_classifier, name) if name in _BACKBONES \
        else MODELS[name]
    params = inspect.signature(builder).parameters.values()
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def _check_spec(spec, path: Path) -> dict:
    if not isinstance(spec, dict):
        raise UnsafeModel(f"{path}: expected a JSON object, got {type(spec).__name__}")
    if "class_name" in spec or "config" in spec or "module" in spec:
        raise UnsafeModel(f"{path} is a Keras model config; its layers (a Lambda's code, "
                          f"custom objects) are never deserialized: dfd rebuilds a registered "
                          f"model by name")
    if spec.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {spec.get('format_version')!r}, "
                         f"this code reads {FORMAT_VERSION}")
    if set(spec) != _SPEC_KEYS:
        raise UnsafeModel(f"{path}: expected exactly the keys {sorted(_SPEC_KEYS)}, got "
                          f"{sorted(map(str, spec))}")
    name, options, shape = spec["name"], spec["options"], spec["input_shape"]
    if not isinstance(name, str) or name not in MODELS:
        raise UnsafeModel(f"{path}: unknown model {name!r}; one of {sorted(MODELS)}")
    if not isinstance(options, dict):
        raise UnsafeModel(f"{path}: options must be an object")
    allowed = _builder_options(name)
    for key, value in options.items():
        if allowed is not None and key not in allowed:
            raise UnsafeModel(f"{path}: {name} takes no option {key!r}; it takes "
                              f"{sorted(allowed)}")
        if value is not None and not isinstance(value, (bool, int, float, str)):
            raise UnsafeModel(f"{path}: option {key!r} must be a number, string, boolean or "
                              f"null, got {type(value).__name__}")
    if not (isinstance(shape, list) and len(shape) == 3
            and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
        raise UnsafeModel(f"{path}: input_shape must be three positive integers, got {shape!r}")
    return spec


def read_model_spec(directory: str) -> dict:
    """``model.json``, checked: a registered model's name, options it takes (plain values),
    its input shape. Anything else is refused before a layer is built."""
    path = Path(directory) / MODEL_JSON
    if not path.is_file():
        raise FileNotFoundError(f"no {MODEL_JSON} in {directory}: not a saved dfd model"
                                + _other_formats(Path(directory)))
    try:
        spec = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UnsafeModel(f"{path} is not valid JSON ({exc})") from None
    return _check_spec(spec, path)


def check_weights_file(path: Path) -> None:
    """weights.h5 must be an HDF5 file of layer weights, as ``save_model`` writes it.

    Refused: anything else under that name (a pickle, a zip, a folder), and a whole saved
    Keras model, whose ``model_config`` could carry a Lambda layer's code."""
    import h5py

    if not path.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_H5} in {path.parent}: not a saved dfd model"
                                + _other_formats(path.parent))
    with open(path, "rb") as f:
        head = f.read(len(HDF5_SIGNATURE))
    if head != HDF5_SIGNATURE:
        raise UnsafeModel(f"{path} is not an HDF5 file (it starts {head[:8]!r}); dfd loads "
                          f"weights from HDF5 only, never from a pickle or an archive")
    try:
        with h5py.File(path, "r") as h5:
            attrs = set(h5.attrs)
    except OSError as exc:
        raise UnsafeModel(f"{path} is not a readable HDF5 file ({exc})") from None
    if "model_config" in attrs:
        raise UnsafeModel(f"{path} is a whole saved Keras model; dfd loads weights only "
                          f"(save them with dfd.models.save_model)")
    if "layer_names" not in attrs:
        raise UnsafeModel(f"{path} holds no Keras layer weights (no layer_names attribute)")


def load_model(directory: str) -> keras.Model:
    """Rebuild the model named in ``model.json`` and load its weights.

    Nothing in the directory is deserialized as code: the architecture comes from this
    package's registry, the weights are arrays read from HDF5. Raises UnsafeModel (a
    ValueError) for any other form."""
    spec = read_model_spec(directory)
    weights = Path(directory) / WEIGHTS_H5
    check_weights_file(weights)
    options = dict(spec["options"])
    if spec["name"] in _BACKBONES:
        options["weights"] = None  # the saved weights replace ImageNet's; do not fetch them
    model = build_model(spec["name"], **options)
    if list(model.input_shape[1:]) != spec["input_shape"]:
        raise ValueError(f"{directory}: model input {list(model.input_shape[1:])} does not match "
                         f"the saved input_shape {spec['input_shape']}")
    model.load_weights(str(weights))
    return model


# ---- training ----------------------------------------------------------------------------------

def compile_classifier(model: keras.Model, *, learning_rate: float) -> None:
    """Adam on binary cross-entropy, with the paper's metrics (Figs. 3 and 4).

    Metrics are weighted so that the weight-0 rows padding a worker's validation share do not
    count; ``bce`` is the weighted loss (Keras' own ``loss`` divides by the padded batch).
    """
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.BinaryCrossentropy(),
        weighted_metrics=[keras.metrics.BinaryCrossentropy(name="bce"),
                          keras.metrics.BinaryAccuracy(name="accuracy"),
                          keras.metrics.Precision(name="precision"),
                          keras.metrics.Recall(name="recall"),
                          keras.metrics.AUC(name="auc")])


def save_training_state(model: keras.Model, directory: str, *, name: str, options: dict,
                        trainer: dict) -> None:
    """A resumable checkpoint: the saved model, its optimizer state, and ``trainer`` (JSON).

    Under MultiWorkerMirroredStrategy every worker must call this (reading some variables is a
    collective op); only one worker's directory needs keeping.
    """
    import tensorflow as tf

    save_model(model, directory, name=name, options=options)
    state = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    state.write(str(Path(directory) / TRAINING_STATE / "state"))
    (Path(directory) / TRAINER_JSON).write_text(json.dumps(trainer, indent=1) + "\n")


def restore_training_state(model: keras.Model, directory: str) -> dict:
    """Load weights and optimizer state saved by ``save_training_state``; return ``trainer``."""
    import tensorflow as tf

    # Slots must exist before the read, or Adam's moments would be dropped silently.
    model.optimizer.build(model.trainable_variables)
    state = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    state.read(str(Path(directory) / TRAINING_STATE / "state")).assert_existing_objects_matched()
    return json.loads((Path(directory) / TRAINER_JSON).read_text())
