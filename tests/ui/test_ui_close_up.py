"""On the real touchscreen app offscreen, with the real tiny TFLite model (bright reads malignant, dark normal): a
region drawn on a quiet patch of a suspicious scan stores and shows the scan's result — *Suspicious — refer* with the
scan's p(malignant) and a line saying the result is the whole scan's and the region alone read less (*no lesion seen*
or *low suspicion*), in view without scrolling at 800x480 even under an exam's lesion buttons — and History says the
row is the whole scan's; a tap on the suspicious region of a quiet scan is the region's own result, with no such line;
both screen sizes, the card's words not cut (device/close_up.py)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("PyQt5")
pytest.importorskip("pytestqt")

from device.crop import Box
from device.decision import Category
from tests.ui.test_ui_exam_defects import open_window, stored
from tests.ui.test_ui_tap_seed import tap_at
from tests.ui_support import draw_roi, start_exam
from ui.layout_check import layout_problems, table_cells_cut
from ui.result_card import HEADLINES, percent_pair

SIZES = [(800, 480), (1280, 720)]
FRAME_H, FRAME_W = 480, 640
TAPPED = Box(160, 80, 320, 320)  # larger than a seeded square (0.6 of 480 px), so a tap at its centre looks at it only
DRAWN = Box(260, 180, 120, 120)  # a small dark patch: an ROI drawn inside it leaves the scan bright enough to be suspicious


def _frame(folder: Path, background: int, patch: int, box: Box) -> Path:
    rng = np.random.default_rng(0)
    image = np.full((FRAME_H, FRAME_W), background, np.float32)
    image[box.y : box.y + box.height, box.x : box.x + box.width] = patch
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "scan.png"), np.clip(image + rng.normal(0, 15, image.shape), 0, 255).astype(np.uint8))
    return folder


def _result(qtbot, tmp_path: Path, bundle: Path, size: tuple[int, int], background: int, patch: int, box: Box, tapped: bool, earlier: bool = False):
    """The stored result of a region on the patch: a tap at its centre, or an ROI drawn inside it and Analyse.
    ``earlier``: the exam holds a result already (so the exam panel's lesion buttons take their room above the card)."""
    window = open_window(qtbot, tmp_path, bundle, _frame(tmp_path / "usb" / "frames", background, patch, box))
    window.setFixedSize(*size)
    qtbot.waitUntil(lambda: window.live.view.image_rect().width() > 0, timeout=10_000)
    start_exam(qtbot, window, "C7701", "R")
    window.live.freeze.click()
    if earlier:
        with qtbot.waitSignal(window.live.result_shown, timeout=30_000):
            window.live.analyse.click()
    with qtbot.waitSignal(window.live.result_shown, timeout=30_000) as shown:
        if tapped:
            tap_at(qtbot, window.live.view, box.x + box.width // 2, box.y + box.height // 2)
        else:
            draw_roi(qtbot, window.live.view, Box(box.x + 10, box.y + 10, box.width - 20, box.height - 20))
            window.live.analyse.click()
    return window, shown.args[0]


@pytest.mark.parametrize("earlier", [False, True], ids=["first-result", "second-lesion"])
@pytest.mark.parametrize("size", SIZES)
def test_a_quiet_region_drawn_on_a_suspicious_scan_shows_the_scans_result(qtbot, tmp_path: Path, tiny_bundle_dir: Path, size, earlier: bool) -> None:
    window, outcome = _result(qtbot, tmp_path, tiny_bundle_dir, size, background=230, patch=40, box=DRAWN, tapped=False, earlier=earlier)
    card, record = window.live.card, outcome.record
    assert record.category == "suspicious" and record.close_up is not None and record.close_up.raised
    alone = record.close_up.close_up.category
    assert alone in (Category.NO_LESION, Category.LOW_SUSPICION) and record.roi == window.live.view.roi.as_tuple()
    assert card.headline.text() == "Suspicious — refer"
    assert card.p_text.text().startswith("p(malignant) ") and f"{record.p_malignant * 100:.0f}%" in card.p_text.text()
    alone_p = percent_pair(record.close_up.close_up.p_malignant, record.thresholds["malignant"])[0]
    assert card.close_up.isVisible() and card.close_up.text() == f"Whole-scan result. Your region alone: {HEADLINES[alone].lower()} ({alone_p})."
    assert card.close_up.geometry().bottom() <= card.scroll_area.viewport().height()  # in view without scrolling
    assert layout_problems(window) == []
    back = stored(window)[-1]
    assert back.close_up == record.close_up
    window.go("History")
    table = window.history.table
    cells = [table.item(0, column).text() for column in range(table.columnCount()) if table.item(0, column) is not None]
    assert any(cell.startswith("Suspicious — refer\nfrom the whole scan") for cell in cells), cells
    assert table_cells_cut(table) == []


def test_a_tap_on_a_suspicious_region_of_a_quiet_scan_is_the_regions_own_result(qtbot, tmp_path: Path, tiny_bundle_dir: Path) -> None:
    window, outcome = _result(qtbot, tmp_path, tiny_bundle_dir, SIZES[0], background=40, patch=230, box=TAPPED, tapped=True)
    record = outcome.record
    assert record.category == "suspicious" and record.close_up is not None and not record.close_up.raised
    assert record.close_up.scan.category != "suspicious"
    assert outcome.classification.crop == window.live.view.roi  # the region's own crop
    assert not window.live.card.close_up.isVisible()
