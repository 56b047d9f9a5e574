"""Decoding image files into frames, and normalising any frame to the device's pixel format.

Shared by the device and ``model_build/`` so that training sees pixels exactly as the device does.

A *frame* here is a ``numpy.uint8`` array, either ``H x W`` (grey) or ``H x W x 3`` (RGB).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from device.errors import ImageDecodeError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv"})
MAX_PIXELS = 50_000_000  # refuse larger images before decoding them (decompression bombs)
# ... and images whose decoded pixels alone would take more than this (rows x columns x bytes per pixel, per
# frame, read from the header before decoding). The device's goal is 250 MB RSS in all, and cropping and
# preprocessing need a few times a frame's size again. 24 MiB holds a 4K RGB frame (23.7 MiB) or a 16-bit
# 3500 x 3500 grey one; an ultrasound frame is a few MB.
MAX_DECODED_BYTES = 24 * 2**20

# Bytes per pixel of the array PIL decodes each mode into (what the header promises before img.load()).
_MODE_BYTES = {
    "1": 1,
    "L": 1,
    "P": 1,
    "LA": 2,
    "La": 2,
    "PA": 2,
    "I;16": 2,
    "I;16B": 2,
    "I;16L": 2,
    "I;16N": 2,
    "RGB": 3,
    "YCbCr": 3,
    "LAB": 3,
    "HSV": 3,
    "RGBA": 4,
    "RGBa": 4,
    "RGBX": 4,
    "CMYK": 4,
    "I": 4,
    "F": 4,
}


def check_decoded_size(what: str, rows: int, columns: int, bytes_per_pixel: int, frames: int = 1, limit: int = MAX_DECODED_BYTES) -> None:
    """Refuse, before decoding, an image whose decoded pixels would take more than ``limit`` bytes."""
    needed = rows * columns * bytes_per_pixel * max(1, frames)
    if needed > limit:
        per = f" x {frames} frames" if frames > 1 else ""
        raise ImageDecodeError(
            f"{what}: {columns}x{rows} pixels x {bytes_per_pixel} bytes{per} would decode to {needed / 2**20:.0f} MiB, "
            f"more than the limit of {limit / 2**20:.0f} MiB",
            "too_large",
        )


def decode_image_file(path: str | os.PathLike[str], max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode an image file (PNG/JPEG/BMP/TIFF...) into a frame, honouring EXIF orientation.

    Raises :class:`ImageDecodeError` with a code and a message naming the file for every failure.
    """
    file = Path(path)
    try:
        size = file.stat().st_size
    except FileNotFoundError as exc:
        raise ImageDecodeError(f"{file}: file not found", "not_found") from exc
    except OSError as exc:
        raise ImageDecodeError(f"{file}: cannot access file ({exc.strerror})", "unreadable") from exc
    if size == 0:
        raise ImageDecodeError(f"{file}: file is empty (0 bytes)", "empty_file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageDecodeError(
                        f"{file}: image is {width}x{height} pixels, more than the limit of {max_pixels} (possible decompression bomb)",
                        "too_large",
                    )
                check_decoded_size(str(file), height, width, _MODE_BYTES.get(img.mode, 4))
                img.load()
                ImageOps.exif_transpose(img, in_place=True)  # no second copy of the pixels
                return pil_to_frame(img)
    except ImageDecodeError:
        raise
    except PermissionError as exc:
        raise ImageDecodeError(f"{file}: permission denied", "unreadable") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(f"{file}: not a recognised image format", "not_an_image") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"{file}: image too large (possible decompression bomb)", "too_large") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"{file}: image is truncated or corrupt ({exc})", "corrupt_image") from exc


def pil_to_frame(img: Image.Image) -> np.ndarray:
    """Convert any PIL image (1/L/LA/P/RGB/RGBA/CMYK/I;16/I/F) to a grey or RGB uint8 frame."""
    mode = img.mode
    if mode in _MODES_16_BIT:
        return _pil16_to_frame(img)
    if mode in ("I", "F"):
        return normalise_frame(np.asarray(img))
    if mode in ("L", "RGB"):  # already the frame's format: copied out a strip at a time, no converted copy
        return _pil8_to_frame(img)
    if mode in ("1", "LA"):
        return np.asarray(img.convert("L"), dtype=np.uint8)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


# Rows of an image converted at a time: np.asarray on a whole PIL image makes two more copies of its pixels (its
# bytes, then the array), and a 16-bit one is a third; on a frame near MAX_DECODED_BYTES that took the device
# past its memory goal. The same for a frame's luminance (to_grey: int32 sums).
_ROWS_PER_STRIP = 256
_MODES_16_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def _pil16_to_frame(img: Image.Image) -> np.ndarray:
    """A 16-bit grey PIL image as a uint8 grey frame, scaled by its bit depth as :func:`normalise_frame` scales
    it (the same values), read a strip of rows at a time: once for its range, once into the one output array."""
    width, height = img.size
    if width * height == 0:
        raise ImageDecodeError("frame has no pixels", "bad_shape")
    tops = range(0, height, _ROWS_PER_STRIP)
    ranges = [(int(strip.min()), int(strip.max())) for strip in (_rows(img, top) for top in tops)]
    table, _ = _scale_table(min(lo for lo, _ in ranges), max(hi for _, hi in ranges))  # unsigned: no shift
    frame = np.empty((height, width), dtype=np.uint8)
    for top in tops:
        frame[top : top + _ROWS_PER_STRIP] = table[_rows(img, top)]
    return frame


