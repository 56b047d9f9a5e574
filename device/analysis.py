"""How a frame is analysed, decided once from the configuration: ``AnalysisOptions.from_config``.

The one door from ``[source]`` (auto-crop, a manual ROI and its mode, the DICOM cine frame) to the classifier:
``device classify``, ``device run``, ``device site-check``, ``device site-adapt`` and the touchscreen all take
their options here, so the same file under the same configuration is analysed the same way everywhere
(tests/test_analysis_options.py). A clinician's ROI drawn on the screen replaces the configured one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from device.config import DeviceConfig
from device.crop import Box


@dataclass(frozen=True)
class AnalysisOptions:
    auto_crop: bool = True
    roi: Box | None = None  # in source pixels
    roi_mode: str = "override"  # "override" | "refine" (auto-crop inside the ROI)
    dicom_frame: int | None = None  # a cine file: this frame only

    @classmethod
    def from_config(cls, config: DeviceConfig) -> AnalysisOptions:
        source = config.source
        roi = Box.from_tuple(source.roi) if source.roi is not None else None
        return cls(auto_crop=source.auto_crop, roi=roi, roi_mode=source.roi_mode, dicom_frame=source.dicom_frame)

    def with_roi(self, roi: Box | None) -> AnalysisOptions:
        """These options with a clinician's ROI instead of the configured one (None keeps the configured one)."""
        return self if roi is None else dataclasses.replace(self, roi=roi)

    def classify_kwargs(self, heatmap: bool = False) -> dict[str, Any]:
        """Keyword arguments of :meth:`device.engine.Classifier.classify`."""
        return {"auto_crop": self.auto_crop, "roi": self.roi, "roi_mode": self.roi_mode, "heatmap": heatmap}
