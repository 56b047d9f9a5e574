"""A site bundle made from a base bundle with a segmentation model (format 4 or 5) carries that model on: the same
``segmentation`` section and file (sha256 unchanged), loaded by the engine, which outlines a lesion with it. Before,
``write_site_bundle`` copied the base through ``write_bundle`` without the segmentation bytes and was refused."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from device.engine import Classifier
from device.model.bundle import load_bundle
from device.site_adapt import Adaptation, ScannerCheck, write_site_bundle
from tests.device.tiny_segmentation import build_tiny_segmentation_bundle, lesion_frame


def _unchanged_head(base) -> Adaptation:
    """The base head as the site head (no site data): what is tested is the bundle written, not the fit."""
    cam = base.manifest.cam
    figures = {"normals_called_normal": None, "normals_called_malignant": None, "malignant_sensitivity": None, "auc_malignant": 0.5}
    return Adaptation(
        weights=np.array(cam.weights),
        bias=np.array(cam.bias),
        site_weight=0.0,
        counts={"normal": 0},
        refitted="normal only",
        patients=None,
        review=[],
        holdout={"split": "none", "normals": 0, "cases": 0, "before": figures, "after": figures},
        base_test={"n": 0, "before": figures, "after": figures},
        scanner=ScannerCheck(False, (), 0.0, {}),
        tried=[],
        unfit=[],
        data_sha256="0" * 64,
    )


@pytest.fixture(scope="module")
def seg_base(classifier_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("seg-base")
    return build_tiny_segmentation_bundle(root / "bundle", classifier_bundle_dir, root / "segment-out")


def test_the_site_bundle_carries_the_segmentation_model(seg_base, tmp_path: Path) -> None:
    assert seg_base.manifest.segmentation is not None and seg_base.manifest.cam is not None
    site = write_site_bundle(seg_base, _unchanged_head(seg_base), tmp_path / "site")
    seg, base_seg = site.manifest.segmentation, seg_base.manifest.segmentation
    assert seg == base_seg and site.manifest.head is not None
    assert site.segmentation_path is not None and site.segmentation_path.read_bytes() == seg_base.segmentation_path.read_bytes()
    assert hashlib.sha256(site.segmentation_path.read_bytes()).hexdigest() == seg.model_sha256
    reloaded = load_bundle(tmp_path / "site")
    result = Classifier(reloaded, threads=1).classify(lesion_frame(300, 500, (250, 150), (70, 40)), auto_crop=False)
    assert result.lesion is not None and (result.lesion.found or result.lesion.withheld is not None)
    if not result.inconclusive:
        assert result.lesion.found


def test_a_base_without_segmentation_still_makes_a_site_bundle_without_one(classifier_bundle_dir: Path, tmp_path: Path) -> None:
    base = load_bundle(classifier_bundle_dir)
    site = write_site_bundle(base, _unchanged_head(base), tmp_path / "site")
    assert site.manifest.segmentation is None and site.segmentation_path is None
