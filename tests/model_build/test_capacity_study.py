"""The capacity study's figures in docs/model.md ("Capacity") come from the committed held-out predictions: the
Lite0 + Lite1 ensemble's paired AUC gain on BUS-BRA (the one gain whose CI excludes zero) and its pooled balanced
specificity, the 288-px folds' BUSI AUC loss and pooled modes, and the third seed's pooled modes, are recomputed here from models/study-v2 and
models/study-capacity, through the same commands' code."""

from __future__ import annotations

from pathlib import Path

from model_build.fold_compare import compare_folds, ensemble_folds
from model_build.operating_modes import study

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "study-v2"
LITE1 = REPO / "models" / "study-capacity" / "lite1"
RES288 = REPO / "models" / "study-capacity" / "res288"
SOURCES = ("busi", "breast-lesions-usg", "bus-bra")


def test_the_ensembles_documented_figures_are_the_committed_folds(tmp_path: Path) -> None:
    for source in SOURCES:
        ensemble_folds([SHIPPED / f"out-{source}", LITE1 / f"out-{source}"], tmp_path / f"out-{source}")
    gain = compare_folds(SHIPPED / "out-bus-bra", tmp_path / "out-bus-bra")
    assert (round(gain.auc.baseline, 3), round(gain.auc.candidate, 3), round(gain.auc.difference, 3)) == (0.792, 0.812, 0.020)
    assert gain.auc.difference_ci[0] > 0 and gain.lesions == 1507
    pooled = study([tmp_path / f"out-{s}" for s in SOURCES], n_boot=50)
    balanced = pooled["modes"]["balanced"]
    assert round(balanced["malignant_threshold"], 4) == 0.1013
    assert round(balanced["figures"]["specificity"]["value"], 3) == 0.477, balanced["figures"]


def test_the_288_px_folds_documented_figures_are_the_committed_folds() -> None:
    loss = compare_folds(SHIPPED / "out-busi", RES288 / "out-busi")
    assert (round(loss.auc.baseline, 3), round(loss.auc.candidate, 3), round(loss.auc.difference, 3)) == (0.897, 0.867, -0.030)
    assert loss.auc.difference_ci[1] < 0 and loss.lesions == 517
    balanced = study([RES288 / f"out-{s}" for s in SOURCES], n_boot=50)["modes"]["balanced"]
    assert round(balanced["malignant_threshold"], 4) == 0.0850
    assert round(balanced["figures"]["specificity"]["value"], 3) == 0.417
    assert round(balanced["figures"]["normals_called_malignant"]["value"], 3) == 0.815


def test_the_third_seeds_documented_pooled_figures_are_the_committed_folds() -> None:
    seed2 = REPO / "models" / "study-capacity" / "lite0-seed2"
    balanced = study([seed2 / f"out-{s}" for s in SOURCES], n_boot=50)["modes"]["balanced"]
    assert round(balanced["malignant_threshold"], 4) == 0.0568
    assert round(balanced["figures"]["specificity"]["value"], 3) == 0.289
    assert round(balanced["figures"]["normals_called_malignant"]["value"], 3) == 0.972
