"""Operating modes chosen on leave-one-source-out folds (model_build/operating_modes.py).

Proves that each mode's threshold keeps its target sensitivity on *every* held-out source (not just pooled),
that thresholds are ordered by mode, that the lesion threshold separates normal tissue from lesions, that the
figures are computed on real images (lesion-free views reported apart), that the manifest's decision block
carries what the device needs, and that malformed or overlapping folds are refused with the file named.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from model_build import operating_modes as om


def _fold(root: Path, source: str, rows: list[tuple[str, str, str, float, float, float]]) -> Path:
    fold = root / f"out-{source}"
    (fold / "report").mkdir(parents=True)
    with open(fold / om.PREDICTIONS_FILE, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["source", "file", "view", "label", "group", "p_normal", "p_benign", "p_malignant"])
        for i, (file, view, label, pn, pb, pm) in enumerate(rows):
            w.writerow([source, file, view, label, f"g{i}", pn, pb, pm])
    return fold


def _synthetic(root: Path, source: str, seed: int, shift: float) -> Path:
    """Malignant p(malignant) ~ U(0.2, 1) shifted, benign ~ U(0, 0.5), normals low p(lesion)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(60):
        pm = float(np.clip(rng.uniform(0.2, 1.0) - shift, 0.001, 0.999))
        rows.append((f"m{i}.png", "full", "malignant", 0.01, max(0.0, 0.99 - pm), pm))
    for i in range(80):
        pm = float(rng.uniform(0.0, 0.5))
        rows.append((f"b{i}.png", "full", "benign", 0.05, 0.95 - pm, pm))
    for i in range(40):
        pn = float(rng.uniform(0.6, 0.99))
        rows.append((f"n{i}.png#lesion_free", "lesion_free", "normal", pn, (1 - pn) * 0.9, (1 - pn) * 0.1))
    return _fold(root, source, rows)


def test_every_source_meets_each_modes_target(tmp_path: Path) -> None:
    folds = [_synthetic(tmp_path, "a", 0, 0.0), _synthetic(tmp_path, "b", 1, 0.15)]
    result = om.study(folds, n_boot=50)
    thresholds = [result["modes"][m]["malignant_threshold"] for m in om.MODE_TARGETS]
    assert thresholds == sorted(thresholds)
    for mode, target in om.MODE_TARGETS.items():
        for source, figures in result["modes"][mode]["per_source"].items():
            assert figures["sensitivity"]["value"] >= target, (mode, source)
    # source b's cancers score lower: its target decides every threshold (the minimum over sources)
    alone_b = om.choose_mode_thresholds(om.read_folds([folds[1]]))
    alone_a = om.choose_mode_thresholds(om.read_folds([folds[0]]))
    assert all(result["modes"][m]["malignant_threshold"] == round(alone_b[m], 6) < alone_a[m] for m in om.MODE_TARGETS)


def test_a_mode_misses_exactly_the_share_its_target_allows(tmp_path: Path) -> None:
    """10 cancers at 0.1 … 1.0: balanced (0.90) may miss one, so its threshold is the 2nd lowest, 0.2; high
    specificity (0.80) may miss two (0.3). ``(1 - 0.9) * 10`` is 0.999… in floating point: floored, it allowed none."""
    rows = [(f"m{i}.png", "full", "malignant", 0.01, max(0.0, 0.99 - pm), pm) for i, pm in enumerate(np.linspace(0.1, 1.0, 10))]
    rows += [(f"b{i}.png", "full", "benign", 0.05, 0.95 - pm, pm) for i, pm in enumerate((0.05, 0.15, 0.25, 0.5))]
    thresholds = om.choose_mode_thresholds(om.read_folds([_fold(tmp_path, "a", rows)]))
    assert thresholds["balanced"] == pytest.approx(0.2) and thresholds["high_specificity"] == pytest.approx(0.3), thresholds


def test_views_are_reported_apart_from_real_normals(tmp_path: Path) -> None:
    result = om.study([_synthetic(tmp_path, "a", 0, 0.0)], n_boot=20)
    figures = result["modes"]["balanced"]["figures"]
    assert figures["normals_called_malignant"]["n"] == 0  # no real normal scan in this source
    assert figures["normal_views_called_malignant"]["n"] == 40
    assert figures["specificity"]["n"] == 80  # benign images only: views are not counted as specificity
    assert 0.4 < result["lesion_threshold"] < 0.95


def test_decision_block_has_every_mode_and_category(tmp_path: Path) -> None:
    block = om.decision_block(om.study([_synthetic(tmp_path, "a", 0, 0.0)], n_boot=20))
    assert block["default_mode"] in block["modes"] and block["p_malignant"] == "softmax"
    for mode in om.MODE_TARGETS:
        entry = block["modes"][mode]
        assert 0 < entry["malignant_threshold"] < 1
        # no real image of this source falls under no_lesion: that category has no figure (never a made-up 0)
        assert set(entry["categories"]) == {"low_suspicion", "suspicious"}
        assert set(entry["figures"]) == {"sensitivity", "specificity"}  # and no real normal scan: no normals figure


