"""dfd.crop: the square crop around a face, padding at frame borders, and the encoded bytes."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from dfd.crop import crop_face, crop_window, encode_crop
from dfd.images import decode_crops
from tests.video_fixtures import face_photo


def gradient_frame(h: int = 360, w: int = 640) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x % 256, y % 256, (x + y) % 256], axis=-1).astype(np.uint8)


def test_window_is_a_square_centred_on_the_box_with_margin_on_each_side():
    assert crop_window([100, 50, 200, 250], margin=0.0) == (50, 50, 200)
    assert crop_window([100, 50, 200, 250], margin=0.25) == (0, 0, 300)
    x, y, side = crop_window([10.4, 20.6, 50.4, 60.6], margin=0.3)
    # Integer pixels: the square's centre is the box centre (30.4, 40.6) rounded.
    assert side == 64 and (x + side / 2, y + side / 2) == (30.0, 41.0)


def test_crop_inside_the_frame_is_the_frame_region_resized():
    frame = gradient_frame()
    crop = crop_face(frame, [200, 100, 300, 200], margin=0.0, size=100)
    assert np.array_equal(crop, frame[100:200, 200:300])
    big = crop_face(frame, [200, 100, 300, 200], margin=0.5)
    assert big.shape == (256, 256, 3) and big.dtype == np.uint8
    expected = cv2.resize(frame[50:250, 150:350], (256, 256), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(big, expected)


def test_crop_leaving_the_frame_is_padded_black_and_keeps_the_face_where_it_was():
    frame = np.full((100, 100, 3), 200, np.uint8)
    # Box in the top-left corner: the square reaches 20 px past the left and top edges.
    crop = crop_face(frame, [0, 0, 40, 40], margin=0.5, size=80)
    assert crop.shape == (80, 80, 3)
    assert (crop[:20] == 0).all() and (crop[:, :20] == 0).all()
    assert (crop[20:, 20:] == 200).all()
    # A box entirely outside the frame gives an all-black crop rather than an error.
    assert (crop_face(frame, [300, 300, 340, 340], margin=0.3, size=32) == 0).all()


def test_bad_boxes_and_margins_are_refused():
    frame = gradient_frame()
    for box in ([10, 10, 10, 20], [10, 10, 5, 20], [0, 0, float("nan"), 10]):
        with pytest.raises(ValueError, match="box"):
            crop_face(frame, box, margin=0.3)
    with pytest.raises(ValueError, match="margin"):
        crop_face(frame, [0, 0, 10, 10], margin=-0.1)


def test_jpeg_q95_crop_decodes_close_to_the_crop_and_png_decodes_exactly():
    crop = crop_face(face_photo("astronaut"), [177, 60, 270, 181], margin=0.3)
    jpeg = encode_crop(crop)
    png = encode_crop(crop, "png")
    assert jpeg[:3] == b"\xff\xd8\xff" and png[:8] == b"\x89PNG\r\n\x1a\n"
    # The same decoder the models use; RGB order survives the round trip.
    from_jpeg, from_png = (decode_crops([b])[0] * 255 for b in (jpeg, png))
    assert np.allclose(from_png, crop, atol=1e-3)
    assert np.abs(from_jpeg - crop).mean() < 3.0
    assert 5_000 < len(jpeg) < len(png)


def test_jpeg_quality_trades_bytes_for_fidelity_and_is_deterministic():
    crop = crop_face(face_photo("grace_hopper"), [174, 112, 352, 329], margin=0.3)
    low, high = encode_crop(crop, quality=50), encode_crop(crop, quality=95)
    assert len(low) < len(high)
    assert encode_crop(crop, quality=95) == high
    err = [np.abs(decode_crops([b])[0] * 255 - crop).mean() for b in (low, high)]
    assert err[1] < err[0]


def test_unknown_format_or_quality_is_refused():
    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="format"):
        encode_crop(img, "webp")
    with pytest.raises(ValueError, match="quality"):
        encode_crop(img, quality=0)
