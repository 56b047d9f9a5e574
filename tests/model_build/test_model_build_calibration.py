"""Temperature scaling, the malignant operating threshold, metrics and bootstrap CIs."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")

from model_build import calibrate
from model_build.calibrate import CalibrationError, choose_threshold, fit_temperature, softmax
from model_build.evaluate import Predictions, evaluate_split, expected_calibration_error
from model_build.export import ExportError, Parity, check_parity, parity

LABELS = ("normal", "benign", "malignant")


def _logits(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits that are calibrated at T=1: labels are drawn from softmax(z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, (n, 3))
    p = softmax(z)
    y = np.array([rng.choice(3, p=row) for row in p])
    return z, y


def test_temperature_recovers_overconfidence() -> None:
    z, y = _logits(3000)
    t = fit_temperature(z * 4.0, y)  # logits made 4x over-confident
    assert 3.0 < t < 5.5
    assert expected_calibration_error(y, softmax(z * 4.0, t)) < expected_calibration_error(y, softmax(z * 4.0))


def test_no_temperature_is_fitted_on_a_handful_of_validation_images() -> None:
    """Fitted on the tiny end-to-end build's 5 validation images, T came out anywhere in 0.13-2.2 from one build to
    the next (and a small T sharpens every probability, int8 rounding with it). Below MIN_TEMPERATURE_IMAGES the
    temperature stays 1; from there on it is fitted."""

    def right(n: int) -> tuple[np.ndarray, np.ndarray]:  # every image right: the NLL alone drives T to its lower bound
        y = np.arange(n) % 3
        return 2.0 * np.eye(3)[y], y

    assert fit_temperature(*right(5)) == 1.0
    assert fit_temperature(*right(calibrate.MIN_TEMPERATURE_IMAGES - 1)) == 1.0
    assert fit_temperature(*right(calibrate.MIN_TEMPERATURE_IMAGES)) < 0.1  # enough images: fitted, here as sharp as allowed


def test_threshold_meets_target_sensitivity_on_validation() -> None:
    rng = np.random.default_rng(1)
    p = np.concatenate([rng.beta(5, 2, 100), rng.beta(2, 5, 300)])
    is_m = np.arange(400) < 100
    op = choose_threshold(p, is_m, target_sensitivity=0.95, confidence=0.9)
    assert 0.0 < op.threshold < 1.0
    assert op.val_sensitivity >= 0.95
    plain = choose_threshold(p, is_m, target_sensitivity=0.95, confidence=0.0)
    assert op.threshold <= plain.threshold
    with pytest.raises(CalibrationError):
        choose_threshold(p[~is_m], np.zeros(300, bool))


def test_metrics_have_cis_and_per_source_rows() -> None:
    z, y = _logits(300)
    groups = np.arange(300) // 2
    sources = np.where(np.arange(300) < 150, "a", "b")
    preds = Predictions(y, softmax(z), groups, sources)
    result = evaluate_split(preds, LABELS, threshold=0.3, n_boot=200)
    assert set(result) == {"all", "source:a", "source:b"}
    head = result["all"]["headline"]
    for key in ("accuracy", "macro_f1", "malignant_auc", "malignant_sensitivity", "malignant_specificity"):
        lo, hi = head[key]["ci95"]
        assert lo <= head[key]["value"] <= hi, key
    lo, hi = head["ece"]["ci95"]  # ECE is biased upwards under resampling: only check the interval
    assert 0.0 <= lo <= hi
    assert np.array(result["all"]["confusion"]["matrix"]).sum() == 300
    assert result["all"]["n_groups"] == 150


def test_parity_gate() -> None:
    z, _ = _logits(50)
    same = parity(z, z + 1e-3, 1.0)
    assert same.top1_agreement == 1.0 and same.max_prob_diff < 1e-2
    check_parity(same)
    with pytest.raises(ExportError, match="refused"):
        check_parity(Parity(n=100, top1_agreement=0.97, max_prob_diff=0.3, mean_prob_diff=0.05))
