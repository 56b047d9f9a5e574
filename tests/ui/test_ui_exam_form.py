"""Issue 14 defect 4, the exam form, through the real widgets (offscreen, tiny real model, real SQLite): patient IDs
are alphanumeric on the on-screen keyboard and checked against the site's format before they reach the form; Start
reads the ID back big and nothing is started until the clinician confirms it, so a typo seen there is corrected
instead of stored; the other side of the same patient is a new exam with one tap and no re-typing. Each of these
fails on the code before it (digits-only keypad, Start started at once, a bilateral exam meant re-typing the ID)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("PyQt5")
pytest.importorskip("pytestqt")

from tests.ui.test_ui_exam_defects import stored
from tests.ui.test_ui_workflow import write_frames
from tests.ui_support import (
    analyse,
    enter_patient,
    readback_text,
    start_exam,
    tap,
    type_digits,
)


def test_an_alphanumeric_id_is_typed_and_a_malformed_one_is_refused_on_the_keyboard(qtbot, window) -> None:
    tap(qtbot, window.nav["Exam"])
    form = window.exam.form
    tap(qtbot, form.field_buttons["patient"])
    entry = window.id_entry
    assert entry.isVisible() and {"A", "Z", "0", "9", "-"} <= set(entry.keypad.keys), "letters cannot be typed"
    type_digits(qtbot, entry.keypad, "-AB")
    tap(qtbot, entry.keypad.keys["OK"])
    assert entry.isVisible() and "not in this site's format" in entry.message.text()
    assert form.values["patient"] == "", "a malformed ID reached the form"
    for _ in range(3):
        tap(qtbot, entry.keypad.keys["⌫"])
    type_digits(qtbot, entry.keypad, "MRN-0042B")
    tap(qtbot, entry.keypad.keys["OK"])
    assert not entry.isVisible() and form.values["patient"] == "MRN-0042B"
    assert form.field_buttons["patient"].text() == "Patient ID: MRN-0042B"


def test_the_readback_catches_a_typo_before_anything_is_started(qtbot, window) -> None:
    tap(qtbot, window.nav["Exam"])
    form = window.exam.form
    enter_patient(qtbot, window, "10425")  # meant 10452
    tap(qtbot, form.side_buttons["L"])
    tap(qtbot, form.start)
    assert window.confirm.isVisible() and readback_text(window) == "10425"
    assert "Left side" in window.confirm.message.text() and "Typed on the screen" in window.confirm.message.text()
    assert window.session.exam is None, "Start opened the exam before the ID was confirmed"
    tap(qtbot, window.confirm.cancel_button)  # "Correct it"
    assert window.confirm.cancel_button.text() == "Correct it" and not window.confirm.isVisible()
    assert window.session.exam is None and form.values["patient"] == "10425" and form.side == "L"

    tap(qtbot, form.field_buttons["patient"])
    assert window.id_entry.keypad.value == "10425"  # corrected, not typed again from scratch
    for _ in range(2):
        tap(qtbot, window.id_entry.keypad.keys["⌫"])
    type_digits(qtbot, window.id_entry.keypad, "52")
    tap(qtbot, window.id_entry.keypad.keys["OK"])
    tap(qtbot, form.start)
    assert readback_text(window) == "10452"
    tap(qtbot, window.confirm.accept_button)
    qtbot.waitUntil(lambda: window.session.exam is not None, timeout=10_000)
    assert (window.session.exam.patient_ref, window.session.exam.side) == ("10452", "L")
    with_stored = {e.patient_ref for e in window.store.exams()}
    assert with_stored == {"10452"}, "the mistyped ID was stored as an exam"


def test_the_other_side_is_a_new_exam_for_the_same_patient_with_one_tap(qtbot, window) -> None:
    left = start_exam(qtbot, window, "A7781", "L")
    first = analyse(qtbot, window)
    tap(qtbot, window.live.exam_button)
    summary = window.exam.summary
    assert summary.other_side.text() == "Right side ▶"
    tap(qtbot, summary.other_side)  # one tap, no ID typed
    qtbot.waitUntil(lambda: window.session.exam is not None and window.session.exam.side == "R", timeout=10_000)
    right = window.session.exam
    assert right.patient_ref == "A7781" and right.exam_id != left.exam_id
    assert window.stack.currentWidget() is window.live and window.live.exam_button.text().startswith("Exam: A7781 R")
    live = window.live
    assert not live.view.frozen and live.card.classification is None, "the left side's result is still on Live"

    second = analyse(qtbot, window)
    by_result = {r.result_id: (r.exam_id, r.side) for r in stored(window)}
    assert by_result == {first.record.result_id: (left.exam_id, "L"), second.record.result_id: (right.exam_id, "R")}
    tap(qtbot, window.live.exam_button)
    assert summary.other_side.text() == "Left side ▶" and summary.table.rowCount() == 1


def test_the_sites_format_is_the_one_the_keyboard_and_the_scanner_enforce(qtbot, tmp_path: Path) -> None:
    """A site whose IDs are ``MRN`` + 6 digits: an ID in the default format is refused, on the keyboard and from the
    scanner, saying what the site's IDs look like; the site's own format is accepted (no model needed for that)."""
    from device.barcode import PatientIdFormat
    from device.config import parse_config
    from tests.ui_support import scan
    from ui.app import start
    from ui.main_window import MainWindow, Services
    from ui.workers import AnalysisService, FrameReader, default_opener

    frames = tmp_path / "usb" / "exam"
    write_frames(frames)
    config = parse_config(
        {
            "device": {"data_dir": str(tmp_path / "data")},
            "model": {"path": str(tmp_path / "no-model")},
            "source": {"spec": f"folder:{frames}"},
            "uplink": {"enabled": False},
        }
    )
    services = Services(FrameReader(config.source.spec, default_opener(config)), AnalysisService(config))
    mrn = PatientIdFormat(r"MRN[0-9]{6}", min_length=9, max_length=9, example="MRN004512")
    window = MainWindow(config, services, (800, 480), id_format=mrn)
    qtbot.addWidget(window)
    window.show()
    start(window)
    window.first_run.close_overlay()
    try:
        tap(qtbot, window.nav["Exam"])
        tap(qtbot, window.exam.form.field_buttons["patient"])
        type_digits(qtbot, window.id_entry.keypad, "10452")
        tap(qtbot, window.id_entry.keypad.keys["OK"])
        assert window.id_entry.isVisible() and "e.g. MRN004512" in window.id_entry.message.text()
        tap(qtbot, window.id_entry.cancel)
        scan(qtbot, window, "10452")
        assert window.exam.form.values["patient"] == "" and "e.g. MRN004512" in window.exam.form.notice.text()
        scan(qtbot, window, "mrn004512")
        assert window.exam.form.values["patient"] == "MRN004512"
    finally:
        window.shutdown()
