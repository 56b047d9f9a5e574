"""Fixtures of the device tests: a copy of the tiny classifier bundle with a tiny real segmentation model."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def seg_bundle_dir(tiny_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny classifier bundle plus the tiny segmentation model (tests/device/tiny_segmentation.py), packed by
    ``model_build pack-segmentation``'s function through ``write_bundle`` (format 5: with the segmentation
    reference ``device selftest`` checks). Built once per session."""
    from tests.device.tiny_segmentation import build_tiny_segmentation_bundle

    root = tmp_path_factory.mktemp("seg-bundle")
    build_tiny_segmentation_bundle(root / "bundle", tiny_bundle_dir, root / "segment-out")
    return root / "bundle"
