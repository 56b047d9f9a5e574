"""Finding the ultrasound image on a scanner's screen, and applying a manual region of interest.

A capture card delivers the scanner's whole screen: black borders, patient banner text, depth
rulers, logos, menus. The ultrasound image is the largest region of textured, non-black
pixels. Thin graphics (text, rulers, calipers) are removed by a morphological opening before
looking for that region, so they neither attract nor break up the box.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np

from device.imageio import to_grey
from device.model import resample
from device.model.bundle import Resampling

_WORK_SIDE = 256  # detection runs on a copy scaled to this size: cheap per frame
_MIN_AREA_FRACTION = 0.08  # a smaller region is not trusted: use the whole frame


class RoiMode(StrEnum):
    """What a manual ROI means (``[source] roi_mode`` in the device configuration)."""

    OVERRIDE = "override"  # crop to the ROI as is
    REFINE = "refine"  # auto-detect the scan region inside the ROI


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    width: int
    height: int

    @classmethod
    def full(cls, frame: np.ndarray) -> Box:
        return cls(0, 0, frame.shape[1], frame.shape[0])

    @classmethod
    def from_tuple(cls, values: tuple[int, int, int, int] | list[int]) -> Box:
        x, y, w, h = (int(v) for v in values)
        return cls(x, y, w, h)

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.width, self.height)

    def clip_to(self, frame: np.ndarray) -> Box:
        height, width = frame.shape[:2]
        x0, y0 = max(0, self.x), max(0, self.y)
        x1, y1 = min(width, self.x + self.width), min(height, self.y + self.height)
        return Box(x0, y0, max(0, x1 - x0), max(0, y1 - y0))

    def offset(self, dx: int, dy: int) -> Box:
        return Box(self.x + dx, self.y + dy, self.width, self.height)

    def apply(self, frame: np.ndarray) -> np.ndarray:
        return frame[self.y : self.y + self.height, self.x : self.x + self.width]


def fit_within(width: int, height: int, max_side: int) -> tuple[int, int]:
    """``width`` x ``height`` as it is, or scaled down (aspect kept, at least 1 x 1) to a long side of ``max_side``:
    the size of an overlay computed for a crop (an outline's mask, a heat map) that needs no more pixels."""
    long_side = max(width, height)
    if long_side <= max_side:
        return width, height
    return max(1, round(width * max_side / long_side)), max(1, round(height * max_side / long_side))


def detect_scan_region(frame: np.ndarray, resampling: str = Resampling.EXACT.value) -> Box:
    """Bounding box of the ultrasound image in a screen capture (the whole frame if none is found).

    ``resampling`` is the bundle's: format-1 (``opencv``) bundles were validated on boxes found on a
    bilinear work copy, so they keep it."""
    grey = to_grey(frame)
    height, width = grey.shape
    scale = min(1.0, _WORK_SIDE / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if scale < 1.0 and resampling == Resampling.OPENCV:
        small = cv2.resize(grey, size, interpolation=cv2.INTER_LINEAR)
    elif scale < 1.0:  # nearest-neighbour: exact on every CPU (the box must not depend on it) and cheap; a
        # threshold mask needs no smoothing (the morphology below joins speckle)
        small = resample.nearest(grey, *size)
    else:
        small = grey
    _, mask = cv2.threshold(small, 12, 1, cv2.THRESH_BINARY)
    # Speckle has dark gaps: close them so the scan is one solid region; then open with a kernel
    # larger than text strokes and ruler ticks so those vanish.
    side = max(3, round(min(small.shape) * 0.03) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (side, side))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (side * 2 + 1, side * 2 + 1)))
    # The largest outer contour is the scan region (findContours is ~15x cheaper than labelling components).
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return Box.full(frame)
    largest = max(contours, key=cv2.contourArea)
    x, y, w, h = cv2.boundingRect(largest)
    if w * h < _MIN_AREA_FRACTION * small.size:
        return Box.full(frame)
    box = Box(int(x / scale), int(y / scale), int(np.ceil(w / scale)), int(np.ceil(h / scale)))
    return box.clip_to(frame)


def choose_crop(
    frame: np.ndarray,
    auto_crop: bool,
    roi: Box | None,
    roi_mode: RoiMode | str = RoiMode.OVERRIDE,
    resampling: str = Resampling.EXACT.value,
) -> Box:
    """The crop applied to a frame: manual ROI (as is, or refined by auto-detection inside it),
    else the auto-detected scan region, else the whole frame."""
    if roi is not None:
        region = roi.clip_to(frame)
        if region.width == 0 or region.height == 0:
            region = Box.full(frame)
        if roi_mode == RoiMode.REFINE and auto_crop:
            return detect_scan_region(region.apply(frame), resampling).offset(region.x, region.y)
        return region
    if auto_crop:
        return detect_scan_region(frame, resampling)
    return Box.full(frame)
