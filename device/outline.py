"""The lesion's outline on the device: the bundle's segmentation model, run on the scan region, mapped back.

A bundle with a ``segmentation`` section (docs/model-bundle.md, format 4) carries a second TFLite model whose
output is a lesion probability per model-input pixel. :class:`Segmenter` runs it with the one TFLite runner
(:class:`device.model.runtime.ModelRunner`) on the scan region — the crop it was trained on, the classifier's own
without an ROI (the same prepared pixels when both models take the same input); with an ROI, the scan region all
the same (:meth:`Segmenter.scan_region`), as an ROI inside a large mass is all mass and outlines nothing useful —
takes the mask back through the letterbox and the crop to image pixel coordinates, keeps the region under the
clinician's ROI whole (:func:`keep_region_under_roi`), and hands it to :func:`device.lesion_shape.describe` for
the outline, box, area, size (mm only with a known pixel spacing) and descriptors. The outline rule is the one
``model_build segment`` scored: the largest region of probability >= ``mask.threshold`` (with an ROI, the region
under it), none when it covers fewer than ``mask.min_region_px`` model-input pixels.

Which descriptors are shown is the bundle's: those whose agreement with the radiologist, measured on this
segmentation model's own outlines, reaches the display level (``segmentation.descriptors``, format 6,
:meth:`device.model.bundle.SegmentationSpec.shown_descriptors`; docs/lesion-outline.md "Display level"). A bundle
without that measurement shows none.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from device.crop import Box, fit_within
from device.errors import BundleError
from device.lesion_shape import LesionOutline, describe
from device.model.bundle import DESCRIPTOR_NAMES, ModelBundle, SegmentationSpec
from device.model.preprocess import Placement, Prepared, prepare, to_model_pixels
from device.model.runtime import ModelRunner, TensorNames
from device.spacing import PixelSpacing

log = logging.getLogger(__name__)

# The crop mask's long side at most (the outline is traced on a mask this size and its points scaled to the
# crop's pixels): the model's mask is ~1/10 of that, and a mask the size of a 3500 x 3500 crop took 60 MB (a float
# resize and its threshold), what took the device past its 250 MB goal. Capture-card frames (1920 wide) are
# traced at their own size.
MAX_MASK_SIDE = 2048


class Withheld(StrEnum):
    """Why no outline was looked for."""

    INCONCLUSIVE = "inconclusive"  # the quality gate or the confidence limits objected: no outline either


@dataclass(frozen=True)
class LesionResult:
    """The segmentation model's answer for one frame: an outline, none ("no lesion outlined"), or withheld."""

    outline: LesionOutline | None
    spacing: PixelSpacing | None = None
    withheld: Withheld | None = None
    latency_ms: float = 0.0  # the segmentation's own time (prepare, invoke, map back, describe)
    shown: frozenset[str] = frozenset()  # the descriptors the bundle's display rule shows for this model

    @property
    def found(self) -> bool:
        return self.outline is not None

    def to_json(self) -> dict[str, Any]:
        """The ``lesion`` object of ``classify --json`` (docs/device.md)."""
        o = self.outline
        out: dict[str, Any] = {
            "found": o is not None,
            "withheld": self.withheld.value if self.withheld else None,
            "box": list(o.box) if o else None,
            "contour": [list(p) for p in o.contour] if o else None,
            "area_px": round(o.area_px, 1) if o else None,
            "width_mm": _mm(o.width_mm) if o else None,
            "depth_mm": _mm(o.depth_mm) if o else None,
            "area_mm2": _mm(o.area_mm2) if o else None,
            "spacing_mm": [self.spacing.x_mm, self.spacing.y_mm] if o and self.spacing else None,
        }
        values = {"orientation": o.orientation, "shape": o.shape, "margin": o.margin} if o else {}
        for name in DESCRIPTOR_NAMES:
            out[name] = {"value": values[name].value, "shown": name in self.shown} if o else None
        return out


