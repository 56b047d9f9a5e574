"""The words the clinician reads: the headline is the category in clinician wording (never a class name next to the
top class's probability); p(malignant) and the threshold are printed so that they compare on screen as they do in
fact; a mode without figures says "not validated"; the model page rounds the manifest's figures."""

from __future__ import annotations

import re

from device.crop import Box
from device.decision import decide
from device.engine import Classification
from device.model.bundle import DecisionSpec, ModeSpec
from ui.result_card import describe, percent_pair

SPEC = DecisionSpec(modes={"balanced": ModeSpec(0.03)})
LABELS = ("normal", "benign", "malignant")


def _classification(probabilities: dict[str, float], reasons: tuple[str, ...] = ()) -> Classification:
    d = decide(probabilities, LABELS, SPEC, "balanced", None, bool(reasons))
    return Classification(
        probabilities=probabilities,
        label=None if reasons else d.label,
        decision=d.label,
        inconclusive=bool(reasons),
        reasons=reasons,
        thresholds={"malignant": 0.03},
        crop=Box(0, 0, 10, 10),
        roi=None,
        latency_ms=1.0,
        assessment=d,
    )


def test_a_suspicious_result_says_refer_with_p_malignant_and_the_mode() -> None:
    text = describe(_classification({"normal": 0.63, "benign": 0.23, "malignant": 0.14}), None, live=False)
    assert text.headline == "Suspicious — refer" and text.p_malignant == "p(malignant) 14.0%"
    assert text.threshold == "Judged in Balanced mode: suspicious at ≥ 3.0%"
    assert text.figures == "Balanced mode: not validated"
    assert text.rate == "Malignancy rate in this category: not validated"


def test_no_lesion_and_low_suspicion() -> None:
    assert describe(_classification({"normal": 0.9, "benign": 0.09, "malignant": 0.01}), None, False).headline == "No lesion seen"
    low = describe(_classification({"normal": 0.05, "benign": 0.93, "malignant": 0.02}), None, False)
    assert low.headline == "Lesion — low suspicion" and low.detail == "p(lesion) 95%: lesion seen (at ≥ 50%)"


def test_rounding_never_makes_a_value_look_on_the_other_side_of_its_threshold() -> None:
    p, t = percent_pair(0.02855, 0.0286)
    assert float(p.rstrip("%")) < float(t.rstrip("%"))
    p, t = percent_pair(0.0286, 0.0286)
    assert p == t == "2.9%"
    assert percent_pair(0.4, 0.1) == ("40%", "10%")


def test_inconclusive_says_rescan_with_the_reason() -> None:
    text = describe(_classification({"normal": 0.4, "benign": 0.3, "malignant": 0.3}, ("blank: frame is black",)), None, live=False)
    assert text.headline == "Inconclusive — rescan" and "blank" in text.detail.lower()
    assert not text.p_malignant and not text.threshold


def test_model_page_shows_confidence_intervals_rounded(shipped_bundle_dir) -> None:
    from device.model.bundle import load_bundle
    from ui.settings import format_value, model_text

    assert format_value([0.7748031988004498, 0.8647819989801122]) == "[0.775, 0.865]"
    assert format_value(["a", 1]) == '["a", 1]'
    text = model_text(load_bundle(shipped_bundle_dir).manifest, None)
    assert "accuracy.ci95: [0." in text
    assert re.search(r"\d\.\d{4,}", text) is None, "a figure with more than 3 decimals on the model page"


def test_the_model_page_says_when_a_site_lowered_the_threshold(shipped_bundle_dir) -> None:
    from device.model.bundle import load_bundle
    from ui.settings import model_text

    manifest = load_bundle(shipped_bundle_dir).manifest
    validated = manifest.thresholds["malignant"]
    assert "site setting" not in model_text(manifest, None, dict(manifest.thresholds))
    text = model_text(manifest, None, {"malignant": 0.01})
    assert f"malignant 1.0% (site setting; the model was validated with {validated * 100:.1f}%)" in text
