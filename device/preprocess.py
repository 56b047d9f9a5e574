"""Turning a (cropped) frame into the model's input tensor, exactly as the manifest says.

``to_model_pixels`` is shared with ``model_build/`` so training images go through the same
resize policy and channel handling as frames on the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from device.bundle import InputSpec
from device.imageio import to_grey


@dataclass(frozen=True)
class Placement:
    """Where the frame landed inside the model input (letterbox padding), for mapping heatmaps back."""

    x: int
    y: int
    width: int
    height: int


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
        resized = _resize(grey, out_w, out_h)
        placement = Placement(0, 0, out_w, out_h)
        canvas = resized
    else:
        scale = min(out_w / src_w, out_h / src_h)
        new_w = max(1, min(out_w, round(src_w * scale)))
        new_h = max(1, min(out_h, round(src_h * scale)))
        resized = _resize(grey, new_w, new_h)
        canvas = np.zeros((out_h, out_w), dtype=np.uint8)
        x0, y0 = (out_w - new_w) // 2, (out_h - new_h) // 2
        canvas[y0 : y0 + new_h, x0 : x0 + new_w] = resized
        placement = Placement(x0, y0, new_w, new_h)
    pixels = cv2.cvtColor(canvas, cv2.COLOR_GRAY2RGB) if spec.channels == 3 else canvas[:, :, None]
    return pixels, placement


def _resize(grey: np.ndarray, width: int, height: int) -> np.ndarray:
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
