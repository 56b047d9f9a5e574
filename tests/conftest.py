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
TRAINED_SEGMENTATION = REPO / "models" / "segmentation-lite0"  # `model_build segment`'s output, packed into the shipped bundle


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
def classifier_bundle_dir(shipped_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped bundle's classifier alone: the same model, manifest and files without its segmentation model
    (section, file and report), written by the device's own ``write_bundle`` as the format-3 bundle every release
    before the outline was (``make ship-model SEGMENTATION=`` ships one). Once per session; the shipped bundle itself
    when it has no segmentation model."""
    import dataclasses

    from device.model.bundle import edit_bundle, load_bundle, write_bundle
    from model_build.card import model_card_text
    from model_build.report import read_report
    from model_build.segmentation_card import CARD_FILE

    shipped = load_bundle(shipped_bundle_dir)
    if shipped.manifest.segmentation is None:
        return shipped_bundle_dir
    out = tmp_path_factory.mktemp("classifier-alone") / "bundle"
    written = write_bundle(out, shipped.model_path.read_bytes(), dataclasses.replace(shipped.manifest, segmentation=None))
    files = shipped.other_files(leave_out={"report/segmentation/"})
    # the card made again from the manifest and the build report, as every card rewrite is
    files[CARD_FILE] = model_card_text(written.manifest, read_report(shipped_bundle_dir)).encode("utf-8")
    edit_bundle(out, files=files)
    return out


@pytest.fixture(scope="session")
def trained_outline_bundle_dir(shipped_bundle_dir: Path) -> Path:
    """The shipped bundle with its trained segmentation model (``make ship-model`` packs models/segmentation-lite0 and
    its leave-one-source-out folds' figures in)."""
    from device.model.bundle import load_bundle

    if load_bundle(shipped_bundle_dir).manifest.segmentation is None:
        pytest.skip(f"the shipped bundle {SHIPPED_BUNDLE} has no segmentation model (shipped with SEGMENTATION=)")
    return shipped_bundle_dir
