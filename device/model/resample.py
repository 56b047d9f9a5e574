"""Platform-exact image resampling: the same pixels on the workstation (x86_64) and the Pi (aarch64).

OpenCV's ``cv2.resize`` is not: its aarch64 wheels route ``INTER_LINEAR`` and ``INTER_AREA``
through the Carotene NEON HAL, whose rounding differs from the x86 code by 1–2 grey levels on a
quarter of the pixels, and its results also change between OpenCV releases. Every threshold in a
model bundle is measured on prepared pixels, so the pixels must not depend on the platform.

This module resamples with integer arithmetic only (numpy), so the result is defined by the
code below and nothing else:

* each axis is resampled separately with fixed-point weights that sum to exactly
  ``2**WEIGHT_BITS`` per output pixel;
* shrinking averages the source pixels an output pixel covers, weighted by the overlap (the
  *area* filter, like ``INTER_AREA``: no aliasing of speckle when a 1000-px scan becomes 288 px);
* growing interpolates linearly between the two nearest source pixels (half-pixel centres, edges
  clamped, like ``INTER_LINEAR``);
* the two passes are summed without intermediate rounding and rounded once, half up.

The weights are computed in float64 with basic IEEE operations (correctly rounded on every
platform), then rounded to integers; the pixel arithmetic is int32. Measured against OpenCV on
real images in docs/device.md ("Platform-exact preprocessing").
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

WEIGHT_BITS = 11  # per axis; 255 * 2**22 fits int32 after both passes
_ONE = 1 << WEIGHT_BITS


@dataclass(frozen=True)
class AxisWeights:
    """For each output pixel ``j``: ``out[j] = sum_t weights[j, t] * src[index[j, t]]`` (fixed point)."""

    index: np.ndarray  # int64 [m, taps]
    weights: np.ndarray  # int32 [m, taps], each row sums to 2**WEIGHT_BITS


def axis_weights(source: int, target: int) -> AxisWeights:
    """Fixed-point weights resampling an axis of ``source`` pixels to ``target`` pixels."""
    if source < 1 or target < 1:
        raise ValueError(f"cannot resample an axis of {source} pixels to {target}")
    if target == source:
        return AxisWeights(np.arange(target, dtype=np.int64)[:, None], np.full((target, 1), _ONE, dtype=np.int32))
    real = _area_weights(source, target) if target < source else _linear_weights(source, target)
    return _to_fixed_point(*real)


def _area_weights(source: int, target: int) -> tuple[np.ndarray, np.ndarray]:
    """Overlap of each source pixel ``[i, i+1)`` with the output pixel's span ``[j*s, (j+1)*s)``, ``s = n/m``."""
    scale = source / target
    taps = int(np.ceil(scale)) + 1
    j = np.arange(target, dtype=np.float64)
    start, end = j * scale, (j + 1) * scale
    first = np.floor(start).astype(np.int64)
    index = first[:, None] + np.arange(taps, dtype=np.int64)[None, :]
    left = np.maximum(index.astype(np.float64), start[:, None])
    right = np.minimum(index.astype(np.float64) + 1.0, end[:, None])
    overlap = np.clip(right - left, 0.0, None)
    overlap[index >= source] = 0.0
    return np.minimum(index, source - 1), overlap / scale


def _linear_weights(source: int, target: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation at the output pixel's centre mapped back to source coordinates."""
    position = (np.arange(target, dtype=np.float64) + 0.5) * (source / target) - 0.5
    position = np.clip(position, 0.0, source - 1)
    left = np.floor(position).astype(np.int64)
    fraction = position - left
    index = np.stack([left, np.minimum(left + 1, source - 1)], axis=1)
    return index, np.stack([1.0 - fraction, fraction], axis=1)


def _to_fixed_point(index: np.ndarray, real: np.ndarray) -> AxisWeights:
    """Round to integers and give each row's rounding remainder to its largest weight (sum = 2**bits)."""
    fixed = np.floor(real * _ONE + 0.5).astype(np.int64)
    remainder = _ONE - fixed.sum(axis=1)
    largest = np.argmax(fixed, axis=1)
    fixed[np.arange(len(fixed)), largest] += remainder
    return AxisWeights(index, fixed.astype(np.int32))


@dataclass(frozen=True)
class Plan:
    """The weights of both axes for one (source size, target size) pair; computed once and reused."""

    down: AxisWeights
    across: AxisWeights


@functools.lru_cache(maxsize=64)  # frames of one source share a size: the weights are computed once
def plan(src_h: int, src_w: int, height: int, width: int) -> Plan:
    return Plan(axis_weights(src_h, height), axis_weights(src_w, width))


def resize(grey: np.ndarray, width: int, height: int) -> np.ndarray:
    """A 2-D uint8 image resampled to ``height x width``; identical on every platform."""
    if grey.ndim != 2 or grey.dtype != np.uint8:
        raise ValueError(f"resize takes a 2-D uint8 image, got {grey.dtype} {grey.shape}")
    src_h, src_w = grey.shape
    if (src_w, src_h) == (width, height):
        return grey.copy()
    weights = plan(src_h, src_w, height, width)
    # Both passes gather whole rows (contiguous copies): down the rows, then down the columns of the
    # transposed intermediate. The sums are exact integers, so the order changes nothing.
    rows = _weighted_rows(grey, weights.down)  # [height, src_w]
    columns = _weighted_rows(np.ascontiguousarray(rows.T), weights.across)  # [width, height]
    half = 1 << (2 * WEIGHT_BITS - 1)
    columns += half
    columns >>= 2 * WEIGHT_BITS
    return np.ascontiguousarray(columns.T.astype(np.uint8))


def nearest(grey: np.ndarray, width: int, height: int) -> np.ndarray:
    """The source pixel under each output pixel's centre: exact and cheap (for masks, not for the model)."""
    src_h, src_w = grey.shape[:2]
    ys = ((2 * np.arange(height, dtype=np.int64) + 1) * src_h) // (2 * height)
    xs = ((2 * np.arange(width, dtype=np.int64) + 1) * src_w) // (2 * width)
    return np.ascontiguousarray(grey[ys][:, xs])


def _weighted_rows(image: np.ndarray, weights: AxisWeights) -> np.ndarray:
    """``out[j] = sum_t weights[j, t] * image[index[j, t]]`` over rows, in int32."""
    out = np.zeros((weights.index.shape[0], image.shape[1]), dtype=np.int32)
    term = np.empty_like(out)
    for tap in range(weights.index.shape[1]):
        np.multiply(image[weights.index[:, tap]], weights.weights[:, tap, None], out=term, dtype=np.int32)
        out += term
    return out
