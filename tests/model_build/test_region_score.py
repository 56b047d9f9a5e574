"""Scoring a held-out source on the outlined lesion's region (model_build/region_score.py), with the real tiny
classifier and the hand-weighted tiny segmentation model through the device's Classifier: the region grows an
outline's box to the training's lesion-centred size and stays inside the frame; each frame's ``whole`` row is the
device's whole-frame result, its ``region`` row the device's result on that ROI (the whole frame's when nothing is
outlined), ``mean`` their mean, ``true_region`` the ROI around the reference mask (the whole frame's without one);
the folds read back for ``compare``; a bad segmentation folder is refused by
the real command, named, and nothing is written."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.crop import Box
from model_build.fold_compare import compare_folds
from model_build.operating_modes import PREDICTIONS_FILE
from model_build.region_score import REGION_GROWTH, region_around, score_on_regions
from tests.device.tiny_segmentation import build_tiny_segmentation, lesion_frame

REPO = Path(__file__).resolve().parents[2]


def test_the_region_grows_the_box_and_stays_in_the_frame() -> None:
    # a small lesion: the tap's square (0.6 of the shorter side, 120 px of 200)
    assert region_around((140, 90, 20, 20), (200, 300)) == Box(90, 40, 120, 120)
    # a large lesion: its box grown by REGION_GROWTH about its centre
    big = region_around((50, 20, 200, 150), (300, 400))
    assert (big.width, big.height) == (int(REGION_GROWTH * 200), int(REGION_GROWTH * 150)) and (big.x, big.y) == (20, 0)
    # at the frame's corner the region moves inward, keeping its size
    assert region_around((0, 0, 10, 10), (200, 300)) == Box(0, 0, 120, 120)
    # never wider than the frame
    assert region_around((0, 0, 300, 200), (200, 300)) == Box(0, 0, 300, 200)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A source laid out as BUS-BRA is (``images/``, ``labels.csv``, ``masks/mask_<id>.png``): frames with one bright
    lesion each, the benign ones with a reference mask, and lesion-free (dark) normals."""
    root = tmp_path_factory.mktemp("held") / "held"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = ["filename,label,patient_id"]
    for label, count in (("benign", 3), ("malignant", 3), ("normal", 2)):
        for i in range(count):
            ident = f"{label[0]}{i}"
            if label == "normal":
                frame = lesion_frame(120, 160, (80, 60), (1, 1), seed=i, lesion=50)  # no bright region: nothing outlined
            else:
                frame = lesion_frame(120, 160, (40 + 30 * i, 60), (12 + 4 * i, 9), seed=i)
            if label == "benign":
                mask = np.zeros_like(frame)
                cv2.ellipse(mask, (40 + 30 * i, 60), (12 + 4 * i, 9), 0, 0, 360, 255, -1)
                cv2.imwrite(str(root / "masks" / f"mask_{ident}.png"), mask)
            cv2.imwrite(str(root / "images" / f"bus_{ident}.png"), frame)
            rows.append(f"bus_{ident}.png,{label},{ident}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def _rows(fold: Path) -> dict[str, list[float]]:
    with open(fold / PREDICTIONS_FILE, newline="", encoding="utf-8") as fh:
        return {r["file"]: [float(r[f"p_{k}"]) for k in ("normal", "benign", "malignant")] for r in csv.DictReader(fh)}


def test_each_way_is_the_devices_result(tiny_bundle_dir: Path, source: Path, tmp_path: Path) -> None:
    from device.engine import Classifier
    from device.imageio import decode_image_file
    from device.quality import QualityLimits
    from model_build.segmentation_build import pack_segmentation

    seg = build_tiny_segmentation(tmp_path / "seg")
    result = score_on_regions(tiny_bundle_dir, seg, [source], tmp_path / "out")
    assert (result.images, result.outlined, result.with_mask) == (8, 6, 3)
    rows = {way: _rows(fold) for way, fold in result.folds.items()}
    assert set(rows) == {"whole", "region", "mean", "true_region"} and all(len(r) == 8 for r in rows.values())

    classifier = Classifier(pack_segmentation(tiny_bundle_dir, seg, tmp_path / "packed"), threads=1, limits=QualityLimits(min_confidence=0.0))
    for name, whole in rows["whole"].items():
        frame = decode_image_file(source / name)
        label = {"b": "benign", "m": "malignant", "n": "normal"}[Path(name).stem[4]]
        device = classifier.classify(frame)
        assert whole == pytest.approx([device.probabilities[k] for k in ("normal", "benign", "malignant")], abs=2e-6)
        if device.lesion is not None and device.lesion.outline is not None:
            roi = region_around(device.lesion.outline.box, frame.shape[:2])
            on_roi = classifier.classify(frame, roi=roi, outline=False)
            assert rows["region"][name] == pytest.approx([on_roi.probabilities[k] for k in ("normal", "benign", "malignant")], abs=2e-6)
        else:
            assert label == "normal" and rows["region"][name] == whole
        if label == "benign":
            mask = cv2.imread(str(source / "masks" / f"mask_{Path(name).stem[4:]}.png"), cv2.IMREAD_GRAYSCALE) > 0
            ys, xs = np.nonzero(mask)
            box = (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))
            on_truth = classifier.classify(frame, roi=region_around(box, frame.shape[:2]), outline=False)
            assert rows["true_region"][name] == pytest.approx([on_truth.probabilities[k] for k in ("normal", "benign", "malignant")], abs=2e-6)
        else:
            assert rows["true_region"][name] == whole  # no reference mask: the whole frame's result
        assert rows["mean"][name] == pytest.approx(list((np.array(whole) + np.array(rows["region"][name])) / 2), abs=2e-6)
    assert rows["region"] != rows["whole"]  # the ROI changed what the classifier saw
    assert compare_folds(result.folds["whole"], result.folds["region"], n_boot=20).lesions == 6


def test_a_bad_segmentation_folder_is_refused_by_the_command(tiny_bundle_dir: Path, source: Path, tmp_path: Path) -> None:
    empty = tmp_path / "not-a-segmentation"
    empty.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "model_build", "region-score", "--bundle", str(tiny_bundle_dir), "--segmentation", str(empty)]
        + ["--data", str(source), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "region-score failed" in proc.stderr and str(empty) in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
