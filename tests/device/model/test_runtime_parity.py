"""The two sides of the model seam give the same probabilities, image by image.

The device (a real ``python -m device classify --json`` process: decode, crop, letterbox, its interpreter,
its temperature) and the workstation (``model_build``'s decode and its re-scoring of a bundle) are compared
on the same files: every probability equal within the JSON's 6-decimal rounding. Run on the tiny bundle
with synthetic scanner screens (always), and on the shipped bundle with real shared images (skipped
without the datasets). A drift in either side's preprocessing, runtime, output lookup or temperature fails it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from device.demo import write_demo_frames
from device.model.bundle import load_bundle
from device.model.runtime import bundle_probabilities
from model_build.data import Sample, decode_sample

ROUNDING = 5.1e-7  # classify --json rounds to 6 decimals


def device_probabilities(bundle_dir: Path, files: list[Path], tmp_path: Path) -> np.ndarray:
    config = tmp_path / "device.toml"
    config.write_text(f'[model]\npath = "{bundle_dir}"\n[store]\npath = "{tmp_path / "store.db"}"\n', encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "device", "--config", str(config), "classify", "--json", "--model", str(bundle_dir), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    outputs = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert len(outputs) == len(files)
    labels = load_bundle(bundle_dir).manifest.labels
    return np.array([[out["probabilities"][name] for name in labels] for out in outputs])


def workstation_probabilities(bundle_dir: Path, files: list[Path]) -> np.ndarray:
    bundle = load_bundle(bundle_dir)
    pixels = np.stack([decode_sample(Sample(path=f, label="normal", source="parity"), bundle.manifest.input) for f in files])
    return bundle_probabilities(bundle, pixels)


def assert_same(bundle_dir: Path, files: list[Path], tmp_path: Path) -> None:
    on_device = device_probabilities(bundle_dir, files, tmp_path)
    on_workstation = workstation_probabilities(bundle_dir, files)
    diff = np.abs(on_device - on_workstation)
    worst = int(diff.max(axis=1).argmax())
    assert diff.max() <= ROUNDING, f"{files[worst].name}: device {on_device[worst]} vs workstation {on_workstation[worst]}"


def test_tiny_bundle_same_probabilities_on_device_and_workstation(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    files = write_demo_frames(tmp_path / "frames", 6)
    assert_same(tiny_bundle_dir, files, tmp_path)


def test_shipped_bundle_same_probabilities_on_real_images(shipped_bundle_dir: Path, datasets: Path, tmp_path: Path) -> None:
    files = sorted((datasets / "busi" / "benign").glob("*.png"))[:4] + sorted((datasets / "busi" / "normal").glob("*.png"))[:4]
    files += sorted((datasets / "bus-bra" / "images").glob("*.png"))[:4]
    files = [f for f in files if "_mask" not in f.name]
    assert len(files) >= 8, f"too few real images found under {datasets}"
    assert_same(shipped_bundle_dir, files, tmp_path)
