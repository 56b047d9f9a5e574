"""The reference bundle shipped in models/sonopi-lite0: loads, fits the size budget, documents itself."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from device.model.bundle import load_bundle
from model_build.card import PRODUCT_BAR, loso_bar_misses

MAX_BYTES = 12 * 1024 * 1024  # issue 15: a bundle of at most 12 MB (classifier and outline model together)
MAKEFILE = Path(__file__).resolve().parents[2] / "Makefile"


def _make_model_resolution() -> int:
    """The input size `make model` builds at (MODEL_RECIPE's --resolution): the shipped bundle is its output."""
    found = re.search(r"^MODEL_RECIPE\s*\?=.*--resolution (\d+)", MAKEFILE.read_text(encoding="utf-8"), re.MULTILINE)
    assert found, "Makefile: MODEL_RECIPE has no --resolution"
    return int(found.group(1))


def test_shipped_bundle_loads_and_fits(shipped_bundle_dir: Path) -> None:
    bundle = load_bundle(shipped_bundle_dir)
    m = bundle.manifest
    assert m.labels == ("normal", "benign", "malignant")
    assert m.input.height == m.input.width == _make_model_resolution() and m.input.dtype == "uint8"
    assert "malignant" in m.thresholds and m.temperature > 0 and m.cam is not None
    total = sum(p.stat().st_size for p in shipped_bundle_dir.rglob("*") if p.is_file())
    assert total <= MAX_BYTES, f"bundle is {total / 1e6:.2f} MB"


def test_shipped_bundle_has_report_and_card(shipped_bundle_dir: Path) -> None:
    card = (shipped_bundle_dir / "MODEL_CARD.md").read_text(encoding="utf-8")
    for heading in ("Intended use", "Data", "Metrics", "Known failure modes", "What was not validated"):
        assert heading in card
    metrics = json.loads((shipped_bundle_dir / "report" / "metrics.json").read_text(encoding="utf-8"))
    assert (shipped_bundle_dir / "report" / "split.csv").is_file()
    headline = metrics["evaluations"]["test_int8"]["all"]["headline"]
    misses_bar = any(headline[name]["value"] < minimum for name, minimum in PRODUCT_BAR.items())
    assert ("bar is NOT met" in card) == misses_bar  # the card never hides (or invents) a miss
    agreement = metrics["parity_int8_vs_float_test"]["top1_agreement"]
    if agreement < 0.98:
        # an interim bundle below the parity gate must say so loudly in its card
        assert "parity gate NOT passed" in card
        pytest.xfail(f"shipped bundle is interim: int8/float top-1 agreement {agreement:.3f} < 0.98 gate")


def test_shipped_decision_and_card_lead_with_the_leave_one_source_out_study(shipped_bundle_dir: Path) -> None:
    """Issue 15: the shipped bundle's modes were chosen on every source held out in turn, and its card's headline
    figures are that study's (not the test split's), the same numbers as the manifest the device decides with."""
    bundle = load_bundle(shipped_bundle_dir)
    spec = bundle.manifest.decision_spec()
    study = json.loads((shipped_bundle_dir / "report" / "metrics.json").read_text(encoding="utf-8"))["leave_one_source_out"]
    assert sorted(study["held_out_sources"]) == sorted(bundle.manifest.training_data["sources"])  # every source, in turn
    assert spec.validation is not None and spec.validation.startswith("leave-one-source-out")
    assert set(spec.modes) == {"high_sensitivity", "balanced", "high_specificity"} and spec.default_mode == "balanced"
    assert spec.lesion_threshold == study["lesion_threshold"]
    card = (shipped_bundle_dir / "MODEL_CARD.md").read_text(encoding="utf-8")
    headline = card[: card.index("## Intended use")]
    assert "leave-one-source-out" in headline
    for name, mode in study["modes"].items():
        assert spec.mode(name).malignant_threshold == mode["malignant_threshold"]
        assert f"{mode['malignant_threshold']:.4f}" in headline
        sensitivity = mode["figures"]["sensitivity"]
        assert spec.mode(name).figures is not None and spec.mode(name).figures["sensitivity"].value == sensitivity["value"]
        assert f"{sensitivity['value']:.3f}" in headline
    assert ("leave-one-source-out bar is NOT met" in headline) == bool(loso_bar_misses(study))  # never hides a miss
