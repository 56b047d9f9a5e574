"""Helpers for the touchscreen tests: tap real widgets the way a clinician does (start an exam on the keyboard,
finish it through its confirmation, lock and unlock with the PIN)."""

from __future__ import annotations

import re

from PyQt5.QtCore import QPoint, Qt

from device.crop import Box
from device.results import Exam


def tap(qtbot, widget) -> None:
    assert widget.isVisible() and widget.isEnabled(), f"{widget.text() if hasattr(widget, 'text') else widget} not tappable"
    qtbot.mouseClick(widget, Qt.LeftButton)


def type_digits(qtbot, keypad, digits: str) -> None:  # also letters, on the patient ID keyboard
    for digit in digits:
        tap(qtbot, keypad.keys[digit])


def enter_patient(qtbot, window, patient: str) -> None:
    """The form's patient ID field, the ID on the on-screen keyboard, OK."""
    tap(qtbot, window.exam.form.field_buttons["patient"])
    keyboard = window.id_entry.keypad
    while keyboard.value:  # the keyboard opens with the ID already there (to correct it): start from empty
        tap(qtbot, keyboard.keys["⌫"])
    type_digits(qtbot, keyboard, patient.upper())
    tap(qtbot, keyboard.keys["OK"])


def scan(qtbot, window, code: str) -> None:
    """A USB scanner reading ``code``: its key presses, as fast as Qt delivers them, then Enter (real key events)."""
    qtbot.keyClicks(window, code)
    qtbot.keyClick(window, Qt.Key_Return)


def readback_text(window) -> str:
    """The patient ID the Start readback shows, as plain text (it is drawn one coloured character at a time)."""
    return re.sub(r"<[^>]+>", "", window.confirm.readback.text())


def start_exam(qtbot, window, patient: str, side: str) -> Exam:
    """Exam screen, the patient ID on the keyboard, the side, Start and *Start exam* in the readback: back on Live
    with the exam open."""
    tap(qtbot, window.nav["Exam"])
    form = window.exam.form
    enter_patient(qtbot, window, patient)
    tap(qtbot, form.side_buttons[side])
    tap(qtbot, form.start)
    assert window.confirm.isVisible() and readback_text(window) == patient.upper()
    tap(qtbot, window.confirm.accept_button)
    qtbot.waitUntil(lambda: window.session.exam is not None and window.session.exam.patient_ref == patient, timeout=10_000)
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
