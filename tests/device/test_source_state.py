"""The image source's state reaches the heartbeat (device/source_state.py): the device application writes ``ok`` while
frames arrive and ``lost`` while its source is gone — on a change and again before the heartbeat would call the
report stale, never per frame. Checked on the reporter with a clock, on a real ``device run`` (a capture card that
is not there, then a folder that is) and on the touchscreen app (a folder source that is not there), reading the
store as the uplink does (``read_source_state``)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from device.demo import write_demo_frames
from device.link.uplink.heartbeat import read_source_state
from device.source_state import SourceState, SourceStateReporter
from device.store import ResultStore
from tests.device.test_cli import _config


def test_reporter_writes_changes_and_refreshes_but_not_every_frame() -> None:
    now = [0.0]
    written: list[tuple[str, str]] = []
    reporter = SourceStateReporter(lambda s, d: written.append((s, d)), refresh_s=60.0, clock=lambda: now[0])
    for _ in range(100):
        reporter.report(SourceState.OK, "v4l2:/dev/video0")
    assert written == [("ok", "v4l2:/dev/video0")]
    reporter.report(SourceState.LOST, "no signal")
    now[0] = 30.0
    reporter.refresh()
    assert written[-1] == ("lost", "no signal") and len(written) == 2
    now[0] = 61.0
    reporter.refresh()
    assert len(written) == 3 and reporter.state is SourceState.LOST


def _state(tmp_path: Path) -> tuple[str | None, str | None]:
    with ResultStore(tmp_path / "data" / "results.sqlite") as store:
        return read_source_state(store)


def test_device_run_reports_a_missing_capture_card_as_lost_then_a_folder_as_ok(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    config = _config(tmp_path, tiny_bundle_dir, "[source]\nreopen_interval_s = 0.2\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "device", "run", "--config", str(config), "--source", "v4l2:/dev/video97", "--headless"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (tmp_path / "data" / "results.sqlite").exists() is False:
            time.sleep(0.2)
        while time.monotonic() < deadline and _state(tmp_path)[0] != "lost":
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    state, detail = _state(tmp_path)
    assert state == "lost" and detail is not None and "/dev/video97" in detail
    write_demo_frames(tmp_path / "frames", 2)
    done = subprocess.run(
        [sys.executable, "-m", "device", "run", "--config", str(config), "--source", f"folder:{tmp_path / 'frames'}", "--headless", "--once"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert _state(tmp_path)[0] == "ok"


def test_touchscreen_reports_a_missing_source_as_lost(qtbot, tmp_path: Path, tiny_bundle_dir: Path) -> None:
    pytest.importorskip("pytestqt")
    from ui.screenshots import open_window, screenshot_config

    config = screenshot_config(tmp_path, tiny_bundle_dir, tmp_path / "unplugged")
    window = open_window(config, (800, 480))
    qtbot.addWidget(window)
    try:
        qtbot.waitUntil(lambda: "source" in window.banners.banners, timeout=20_000)
        qtbot.waitUntil(lambda: (tmp_path / "data" / "results.sqlite").exists() and _state(tmp_path)[0] == "lost", timeout=20_000)
    finally:
        window.shutdown()
    assert "unplugged" in (_state(tmp_path)[1] or "")
