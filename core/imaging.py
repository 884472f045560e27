"""Turn whatever a camera or a folder hands us into one BGR ``uint8`` image, or a named error.

Accepted: any format OpenCV decodes (JPEG, PNG, BMP, TIFF, WebP...), any size from 1x1 up to
:data:`MAX_PIXELS`, grayscale, BGRA, 16-bit and float arrays. Everything else raises a subclass
of :class:`InvalidImageError` whose message says what is wrong; callers record it and route the
phone to a human, they never crash and never pass the phone.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

#: Largest image accepted, in pixels (100 MP): more is a misconfigured camera, not a phone.
MAX_PIXELS = 100_000_000


class InvalidImageError(ValueError):
    """Base of every error about an input image that cannot be inspected."""


class EmptyImageError(InvalidImageError):
    """The file or buffer holds no bytes, or the array has no pixels."""


class UndecodableImageError(InvalidImageError):
    """The bytes are not an image OpenCV can decode (wrong format, truncated, text...)."""


class ImageTooLargeError(InvalidImageError):
    """The image has more than :data:`MAX_PIXELS` pixels."""


class UnsupportedImageError(InvalidImageError):
    """An array of a shape or dtype that is not an image (e.g. 5 channels, complex, NaN)."""


def _header_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG or JPEG header, read without decoding the pixels."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            marker, length = data[i + 1], int.from_bytes(data[i + 2 : i + 4], "big")
            if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(data[i + 5 : i + 7], "big")
            i += 2 + length
    return None


def decode_image_bytes(data: bytes, *, source: str = "image") -> np.ndarray:
    """Decode encoded image bytes to BGR ``uint8`` of shape ``(H, W, 3)``.

    Args:
        data: The encoded file content.
        source: A name for messages (usually the file path).

    Raises:
        EmptyImageError, UndecodableImageError, ImageTooLargeError, UnsupportedImageError.
    """
    if not data:
        raise EmptyImageError(f"{source}: the file is empty (0 bytes)")
    size = _header_size(data)
    if size and size[0] * size[1] > MAX_PIXELS:
        raise ImageTooLargeError(f"{source}: {size[0]}x{size[1]} pixels is more than the {MAX_PIXELS:,} accepted")
    buffer = np.frombuffer(data, np.uint8)
    try:
        decoded = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except cv2.error as error:  # OpenCV refuses e.g. images over its own pixel limit
        raise UndecodableImageError(f"{source}: OpenCV could not decode it ({str(error).strip().splitlines()[-1]})") from None
    if decoded is None:
        kind = "a truncated or corrupt image" if data[:2] == b"\xff\xd8" or data[:4] == b"\x89PNG" else "not an image file"
        raise UndecodableImageError(f"{source}: could not decode {len(data):,} bytes; {kind}")
    return to_bgr8(decoded, source=source)


def read_image(path: Path) -> np.ndarray:
    """Read and decode an image file to BGR ``uint8``; named errors as :func:`decode_image_bytes`."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise UndecodableImageError(f"{path}: the file does not exist") from None
    except IsADirectoryError:
        raise UndecodableImageError(f"{path}: is a folder, not an image file") from None
    return decode_image_bytes(data, source=str(path))


def to_bgr8(image: np.ndarray, *, source: str = "image") -> np.ndarray:
    """Normalise a decoded array to contiguous BGR ``uint8`` of shape ``(H, W, 3)``.

    Grayscale becomes three equal channels, BGRA drops alpha after compositing on white,
    16-bit is scaled down by 257, float images in ``[0, 1]`` (or ``[0, 255]``) are scaled up.
    """
    if not isinstance(image, np.ndarray):
        raise UnsupportedImageError(f"{source}: expected a numpy array, got {type(image).__name__}")
    if image.size == 0:
        raise EmptyImageError(f"{source}: the image has no pixels (shape {image.shape})")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise UnsupportedImageError(f"{source}: shape {image.shape} is not an image (need HxW, HxWx3 or HxWx4)")
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise ImageTooLargeError(f"{source}: {image.shape[1]}x{image.shape[0]} pixels is more than the {MAX_PIXELS:,} accepted")
    if image.dtype == np.uint8:
        pass
    elif image.dtype == np.uint16:
        image = (image / 257.0).round().astype(np.uint8)
    elif image.dtype.kind == "f":
        if not np.isfinite(image).all():
            raise UnsupportedImageError(f"{source}: float image holds NaN or infinite values")
        scale = 255.0 if float(image.max()) <= 1.0 else 1.0
        image = np.clip(image * scale, 0, 255).round().astype(np.uint8)
    elif image.dtype.kind in "iub":
        image = np.clip(image, 0, 255).astype(np.uint8)
    else:
        raise UnsupportedImageError(f"{source}: dtype {image.dtype} is not an image type")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        alpha = image[..., 3:4].astype(np.float32) / 255.0
        image = (image[..., :3].astype(np.float32) * alpha + 255.0 * (1 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(image)


_SIGNATURES = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)


def image_format(data: bytes) -> str | None:
    """The image format the bytes announce by their signature (``jpeg``, ``png``, ``bmp``, ``tiff``,
    ``webp``), or None: a request of text or a PDF is refused, while a truncated JPEG is an image
    that fails to decode (stored, and judged by a person)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((name for signature, name in _SIGNATURES if data.startswith(signature)), None)
