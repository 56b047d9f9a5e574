"""The reference bundle shipped in models/sonopi-lite0: loads, fits the size budget, documents itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from device.model.bundle import load_bundle
from model_build.card import PRODUCT_BAR

MAX_BYTES = 5 * 1024 * 1024


def test_shipped_bundle_loads_and_fits(shipped_bundle_dir: Path) -> None:
    bundle = load_bundle(shipped_bundle_dir)
    m = bundle.manifest
    assert m.labels == ("normal", "benign", "malignant")
    assert m.input.height == m.input.width == 288 and m.input.dtype == "uint8"  # make model's --resolution 288
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
