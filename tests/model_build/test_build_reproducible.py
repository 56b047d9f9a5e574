"""A build is reproducible: the same images, recipe and seed give the same int8 model, byte for byte, in a new
process — the classifier's and the lesion-outline model's. Before, the classifier head was initialised before the
build's seed was set (two untrained builds of one recipe chose thresholds 0.20 and 0.08 on the same 5 validation
images) and the outline build set no seed at all, so no build could be redone to check it."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")

pytestmark = [pytest.mark.data, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(argv: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "model_build", *argv], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _build(datasets: Path, out: Path) -> str:
    """An untrained build (head initialised, nothing fitted) on 30 real images; the model file's SHA-256."""
    argv = ["build", "--data", str(datasets / "busi"), "--data", str(datasets / "bus-bra"), "--out", str(out)]
    argv += ["--limit-per-class", "6", "--epochs-frozen", "0", "--epochs", "0", "--grid-epochs", "0"]
    argv += ["--representative-steps", "4", "--bootstrap", "10", "--min-agreement", "0", "--no-shortcut-check", "--seed", "0"]
    _run(argv)
    return _sha256(out / "model.tflite")


def _segment(datasets: Path, out: Path) -> str:
    """A one-epoch outline build at 64 px on at most 6 lesion and 6 lesion-free images per source; the model's SHA-256."""
    argv = ["segment", "--data", str(datasets / "busi"), "--data", str(datasets / "breast-lesions-usg"), "--out", str(out)]
    argv += ["--resolution", "64", "--limit", "6", "--epochs", "1", "--batch-size", "8", "--representative-steps", "8", "--bootstrap", "20"]
    _run(argv)
    return _sha256(out / "segmentation.tflite")


def test_the_same_seed_builds_the_same_model(datasets: Path, tmp_path: Path) -> None:
    assert _build(datasets, tmp_path / "a") == _build(datasets, tmp_path / "b")


def test_the_same_seed_segments_with_the_same_model(datasets: Path, tmp_path: Path) -> None:
    assert _segment(datasets, tmp_path / "a") == _segment(datasets, tmp_path / "b")
