"""The malignant operating threshold: the highest threshold that keeps sensitivity at a target, chosen
robustly (over bootstrap resamples of the malignant cases) so that a small case set does not make it optimistic.

Shared by the workstation (``model_build.calibrate`` chooses the bundle's threshold on validation,
``model_build.evaluate`` and ``model_build.reader`` measure at thresholds) and the device
(``python -m device site-check`` proposes a site's threshold from its own biopsy-proven cases).
"""

from __future__ import annotations

import numpy as np


def sensitivity_specificity(malignant: np.ndarray, flagged: np.ndarray) -> tuple[float, float]:
    """Share of malignant cases flagged, share of the others not flagged (NaN when a side has no case)."""
    sens = float(flagged[malignant].mean()) if malignant.any() else float("nan")
    spec = float((~flagged[~malignant]).mean()) if (~malignant).any() else float("nan")
    return sens, spec


def max_threshold(scores_positive: np.ndarray, target_sensitivity: float) -> float:
    """Largest t with mean(scores_positive >= t) >= target_sensitivity."""
    ordered = np.sort(scores_positive)
    k = int(np.floor((1.0 - target_sensitivity) * len(ordered) + 1e-9))  # positives we may miss
    return float(ordered[min(k, len(ordered) - 1)])


def robust_threshold(
    scores_positive: np.ndarray, target_sensitivity: float, confidence: float, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """``(threshold, plain)``: the ``1 - confidence`` quantile of the per-resample thresholds (so about
    ``confidence`` of resamples meet the target), never above the plain threshold on all cases; in [1e-4, 1 - 1e-4]."""
    if len(scores_positive) == 0:
        raise ValueError("no malignant case: cannot choose a malignant threshold")
    rng = np.random.default_rng(seed)
    n = len(scores_positive)
    boots = [max_threshold(rng.choice(scores_positive, size=n, replace=True), target_sensitivity) for _ in range(n_boot)]
    plain = max_threshold(scores_positive, target_sensitivity)
    threshold = min(plain, float(np.quantile(boots, 1.0 - confidence))) if confidence > 0 else plain
    return float(np.clip(threshold, 1e-4, 1 - 1e-4)), plain
