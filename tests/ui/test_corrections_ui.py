"""Correct… on the touchscreen, through real widgets (offscreen Qt, the tiny real model): from the open exam's summary
a frame is voided (row, Correct…, Void it, reason, confirm: the store holds the correction, the result row is as
stored, the summary marks it and leaves it out of its figures); from History a result of a finished exam is moved to
the right patient's exam (exam, reason, confirm) and History shows where it belongs now; a voided result offers no
second correction; Back walks the steps back; the lock closes a half-made correction. Every step of the flow lays out
at 800x480 and 1280x720 with touch targets of at least the theme's control size (ui/layout_check.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PyQt5.QtWidgets import QApplication

from device.config import parse_config
from device.link.corrections import CorrectionKind, CorrectionReason, Place, State
from tests.ui.test_ui_exam_defects import PIN, stored
from tests.ui.test_ui_workflow import write_frames
from tests.ui_support import analyse, finish_exam, start_exam, tap, type_digits
from ui.app import build_window, start
from ui.layout_check import layout_problems


def tap_row(qtbot, table, row: int) -> None:
    table.scrollToItem(table.item(row, 1))
    rect = table.visualItemRect(table.item(row, 1))
    qtbot.mouseClick(table.viewport(), 1, pos=rect.center())
    assert table.selectionModel().selectedRows()[0].row() == row


def placement(window, result_id: str):
    return window.store.placement(result_id)


def test_void_from_the_exam_summary(qtbot, window) -> None:
    start_exam(qtbot, window, "10452", "L")
    first = analyse(qtbot, window).record
    tap(qtbot, window.live.freeze)
    second = analyse(qtbot, window).record
    tap(qtbot, window.nav["Exam"])
    summary = window.exam.summary
    assert not summary.correct.isEnabled()  # nothing selected yet
    tap_row(qtbot, summary.table, 0)
    tap(qtbot, summary.correct)
    flow = window.correction
    assert flow.isVisible() and "10452" in flow.about.text()
    tap(qtbot, flow.void_button)
    assert set(flow.reason_buttons) == {
        CorrectionReason.POOR_IMAGE,
        CorrectionReason.TEST_SCAN,
        CorrectionReason.WRONG_PATIENT,
        CorrectionReason.DUPLICATE,
        CorrectionReason.OTHER,
    }
    tap(qtbot, flow.reason_buttons[CorrectionReason.POOR_IMAGE])
    assert "Void this result of <b>10452 Left</b>" in flow.summary.text() and flow.accept_button.text() == "Void result"
    tap(qtbot, flow.accept_button)
    assert not flow.isVisible()

    p = placement(window, first.result_id)
    assert p.state is State.VOIDED and p.corrections[0].reason is CorrectionReason.POOR_IMAGE
    assert p.corrections[0].origin == Place(first.exam_id, "10452", "L")
    rows = {r.result_id: r for r in stored(window)}
    assert rows[first.result_id].patient_ref == "10452" and rows[first.result_id].delivery == "stored"  # unchanged
    assert summary.table.item(0, 2).text().startswith("Voided · ")
    assert "1 frame(s)" in summary.summary.text() and "1 voided or moved, not counted" in summary.summary.text()
    assert placement(window, second.result_id).state is State.VALID

    tap_row(qtbot, summary.table, 0)  # voided: nothing more to do
    tap(qtbot, summary.correct)
    assert not flow.void_button.isVisible() and not flow.move_button.isVisible()
    assert "cannot be corrected again" in flow.what_note.text() and flow.cancel_button.text() == "Close"
    tap(qtbot, flow.cancel_button)
    assert len(window.store.corrections()) == 1


def test_move_from_history_to_the_right_patients_exam(qtbot, window) -> None:
    start_exam(qtbot, window, "10452", "L")
    wrong = analyse(qtbot, window).record
    finish_exam(qtbot, window)
    target = start_exam(qtbot, window, "20001", "R")
    tap(qtbot, window.nav["History"])
    history = window.history
    row = [r.result_id for r in history.records].index(wrong.result_id)
    tap_row(qtbot, history.table, row)
    tap(qtbot, history.correct_button)
    flow = window.correction
    tap(qtbot, flow.move_button)
    assert flow.title.text() == "Move it to which exam?"
    assert set(flow.exam_buttons) >= {target.exam_id, wrong.exam_id}
    assert not flow.exam_buttons[wrong.exam_id].isEnabled()  # where it is already (that exam is side L)
    tap(qtbot, flow.exam_buttons[target.exam_id])  # the exam has a side: no side step
    assert set(flow.reason_buttons) == {
        CorrectionReason.WRONG_PATIENT,
        CorrectionReason.WRONG_SIDE,
        CorrectionReason.WRONG_EXAM,
        CorrectionReason.OTHER,
    }
    tap(qtbot, flow.reason_buttons[CorrectionReason.WRONG_PATIENT])
    assert "from <b>10452 Left</b><br>to <b>20001 Right</b>" in flow.summary.text()
    tap(qtbot, flow.confirm_back)  # Back: the reasons again, then the exams
    assert flow.pages.currentWidget() is flow.reason_page
    tap(qtbot, flow.reason_buttons[CorrectionReason.WRONG_PATIENT])
    tap(qtbot, flow.accept_button)

    p = placement(window, wrong.result_id)
    assert p.state is State.MOVED and p.place == Place(target.exam_id, "20001", "R")
    assert p.corrections[0].kind is CorrectionKind.MOVE and p.corrections[0].by is None
    assert history.table.item(row, 2).text() == "20001 R\n(moved)"
    assert {r.result_id: r.patient_ref for r in stored(window)}[wrong.result_id] == "10452"  # the row: as stored


def test_the_lock_closes_a_half_made_correction(qtbot, window) -> None:
    start_exam(qtbot, window, "10452", "L")
    analyse(qtbot, window)
    tap(qtbot, window.nav["Exam"])
    tap_row(qtbot, window.exam.summary.table, 0)
    tap(qtbot, window.exam.summary.correct)
    tap(qtbot, window.correction.void_button)
    window.lock()  # what the idle timer does (the overlay covers the window: Settings › Lock is out of reach)
    assert not window.correction.isVisible() and window.store.corrections() == []
    type_digits(qtbot, window.lock_screen.keypad, PIN)
    tap(qtbot, window.lock_screen.keypad.keys["OK"])
    assert not window.correction.isVisible()


def sized_window(qtbot, tmp_path: Path, bundle: Path, size: tuple[int, int]):
    """tests/ui/test_ui_exam_defects.open_window at ``size`` (the theme is chosen for the size when the window is built)."""
    frames = tmp_path / "usb" / "exam"
    write_frames(frames)
    config = parse_config(
        {
            "device": {"id": "ui-test", "site": "test-site", "data_dir": str(tmp_path / "data")},
            "model": {"path": str(bundle), "threads": 1},
            "source": {"spec": f"folder:{frames}", "reopen_interval_s": 0.2},
            "uplink": {"enabled": False},
            "ui": {"pin": PIN},
        }
    )
    QApplication.instance().setStyleSheet("")  # another test's application-wide theme must not size this window
    window = build_window(config, size)
    qtbot.addWidget(window)
    window.show()
    start(window)
    tap(qtbot, window.first_run.accept)
    qtbot.waitUntil(lambda: window.services.analysis.ready and window.live.view.frame is not None, timeout=30_000)
    return window


@pytest.mark.parametrize("size", [(800, 480), (1280, 720)])
def test_every_step_lays_out_with_big_touch_targets(qtbot, tmp_path: Path, tiny_bundle_dir: Path, size: tuple[int, int]) -> None:
    window = sized_window(qtbot, tmp_path, tiny_bundle_dir, size)
    try:
        _walk_every_step(qtbot, window, size)
    finally:
        window.shutdown()


def _walk_every_step(qtbot, window, size: tuple[int, int]) -> None:
    assert (window.width(), window.height()) == size
    start_exam(qtbot, window, "10452", "L")
    record = analyse(qtbot, window).record
    finish_exam(qtbot, window)
    start_exam(qtbot, window, "20001", "R")
    tap(qtbot, window.nav["History"])
    flow = window.correction
    minimum = window.th.control
    steps = {
        "what": lambda: flow.start(record),
        "void reasons": lambda: tap(qtbot, flow.void_button),
        "void confirm": lambda: tap(qtbot, flow.reason_buttons[CorrectionReason.TEST_SCAN]),
        "what again": lambda: (flow.close_overlay(), flow.start(record)),
        "exams": lambda: tap(qtbot, flow.move_button),
        "move reasons": lambda: tap(qtbot, next(b for b in flow.exam_buttons.values() if b.isEnabled())),
        "move confirm": lambda: tap(qtbot, flow.reason_buttons[CorrectionReason.WRONG_EXAM]),
    }
    for name, step in steps.items():
        step()
        qtbot.wait(20)
        problems = layout_problems(window, min_touch=minimum)
        assert problems == [], (size, name, problems)
        shown = [b for b in flow.panel.findChildren(type(flow.accept_button)) if b.isVisible()]
        assert shown and all(b.height() >= minimum for b in shown), (size, name)
