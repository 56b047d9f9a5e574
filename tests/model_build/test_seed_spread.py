"""Another training run of the shipped recipe at the shipped bundle's thresholds (model_build/seed_spread.py): the
figures the shipped card states in its "Another training run" section are what the committed second-seed folds give
at the bundle's own thresholds (recomputed here, point values); the threshold it names as holding on both runs keeps
each mode's target sensitivity on every held-out source of both runs, and no higher one would; ``--write`` on a copy
stores them and rewrites the
card without touching the model or the manifest; folds of other sources, or a bundle with no leave-one-source-out
figures, are refused by the real command naming the problem (exit 2)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model_build.operating_modes import MODE_TARGETS, StudyError, read_folds
from model_build.seed_spread import seed_spread

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "sonopi-lite0"
RESEEDED = [REPO / "models" / "study-capacity" / "lite0-seed1" / f"out-{s}" for s in ("breast-lesions-usg", "bus-bra", "busi")]
THIS_RUN = [REPO / "models" / "study-v2" / f"out-{s}" for s in ("breast-lesions-usg", "bus-bra", "busi")]  # the shipped study's folds


def _worst_source_sensitivity(folds: list[Path], threshold: float) -> float:
    scores = read_folds(folds)
    cancers = (scores.label == "malignant") & (scores.view == "full")
    return min(float(np.mean(scores.p_malignant[cancers & (scores.source == s)] >= threshold)) for s in set(scores.source[cancers].tolist()))


def test_the_both_runs_threshold_keeps_every_target_on_both_runs_and_is_the_highest_that_does() -> None:
    result = seed_spread(SHIPPED, RESEEDED, n_boot=10, this_run_folds=THIS_RUN)
    for mode, m in result["modes"].items():
        both = m["both_runs"]
        t = both["malignant_threshold"]
        assert t == min(m["malignant_threshold"], both["reseeded_threshold"])
        for folds in (THIS_RUN, RESEEDED):
            assert _worst_source_sensitivity(folds, t) >= MODE_TARGETS[mode], (mode, folds[0].parent.name)
        above = np.nextafter(t + 1e-6, 1.0)  # the next score up: one run falls below its target there
        assert min(_worst_source_sensitivity(f, above) for f in (THIS_RUN, RESEEDED)) < MODE_TARGETS[mode], mode
    stored = json.loads((SHIPPED / "report" / "metrics.json").read_text())["seed_spread"]["modes"]["balanced"]["both_runs"]
    assert stored["malignant_threshold"] == result["modes"]["balanced"]["both_runs"]["malignant_threshold"]
    card = (SHIPPED / "MODEL_CARD.md").read_text(encoding="utf-8")
    row = next(line for line in card.splitlines() if line.startswith("| Balanced | ") and f"| {stored['malignant_threshold']:.4f} |" in line)
    assert f"{stored['this_run']['specificity']['value']:.3f} · {stored['reseeded']['specificity']['value']:.3f}" in row


def test_the_shipped_cards_figures_are_the_second_seeds_folds_at_the_shipped_thresholds() -> None:
    result = seed_spread(SHIPPED, RESEEDED, n_boot=20)
    stored = json.loads((SHIPPED / "report" / "metrics.json").read_text())["seed_spread"]
    for mode, m in result["modes"].items():
        for figure, entry in m["reseeded"].items():
            assert entry["value"] == stored["modes"][mode]["reseeded"][figure]["value"], (mode, figure)
    balanced = result["modes"]["balanced"]
    assert balanced["malignant_threshold"] == pytest.approx(0.0845, abs=1e-4)
    assert round(balanced["this_run"]["sensitivity"]["value"], 3) == 0.908 and round(balanced["reseeded"]["sensitivity"]["value"], 3) == 0.831
    card = (SHIPPED / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "## Another training run of this recipe" in card
    assert "0.908 on this run's folds and 0.831 on the other's" in card


def test_write_rewrites_the_card_and_report_only(tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(SHIPPED, copy)
    (copy / "MODEL_CARD.md").write_text("old card\n", encoding="utf-8")
    model, manifest = (copy / "model.tflite").read_bytes(), (copy / "manifest.json").read_bytes()
    folds = [a for f in RESEEDED for a in ("--fold", str(f))]
    done = subprocess.run(
        [sys.executable, "-m", "model_build", "seed-spread", "--bundle", str(copy), *folds, "--bootstrap", "20", "--write"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "balanced (p(malignant) >= 0.0845): sensitivity 0.908 -> 0.831" in done.stdout
    assert "## Another training run of this recipe" in (copy / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert (copy / "model.tflite").read_bytes() == model and (copy / "manifest.json").read_bytes() == manifest


def test_folds_of_other_sources_are_refused(tmp_path: Path) -> None:
    with pytest.raises(StudyError, match=r"the reseeded folds hold out \['bus-bra'\], the bundle's study held out"):
        seed_spread(SHIPPED, RESEEDED[1:2], n_boot=5)
    plain = tmp_path / "plain"
    shutil.copytree(SHIPPED, plain)
    report = json.loads((plain / "report" / "metrics.json").read_text())
    del report["leave_one_source_out"]
    (plain / "report" / "metrics.json").write_text(json.dumps(report))
    done = subprocess.run(
        [sys.executable, "-m", "model_build", "seed-spread", "--bundle", str(plain), "--fold", str(RESEEDED[0])],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and "no leave-one-source-out figures" in done.stderr
