"""Settings › Model says which bundle the touchscreen runs when a site bundle was chosen on the device (real widgets
offscreen, the shipped bundle, real TFLite): a corrupt record — the configured bundle runs and an amber line names
the record file and the reason; a valid one — the site bundle runs (its version in the status bar) and the line
says where the choice is kept; no record — no line.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("PyQt5")
pytest.importorskip("pytestqt")

from device import site_choice
from device.config import DEFAULT_TOML, load_config
from tests.device.test_site_choice import make_site_bundle
from tests.ui.test_ui_workflow import write_frames
from ui.app import build_window, start


def _window(qtbot, tmp_path: Path, base: Path):
    frames = tmp_path / "usb"
    write_frames(frames, count=1)
    file = tmp_path / "device.toml"
    file.write_text(
        DEFAULT_TOML.replace('path = "models/sonopi-lite0"', f'path = "{base}"', 1)
        .replace('data_dir = "var"', f'data_dir = "{tmp_path / "data"}"', 1)
        .replace('spec = "folder:build/demo-frames"', f'spec = "folder:{frames}"', 1)
        .replace("threads = 2", "threads = 1", 1)
        .replace("enabled = true", "enabled = false", 1)
    )
    config = load_config(file)
    window = build_window(config, (800, 480), config_path=file)
    qtbot.addWidget(window)
    return window, config


@pytest.mark.parametrize("record", ["none", "corrupt", "valid"])
def test_settings_model_shows_the_site_choice(qtbot, tmp_path: Path, shipped_bundle_dir: Path, record: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    site = make_site_bundle(shipped_bundle_dir, data / "site-1")
    window, config = _window(qtbot, tmp_path, shipped_bundle_dir)
    if record == "corrupt":
        site_choice.record_file(data).write_text('{"format": 1}')
    elif record == "valid":
        site_choice.use_site_bundle(config, site)
    window.show()
    start(window)
    qtbot.waitUntil(lambda: window.services.analysis.ready, timeout=60_000)
    manifest = window.services.analysis.manifest
    qtbot.waitUntil(lambda: manifest.version in window.status.model.plain, timeout=10_000)
    line = window.settings.site_choice
    try:
        if record == "none":
            assert manifest.head is None and line.isHidden()
        elif record == "corrupt":
            assert manifest.head is None  # the configured bundle runs
            # the line follows model_ready through its own queued slot (ui/app.py), after the status bar's
            qtbot.waitUntil(lambda: not line.isHidden(), timeout=10_000)
            assert "Site bundle not used" in line.text()
            assert str(site_choice.record_file(data)) in line.text() and "must have exactly the keys" in line.text()
        else:
            assert manifest.head is not None and manifest.version == site_choice.read_choice(data).site.version
            qtbot.waitUntil(lambda: not line.isHidden(), timeout=10_000)
            assert "Site bundle in use" in line.text()
            assert str(site_choice.record_file(data)) in line.text()
    finally:
        window.shutdown()