def _mm(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


class Segmenter:
    """The bundle's segmentation model, one interpreter. Not thread-safe: used from the classifier's thread."""

    def __init__(self, spec: SegmentationSpec, path: Path, *, where: str, threads: int = 2, runtime: str | None = None) -> None:
        """``spec`` and the model file it describes (``where`` names both in errors); :meth:`from_bundle` for a bundle's."""
        self.spec = spec
        self.shown = spec.shown_descriptors()  # the bundle's display rule, once (every outline carries it)
        self.runner = ModelRunner(
            path,
            spec.input,
            TensorNames(spec.outputs.lesion_logit, spec.outputs.mask),
            1,
            where=where,
            model_name=spec.model,
            threads=threads,
            runtime=runtime,
        )
        assert self.runner.features is not None  # TensorNames names the mask: _bind refuses a missing one
        shape = list(self.runner.features["shape"])
        if shape[0] != 1 or shape[3] != 1:
            raise BundleError(f"{where}: mask output {spec.outputs.mask!r} has shape {shape}, expected [1, h, w, 1]")
        self.runner.warm_up()

    @classmethod
    def from_bundle(cls, bundle: ModelBundle, threads: int = 2, runtime: str | None = None) -> Segmenter:
        spec, path = bundle.manifest.segmentation, bundle.segmentation_path
        if spec is None or path is None:
            raise BundleError(f"model bundle {bundle.path} has no segmentation model")
        return cls(spec, path, where=f"model bundle {bundle.path} (segmentation)", threads=threads, runtime=runtime)

    def model_pixels(self, prepared: Prepared, *, same_input: bool = False) -> tuple[np.ndarray, Placement]:
        """This model's input pixels for the crop ``prepared`` was cut from, and where the crop sits in them: the
        classifier's own pixels when ``same_input``, else the crop letterboxed to this model's input spec. The one
        place that choice is made (``device selftest`` records and checks the same input)."""
        if same_input:
            return prepared.pixels, prepared.placement
        return to_model_pixels(prepared.grey_crop, self.spec.input)

    def scan_region(self, frame: np.ndarray, classified: Prepared, *, auto_crop: bool, roi: Box | None, same_input: bool) -> tuple[Prepared, bool]:
        """What this model segments, and whether its pixels are already this model's input: the classifier's crop
        ``classified`` when there was no ROI (``same_input`` as given), else the scan region prepared anew for this
        model (the detected scan region with ``auto_crop``, else the whole frame), never the ROI's crop."""
        if roi is None:
            return classified, same_input
        return prepare(frame, self.spec.input, auto_crop=auto_crop), True

    def run(self, prepared: Prepared, *, same_input: bool = False) -> tuple[np.ndarray, np.ndarray, Placement]:
        """One invoke on the crop ``prepared`` was cut from: the model's input tensor, its mask (lesion probabilities
        over the model input) and where the crop sits in that input."""
        pixels, placement = self.model_pixels(prepared, same_input=same_input)
        tensor = self.runner.input_tensor(pixels)
        _, mask = self.runner.invoke(tensor, with_features=True)
        assert mask is not None  # the runner has the mask output (checked in __init__)
        return tensor, mask[..., 0], placement

    def outline(
        self,
        prepared: Prepared,
        frame_shape: tuple[int, int],
        *,
        spacing: PixelSpacing | None = None,
        roi: Box | None = None,
        same_input: bool = False,
    ) -> LesionResult:
        """The outline on the crop ``prepared`` was cut from, in image pixel coordinates of a frame ``frame_shape``
        (rows, columns). ``same_input``: the classifier's input spec is this model's, so its pixels are reused."""
        start = time.perf_counter()
        _, prob, placement = self.run(prepared, same_input=same_input)
        found = self.outline_of(prob, placement, prepared.crop, frame_shape, spacing=spacing, roi=roi)
        latency_ms = (time.perf_counter() - start) * 1000.0
        return LesionResult(found, spacing=spacing, latency_ms=latency_ms, shown=self.shown)

    def outline_of(
        self,
        prob: np.ndarray,
        placement: Placement,
        crop: Box,
        frame_shape: tuple[int, int],
        *,
        spacing: PixelSpacing | None = None,
        roi: Box | None = None,
    ) -> LesionOutline | None:
        """The outline a mask from :meth:`run` draws: thresholded back onto ``crop``; the region under ``roi`` when
        there is one (:func:`keep_region_under_roi`), else the largest; none under ``mask.min_region_px``; in frame
        coordinates. None when none. A crop longer than :data:`MAX_MASK_SIDE` is traced on a mask that size."""
        traced = mask_size(crop)
        binary = crop_mask(prob, placement, traced, self.spec.input.height, self.spec.input.width, self.spec.mask.threshold)
        keep_region_under_roi(binary, crop, roi, frame_shape)
        found = describe(binary, spacing, scale=(crop.width / traced.width, crop.height / traced.height))
        if found is None or model_px(found.area_px, placement, crop) < self.spec.mask.min_region_px:
            return None
        return offset_outline(found, crop.x, crop.y)


def mask_size(crop: Box, max_side: int = MAX_MASK_SIDE) -> Box:
    """The crop as the outline traces it: itself, or scaled down (aspect kept) to a long side of ``max_side``."""
    width, height = fit_within(crop.width, crop.height, max_side)
    return dataclasses.replace(crop, width=width, height=height)


def crop_mask(prob: np.ndarray, placement: Placement, crop: Box, input_h: int, input_w: int, threshold: float) -> np.ndarray:
    """The model's mask (``[h, w]`` probabilities over its input) as a binary uint8 mask the size of the crop:
    resized to the input, the letterbox padding cut away, resized to the crop, thresholded."""
    prob = np.asarray(prob, dtype=np.float32)
    if prob.shape != (input_h, input_w):
        prob = cv2.resize(prob, (input_w, input_h), interpolation=cv2.INTER_LINEAR)
    inside = prob[placement.y : placement.y + placement.height, placement.x : placement.x + placement.width]
    resized = cv2.resize(inside, (crop.width, crop.height), interpolation=cv2.INTER_LINEAR)
    binary: np.ndarray = np.greater_equal(resized, threshold).view(np.uint8)  # 0/1, no second crop-sized copy
    return binary


def keep_region_under_roi(binary: np.ndarray, crop: Box, roi: Box | None, frame_shape: tuple[int, int]) -> None:
    """Keep, whole, the one region of the crop mask that the clinician's ROI holds most pixels of (in place); none
    when it holds none. Whole: a lesion reaching beyond a tap's square or a drawn box is outlined and sized as it is,
    not cut to the box. An ROI off the frame was ignored by the classifier, and is here. A mask smaller than the crop
    (:func:`mask_size`) has the ROI scaled onto it."""
    if roi is None:
        return
    rows, cols = frame_shape
    if min(cols, roi.x + roi.width) <= max(0, roi.x) or min(rows, roi.y + roi.height) <= max(0, roi.y):
        return  # off the frame: the classifier analysed the whole frame
    sx, sy = binary.shape[1] / crop.width, binary.shape[0] / crop.height
    x0, y0 = max(0, int((roi.x - crop.x) * sx)), max(0, int((roi.y - crop.y) * sy))
    x1 = max(x0, min(binary.shape[1], math.ceil((roi.x + roi.width - crop.x) * sx)))
    y1 = max(y0, min(binary.shape[0], math.ceil((roi.y + roi.height - crop.y) * sy)))
    count, labels = cv2.connectedComponents(binary, connectivity=8)
    held = np.bincount(labels[y0:y1, x0:x1].ravel(), minlength=count)
    held[0] = 0  # the background
    best = int(held.argmax())
    binary[...] = (labels == best) if held[best] > 0 else 0


def model_px(area_px: float, placement: Placement, crop: Box) -> float:
    """An area in crop pixels as model-input pixels (the scale of ``mask.min_region_px``)."""
    return area_px * (placement.width / crop.width) * (placement.height / crop.height)


def offset_outline(outline: LesionOutline, dx: int, dy: int) -> LesionOutline:
    """The outline moved from crop to frame coordinates (sizes and descriptors do not move)."""
    x, y, w, h = outline.box
    return dataclasses.replace(outline, box=(x + dx, y + dy, w, h), contour=tuple((px + dx, py + dy) for px, py in outline.contour))


def withheld(reason: Withheld = Withheld.INCONCLUSIVE) -> LesionResult:
    """No outline looked for (an inconclusive result gets none)."""
    return LesionResult(None, withheld=reason)
