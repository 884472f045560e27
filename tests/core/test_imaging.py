"""Every kind of input image: accepted ones become BGR uint8, bad ones raise a named error."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from core.imaging import (
    MAX_PIXELS,
    EmptyImageError,
    ImageTooLargeError,
    InvalidImageError,
    UndecodableImageError,
    UnsupportedImageError,
    decode_image_bytes,
    read_image,
    to_bgr8,
)


def _encoded(image: np.ndarray, ext: str = ".png") -> bytes:
    ok, buffer = cv2.imencode(ext, image)
    assert ok
    return buffer.tobytes()


COLOUR = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("data", "shape"),
    [
        (_encoded(COLOUR, ".jpg"), (60, 80, 3)),  # ordinary JPEG
        (_encoded(COLOUR, ".png"), (60, 80, 3)),  # ordinary PNG
        (_encoded(COLOUR[..., 0]), (60, 80, 3)),  # grayscale PNG becomes three channels
        (_encoded(np.dstack([COLOUR, np.full((60, 80), 128, np.uint8)])), (60, 80, 3)),  # BGRA PNG: alpha composited
        (_encoded(COLOUR.astype(np.uint16) * 257), (60, 80, 3)),  # 16-bit PNG scaled down
        (_encoded(COLOUR[:1, :1]), (1, 1, 3)),  # a single pixel is still an image
        (_encoded(np.zeros((3000, 4000, 3), np.uint8), ".jpg"), (3000, 4000, 3)),  # 12 MP camera frame
        (_encoded(COLOUR, ".bmp"), (60, 80, 3)),  # BMP
        (_encoded(COLOUR, ".tiff"), (60, 80, 3)),  # TIFF
    ],
)
def test_decodable_images_are_accepted(data, shape):
    image = decode_image_bytes(data)
    assert image.shape == shape and image.dtype == np.uint8 and image.flags["C_CONTIGUOUS"]


def test_sixteen_bit_values_are_scaled_not_clipped():
    image = decode_image_bytes(_encoded(np.full((4, 4), 65535, np.uint16)))
    assert image.min() == 255


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"", EmptyImageError, "empty"),  # zero-byte file
        (b"hello, this is a text file\n", UndecodableImageError, "not an image"),  # text
        (_encoded(COLOUR, ".jpg")[:200], UndecodableImageError, "truncated"),  # JPEG cut short
        (_encoded(COLOUR, ".png")[:40], UndecodableImageError, "truncated"),  # PNG cut short
        (b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + (20000).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00", ImageTooLargeError, "20000x20000"),
        (bytes(range(256)) * 10, UndecodableImageError, "not an image"),  # random binary
    ],
)
def test_bad_bytes_raise_a_named_error_with_a_clear_message(data, error, message):
    with pytest.raises(error, match=message):
        decode_image_bytes(data, source="phone.jpg")


def test_a_real_huge_image_is_refused_before_it_is_decoded():
    huge = _encoded(np.zeros((10_001, 10_001), np.uint8))
    assert MAX_PIXELS < 10_001 * 10_001
    with pytest.raises(ImageTooLargeError):
        decode_image_bytes(huge)


@pytest.mark.parametrize(
    ("array", "error"),
    [
        (np.zeros((0, 5, 3), np.uint8), EmptyImageError),  # no pixels
        (np.zeros((4, 4, 5), np.uint8), UnsupportedImageError),  # five channels
        (np.zeros((2, 2, 2, 2), np.uint8), UnsupportedImageError),  # four dimensions
        (np.full((4, 4), np.nan, np.float32), UnsupportedImageError),  # NaN
        (np.zeros((4, 4), np.complex64), UnsupportedImageError),  # complex numbers
        ("not an array", UnsupportedImageError),  # wrong type altogether
    ],
)
def test_bad_arrays_raise_a_named_error(array, error):
    with pytest.raises(error):
        to_bgr8(array)


def test_float_images_are_scaled():
    assert to_bgr8(np.ones((2, 2), np.float32)).max() == 255


def test_every_error_is_an_invalid_image_error_and_a_value_error():
    for cls in (EmptyImageError, UndecodableImageError, ImageTooLargeError, UnsupportedImageError):
        assert issubclass(cls, InvalidImageError) and issubclass(cls, ValueError)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(UndecodableImageError, match="does not exist"):
        read_image(tmp_path / "nope.jpg")
    with pytest.raises(UndecodableImageError, match="folder"):
        read_image(tmp_path)
