"""Encoded face crops to the array every model takes: float32 RGB in [0, 1], NHWC, 256x256.

Two decoders give the same array: ``decode_crops`` (OpenCV, for batch inference and tools) and
``decode_crop_tensor`` (TensorFlow ops, inside a tf.data graph for training).
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from schemas.records import CROP_SIZE

PIXEL_MAX = 255.0  # inputs are pixel / 255, the paper's ImageDataGenerator(rescale=1/255)


def decode_crops(images: Sequence[bytes], *, size: int = CROP_SIZE) -> np.ndarray:
    """Decode JPEG/PNG crops into a (N, size, size, 3) float32 array in [0, 1].

    Crops of another size are resized (area interpolation), as Keras' directory iterator did for
    the paper's 252x252 crops. Raises ValueError naming the first crop that does not decode.
    """
    out = np.empty((len(images), size, size, 3), np.float32)
    for i, encoded in enumerate(images):
        bgr = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"crop {i} is not a decodable JPEG or PNG image "
                             f"({len(encoded)} bytes)")
        if bgr.shape[:2] != (size, size):
            bgr = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        # A division (not a multiply by 1/255) rounds the same in numpy and TensorFlow.
        np.divide(rgb, np.float32(PIXEL_MAX), out=out[i], dtype=np.float32)
    return out


def decode_crop_tensor(encoded, *, size: int = CROP_SIZE):
    """The TensorFlow twin of ``decode_crops`` for one crop (a scalar string tensor)."""
    import tensorflow as tf

    # INTEGER_ACCURATE is the IDCT OpenCV's libjpeg uses; TF's default differs by up to 19 levels.
    image = tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_png(encoded, channels=3))
    image = tf.ensure_shape(image, [None, None, 3])
    shape = tf.shape(image)

    def resized():
        area = tf.image.resize(tf.cast(image, tf.float32), (size, size), method="area")
        return tf.cast(tf.round(area), tf.uint8)  # cv2.resize rounds to uint8 too

    image = tf.cond(tf.logical_and(shape[0] == size, shape[1] == size), lambda: image, resized)
    image = tf.reshape(image, (size, size, 3))
    return tf.cast(image, tf.float32) / PIXEL_MAX
