"""Turning a frame into the model's input tensor, exactly as the manifest says.

``prepare`` is the one composition of frame -> crop -> model pixels, used by the device's engine,
``model_build`` (training, calibration, evaluation) and ``device selftest``; so training images go
through the same crop, resize and channel handling as frames on the device. With the manifest's
``input.resampling = "exact"`` (every bundle built since format 2) the pixels are identical on
x86_64 and aarch64 (``device.model.resample``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from device.crop import Box, RoiMode, choose_crop
from device.imageio import to_grey
from device.model import resample
from device.model.bundle import InputSpec, Resampling


@dataclass(frozen=True)
class Placement:
    """Where the frame landed inside the model input (letterbox padding), for mapping heatmaps back."""

    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class Prepared:
    """A frame made ready for the model: what was cut out of it, and the model-size pixels."""

    crop: Box  # in frame coordinates, never empty
    grey_crop: np.ndarray  # the cropped region, grey uint8 H x W
    pixels: np.ndarray  # uint8 [input h, input w, channels]
    placement: Placement  # where the crop sits inside ``pixels``


def prepare(
    frame: np.ndarray,
    spec: InputSpec,
    *,
    auto_crop: bool = True,
    roi: Box | None = None,
    roi_mode: RoiMode | str = RoiMode.OVERRIDE,
) -> Prepared:
    """Grey -> crop (manual ROI, else the detected scan region) -> model pixels."""
    grey = to_grey(frame)
    box = choose_crop(grey, auto_crop, roi, roi_mode, spec.resampling)
    grey_crop = box.apply(grey)
    pixels, placement = to_model_pixels(grey_crop, spec)
    return Prepared(box, grey_crop, pixels, placement)


def to_model_pixels(frame: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, Placement]:
    """Grey uint8 ``H x W x C`` pixels at the model's size, and where the image sits inside them.

    Ultrasound is grey: colour frames are reduced to luminance first, then replicated to the
    channel count the model expects. ``letterbox`` keeps the aspect ratio (lesion shape is a
    diagnostic feature) and pads with black; ``stretch`` fills the input.
    """
    grey = to_grey(frame)
    out_h, out_w = spec.height, spec.width
    src_h, src_w = grey.shape
    if spec.resize == "stretch":
        resized = _resize(grey, out_w, out_h, spec.resampling)
        placement = Placement(0, 0, out_w, out_h)
        canvas = resized
    else:
        scale = min(out_w / src_w, out_h / src_h)
        new_w = max(1, min(out_w, round(src_w * scale)))
        new_h = max(1, min(out_h, round(src_h * scale)))
        resized = _resize(grey, new_w, new_h, spec.resampling)
        canvas = np.zeros((out_h, out_w), dtype=np.uint8)
        x0, y0 = (out_w - new_w) // 2, (out_h - new_h) // 2
        canvas[y0 : y0 + new_h, x0 : x0 + new_w] = resized
        placement = Placement(x0, y0, new_w, new_h)
    pixels = np.repeat(canvas[:, :, None], spec.channels, axis=2)
    return pixels, placement


def _resize(grey: np.ndarray, width: int, height: int, resampling: str) -> np.ndarray:
    if resampling == Resampling.EXACT:
        return resample.resize(grey, width, height)
    # Format-1 bundles were calibrated on these pixels (on x86): kept for them, platform-dependent.
    shrinking = width < grey.shape[1] or height < grey.shape[0]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(grey, (width, height), interpolation=interpolation)


def to_input_tensor(pixels: np.ndarray, spec: InputSpec, tensor_dtype: np.dtype, quantization: tuple[float, int]) -> np.ndarray:
    """Pixels -> a ``[1, H, W, C]`` array of the input tensor's dtype.

    With ``normalization.in_model`` the model takes raw 0..255 pixels (uint8) and normalises
    itself. Otherwise the normalisation ``(x - mean) / scale`` is applied here and, for a
    quantized input, the result is quantized with the tensor's own scale and zero point.
    """
    norm = spec.normalization
    batch = pixels[None, ...]
    if norm.in_model:
        if tensor_dtype == np.uint8:
            return batch
        if tensor_dtype == np.int8:
            return (batch.astype(np.int16) - 128).astype(np.int8)
        return batch.astype(np.float32)
    values = (batch.astype(np.float32) - norm.mean) / norm.scale
    scale, zero_point = quantization
    if tensor_dtype in (np.uint8, np.int8) and scale:
        info = np.iinfo(tensor_dtype)
        return np.clip(np.round(values / scale + zero_point), info.min, info.max).astype(tensor_dtype)
    return values.astype(tensor_dtype)
