"""The close-up study (model_build/close_up_study.py) counts what the device's rule does: on four lesions with known
answers each way's sensitivity and specificity are the hand-counted ones (the rule calls suspicious what either view
does); the real command writes the figures and refuses folds of different images (exit 2, naming the fold); and the
figures docs/lesion-outline.md states are what the command gives on the committed region-study folds with the shipped
bundle's balanced mode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model_build.close_up_study import close_up_study
from tests.model_build.test_fold_compare import _write_fold

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "sonopi-lite0"
LABELS = ["malignant", "malignant", "benign", "benign"]


def _folds(tmp_path: Path) -> tuple[Path, Path]:
    # the shipped balanced threshold is 0.0845: 0.5 is suspicious, 0.01 is not
    whole = _write_fold(tmp_path / "whole", np.array([0.5, 0.01, 0.5, 0.01]), LABELS)
    near = _write_fold(tmp_path / "region", np.array([0.01, 0.5, 0.01, 0.01]), LABELS)
    return whole, near


def test_each_way_counts_as_the_device_decides(tmp_path: Path) -> None:
    whole, near = _folds(tmp_path)
    result = close_up_study(whole, near, SHIPPED, n_boot=50)
    ways = {w: {k: v["value"] for k, v in figures.items()} for w, figures in result["ways"].items()}
    assert ways == {
        "whole": {"sensitivity": 0.5, "specificity": 0.5},
        "close_up": {"sensitivity": 0.5, "specificity": 1.0},
        "rule": {"sensitivity": 1.0, "specificity": 0.5},  # suspicious when either view is
    }
    assert result["raised_by_the_scan"] == 2 and result["malignant_threshold"] == pytest.approx(0.0845, abs=1e-4)


def test_the_command_writes_the_figures_and_refuses_other_images(tmp_path: Path) -> None:
    whole, near = _folds(tmp_path)
    out = tmp_path / "close-up.json"
    command = [sys.executable, "-m", "model_build", "close-up", "--whole", str(whole), "--bundle", str(SHIPPED), "--bootstrap", "50"]
    done = subprocess.run([*command, "--close-up", str(near), "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "rule: sensitivity 1.000" in done.stdout and json.loads(out.read_text())["lesions"] == 4
    other = _write_fold(tmp_path / "other", np.array([0.5, 0.5, 0.5]), LABELS[:3])
    bad = subprocess.run([*command, "--close-up", str(other)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "do not hold the same held-out images" in bad.stderr and str(other) in bad.stderr


@pytest.mark.parametrize("fold", ["lite1-breast", "lite1-bus-bra", "lite0s1-bus-bra"])
def test_the_documented_figures_are_the_committed_folds(fold: str) -> None:
    region = REPO / "models" / "study-region" / fold
    committed = json.loads((REPO / "models" / "study-close-up" / f"{fold}.json").read_text())
    again = close_up_study(region / "whole", region / "region", SHIPPED)
    assert again["ways"] == committed["ways"] and again["raised_by_the_scan"] == committed["raised_by_the_scan"]
    docs = (REPO / "docs" / "lesion-outline.md").read_text(encoding="utf-8")
    ways = committed["ways"]
    for figure in ("sensitivity", "specificity"):  # the table's cell: whole · close-up alone · **rule**
        cell = " · ".join(f"{ways[w][figure]['value']:.3f}" for w in ("whole", "close_up")) + f" · **{ways['rule'][figure]['value']:.3f}**"
        assert cell in docs, (fold, figure, cell)