def _pil8_to_frame(img: Image.Image) -> np.ndarray:
    """An L or RGB PIL image as a uint8 frame, its pixels as they are, copied out a strip of rows at a time."""
    width, height = img.size
    frame = np.empty((height, width, 3) if img.mode == "RGB" else (height, width), dtype=np.uint8)
    for top in range(0, height, _ROWS_PER_STRIP):
        frame[top : top + _ROWS_PER_STRIP] = _rows(img, top)
    return frame


def _rows(img: Image.Image, top: int) -> np.ndarray:
    """Rows ``top`` to ``top + _ROWS_PER_STRIP`` of a PIL image as an array (PIL's getextrema refuses I;16B)."""
    width, height = img.size
    return np.asarray(img.crop((0, top, width, min(height, top + _ROWS_PER_STRIP))))


def normalise_frame(array: np.ndarray) -> np.ndarray:
    """Bring any array to a uint8 grey (H x W) or RGB (H x W x 3) frame.

    * 16-bit / integer data is scaled by its bit depth (a 12-bit image stored in 16 bits is
      scaled by 4095, not 65535), float data by its range;
    * 1 channel -> grey, 2 channels (grey + alpha) -> grey, 3 -> RGB, 4 (RGBA) -> RGB;
    * an RGB frame whose channels are equal is returned as grey.
    """
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 2:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ImageDecodeError(f"unsupported frame shape {arr.shape}", "bad_shape")
    if arr.size == 0:
        raise ImageDecodeError("frame has no pixels", "bad_shape")
    arr = _to_uint8(arr)
    if arr.ndim == 3 and _is_grey_rgb(arr):
        arr = arr[:, :, 0]
    return np.ascontiguousarray(arr)


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        finite = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(finite.min()), float(finite.max())
        if lo >= 0.0 and hi <= 1.0:
            return np.clip(finite * 255.0 + 0.5, 0, 255).astype(np.uint8)
        span = hi - lo or 1.0
        return np.clip((finite - lo) / span * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if arr.dtype.kind in "ui" and arr.dtype.itemsize <= 2:
        return _small_int_to_uint8(arr)
    values = arr.astype(np.int64)
    lo = int(values.min())
    if lo < 0:  # signed data (e.g. some DICOM): shift to start at zero
        values = values - lo
    hi = int(values.max())
    full_scale = (1 << max(8, hi.bit_length())) - 1
    return ((values * 255 + full_scale // 2) // full_scale).astype(np.uint8)


def _small_int_to_uint8(arr: np.ndarray) -> np.ndarray:
    """The integer branch of :func:`_to_uint8` for 8/16-bit data, through a lookup table: the same values,
    without the int64 copies (a 16-bit frame no longer needs 8 + 8 bytes per pixel of temporaries)."""
    table, shift = _scale_table(int(arr.min()), int(arr.max()))
    if shift:
        return table[arr.astype(np.int32) + shift]
    mapped: np.ndarray = table[arr]
    return mapped


def _scale_table(lo: int, hi: int) -> tuple[np.ndarray, int]:
    """The uint8 value of every integer from ``lo`` to ``hi`` (shifted to start at zero when ``lo`` is negative:
    signed data, e.g. some DICOM), scaled by the bit depth ``hi`` needs; and the shift."""
    shift = -lo if lo < 0 else 0
    top = hi + shift
    full_scale = (1 << max(8, top.bit_length())) - 1
    table = ((np.arange(top + 1, dtype=np.int64) * 255 + full_scale // 2) // full_scale).astype(np.uint8)
    return table, shift


def _is_grey_rgb(arr: np.ndarray) -> bool:
    r, g, b = arr[:, :, 0], arr[:, :, 1], arr[:, :, 2]
    return bool(np.array_equal(r, g) and np.array_equal(g, b))


# ITU-R BT.601 luma in 15-bit fixed point (R, G, B weights sum to 2**15): the coefficients OpenCV 5's
# x86 RGB2GRAY uses, so a workstation's results are unchanged, but computed here with integers so the
# Pi's NEON build of OpenCV (and OpenCV releases, 4.x used 14 bits) cannot change a single grey level.
_LUMA_WEIGHTS = (9798, 19235, 3735)
_LUMA_SHIFT = 15


def to_grey(frame: np.ndarray) -> np.ndarray:
    """Luminance of a frame (grey frames are returned unchanged); identical on every platform."""
    if frame.ndim == 2:
        return frame
    grey = np.empty(frame.shape[:2], dtype=np.uint8)
    for top in range(0, frame.shape[0], _ROWS_PER_STRIP):  # int32 sums of a strip, not of the whole frame
        grey[top : top + _ROWS_PER_STRIP] = _luma(frame[top : top + _ROWS_PER_STRIP])
    return grey


def _luma(rgb: np.ndarray) -> np.ndarray:
    red, green, blue = _LUMA_WEIGHTS
    luma = rgb[:, :, 0].astype(np.int32)
    luma *= red
    luma += rgb[:, :, 1].astype(np.int32) * green
    luma += rgb[:, :, 2].astype(np.int32) * blue
    luma += 1 << (_LUMA_SHIFT - 1)
    luma >>= _LUMA_SHIFT
    return luma.astype(np.uint8)


def to_rgb(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 3:
        return frame
    return np.repeat(frame[:, :, None], 3, axis=2)
