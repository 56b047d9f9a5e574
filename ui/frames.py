"""Turning a source frame into what the live view paints (done on the reader thread, not the GUI's)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PyQt5.QtGui import QImage

from device.crop import Box
from device.sources.base import Frame


@dataclass(frozen=True)
class FramePacket:
    """One frame ready for display: the source frame, a pre-scaled QImage and the detected scan region."""

    frame: Frame
    image: QImage  # already scaled to fit the view (scale = display px per source px)
    scale: float
    scan_box: Box | None
    fresh: bool  # a new source frame (False: the same still image shown again)


def fit_scale(source_w: int, source_h: int, target_w: int, target_h: int) -> float:
    """Scale that fits a source image inside a target rectangle, keeping its aspect ratio."""
    if source_w <= 0 or source_h <= 0 or target_w <= 0 or target_h <= 0:
        return 1.0
    return min(target_w / source_w, target_h / source_h)


def to_qimage(image: np.ndarray) -> QImage:
    """A QImage that owns a copy of ``image`` (grey HxW or RGB HxWx3, uint8)."""
    array = np.ascontiguousarray(image)
    height, width = array.shape[:2]
    if array.ndim == 2:
        qimage = QImage(array.data, width, height, array.strides[0], QImage.Format.Format_Grayscale8)  # type: ignore[call-overload]  # PyQt5 takes any buffer (numpy's memoryview); its stubs list bytes and sip.voidptr only
    else:
        qimage = QImage(array.data, width, height, array.strides[0], QImage.Format.Format_RGB888)  # type: ignore[call-overload]  # PyQt5 takes any buffer (numpy's memoryview); its stubs list bytes and sip.voidptr only
    return qimage.copy()


def display_image(image: np.ndarray, target_w: int, target_h: int) -> tuple[QImage, float]:
    """Scale a frame to fit the view (area interpolation when shrinking) and wrap it as a QImage."""
    height, width = image.shape[:2]
    scale = fit_scale(width, height, target_w, target_h)
    out_w, out_h = max(1, round(width * scale)), max(1, round(height * scale))
    if (out_w, out_h) != (width, height):
        interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
        image = cv2.resize(image, (out_w, out_h), interpolation=interpolation)
    return to_qimage(image), out_w / width


def heatmap_rgb(heat: np.ndarray) -> np.ndarray:
    """A uint8 heat map (0..255) as an RGB colour image (JET: blue = low, red = high)."""
    bgr = cv2.applyColorMap(heat, cv2.COLORMAP_JET)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
