"""The quality gate: mark a result *inconclusive* (with reasons) instead of forcing a label.

Image checks run before the model on the cropped frame; confidence checks after it. Reasons are
short stable codes followed by a human explanation, e.g. ``"blank: frame is almost black (mean 3.1)"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from device.imageio import to_grey


@dataclass(frozen=True)
class QualityLimits:
    min_side_px: int = 64
    blank_mean_max: float = 10.0
    blank_std_max: float = 4.0
    saturated_fraction_max: float = 0.5
    colour_fraction_max: float = 0.05
    min_confidence: float = 0.5
    max_entropy: float | None = None


_COLOUR_CHROMA = 40  # a pixel whose channels differ by more than this is coloured (Doppler, photo)


def image_problems(crop: np.ndarray, limits: QualityLimits) -> list[str]:
    """Reasons the cropped image is not fit for analysis (empty list: fine).

    Statistics are taken on a subsample of at most ~128x128 pixels: enough for means and
    fractions, and cheap beside the model (this runs on every frame)."""
    height, width = crop.shape[:2]
    if min(height, width) < limits.min_side_px:
        return [f"too_small: image region is {width}x{height} px, below {limits.min_side_px} px"]
    step = max(1, min(height, width) // 128)
    sample = crop[::step, ::step]
    reasons = []
    if sample.ndim == 3:
        red, green, blue = cv2.split(np.ascontiguousarray(sample))
        chroma = cv2.max(cv2.max(cv2.absdiff(red, green), cv2.absdiff(green, blue)), cv2.absdiff(red, blue))
        coloured = cv2.countNonZero((chroma > _COLOUR_CHROMA).astype(np.uint8)) / chroma.size
        if coloured > limits.colour_fraction_max:
            reasons.append(f"colour: {coloured:.0%} of the image is coloured — Doppler overlay or not a greyscale ultrasound image")
    grey = to_grey(np.ascontiguousarray(sample))
    mean_arr, std_arr = cv2.meanStdDev(grey)
    mean, std = float(mean_arr[0][0]), float(std_arr[0][0])
    if mean < limits.blank_mean_max or std < limits.blank_std_max:
        reasons.append(f"blank: frame is black or featureless (mean {mean:.1f}, contrast {std:.1f})")
    saturated = cv2.countNonZero((grey >= 250).astype(np.uint8)) / grey.size
    if saturated > limits.saturated_fraction_max:
        reasons.append(f"saturated: {saturated:.0%} of the image is white — check gain")
    return reasons


def confidence_problems(probabilities: np.ndarray, limits: QualityLimits) -> list[str]:
    top = float(probabilities.max())
    reasons = []
    if top < limits.min_confidence:
        reasons.append(f"low_confidence: highest probability {top:.2f} is below {limits.min_confidence:.2f}")
    if limits.max_entropy is not None:
        entropy = normalised_entropy(probabilities)
        if entropy > limits.max_entropy:
            reasons.append(f"uncertain: prediction entropy {entropy:.2f} is above {limits.max_entropy:.2f}")
    return reasons


def normalised_entropy(probabilities: np.ndarray) -> float:
    p = np.clip(probabilities.astype(np.float64), 1e-12, 1.0)
    return float(-(p * np.log(p)).sum() / math.log(len(p)))
