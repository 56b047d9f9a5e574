"""Both displays (800x480, 1280x720) lay out every screen without clipping: the same scenes as
``make screenshots`` (real widgets, the tiny real model), checked by geometry, not pixels."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("PyQt5")
pytest.importorskip("pytestqt")

from PyQt5.QtWidgets import QPushButton, QTableWidget, QTableWidgetItem, QWidget
from pytestqt.exceptions import TimeoutError as WaitTimeout  # qtbot.waitUntil raises it

from device.demo import write_demo_frames
from ui.layout_check import layout_problems, table_cells_cut
from ui.screenshots import Director, open_window, screenshot_config, write_doppler_frame

EXPECTED_SCENES = {
    "first-run",
    "live",
    "exam-form",
    "live-roi",
    "live-result",
    "exam-summary",
    "live-analysis",
    "history",
    "settings-pin",
    "settings-source",
    "settings-hub",
    "settings-model",
    "settings-device",
    "lock",
    "live-inconclusive",
    "exam-finish",
    "exam-finished",
    "exam-after-lock",
    "exam-id-keyboard",
    "exam-readback",
    "exam-scanned",
}


def settled_problems(qtbot, window: QWidget, timeout_ms: int = 2000) -> list[str]:
    """The layout's problems once it has settled: a banner or label that arrived a moment ago may not be laid out
    yet (a transient 8 px label). A problem that lasts ``timeout_ms`` is real and is returned."""
    try:
        qtbot.waitUntil(lambda: layout_problems(window) == [], timeout=timeout_ms)
    except WaitTimeout:
        pass  # the problems lasted: report them
    return layout_problems(window)


@pytest.mark.parametrize("size", [(800, 480), (1280, 720)], ids=["800x480", "1280x720"])
def test_every_screen_fits(qtbot, tmp_path: Path, tiny_bundle_dir: Path, size: tuple[int, int]) -> None:
    frames = tmp_path / "usb" / "exam-images"
    write_demo_frames(frames, 3)
    write_doppler_frame(frames)
    window = open_window(screenshot_config(tmp_path, tiny_bundle_dir, frames), size)
    qtbot.addWidget(window)
    seen = set()
    try:
        for scene in Director(window).scenes():
            seen.add(scene.name)
            assert (window.width(), window.height()) == size, f"{scene.name}: the window grew to fit its content"
            assert layout_problems(window) == [], scene.name
            assert window.notice.isVisible() and window.notice.text() == "Decision support only — not a diagnosis"
            if scene.name == "live-inconclusive":  # the scene shows what it is named after
                assert window.live.card.headline.text() == "Inconclusive — rescan"
            elif scene.name == "exam-after-lock":
                assert window.session.exam is None and "screen locked" in window.exam.form.notice.text()
    finally:
        window.shutdown()
    assert seen == EXPECTED_SCENES


def test_layout_check_catches_clipping(qtbot) -> None:
    """The checker itself: a cut button label, a tiny control, a control outside the window, an overlap."""
    window = QWidget()
    qtbot.addWidget(window)
    window.resize(300, 200)
    cut = QPushButton("A much longer label than fits", window)
    cut.setGeometry(0, 0, 80, 60)
    tiny = QPushButton("x", window)
    tiny.setGeometry(100, 0, 30, 30)
    outside = QPushButton("Off", window)
    outside.setGeometry(260, 150, 80, 60)
    overlap = QPushButton("On top", window)
    overlap.setGeometry(20, 10, 90, 60)
    window.show()
    problems = "\n".join(layout_problems(window))
    assert "text cut" in problems and "A much longer" in problems
    assert "30x30 px, below 48" in problems
    assert "outside the 300x200 window" in problems
    assert "overlaps" in problems


def test_table_check_catches_a_cut_cell(qtbot) -> None:
    """The table checker: a cell whose second line is wider than its column is named; one that fits is not."""
    table = QTableWidget(2, 2)
    qtbot.addWidget(table)
    for column in range(2):
        table.setColumnWidth(column, 120)
    table.setItem(0, 0, QTableWidgetItem("fits\nok"))
    table.setItem(1, 1, QTableWidgetItem("short\na second line far wider than the column"))
    table.show()
    problems = table_cells_cut(table)
    assert len(problems) == 1 and problems[0].startswith("row 1 column 1:") and "120 px column" in problems[0], problems


@pytest.mark.parametrize("size", [(800, 480), (1280, 720)], ids=["800x480", "1280x720"])
def test_screens_fit_with_fault_banners(qtbot, tmp_path: Path, size: tuple[int, int]) -> None:
    """Two fault banners (no source, no model) take room: every screen must still fit."""
    config = screenshot_config(tmp_path, tmp_path / "no-model", tmp_path / "unplugged")
    window = open_window(config, size)
    qtbot.addWidget(window)
    try:
        qtbot.waitUntil(lambda: {"source", "model"} <= set(window.banners.banners), timeout=10_000)
        window.first_run.close_overlay()
        for name in ("Live", "Exam", "History"):
            window.go(name)
            qtbot.wait(50)
            assert (window.width(), window.height()) == size
            assert settled_problems(qtbot, window) == [], name
        window.settings_unlocked = True
        for section in ("Source", "Hub", "Model", "Device"):
            window.go("Settings")
            window.settings.show_section(section)
            qtbot.wait(50)
            assert settled_problems(qtbot, window) == [], section
    finally:
        window.shutdown()


@pytest.mark.parametrize("size", [(800, 480), (1280, 720)], ids=["800x480", "1280x720"])
def test_the_longest_model_version_fits_the_status_bar(qtbot, tmp_path: Path, tiny_bundle_dir: Path, size: tuple[int, int]) -> None:
    """A site bundle made from a bundle whose outline model was swapped in carries the longest version
    (+modes-<digest>+seg-<sha>+site-<hash>): beside the widest other chips it is cut in the middle, never clipped,
    and its tooltip keeps it whole. (At 1280 px the 64-character limit let a 56-character version wrap.)"""
    frames = tmp_path / "frames"
    write_demo_frames(frames, 1)
    window = open_window(screenshot_config(tmp_path, tiny_bundle_dir, frames), size)
    qtbot.addWidget(window)
    try:
        longest = "sonopi-lite0 2026.12.01-2352+modes-1e217e4e+seg-3c5966f3+site-0123abcd4567"
        qtbot.waitUntil(lambda: window.status.model.plain.startswith("tiny-test-model"), timeout=20_000)  # loaded: not overwritten later
        window.first_run.close_overlay()  # the bar under the first-run overlay is not checked
        window.status.set_source("error", "")
        window.status.set_hub(False, "")
        window.status.set_pending(36)
        window.status.set_disk(12.3 * 1024**3, low=True)
        window.status.set_model(longest)
        assert settled_problems(qtbot, window) == []
        assert window.status.model.toolTip() == longest and window.status.model.plain == longest
        assert "…" in window.status.model.text() and window.status.model.text().endswith("0123abcd4567")
    finally:
        window.shutdown()
