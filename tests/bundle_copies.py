"""A test's own copy of a model bundle, and an edit of that copy's manifest: how tests make the bundles the loader
and ``device selftest`` must refuse (tests/device/model/test_bundle_segmentation.py, tests/device/test_selftest_segmentation.py)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from device.model.bundle import MANIFEST_FILE


def copy_bundle(src: Path, tmp_path: Path) -> Path:
    """``src`` copied to ``tmp_path/bundle``."""
    dst = tmp_path / "bundle"
    shutil.copytree(src, dst)
    return dst


def rewrite_manifest(bundle: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """The bundle's manifest.json read, changed in place by ``change``, written back (no checksum is updated)."""
    path = bundle / MANIFEST_FILE
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
