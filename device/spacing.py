"""The physical size of a frame's pixels, when it is known (DICOM header, or a capture source calibrated once).

Only a known spacing turns a size in pixels into millimetres (device/lesion_shape.py); an unknown one stays
``None`` and the size is shown in pixels, marked uncalibrated — never a made-up mm figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MIN_MM, MAX_MM = 0.001, 5.0  # a plausible ultrasound pixel


@dataclass(frozen=True)
class PixelSpacing:
    """Millimetres per pixel along x (columns) and y (rows), and where the figure came from."""

    x_mm: float
    y_mm: float
    origin: str = "given"  # e.g. "dicom:SequenceOfUltrasoundRegions", "dicom:PixelSpacing", "config:[source]"

    def __post_init__(self) -> None:
        for name, value in (("x_mm", self.x_mm), ("y_mm", self.y_mm)):
            if not (isinstance(value, int | float) and math.isfinite(value) and MIN_MM <= value <= MAX_MM):
                raise ValueError(f"pixel spacing {name} = {value!r} mm is not a plausible ultrasound pixel ({MIN_MM}–{MAX_MM} mm)")
