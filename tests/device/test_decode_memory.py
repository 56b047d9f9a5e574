"""A big frame is decoded without extra full-size copies of its pixels, and to exactly the same pixels.

The device's goal is 250 MB RSS in all (tests/device/test_run_resume.py runs the whole appliance on frames just
under the decode limit; a 16-bit one went over it on CI). Copies of the whole frame did it: ``np.asarray`` of a
PIL image (its bytes, then the array), the int32 sums of an RGB frame's luminance, the outline's binary mask (a
bool mask, then a uint8 copy; tests/device/test_outline_mask_size.py caps its size). Here: a 16-bit PNG or a
big-endian 16-bit TIFF decodes to the same uint8 frame as before (the whole 16-bit array scaled by its bit depth,
``normalise_frame``), for shapes that are not whole strips of rows; an RGB PNG decodes to its own pixels and its
luminance is the fixed-point BT.601 formula; decoding a 3547 x 3547 16-bit PNG or a 4K RGB PNG and taking its
luminance raise the process's high-water mark by what PIL's image and the frame hold plus at most one more copy of
the pixels (the old decode took two more, the old luminance's int32 sums four); and the crop mask is the same 0/1
uint8 mask as before.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from device.crop import Box
from device.imageio import MAX_DECODED_BYTES, decode_image_file, normalise_frame
from device.model.preprocess import Placement
from device.outline import crop_mask
from tests.mqtt_broker import REPO


def _ramp16(rows: int, columns: int, top: int) -> np.ndarray:
    values = np.add.outer(np.arange(rows, dtype=np.int64) * 7, np.arange(columns, dtype=np.int64) * 3) % (top + 1)
    return values.astype(np.uint16)


@pytest.mark.parametrize(("rows", "columns", "top"), [(530, 700, 4095), (256, 17, 65535), (1, 300, 1023), (300, 1, 255), (513, 260, 4096)])
def test_a_16_bit_png_decodes_to_the_pixels_normalise_frame_gives(tmp_path: Path, rows: int, columns: int, top: int) -> None:
    pixels = _ramp16(rows, columns, top)
    path = tmp_path / "frame16.png"
    Image.fromarray(pixels).save(path)
    assert Image.open(path).mode == "I;16"
    frame = decode_image_file(path)
    assert frame.dtype == np.uint8 and frame.shape == (rows, columns)
    np.testing.assert_array_equal(frame, normalise_frame(pixels))


def test_a_big_endian_16_bit_tiff_decodes_to_the_same_pixels(tmp_path: Path) -> None:
    pixels = _ramp16(333, 410, 4095)
    path = tmp_path / "frame16.tif"
    Image.fromarray(pixels.astype(">u2")).save(path)
    assert Image.open(path).mode == "I;16B"
    np.testing.assert_array_equal(decode_image_file(path), normalise_frame(pixels))


def test_a_flat_16_bit_frame_decodes(tmp_path: Path) -> None:
    path = tmp_path / "flat16.png"
    Image.fromarray(np.full((40, 50), 3000, np.uint16)).save(path)
    np.testing.assert_array_equal(decode_image_file(path), normalise_frame(np.full((40, 50), 3000, np.uint16)))


# In a fresh process (VmHWM is per address space): the high-water mark before, and after decoding a frame and
# taking its luminance (to_grey, which crop detection, quality and preprocessing each take).
_DECODE_PEAK = """
import sys
from device.imageio import decode_image_file, to_grey

def hwm():
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM:")).split()[1]) * 1024

before = hwm()
frame = decode_image_file(sys.argv[1])
grey = to_grey(frame)
print(hwm() - before, *frame.shape)
"""


def _near_the_limit(kind: str, path: Path) -> tuple[int, float, tuple[int, ...]]:
    """A frame of ``kind`` just under the decode limit, saved to ``path``: its decoded bytes, the bytes per decoded
    byte that PIL's image and the uint8 frame hold together at the end of a decode, and the frame's shape."""
    if kind == "16-bit grey":
        side = int((MAX_DECODED_BYTES // 2) ** 0.5)  # 3547 x 3547
        Image.fromarray(_ramp16(side, side, 4095)).save(path)
        return side * side * 2, 1 + 0.5, (side, side)  # PIL: 2 bytes a pixel; the frame: 1
    rows, columns = 2160, 3840  # 4K RGB, 23.7 MiB
    rgb = np.stack([_ramp16(rows, columns, 255).astype(np.uint8) + k * 40 for k in range(3)], axis=2)
    Image.fromarray(rgb, "RGB").save(path)
    return rows * columns * 3, 4 / 3 + 1, (rows, columns, 3)  # PIL holds RGB as 4 bytes a pixel; the frame: 3


@pytest.mark.parametrize("kind", ["16-bit grey", "RGB"])
def test_a_frame_near_the_limit_decodes_with_at_most_one_more_copy_of_its_pixels(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "large.png"
    pixel_bytes, held, shape = _near_the_limit(kind, path)
    done = subprocess.run([sys.executable, "-c", _DECODE_PEAK, str(path)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    grown, *decoded_shape = (int(v) for v in done.stdout.split())
    assert tuple(decoded_shape) == shape
    # what must be held (PIL's image and the frame) and at most one more copy of the pixels for everything else
    # (the old decode made two more, the old luminance's int32 sums four)
    limit = (held + 1) * pixel_bytes
    assert grown < limit, f"decode + to_grey raised the high-water mark by {grown / 2**20:.0f} MiB, over {limit / 2**20:.0f} MiB"


def test_an_rgb_png_decodes_to_its_pixels_and_its_luminance_to_the_fixed_point_formula(tmp_path: Path) -> None:
    from device.imageio import to_grey

    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (601, 333, 3), dtype=np.uint8)  # rows not a whole number of strips
    Image.fromarray(rgb, "RGB").save(tmp_path / "rgb.png")
    frame = decode_image_file(tmp_path / "rgb.png")
    np.testing.assert_array_equal(frame, rgb)
    wide = rgb.astype(np.int64)
    expected = (wide[:, :, 0] * 9798 + wide[:, :, 1] * 19235 + wide[:, :, 2] * 3735 + (1 << 14)) >> 15
    np.testing.assert_array_equal(to_grey(frame), expected.astype(np.uint8))


def test_the_crop_mask_is_the_thresholded_resize_as_0_1_uint8() -> None:
    import cv2

    rng = np.random.default_rng(3)
    prob = rng.random((64, 64)).astype(np.float32)
    placement = Placement(x=0, y=8, width=64, height=48)
    crop = Box(10, 20, 301, 207)
    binary = crop_mask(prob, placement, crop, 64, 64, 0.5)
    expected = (cv2.resize(prob[8:56, 0:64], (301, 207), interpolation=cv2.INTER_LINEAR) >= 0.5).astype(np.uint8)
    assert binary.dtype == np.uint8 and binary.shape == (207, 301)
    np.testing.assert_array_equal(binary, expected)
    assert set(np.unique(binary)) <= {0, 1}
