"""Shared fixtures: a tiny real model bundle, a device config in a temp dir, the shared datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"
SHIPPED_BUNDLE = REPO / "models" / "sonopi-lite0"
# The previous release, v1 (format 2, Lite0 at 288 px, BUSI + BUS-BRA only), kept as what "an old bundle" means to the
# tests (the device must keep loading it) and as the base of the site-adaptation study: it never saw BrEaST-Lesions-USG.
V1_BUNDLE = REPO / "models" / "sonopi-lite0-v1"
TRAINED_SEGMENTATION = REPO / "models" / "segmentation-lite0"  # `model_build segment`'s output, not in the shipped bundle


@pytest.fixture(scope="session")
def tiny_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny real int8 TFLite bundle (built once per session through the real export path)."""
    from tests.tiny_bundle import build_tiny_bundle

    out = tmp_path_factory.mktemp("bundle") / "tiny"
    build_tiny_bundle(out)
    return out


@pytest.fixture()
def tiny_bundle(tiny_bundle_dir: Path):
    from device.model.bundle import load_bundle

    return load_bundle(tiny_bundle_dir)


@pytest.fixture(scope="session")
def datasets() -> Path:
    if not (DATASETS / "busi").is_dir():
        pytest.skip(f"shared datasets not found at {DATASETS} (see ../shared/datasets/README.md)")
    return DATASETS


@pytest.fixture(scope="session")
def shipped_bundle_dir() -> Path:
    if not (SHIPPED_BUNDLE / "manifest.json").is_file():
        pytest.skip(f"shipped model bundle not present at {SHIPPED_BUNDLE} (built by `make model`)")
    return SHIPPED_BUNDLE


@pytest.fixture(scope="session")
def v1_bundle_dir() -> Path:
    if not (V1_BUNDLE / "manifest.json").is_file():
        pytest.skip(f"the v1 model bundle is not present at {V1_BUNDLE}")
    return V1_BUNDLE


@pytest.fixture()
def window(qtbot, tmp_path: Path, tiny_bundle_dir: Path):
    """The touchscreen app on a folder of exam frames with the tiny model, first-run notice accepted and a frame
    shown (tests/ui/test_ui_exam_defects.open_window); shut down afterwards. Used by the exam-workflow tests."""
    from tests.ui.test_ui_exam_defects import open_window
    from tests.ui.test_ui_workflow import write_frames

    frames = tmp_path / "usb" / "exam"
    write_frames(frames)
    app_window = open_window(qtbot, tmp_path, tiny_bundle_dir, frames)
    yield app_window
    app_window.shutdown()


@pytest.fixture(scope="session")
def trained_outline_bundle_dir(shipped_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped classifier bundle with the trained segmentation model and its leave-one-source-out folds packed in
    (``model_build pack-segmentation``'s function, as ``make ship-model SEGMENTATION=models/segmentation-lite0``
    does), once per session."""
    if not (TRAINED_SEGMENTATION / "segmentation.json").is_file():
        pytest.skip(f"trained segmentation model not present at {TRAINED_SEGMENTATION} (built by `model_build segment`)")
    from model_build.segmentation_build import pack_segmentation

    out = tmp_path_factory.mktemp("trained-outline") / "bundle"
    pack_segmentation(shipped_bundle_dir, TRAINED_SEGMENTATION, out, folds=sorted((TRAINED_SEGMENTATION / "folds").iterdir()))
    return out