def test_missing_or_overlapping_folds_are_refused(tmp_path: Path) -> None:
    with pytest.raises(om.StudyError, match="external_predictions.csv"):
        om.read_folds([tmp_path / "nowhere"])
    a = _synthetic(tmp_path, "a", 0, 0.0)
    twin = tmp_path / "twin"
    (twin / "report").mkdir(parents=True)
    (twin / om.PREDICTIONS_FILE).write_text((a / om.PREDICTIONS_FILE).read_text())
    with pytest.raises(om.StudyError, match="held out by two folds"):
        om.read_folds([a, twin])
    bad = tmp_path / "bad"
    (bad / "report").mkdir(parents=True)
    (bad / om.PREDICTIONS_FILE).write_text("source,file\nx,y\n")
    with pytest.raises(om.StudyError, match="missing column"):
        om.read_folds([bad])


def test_store_in_bundle_gives_a_format3_bundle_the_device_decides_with(tmp_path: Path, v1_bundle_dir: Path) -> None:
    import json
    import shutil

    from device.decision import decide
    from device.model.bundle import load_bundle

    bundle_dir = tmp_path / "bundle"
    shutil.copytree(v1_bundle_dir, bundle_dir)
    result = om.study([_synthetic(tmp_path, "a", 0, 0.0), _synthetic(tmp_path, "b", 1, 0.15)], n_boot=20)
    bundle = om.store_in_bundle(bundle_dir, result)
    m = bundle.manifest
    assert m.format_version == 3 and m.decision is not None
    assert m.version.startswith(load_bundle(v1_bundle_dir).manifest.version + "+modes-")
    assert m.thresholds["malignant"] == result["modes"]["balanced"]["malignant_threshold"]
    assert json.loads((bundle_dir / "report" / "metrics.json").read_text())["leave_one_source_out"] == result
    card = (bundle_dir / "MODEL_CARD.md").read_text()
    assert card.index("leave-one-source-out") < card.index("## Intended use")  # the card leads with it
    from model_build.card import _v

    balanced = result["modes"]["balanced"]
    headline = card[: card.index("## Intended use")]
    assert f"{balanced['malignant_threshold']:.4f}" in headline  # the study's own figures, not the test split's
    assert _v(balanced["figures"]["sensitivity"]) in headline and _v(balanced["figures"]["specificity"]) in headline
    again = om.store_in_bundle(bundle_dir, result)  # the same study: the same version, not a growing suffix
    assert again.manifest.version == m.version
    t = result["modes"]["high_sensitivity"]["malignant_threshold"]
    probs = np.array([0.1, 0.9 - t, t])
    assert decide(probs, m.labels, m.decision_spec(), "high_sensitivity", None, False).category.value == "suspicious"


def _study_for_bar(auc: float, sensitivity: float, specificity: float, normals_malignant: float | None) -> dict:
    def fig(value: float | None) -> dict:
        return {"value": value, "ci95": [None, None], "n": 10}

    per_mode = {"sensitivity": fig(sensitivity), "specificity": fig(specificity), "normals_called_malignant": fig(normals_malignant)}
    return {
        "default_mode": "balanced",
        "per_source": {"busi": {"malignant_auc_lesions": fig(auc)}, "bus-bra": {"malignant_auc_lesions": fig(0.95)}},
        "modes": {"balanced": {"per_source": {"busi": per_mode, "bus-bra": {**per_mode, "normals_called_malignant": fig(None)}}}},
    }


def test_the_card_names_every_miss_of_the_leave_one_source_out_bar() -> None:
    from model_build.card import _loso_bar_warning, loso_bar_misses

    assert loso_bar_misses(_study_for_bar(0.90, 0.90, 0.55, 0.15)) == []  # at the bar on every source: met
    assert _loso_bar_warning(_study_for_bar(0.93, 0.95, 0.60, 0.05)) == []
    misses = loso_bar_misses(_study_for_bar(0.897, 0.91, 0.54, 0.615))
    assert misses == [
        "BUSI: malignant AUC 0.897 (n 10) < 0.90",
        "BUSI: specificity 0.540 (n 10) < 0.55",
        "BUSI: normal scans called malignant 0.615 (n 10) > 0.15",
        "BUS-BRA: specificity 0.540 (n 10) < 0.55",  # a source without normal scans is not judged on them
    ]
    warning = "".join(_loso_bar_warning(_study_for_bar(0.897, 0.91, 0.54, 0.615)))
    assert "leave-one-source-out bar is NOT met" in warning and all(m in warning for m in misses)
