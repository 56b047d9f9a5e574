"""Through the real widgets (offscreen, tiny real model, real SQLite): no sequence of taps — start an exam with the
ID on the keyboard or scanned (real key events) and confirmed in the readback, Finish (confirmed or kept), change
exam, the other side of the same patient, lock and unlock with the PIN, Freeze/Live, Next image, Analyse — stores a
frame under an exam other than the one open when it was captured, or shows another exam's
result on the card. A short hypothesis state machine (the long one runs on the device layer,
tests/device/test_exam_binding.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

pytest.importorskip("PyQt5")
pytest.importorskip("pytestqt")

from device.store import ResultStore
from tests.ui.test_ui_exam_defects import PIN, open_window
from tests.ui.test_ui_workflow import write_frames
from tests.ui_support import finish_exam, scan, start_exam, tap, unlock

CONTEXT: dict = {}


class TouchscreenMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.window = CONTEXT["window"]  # one window for every run: results accumulate in its store
        self.token_of: dict[str, str | None] = CONTEXT["token_of"]  # result_id -> exam open when it was captured
        self.patients: dict[str, str] = CONTEXT["patients"]  # exam_id -> patient_ref
        self.frozen_under: str | None = None  # the exam open when the frame on screen was frozen
        self.locked = False

    @initialize()
    def begin_run(self) -> None:
        """Every run starts unlocked, with no exam and the live image."""
        window = self.window
        window.confirm.close_overlay()
        if window.lock_screen.isVisible():
            unlock(self.qtbot, window, PIN)
        if window.session.exam is not None:
            finish_exam(self.qtbot, window)
        tap(self.qtbot, window.nav["Live"])
        if window.live.view.frozen:
            tap(self.qtbot, window.live.freeze)
        with ResultStore(window.config.store_path) as store:
            self.first_seq = store.last_seq()  # each run answers only for what it stores

    @property
    def qtbot(self):
        return CONTEXT["qtbot"]

    def _exam_id(self) -> str | None:
        exam = self.window.session.exam
        return exam.exam_id if exam else None

    @precondition(lambda self: not self.locked and self.window.session.exam is None)
    @rule(patient=st.sampled_from(("10452", "20001")), side=st.sampled_from(("L", "R")))
    def start(self, patient: str, side: str) -> None:
        exam = start_exam(self.qtbot, self.window, patient, side)
        self.patients[exam.exam_id] = patient
        self.frozen_under = None  # a new exam starts from the live image

    @precondition(lambda self: not self.locked and self.window.session.exam is None)
    @rule(patient=st.sampled_from(("10452", "A20001")), side=st.sampled_from(("L", "R")))
    def start_scanned(self, patient: str, side: str) -> None:
        window = self.window
        scan(self.qtbot, window, patient)
        tap(self.qtbot, window.exam.form.side_buttons[side])
        tap(self.qtbot, window.exam.form.start)
        tap(self.qtbot, window.confirm.accept_button)
        self.qtbot.waitUntil(lambda: window.session.exam is not None, timeout=10_000)
        self.patients[window.session.exam.exam_id] = patient
        self.frozen_under = None

    @precondition(lambda self: not self.locked and self.window.session.exam is not None)
    @rule()
    def other_side(self) -> None:
        window = self.window
        before = window.session.exam
        tap(self.qtbot, window.nav["Exam"])
        tap(self.qtbot, window.exam.summary.other_side)
        self.qtbot.waitUntil(lambda: window.session.exam is not None and window.session.exam != before, timeout=10_000)
        after = window.session.exam
        assert after.patient_ref == before.patient_ref and after.side != before.side
        self.patients[after.exam_id] = before.patient_ref
        self.frozen_under = None

    @precondition(lambda self: not self.locked and self.window.session.exam is not None)
    @rule()
    def finish(self) -> None:
        finish_exam(self.qtbot, self.window)
        assert self.window.session.exam is None
        self.frozen_under = None

    @precondition(lambda self: not self.locked and self.window.session.exam is not None)
    @rule()
    def keep_exam_open(self) -> None:
        exam_id = self._exam_id()
        tap(self.qtbot, self.window.nav["Exam"])
        tap(self.qtbot, self.window.exam.summary.finish)
        tap(self.qtbot, self.window.confirm.cancel_button)
        assert self._exam_id() == exam_id

    @precondition(lambda self: not self.locked and self.window.session.exam is not None)
    @rule(patient=st.sampled_from(("10452", "20001")), side=st.sampled_from(("L", "R")))
    def change_exam(self, patient: str, side: str) -> None:
        self.finish()
        self.start(patient, side)

    @precondition(lambda self: not self.locked)
    @rule()
    def lock(self) -> None:
        self.window.idle.timer.timeout.emit()
        self.locked = True
        self.frozen_under = None

    @precondition(lambda self: self.locked)
    @rule()
    def unlock(self) -> None:
        unlock(self.qtbot, self.window, PIN)
        self.locked = False
        assert self.window.session.exam is None

    @precondition(lambda self: not self.locked)
    @rule()
    def freeze_or_live(self) -> None:
        tap(self.qtbot, self.window.nav["Live"])
        live = self.window.live
        tap(self.qtbot, live.freeze)
        self.frozen_under = self._exam_id() if live.view.frozen else None

    @precondition(lambda self: not self.locked)
    @rule()
    def next_image(self) -> None:
        live = self.window.live
        if live.next_image.isVisible() and not live.view.frozen:
            tap(self.qtbot, self.window.nav["Live"])
            tap(self.qtbot, live.next_image)

    @precondition(lambda self: not self.locked)
    @rule()
    def analyse(self) -> None:
        window, live = self.window, self.window.live
        tap(self.qtbot, window.nav["Live"])
        if not live.analyse.isEnabled():
            assert window.session.exam is None, "Analyse is off although an exam is open"
            return
        token = self.frozen_under if live.view.frozen else self._exam_id()
        with self.qtbot.waitSignal(live.result_shown, timeout=30_000) as shown:
            tap(self.qtbot, live.analyse)
        self.token_of[shown.args[0].record.result_id] = token
        self.frozen_under = token

    @invariant()
    def every_result_is_under_the_exam_its_frame_was_captured_under(self) -> None:
        with ResultStore(self.window.config.store_path) as store:
            for record in store.history():
                if record.seq <= self.first_seq:
                    continue
                token = self.token_of[record.result_id]
                assert record.exam_id is not None and record.exam_id == token, (
                    f"a frame captured under exam {token} was stored under exam {record.exam_id}"
                )
                assert record.patient_ref == self.patients[record.exam_id]

    @invariant()
    def the_card_only_shows_the_open_exams_result(self) -> None:
        shown = self.window.live.last_result
        if shown is not None:
            assert shown.record.exam_id == self._exam_id(), (
                f"the card shows a result of exam {shown.record.exam_id} while exam {self._exam_id()} is open"
            )


def _run(qtbot, tmp_path: Path, bundle: Path, examples: int, **extra) -> None:
    write_frames(tmp_path / "usb")
    window = open_window(qtbot, tmp_path, bundle, tmp_path / "usb")
    CONTEXT.update(qtbot=qtbot, window=window, token_of={}, patients={})
    machine = TouchscreenMachine.TestCase
    machine.settings = settings(max_examples=examples, stateful_step_count=16, deadline=None, suppress_health_check=list(HealthCheck), **extra)
    try:
        machine().runTest()
    finally:
        window.shutdown()


def test_no_sequence_of_taps_stores_a_frame_under_another_exam(qtbot, tmp_path: Path, tiny_bundle_dir: Path) -> None:
    _run(qtbot, tmp_path, tiny_bundle_dir, examples=20)


def test_the_machine_catches_the_old_behaviour(qtbot, tmp_path: Path, tiny_bundle_dir: Path, monkeypatch) -> None:
    """The property test can fail: with the behaviour before issue 14 (an exam change only relabels the exam
    button, and the store accepts a frame under whatever exam is open) it finds a sequence that stores a
    previous exam's frame under the new one, or shows it on the card."""
    from device.results import ExamDesk, NoOpenExamError
    from ui.exam import exam_short
    from ui.live_screen import LiveScreen

    def careless_check(desk, captured):
        if desk.current is None:
            raise NoOpenExamError("no exam open")
        return desk.current

    def relabel_only(screen, exam):
        screen.exam_button.setText(exam_short(exam) if exam else "No exam — tap to start")
        screen._update_buttons()

    monkeypatch.setattr(ExamDesk, "check", careless_check)
    monkeypatch.setattr(LiveScreen, "_exam_changed", relabel_only)
    with pytest.raises(AssertionError, match="was stored under exam|the card shows a result of exam"):
        _run(qtbot, tmp_path, tiny_bundle_dir, examples=40, report_multiple_bugs=False, print_blob=False, derandomize=True)
