"""Tapping a lesion seeds the region of interest (S-Detect's gesture, issue 16), on the real Live screen offscreen: a
tap — also one that moves a few pixels, as a gloved finger does — seeds a square around the tapped point in source
pixels through the view's letterbox and scale, its size from the scan region, moved inward at the scan region's
edges (on a capture card's whole screen, the reader's detected scan region bounds it); a tap inside an existing
region, on its handle, on the letterbox bars or outside the scan region keeps what was there; drag to draw, move and
resize work as before. On a frozen frame with an exam open the tap analyses the seeded region and stores it (the
record's ROI is the seeded one, the lesion outline — the tiny real segmentation model, which outlines what is
brighter than mid-grey — is the whole bright blob under it, which reaches beyond it); on the moving image, or with no
exam open, nothing is stored; while an analysis runs a tap changes nothing."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

pytest.importorskip("PyQt5")
pytest.importorskip("pytestqt")

from PyQt5.QtCore import QPoint, Qt

from device.crop import Box
from device.demo import write_demo_frames
from tests.device.tiny_segmentation import build_tiny_segmentation_bundle, lesion_frame
from tests.ui.test_ui_exam_defects import open_window, stored
from tests.ui_support import draw_roi, start_exam
from ui.live_view import MIN_ROI_PX, SEED_FRACTION, seed_roi

SIZES = [(800, 480), (1280, 720)]
FRAME_H, FRAME_W = 480, 640
BLOB_CENTRE, BLOB_AXES = (300, 240), (230, 90)  # a bright ellipse wider than any seeded square


@pytest.fixture(scope="module")
def seg_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_bundle_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("tap-seg")
    build_tiny_segmentation_bundle(root / "bundle", tiny_bundle_dir, root / "segment-out")
    return root / "bundle"


def _frames(folder: Path) -> Path:
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "lesion.png"), lesion_frame(FRAME_H, FRAME_W, BLOB_CENTRE, BLOB_AXES))
    return folder


def _window(qtbot, tmp_path: Path, bundle: Path, size: tuple[int, int]):
    window = open_window(qtbot, tmp_path, bundle, _frames(tmp_path / "usb" / "frames"))
    window.setFixedSize(*size)
    qtbot.waitUntil(lambda: window.live.view.image_rect().width() > 0, timeout=10_000)
    window.live.set_frozen(True)  # a still, letterboxed to the view's size
    qtbot.wait(50)
    return window


def _view_point(view, x: int, y: int) -> QPoint:
    """Where source pixel (x, y) is on the view (its letterbox offset and scale)."""
    rect = view.to_view(Box(x, y, 1, 1))
    return QPoint(round(rect.center().x()), round(rect.center().y()))


def tap_at(qtbot, view, x: int, y: int, wobble: tuple[int, int] = (0, 0)) -> None:
    """A finger down on source pixel (x, y) and up ``wobble`` view pixels further (a gloved tap moves a little)."""
    down = _view_point(view, x, y)
    up = down + QPoint(*wobble)
    qtbot.mousePress(view, Qt.LeftButton, pos=down)
    if wobble != (0, 0):
        qtbot.mouseMove(view, pos=up)
    qtbot.mouseRelease(view, Qt.LeftButton, pos=up)


def _near(box: Box, expected: Box, view) -> bool:
    tolerance = 1 / view._scale + 1  # one view pixel, in source pixels, and the rounding
    return all(abs(a - b) <= tolerance for a, b in zip(box.as_tuple(), expected.as_tuple()))


def test_the_seed_is_a_square_centred_on_the_tap_and_moved_inside_at_the_edges() -> None:
    region = Box(40, 20, 500, 400)
    side = round(SEED_FRACTION * 400)
    assert seed_roi(290, 220, region) == Box(290 - side // 2, 220 - side // 2, side, side)
    corner = seed_roi(41, 21, region)
    assert corner == Box(40, 20, side, side)  # same size, inside the region, still holding the tapped point
    far = seed_roi(539, 419, region)
    assert far == Box(540 - side, 420 - side, side, side)
    assert seed_roi(100, 5, Box(0, 0, 600, 10)) == Box(100 - MIN_ROI_PX // 2, 0, MIN_ROI_PX, 10)  # a thin region cuts it
    assert seed_roi(5, 5, Box(0, 0, 10, 10)).width == 10


@pytest.mark.parametrize("size", SIZES, ids=["800x480", "1280x720"])
def test_a_tap_seeds_the_region_at_the_tapped_place_through_the_letterbox(qtbot, tmp_path: Path, tiny_bundle_dir: Path, size) -> None:
    window = _window(qtbot, tmp_path, tiny_bundle_dir, size)
    view = window.live.view
    try:
        assert view._scale != 1.0 and view.image_rect().width() > 0
        region = view.seed_region()
        assert region is not None
        side = round(SEED_FRACTION * min(region.width, region.height))
        cx, cy = region.x + region.width // 2, region.y + region.height // 2
        with qtbot.waitSignal(view.lesion_tapped, timeout=2_000) as seeded:
            tap_at(qtbot, view, cx, cy, wobble=(5, -4))  # a gloved finger: moved, still a tap
        roi = view.roi
        assert roi is not None and seeded.args[0] == roi
        assert _near(roi, Box(cx - side // 2, cy - side // 2, side, side), view), (roi, region)

        # Near the scan region's corner: the same size, inside the region, holding the tapped point.
        tap_at(qtbot, view, region.x + region.width - 3, region.y + region.height - 3)
        edge = view.roi
        assert edge is not None and edge != roi and (edge.width, edge.height) == (side, side)
        assert edge.x + edge.width <= region.x + region.width and edge.y + edge.height <= region.y + region.height
        assert edge.x + edge.width >= region.x + region.width - 4 and edge.y + edge.height >= region.y + region.height - 4

        # Inside the region: kept (a glove touching a drawn region must not move it); on the bars: kept.
        inside = view.to_view(edge).center()
        with qtbot.waitSignal(view.lesion_tapped, timeout=2_000) as kept:
            qtbot.mouseClick(view, Qt.LeftButton, pos=QPoint(round(inside.x()), round(inside.y())))
        assert view.roi == edge and kept.args[0] == edge  # the tapped lesion's region (analysed when frozen)
        rect = view.to_view(edge)
        qtbot.mouseClick(view, Qt.LeftButton, pos=QPoint(round(rect.left()) + 2, round(rect.top()) + 2))  # a handle
        assert view.roi == edge
        image = view.image_rect()
        assert image.left() > 2 or image.top() > 2, "the frame fills the view: no letterbox bar to tap"
        bar = QPoint(1, view.height() // 2) if image.left() > 2 else QPoint(view.width() // 2, 1)
        qtbot.mouseClick(view, Qt.LeftButton, pos=bar)
        assert view.roi == edge

        # Clear ROI clears a seeded region.
        window.live.clear_roi.click()
        assert view.roi is None
        assert stored(window) == []  # no exam open: a tap stores nothing
    finally:
        window.shutdown()


def test_a_tap_outside_the_scan_region_keeps_what_was_there(qtbot, tmp_path: Path, tiny_bundle_dir: Path) -> None:
    window = _window(qtbot, tmp_path, tiny_bundle_dir, (800, 480))
    view = window.live.view
    try:
        view.scan_box = Box(200, 100, 300, 300)  # as the reader's scan-region detector reports it
        assert view.seed_region() == Box(200, 100, 300, 300)
        tap_at(qtbot, view, 60, 60)  # the scanner's margin (its labels), outside the scan region
        assert view.roi is None
        tap_at(qtbot, view, 210, 390)
        assert view.roi == Box(200, 400 - 180, 180, 180)  # 0.6 x 300, moved in at the region's lower-left corner
    finally:
        window.shutdown()


def test_on_a_scanner_screen_the_seed_stays_in_the_detected_scan_region(qtbot, tmp_path: Path, tiny_bundle_dir: Path) -> None:
    """A capture card's whole screen (device.demo): the reader's own scan-region detector bounds the seed."""
    frames = tmp_path / "usb" / "screens"
    write_demo_frames(frames, 1)
    window = open_window(qtbot, tmp_path, tiny_bundle_dir, frames)
    view = window.live.view
    try:
        qtbot.waitUntil(lambda: view.scan_box is not None and view.image_rect().width() > 0, timeout=10_000)
        window.live.set_frozen(True)
        region = view.seed_region()
        assert region == view.scan_box and region.x > 0 and region.y > 0  # the screen has margins round the image
        tap_at(qtbot, view, region.x // 2, region.y // 2)  # the scanner's label area, top left
        assert view.roi is None
        tap_at(qtbot, view, region.x + region.width - 2, region.y + 2)  # just inside the image's top-right corner
        roi = view.roi
        assert roi is not None and roi.x + roi.width == region.x + region.width and roi.y == region.y
        assert roi.width == roi.height == round(SEED_FRACTION * min(region.width, region.height))
    finally:
        window.shutdown()


def test_drag_to_draw_move_and_resize_are_unchanged(qtbot, tmp_path: Path, tiny_bundle_dir: Path) -> None:
    window = _window(qtbot, tmp_path, tiny_bundle_dir, (800, 480))
    view = window.live.view
    try:
        drawn = Box(100, 80, 200, 150)
        draw_roi(qtbot, view, drawn)
        assert _near(view.roi, drawn, view)
        drawn = view.roi

        # Move: drag from inside the region.
        start = _view_point(view, drawn.x + 100, drawn.y + 75)
        qtbot.mousePress(view, Qt.LeftButton, pos=start)
        qtbot.mouseMove(view, pos=_view_point(view, drawn.x + 150, drawn.y + 115))
        qtbot.mouseRelease(view, Qt.LeftButton, pos=_view_point(view, drawn.x + 150, drawn.y + 115))
        moved = view.roi
        assert _near(moved, Box(drawn.x + 50, drawn.y + 40, drawn.width, drawn.height), view)

        # Resize: drag the lower-right corner.
        rect = view.to_view(moved)
        corner = QPoint(round(rect.right()), round(rect.bottom()))
        qtbot.mousePress(view, Qt.LeftButton, pos=corner)
        qtbot.mouseRelease(view, Qt.LeftButton, pos=_view_point(view, moved.x + 260, moved.y + 200))
        assert _near(view.roi, Box(moved.x, moved.y, 260, 200), view)
        resized = view.roi

        # A long thin drag (not a tap, thinner than a region) keeps what was there.
        a, b = _view_point(view, 20, 420), _view_point(view, 400, 425)
        qtbot.mousePress(view, Qt.LeftButton, pos=a)
        qtbot.mouseRelease(view, Qt.LeftButton, pos=b)
        assert view.roi == resized

        # A drag outside the region draws a new one there (not a seed).
        window.live.clear_roi.click()
        draw_roi(qtbot, view, Box(300, 200, 120, 90))
        assert _near(view.roi, Box(300, 200, 120, 90), view)
    finally:
        window.shutdown()


def _tap_and_wait(qtbot, live, x: int, y: int):
    with qtbot.waitSignal(live.result_shown, timeout=30_000) as shown:
        tap_at(qtbot, live.view, x, y)
        assert live.view.touch_locked  # analysing: another tap cannot move the region under it
        before = live.view.roi
        tap_at(qtbot, live.view, 40, 40)
        assert live.view.roi == before
    return shown.args[0]


def _assert_outlined_whole(live, outcome, roi: Box) -> None:
    assert outcome.record.roi == roi.as_tuple()
    assert outcome.classification.crop == roi  # the classifier analysed the tapped region
    lesion = live.card.lesion
    assert lesion is not None and lesion.found and live.view.has_outline
    # The outline is the whole blob under the region, which reaches beyond it (the segmentation model sees the
    # scan region, not the region's crop), to the tiny model's pixels.
    (cx, cy), (ax, ay) = BLOB_CENTRE, BLOB_AXES
    bx, by, bw, bh = lesion.box
    tolerance = 2 * FRAME_W / 48 + 2  # two model pixels of the 48 px segmentation input, across the frame
    assert all(abs(a - b) <= tolerance for a, b in zip((bx, by, bx + bw, by + bh), (cx - ax, cy - ay, cx + ax, cy + ay))), (lesion.box, roi)
    assert bx < roi.x or bx + bw > roi.x + roi.width


@pytest.mark.parametrize("size", SIZES, ids=["800x480", "1280x720"])
def test_a_tap_on_a_frozen_frame_analyses_the_tapped_region_and_outlines_the_lesion_under_it(qtbot, tmp_path: Path, seg_bundle: Path, size) -> None:
    window = _window(qtbot, tmp_path, seg_bundle, size)
    live, view = window.live, window.live.view
    try:
        live.set_frozen(False)
        exam = start_exam(qtbot, window, "K5501", "L")
        tap_at(qtbot, view, *BLOB_CENTRE)  # on the moving image: the region only, nothing stored
        seeded = view.roi
        assert seeded is not None and not view.frozen
        qtbot.wait(300)
        assert stored(window) == []

        # Frozen: a tap inside the region keeps it and analyses it (the tap is the Analyse).
        live.freeze.click()
        first = _tap_and_wait(qtbot, live, BLOB_CENTRE[0] + 10, BLOB_CENTRE[1] - 5)
        assert view.roi == seeded and not view.touch_locked
        assert first.record.exam_id == exam.exam_id
        _assert_outlined_whole(live, first, seeded)
        assert live.tap_to_result_ms is not None  # measured by bench/bench_tap.py, never asserted on

        # The same region tapped again: its result is on the card already, no duplicate is stored.
        tap_at(qtbot, view, *BLOB_CENTRE)
        qtbot.wait(300)
        assert not live.analysing and [r.result_id for r in stored(window)] == [first.record.result_id]

        # Another place on the frozen frame, outside the region: a new region there, analysed and stored.
        second = _tap_and_wait(qtbot, live, BLOB_CENTRE[0] - 190, BLOB_CENTRE[1])
        moved = view.roi
        assert moved is not None and moved != seeded
        _assert_outlined_whole(live, second, moved)
        assert [r.result_id for r in stored(window)] == [first.record.result_id, second.record.result_id]
    finally:
        window.shutdown()
