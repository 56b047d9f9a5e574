"""Post-hoc calibration on validation: temperature scaling and the malignant operating threshold."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from device.model.operating_point import robust_threshold
from device.model.runtime import softmax  # the device's rule, so a threshold means the same there

log = logging.getLogger(__name__)

# Fewer validation images than this fit no temperature (T stays 1): one fitted on a handful follows those images,
# not the model (docs/model.md, module table).
MIN_TEMPERATURE_IMAGES = 30


class CalibrationError(ValueError):
    """Calibration cannot be fitted (e.g. no malignant case in validation)."""


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    target_sensitivity: float
    val_sensitivity: float
    val_specificity: float
    confidence: float


def nll(logits: np.ndarray, y: np.ndarray, temperature: float) -> float:
    p = softmax(logits, temperature)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None))))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising validation NLL (searched in log space, T in [0.05, 20]); 1 when validation has
    fewer than MIN_TEMPERATURE_IMAGES images."""
    from scipy.optimize import minimize_scalar

    if len(y) < MIN_TEMPERATURE_IMAGES:
        log.warning("temperature not fitted: %d validation images, fewer than %d; T = 1", len(y), MIN_TEMPERATURE_IMAGES)
        return 1.0

    result = minimize_scalar(lambda t: nll(logits, y, float(np.exp(t))), bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    temperature = float(np.exp(result.x))
    log.info("temperature %.3f: val NLL %.4f -> %.4f", temperature, nll(logits, y, 1.0), nll(logits, y, temperature))
    return temperature


def choose_threshold(
    p_malignant: np.ndarray,
    is_malignant: np.ndarray,
    target_sensitivity: float = 0.95,
    confidence: float = 0.9,
    n_boot: int = 1000,
    seed: int = 0,
) -> OperatingPoint:
    """A threshold meeting ``target_sensitivity`` on validation *robustly*: the ``1 - confidence``
    quantile of the per-bootstrap-resample thresholds (so ~``confidence`` of resamples meet the target),
    never above the plain validation threshold."""
    pos = p_malignant[is_malignant]
    if len(pos) == 0:
        raise CalibrationError("no malignant case in validation: cannot choose a malignant threshold")
    threshold, plain = robust_threshold(pos, target_sensitivity, confidence, n_boot, seed)
    sens = float(np.mean(pos >= threshold))
    neg = p_malignant[~is_malignant]
    spec = float(np.mean(neg < threshold)) if len(neg) else float("nan")
    log.info("malignant threshold %.4f (plain %.4f): val sensitivity %.3f specificity %.3f", threshold, plain, sens, spec)
    return OperatingPoint(threshold, target_sensitivity, sens, spec, confidence)
