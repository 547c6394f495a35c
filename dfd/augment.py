"""Training-time augmentations of the paper's experiments, chosen by name.

A spec is ``none`` or names joined by ``+`` (``hflip+zoom``). The transforms mirror the Keras
``ImageDataGenerator`` arguments the paper used (``horizontal_flip``, ``rotation_range``,
``zoom_range=0.1``), including its ``nearest`` fill; the paper found rotation and zoom hurt, and
the flip neutral.
"""
from __future__ import annotations

from collections.abc import Callable

NONE = "none"
ROTATION_DEGREES = 20.0  # the paper gives no range; 20 is ImageDataGenerator's usual example
ZOOM_RANGE = 0.1  # the paper's zoom: each axis scaled independently by 1 +- 0.1
AUGMENTATIONS = ("hflip", "rotation", "zoom")


def parse_augment(spec: str | None) -> tuple[str, ...]:
    """'hflip+zoom' -> ('hflip', 'zoom'); 'none', '' or None -> (). Order is canonical."""
    if not spec or spec.strip() == NONE:
        return ()
    names = [n.strip() for n in spec.split("+")]
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"unknown augmentation {unknown[0]!r} in {spec!r}; use {NONE!r} or "
                         f"'+'-joined names from {list(AUGMENTATIONS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"augmentation {spec!r} names one transform twice")
    return tuple(n for n in AUGMENTATIONS if n in names)


def build_augmenter(spec: str | None, *, seed: int | None = None) -> Callable | None:
    """A function from an image batch (float32 NHWC) to an augmented batch, or None for 'none'."""
    names = parse_augment(spec)
    if not names:
        return None
    import tf_keras as keras

    L = keras.layers
    layers = []
    if "hflip" in names:
        layers.append(L.RandomFlip("horizontal", seed=seed))
    if "rotation" in names:
        layers.append(L.RandomRotation(ROTATION_DEGREES / 360.0, fill_mode="nearest", seed=seed))
    if "zoom" in names:
        layers.append(L.RandomZoom(ZOOM_RANGE, ZOOM_RANGE, fill_mode="nearest", seed=seed))
    pipeline = keras.Sequential(layers, name="augment_" + "_".join(names))

    def augment(images):
        return pipeline(images, training=True)

    return augment
