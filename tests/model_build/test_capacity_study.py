"""The capacity study's figures in docs/model.md ("Capacity") come from the committed held-out predictions: the
Lite0 + Lite1 ensemble's paired AUC gain on BUS-BRA (the one gain whose CI excludes zero) and its pooled balanced
specificity are recomputed here from models/study-v2 and models/study-capacity, through the same commands' code."""

from __future__ import annotations

from pathlib import Path

from model_build.fold_compare import compare_folds, ensemble_folds
from model_build.operating_modes import study

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "study-v2"
LITE1 = REPO / "models" / "study-capacity" / "lite1"
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
