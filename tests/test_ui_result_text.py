"""The words the clinician reads: a label chosen by the sensitivity threshold is never called "most likely";
the model page rounds the manifest's figures."""

from __future__ import annotations

import re

from device.crop import Box
from device.engine import Classification
from ui.result_card import describe


def _classification(probabilities: dict[str, float], label: str | None, reasons: tuple[str, ...] = ()) -> Classification:
    return Classification(
        probabilities=probabilities, label=label, decision=label or "benign", inconclusive=bool(reasons),
        reasons=reasons, thresholds={"malignant": 0.03}, crop=Box(0, 0, 10, 10), roi=None, latency_ms=1.0,
    )


def test_threshold_flag_is_explained() -> None:
    text = describe(_classification({"normal": 0.01, "benign": 0.85, "malignant": 0.14}, "malignant"), None, live=False)
    assert text.headline == "Malignant"
    assert "Flagged" in text.detail and "3% malignant threshold" in text.detail and "benign is more likely" in text.detail


def test_most_likely_when_the_label_is_the_top_class() -> None:
    text = describe(_classification({"normal": 0.05, "benign": 0.9, "malignant": 0.05}, "benign"), None, live=False)
    assert text.detail == "Most likely category"


def test_inconclusive_says_rescan_with_the_reason() -> None:
    text = describe(_classification({"normal": 0.4, "benign": 0.3, "malignant": 0.3}, None, ("blank: frame is black",)), None, live=False)
    assert text.headline == "Inconclusive — rescan" and "blank" in text.detail.lower()


def test_model_page_shows_confidence_intervals_rounded(shipped_bundle_dir) -> None:
    from device.bundle import load_bundle
    from ui.settings import format_value, model_text

    assert format_value([0.7748031988004498, 0.8647819989801122]) == "[0.775, 0.865]"
    assert format_value(["a", 1]) == '["a", 1]'
    text = model_text(load_bundle(shipped_bundle_dir).manifest, None)
    assert "accuracy.ci95: [0." in text
    assert re.search(r"\d\.\d{4,}", text) is None, "a figure with more than 3 decimals on the model page"


def test_the_model_page_says_when_a_site_lowered_the_threshold(shipped_bundle_dir) -> None:
    from device.bundle import load_bundle
    from ui.settings import model_text

    manifest = load_bundle(shipped_bundle_dir).manifest
    validated = manifest.thresholds["malignant"]
    assert "site setting" not in model_text(manifest, None, dict(manifest.thresholds))
    text = model_text(manifest, None, {"malignant": 0.01})
    assert f"malignant 1.0% (site setting; the model was validated with {validated * 100:.1f}%)" in text
