"""Settings › Model names the operating mode and calls a threshold a site setting only when it is one.

Proves (on the shipped manifest, with and without a format-3 decision block) that the page shows the mode and
its validated figures (or 'not validated'), that a mode's own threshold below ``thresholds.malignant`` (high
sensitivity) is not called a site setting, and that a site's lower threshold is.
"""

from __future__ import annotations

from pathlib import Path

from device.model.bundle import Manifest, load_bundle
from ui.settings import model_text

FIG = {"value": 0.95, "ci95": [0.9, 0.98], "n": 100}


def _format3(shipped: Path) -> Manifest:
    m = load_bundle(shipped).manifest
    decision = {
        "lesion_threshold": 0.4,
        "default_mode": "balanced",
        "validation": "leave-one-source-out",
        "modes": {
            "high_sensitivity": {"malignant_threshold": 0.01, "figures": {"sensitivity": FIG}},
            "balanced": {"malignant_threshold": m.thresholds["malignant"]},
        },
    }
    return Manifest.from_dict({**m.to_dict(), "format_version": 3, "decision": decision})


def test_a_modes_own_threshold_is_not_a_site_setting(classifier_bundle_dir: Path) -> None:
    m = _format3(classifier_bundle_dir)
    text = model_text(m, None, {"malignant": 0.01}, "high_sensitivity")
    assert "High sensitivity: sensitivity 95% [90–98%] (leave-one-source-out)" in text
    assert "site setting" not in text


def test_a_site_threshold_below_the_mode_is_named(classifier_bundle_dir: Path) -> None:
    m = _format3(classifier_bundle_dir)
    text = model_text(m, None, {"malignant": 0.005}, "high_sensitivity")
    assert "site setting; the model was validated with 1.0%" in text


def test_an_old_bundle_is_one_mode_not_validated(v1_bundle_dir: Path) -> None:
    m = load_bundle(v1_bundle_dir).manifest
    text = model_text(m, None, None, None)
    assert "Balanced (not validated)" in text and "site setting" not in text
