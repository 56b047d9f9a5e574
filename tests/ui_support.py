"""Helpers for the touchscreen tests: tap real widgets the way a clinician does (start an exam on the keypad,
finish it through its confirmation, lock and unlock with the PIN)."""

from __future__ import annotations

from PyQt5.QtCore import QPoint, Qt

from device.crop import Box

from device.results import Exam


def tap(qtbot, widget) -> None:
    assert widget.isVisible() and widget.isEnabled(), f"{widget.text() if hasattr(widget, 'text') else widget} not tappable"
    qtbot.mouseClick(widget, Qt.LeftButton)


def type_digits(qtbot, keypad, digits: str) -> None:
    for digit in digits:
        tap(qtbot, keypad.keys[digit])


def start_exam(qtbot, window, patient: str, side: str) -> Exam:
    """Exam screen, the patient reference on the keypad, the side, Start: back on Live with the exam open."""
    tap(qtbot, window.nav["Exam"])
    form = window.exam.form
    type_digits(qtbot, form.keypad, patient)
    tap(qtbot, form.side_buttons[side])
    tap(qtbot, form.start)
    qtbot.waitUntil(lambda: window.session.exam is not None and window.session.exam.patient_ref == patient,
                    timeout=10_000)
    assert window.stack.currentWidget() is window.live
    return window.session.exam


def finish_exam(qtbot, window) -> None:
    """Exam › Finish exam, and the confirmation when the app asks for one."""
    tap(qtbot, window.nav["Exam"])
    tap(qtbot, window.exam.summary.finish)
    confirm = getattr(window, "confirm", None)
    if confirm is not None and confirm.isVisible():
        tap(qtbot, confirm.accept_button)


def unlock(qtbot, window, pin: str) -> None:
    assert window.lock_screen.isVisible()
    type_digits(qtbot, window.lock_screen.keypad, pin)
    tap(qtbot, window.lock_screen.keypad.keys["OK"])
    assert not window.lock_screen.isVisible()


def analyse(qtbot, window):
    """Tap Analyse and wait for the card to show the stored result; returns the outcome."""
    with qtbot.waitSignal(window.live.result_shown, timeout=30_000) as shown:
        tap(qtbot, window.live.analyse)
    return shown.args[0]


def draw_roi(qtbot, view, box: Box) -> None:
    """Drag a finger over ``box`` (source pixels) on the live view."""
    rect = view.to_view(box)
    qtbot.mousePress(view, Qt.LeftButton, pos=QPoint(round(rect.left()), round(rect.top())))
    qtbot.mouseRelease(view, Qt.LeftButton, pos=QPoint(round(rect.right()), round(rect.bottom())))
    assert view.roi is not None
