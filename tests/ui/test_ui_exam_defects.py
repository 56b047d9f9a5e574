"""Issue 14's defects driven through the real widgets (offscreen, tiny real model, real SQLite), each
written to fail on the code before the fix: (1) after Finish and a new exam, the previous patient's frozen
frame and result stayed on Live and Analyse stored it under the new patient; (2) the exam and the frozen
result outlived Settings › Lock and the idle lock; (3) Analyse with no exam stored a result with no patient;
(4) after Finish, "Left" still looked selected while Start said "Choose the side"; (7) an inconclusive (colour)
frame showed class probabilities, a threshold line and a heat-map button instead of just the reason."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("PyQt5")
pytest.importorskip("pytestqt")

from device.config import parse_config
from device.store import ResultStore
from tests.ui.test_ui_workflow import BRIGHT_BOX, DRAWN_ROI
from tests.ui_support import analyse, draw_roi, enter_patient, finish_exam, scan, start_exam, tap, type_digits, unlock
from ui.app import build_window, start

PIN = "2468"


def open_window(qtbot, tmp_path: Path, bundle: Path, frames: Path):
    config = parse_config(
        {
            "device": {"id": "ui-test", "site": "test-site", "data_dir": str(tmp_path / "data")},
            "model": {"path": str(bundle), "threads": 1},
            "source": {"spec": f"folder:{frames}", "reopen_interval_s": 0.2},
            "uplink": {"enabled": False},
            "ui": {"pin": PIN},
        }
    )
    window = build_window(config, (800, 480))
    qtbot.addWidget(window)
    window.show()
    start(window)
    tap(qtbot, window.first_run.accept)
    qtbot.waitUntil(lambda: window.services.analysis.ready and window.live.view.frame is not None, timeout=30_000)
    return window


def stored(window) -> list:
    with ResultStore(window.config.store_path) as store:
        return store.history(newest_first=False)


def assert_nothing_of_the_previous_exam_on_live(window) -> None:
    live = window.live
    assert not live.view.frozen, "the previous exam's frozen frame is still on Live"
    assert live.view.roi is None and live.view.crop_box is None and not live.view.has_heatmap
    assert live.card.classification is None and live.last_result is None, "the previous exam's result is still on the card"


def test_defect1_finish_then_a_new_exam_never_shows_or_stores_the_previous_patients_frame(qtbot, window) -> None:
    start_exam(qtbot, window, "10452", "L")
    tap(qtbot, window.live.freeze)
    draw_roi(qtbot, window.live.view, DRAWN_ROI)
    first = analyse(qtbot, window)
    assert first.record.patient_ref == "10452" and first.record.roi is not None and window.live.view.frozen
    finish_exam(qtbot, window)
    start_exam(qtbot, window, "20001", "R")
    assert "20001" in window.live.exam_button.text()
    assert_nothing_of_the_previous_exam_on_live(window)

    second = analyse(qtbot, window)  # a frame captured now, under 20001
    assert (second.record.patient_ref, second.record.side) == ("20001", "R")
    by_patient = {r.result_id: r.patient_ref for r in stored(window)}
    assert by_patient == {first.record.result_id: "10452", second.record.result_id: "20001"}


def test_defect1_finishing_asks_first_and_says_what_the_exam_holds(qtbot, window) -> None:
    start_exam(qtbot, window, "10452", "L")
    analyse(qtbot, window)
    tap(qtbot, window.live.freeze)  # back to live
    analyse(qtbot, window)
    tap(qtbot, window.nav["Exam"])
    tap(qtbot, window.exam.summary.finish)
    assert window.session.exam is not None, "Finish exam ended the exam without asking"
    confirm = window.confirm
    assert confirm.isVisible() and "10452" in confirm.title.text() and "2 results" in confirm.message.text()
    tap(qtbot, confirm.cancel_button)  # keep it open: nothing changes
    assert window.session.exam is not None and window.session.exam.patient_ref == "10452"
    tap(qtbot, window.exam.summary.finish)
    tap(qtbot, confirm.accept_button)
    assert window.session.exam is None
    assert "2 results stored" in window.exam.form.notice.text()


@pytest.mark.parametrize("how", ["settings-lock", "idle-lock"])
def test_defect2_the_lock_finishes_the_exam_and_clears_the_frozen_result(qtbot, window, how: str) -> None:
    start_exam(qtbot, window, "10452", "L")
    tap(qtbot, window.live.freeze)
    draw_roi(qtbot, window.live.view, DRAWN_ROI)
    analyse(qtbot, window)
    if how == "settings-lock":
        tap(qtbot, window.nav["Settings"])
        type_digits(qtbot, window.pin_entry.keypad, PIN)
        tap(qtbot, window.pin_entry.keypad.keys["OK"])
        qtbot.waitUntil(lambda: window.stack.currentWidget() is window.settings)
        tap(qtbot, window.settings.lock)
    else:
        window.idle.timer.timeout.emit()  # what the idle timer does after ui.idle_lock_s without a touch
    assert window.lock_screen.isVisible()
    unlock(qtbot, window, PIN)

    assert window.session.exam is None, "the exam survived the lock: whoever unlocks continues it"
    assert_nothing_of_the_previous_exam_on_live(window)
    assert window.live.exam_button.text() == "No exam — tap to start"
    assert not window.live.analyse.isEnabled()
    tap(qtbot, window.nav["Exam"])
    form = window.exam.form
    assert window.exam.pages.currentWidget() is form and form.values["patient"] == ""
    assert "screen locked" in form.notice.text() and "1 result stored" in form.notice.text()


def test_defect2_a_reference_typed_before_the_lock_is_gone_after_it(qtbot, window) -> None:
    tap(qtbot, window.nav["Exam"])
    form = window.exam.form
    enter_patient(qtbot, window, "10452")
    tap(qtbot, form.side_buttons["L"])
    window.idle.timer.timeout.emit()
    unlock(qtbot, window, PIN)
    assert form.values["patient"] == "" and form.side is None, "the previous patient's reference is left in the form"
    assert not any(b.isChecked() for b in form.side_buttons.values())


def test_defect2_an_exam_being_stored_when_the_screen_locks_is_not_opened_behind_it(qtbot, window) -> None:
    tap(qtbot, window.nav["Exam"])
    form = window.exam.form
    enter_patient(qtbot, window, "10452")
    tap(qtbot, form.side_buttons["L"])
    form.start.click()
    with qtbot.waitSignal(window.services.analysis.exam_stored, timeout=10_000):
        window.confirm.accept_button.click()  # stored on the writer thread; opened when the GUI thread hears of it...
        window.lock()  # ...which is after the lock
    unlock(qtbot, window, PIN)
    assert window.session.exam is None, "an exam opened behind the lock screen for whoever unlocks"
    assert form.start.text() == "Type or scan the patient ID"


def test_defect3_no_result_is_stored_without_an_exam(qtbot, window) -> None:
    live = window.live
    assert window.session.exam is None
    assert not live.analyse.isEnabled(), "Analyse is offered with no exam open"
    live.request_analysis()  # the screen's own entry point, bypassing the button, stores nothing either
    assert live.card.headline.text() == "No exam open"
    failures = []
    window.services.analysis.request_failed.connect(lambda captured, code, message: failures.append(code))
    assert window.services.analysis.analyse(window.session.capture(live.view.frame)) is False  # and the device refuses
    assert failures == ["no_open_exam"]

    start_exam(qtbot, window, "10452", "L")
    outcome = analyse(qtbot, window)
    assert [(r.result_id, r.patient_ref) for r in stored(window)] == [(outcome.record.result_id, "10452")]


def test_defect4_the_form_resets_after_finish(qtbot, window) -> None:
    start_exam(qtbot, window, "10452", "L")
    form = window.exam.form
    tap(qtbot, window.nav["Exam"])
    finish_exam(qtbot, window)
    assert window.exam.pages.currentWidget() is form
    assert not any(b.isChecked() for b in form.side_buttons.values()), "a side still looks selected after Finish"
    assert not any(b.isChecked() for b in form.clock_buttons.values())
    assert form.side is None and form.values == {"patient": "", "age": ""}
    assert form.field_buttons["patient"].text() == "Patient ID: tap to type, or scan"
    assert form.start.text() == "Type or scan the patient ID"
    enter_patient(qtbot, window, "20001")
    assert form.start.text() == "Choose the side" and not form.start.isEnabled()  # what the form shows is what it has


def write_colour_frame(folder: Path) -> None:
    """A scanner screen with a Doppler-like colour overlay over most of the bright 'lesion': bright enough that
    the tiny model's probabilities say 'malignant', coloured enough that the quality gate says inconclusive."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    grey = np.clip(rng.normal(25, 8, (480, 640)), 0, 255).astype(np.uint8)
    b = BRIGHT_BOX
    grey[b.y : b.y + b.height, b.x : b.x + b.width] = np.clip(rng.normal(200, 15, (b.height, b.width)), 0, 255)
    rgb = np.dstack([grey, grey, grey])
    rgb[b.y + 20 : b.y + b.height - 20, b.x + 20 : b.x + b.width - 20] = (230, 40, 40)  # red flow
    cv2.imwrite(str(folder / "doppler.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def test_defect7_an_inconclusive_result_shows_the_reason_not_probabilities(qtbot, tmp_path: Path, tiny_bundle_dir: Path) -> None:
    frames = tmp_path / "usb" / "doppler"
    write_colour_frame(frames)
    window = open_window(qtbot, tmp_path, tiny_bundle_dir, frames)
    try:
        start_exam(qtbot, window, "10452", "L")
        outcome = analyse(qtbot, window)
        record, card = outcome.record, window.live.card
        assert record.inconclusive and any(r.startswith("colour") for r in record.reasons)
        assert card.headline.text() == "Inconclusive — rescan"
        assert "colour" in card.detail.text().lower()
        assert not any(bar.isVisible() for bar in card.bars.values()), "class probabilities shown for an inconclusive result"
        assert not card.threshold.isVisible()
        assert not card.heatmap_button.isVisible() and not window.live.view.has_heatmap
        tap(qtbot, window.nav["Exam"])
        assert window.exam.summary.table.item(0, 3).text() == "—"  # no probability in the exam summary either
    finally:
        window.shutdown()


def test_a_one_side_exam_with_a_scanned_id_and_two_frames_takes_nine_touches(qtbot, window) -> None:
    """The count in docs/ui.md, tapped for real: from Live with no exam, the wristband scanned (real key events, no
    touch), to the exam finished with two results — the readback confirmation included."""
    touches: list[str] = []

    def touch(widget) -> None:
        touches.append(widget.text())
        tap(qtbot, widget)

    live = window.live
    scan(qtbot, window, "10452")  # on Live: the form opens with the ID filled in
    form = window.exam.form
    assert window.stack.currentWidget() is window.exam and form.values["patient"] == "10452"
    touch(form.side_buttons["L"])
    touch(form.start)
    touch(window.confirm.accept_button)  # the readback: "Start exam"
    qtbot.waitUntil(lambda: window.session.exam is not None, timeout=10_000)
    exam = window.session.exam
    for frame in range(2):
        if frame:
            touch(live.freeze)  # "Live": back to the moving image
        with qtbot.waitSignal(live.result_shown, timeout=30_000):
            touch(live.analyse)  # freezes the frame and stores it
    touch(live.exam_button)  # the exam's summary
    touch(window.exam.summary.finish)
    touch(window.confirm.accept_button)
    assert window.session.exam is None
    assert [r.exam_id for r in stored(window)] == [exam.exam_id, exam.exam_id]
    assert len(touches) == 9, touches


def test_the_device_refuses_a_frame_whose_exam_closed_even_if_the_screen_missed_it(qtbot, window, monkeypatch) -> None:
    """Enforced in device/, not only in the UI: the exam closes on the device's desk while the model works on
    its frame, and the screen is not told (as if the UI had a bug). The writer stores nothing and the card
    says why."""
    start_exam(qtbot, window, "10452", "L")
    desk, classifier = window.session.desk, window.services.analysis.classifier
    classify = classifier.classify
    closed = []

    def classify_then_close(*args, **kwargs):
        result = classify(*args, **kwargs)
        closed.append(desk.close())  # behind the widgets' back: no signal, Live still shows the exam
        return result

    monkeypatch.setattr(classifier, "classify", classify_then_close)
    failed = []
    window.services.analysis.request_failed.connect(lambda captured, code, message: failed.append(code))
    tap(qtbot, window.live.analyse)
    qtbot.waitUntil(lambda: bool(failed), timeout=30_000)
    assert failed == ["exam_closed"]
    card = window.live.card
    assert card.headline.text() == "Not stored"
    assert f"exam {closed[0].exam_id}" in card.detail.text() and "finished" in card.detail.text()
    assert stored(window) == []
