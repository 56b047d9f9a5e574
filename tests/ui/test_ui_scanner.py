"""The USB wristband scanner as patient-ID input, with real Qt key events offscreen (the scanner is a keyboard to
the system): a fast burst of keys ending in Enter fills the form's patient ID — and still needs the clinician's
confirmation in the readback; slow typing is not a scan; a code that is not a patient ID is refused saying so;
a scan never changes an open exam or fills anything behind the lock; its keys never press a focused button."""

from __future__ import annotations

import pytest

pytest.importorskip("PyQt5")
pytest.importorskip("pytestqt")

from PyQt5.QtCore import Qt

from tests.ui.test_ui_exam_defects import PIN
from tests.ui_support import finish_exam, readback_text, scan, start_exam, tap, unlock
from ui.scanner import ScannerInput


class SlowClock:
    """A clock that moves 0.3 s on every reading: every key comes long after the previous one, like a person."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.3
        return self.now


def test_a_scan_on_live_fills_the_form_but_starts_nothing_until_confirmed(qtbot, window) -> None:
    assert window.stack.currentWidget() is window.live and window.session.exam is None
    scan(qtbot, window, "a12345")
    form = window.exam.form
    assert window.stack.currentWidget() is window.exam and form.values["patient"] == "A12345"
    assert window.session.exam is None
    tap(qtbot, form.side_buttons["R"])
    tap(qtbot, form.start)
    assert readback_text(window) == "A12345" and "Scanned from the wristband" in window.confirm.message.text()
    assert window.session.exam is None, "a scan started an exam without the clinician's confirmation"
    tap(qtbot, window.confirm.accept_button)
    qtbot.waitUntil(lambda: window.session.exam is not None, timeout=10_000)
    assert (window.session.exam.patient_ref, window.session.exam.side) == ("A12345", "R")


def test_a_scan_during_the_readback_withdraws_it(qtbot, window) -> None:
    """The readback of one ID is never confirmed for another: a new scan closes it and the form shows the new ID."""
    scan(qtbot, window, "A12345")
    form = window.exam.form
    tap(qtbot, form.side_buttons["L"])
    tap(qtbot, form.start)
    assert window.confirm.isVisible() and readback_text(window) == "A12345"
    scan(qtbot, window, "B777")
    assert not window.confirm.isVisible() and form.values["patient"] == "B777" and window.session.exam is None
    tap(qtbot, form.start)
    assert readback_text(window) == "B777"


def test_a_scanner_set_to_end_codes_with_tab_is_understood(qtbot, window) -> None:
    qtbot.keyClicks(window, "A12345")
    qtbot.keyClick(window, Qt.Key_Tab)
    assert window.exam.form.values["patient"] == "A12345"


def test_slow_typing_ending_in_enter_is_not_a_scan(qtbot, window) -> None:
    window.scanner._clock = SlowClock()
    scan(qtbot, window, "A12345")
    assert window.exam.form.values["patient"] == "" and window.stack.currentWidget() is window.live


def test_a_code_that_is_not_a_patient_id_is_refused_saying_so(qtbot, window) -> None:
    scan(qtbot, window, "http://x.org")
    form = window.exam.form
    assert window.stack.currentWidget() is window.exam and form.values["patient"] == ""
    assert "Not a patient ID" in form.notice.text() and "not in this site's format" in form.notice.text()


def test_a_scan_during_an_exam_never_changes_it(qtbot, window) -> None:
    exam = start_exam(qtbot, window, "10452", "L")
    scan(qtbot, window, "10452")  # the same wristband again: nothing to say
    assert "scan" not in window.banners.banners
    scan(qtbot, window, "20001")
    assert window.session.exam == exam and window.stack.currentWidget() is window.live
    text = window.banners.banners["scan"].text.text()
    assert "20001" in text and "10452" in text and "finish the open exam first" in text
    finish_exam(qtbot, window)
    assert "scan" not in window.banners.banners
    assert window.exam.form.values["patient"] == ""  # the earlier scan does not fill the next exam


def test_a_scan_behind_the_lock_fills_nothing(qtbot, window) -> None:
    window.lock()
    scan(qtbot, window, "A12345")
    unlock(qtbot, window, PIN)
    assert window.exam.form.values["patient"] == ""


def test_scanner_keys_never_press_a_focused_button(qtbot, window) -> None:
    button = window.live.freeze
    button.setFocus()
    clicks: list[bool] = []
    button.clicked.connect(clicks.append)
    qtbot.keyClicks(button, "AB 12")  # a space would press a focused button
    qtbot.keyClick(button, Qt.Key_Return)
    assert clicks == [] and not window.live.view.frozen


def test_a_scan_counts_as_activity_for_the_idle_lock(qtbot, window) -> None:
    window.idle.timer.stop()
    scan(qtbot, window, "A12345")
    assert window.idle.timer.isActive(), "the scanner swallowed its keys before the idle watcher saw them"


def test_the_burst_rule_on_its_own(qtbot) -> None:
    """``ScannerInput.key`` as the event filter calls it: a burst needs Enter to end it and a pause restarts it."""
    times = iter([0.0, 0.01, 0.02, 0.03, 1.0, 1.01, 1.02, 2.0])  # one reading per key, Shift and Enter included
    detector = ScannerInput(clock=lambda: next(times))
    scans: list[str] = []
    detector.scanned.connect(scans.append)
    for char in "XY":
        detector.key(0, char)
    detector.key(Qt.Key_Shift, "")  # a modifier neither belongs to the code nor breaks it
    detector.key(Qt.Key_Return, "\r")
    assert scans == ["XY\r"]
    for char in "123":  # ...then a pause before Enter: not a scan
        detector.key(0, char)
    detector.key(Qt.Key_Return, "\r")
    assert scans == ["XY\r"]
