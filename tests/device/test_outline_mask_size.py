"""A crop longer than ``MAX_MASK_SIDE`` is outlined on a mask that size, and the outline is the full-size one.

The outline of a 3500 x 3500 crop took a 60 MB mask (a float resize and its threshold), which took the device
past its 250 MB goal. Here, with a real probability map the size of a model input (an ellipse, softened, and a
second small blob): crops up to ``MAX_MASK_SIDE`` are traced at their own size (the same outline as before, to the
pixel); a 4000 x 3000 crop traced on a 2048 x 1536 mask gives the outline the full-size mask gives: the same box to
within 2 px, area within 0.5 %, the same mm sizes to 0.2 mm and the same descriptors; a clinician's ROI on the
small blob keeps that blob on the smaller mask too.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from device.crop import Box
from device.lesion_shape import describe
from device.model.preprocess import Placement
from device.outline import MAX_MASK_SIDE, crop_mask, keep_region_under_roi, mask_size
from device.spacing import PixelSpacing

SIDE = 224
THRESHOLD = 0.5


def _prob() -> np.ndarray:
    prob = np.zeros((SIDE, SIDE), np.float32)
    cv2.ellipse(prob, (110, 100), (60, 35), 20, 0, 360, 1.0, -1)
    cv2.circle(prob, (190, 190), 10, 1.0, -1)
    return cv2.GaussianBlur(prob, (0, 0), 3)


PLACEMENT = Placement(x=0, y=28, width=SIDE, height=168)  # a 4:3 crop letterboxed into the square input


def _outline(crop: Box, traced: Box, roi: Box | None = None, spacing: PixelSpacing | None = None):
    binary = crop_mask(_prob(), PLACEMENT, traced, SIDE, SIDE, THRESHOLD)
    keep_region_under_roi(binary, crop, roi, (crop.y + crop.height + 10, crop.x + crop.width + 10))
    return describe(binary, spacing, scale=(crop.width / traced.width, crop.height / traced.height))


@pytest.mark.parametrize("size", [(640, 480), (MAX_MASK_SIDE, 1536)])
def test_a_crop_up_to_the_limit_is_traced_at_its_own_size(size: tuple[int, int]) -> None:
    crop = Box(5, 7, *size)
    assert mask_size(crop) == crop


def test_a_big_crop_traced_on_a_smaller_mask_gives_the_full_size_outline() -> None:
    crop = Box(100, 50, 4000, 3000)
    traced = mask_size(crop)
    assert (traced.width, traced.height) == (MAX_MASK_SIDE, 1536)
    spacing = PixelSpacing(0.05, 0.05)
    small, full = _outline(crop, traced, spacing=spacing), _outline(crop, crop, spacing=spacing)
    assert small is not None and full is not None
    assert all(abs(a - b) <= 2 for a, b in zip(small.box, full.box, strict=True)), (small.box, full.box)
    assert small.area_px == pytest.approx(full.area_px, rel=0.005)
    assert small.width_mm == pytest.approx(full.width_mm, abs=0.2) and small.depth_mm == pytest.approx(full.depth_mm, abs=0.2)
    assert (small.orientation, small.shape, small.margin) == (full.orientation, full.shape, full.margin)
    assert small.features.solidity == pytest.approx(full.features.solidity, abs=0.01)
    assert small.features.axis_ratio == pytest.approx(full.features.axis_ratio, abs=0.01)
    xs, ys = [p[0] for p in small.contour], [p[1] for p in small.contour]
    assert 0 <= min(xs) and max(xs) < crop.width and 0 <= min(ys) and max(ys) < crop.height, "contour on the crop's pixels"


def test_an_roi_on_the_small_blob_keeps_it_on_the_smaller_mask() -> None:
    crop = Box(0, 0, 4000, 3000)
    # the blob at input (190, 190) is at crop x = 190 / 224 * 4000, y = (190 - 28) / 168 * 3000
    cx, cy = round(190 / SIDE * 4000), round((190 - 28) / 168 * 3000)
    roi = Box(cx - 40, cy - 40, 80, 80)
    small, full = _outline(crop, mask_size(crop), roi=roi), _outline(crop, crop, roi=roi)
    assert small is not None and full is not None
    x, y, w, h = small.box
    assert x <= cx <= x + w and y <= cy <= y + h, f"the ROI's blob kept: {small.box}"
    assert small.area_px == pytest.approx(full.area_px, rel=0.02)
