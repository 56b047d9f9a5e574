"""Two views of one lesion, the "other" reason's note and frames moved into the open exam, on the touchscreen through
real widgets (offscreen Qt, the tiny real model, the real store):

* a whole one-side exam with a scanned ID and two frames of one lesion, through Finish, takes 10 touches (the bar is
  at most 10; docs/ui.md counts them): every tap of the test is counted; the store then holds one lesion of two
  views whose result is the more concerning view's, shown beside the frames in the summary and in History;
* New lesion undoes the grouping; a frame voided leaves its lesion and the lesion result is recomputed;
* the correction reason "Other" asks for a note on the note keyboard (an empty note is refused) and the note is
  stored with the correction (before, "Other" was not offered on the touchscreen at all);
* a result moved INTO the open exam by a correction is in that exam's summary and counts (before, the summary read
  only the results stored under the exam), and the Finish confirmation counts it; History keeps every column, the
  Lesion one too, in view at 800x480 (a moved result's patient on two lines);
* the Live screen with the lesion choice showing lays out (ui/layout_check.py)."""

from __future__ import annotations

from device.decision import CONCERN, Category
from device.link.corrections import CorrectionKind, CorrectionReason, State
from tests.ui.test_corrections_ui import tap_row
from tests.ui_support import analyse, finish_exam, scan, start_exam, tap, type_digits
from ui.exam import LESION_WORDS
from ui.layout_check import layout_problems


class Taps:
    """``tap`` that counts: every touch the clinician makes in the test."""

    def __init__(self, qtbot) -> None:
        self.qtbot, self.count = qtbot, 0

    def __call__(self, widget) -> None:
        tap(self.qtbot, widget)
        self.count += 1

    def analyse(self, window):
        with self.qtbot.waitSignal(window.live.result_shown, timeout=30_000) as shown:
            self(window.live.analyse)
        return shown.args[0].record


def test_one_side_exam_scanned_id_two_views_of_one_lesion_in_ten_touches(qtbot, window) -> None:
    touch = Taps(qtbot)
    scan(qtbot, window, "K10452")  # the wristband scanner types the ID: no touch
    form = window.exam.form
    assert window.stack.currentWidget() is window.exam and form.values["patient"] == "K10452"
    touch(form.side_buttons["L"])  # 1
    touch(form.start)  # 2: the readback
    touch(window.confirm.accept_button)  # 3: Start exam
    qtbot.waitUntil(lambda: window.session.exam is not None, timeout=10_000)
    exam = window.session.exam
    assert window.stack.currentWidget() is window.live
    first = touch.analyse(window)  # 4
    lesion = window.live.lesion
    assert not lesion.isVisible()  # the exam's first frame: nothing to group it with
    touch(window.live.freeze)  # 5: back to live, the probe turned for the orthogonal view
    second = touch.analyse(window)  # 6
    assert lesion.isVisible() and lesion.new_button.isChecked()  # a new lesion unless the clinician says otherwise
    assert layout_problems(window) == []
    touch(lesion.same_button)  # 7: same lesion, second view
    assert lesion.same_button.isChecked() and "Lesion 1 · 2 views" in lesion.words.text()
    assert "more concerning view" in lesion.words.text()
    touch(window.nav["Exam"])  # 8
    summary = window.exam.summary
    assert summary.table.item(0, 4).text().startswith("1 (2 views): ") and summary.table.item(1, 4).text() == "1: 2nd view"
    assert "2 frame(s) in 1 lesion" in summary.summary.text() and "more concerning view" in summary.summary.text()
    touch(summary.finish)  # 9
    assert "in 1 lesion" in window.confirm.message.text()
    touch(window.confirm.accept_button)  # 10
    assert window.session.exam is None
    assert touch.count == 10  # the bar: at most 10 (docs/ui.md, "Touches for one exam")

    (stored,) = window.store.lesions(exam.exam_id)
    assert [f.result_id for f in stored.frames] == [first.result_id, second.result_id]
    concern = max((Category(r.category) for r in stored.frames), key=CONCERN.__getitem__)
    assert stored.decision is not None and stored.decision.category is concern  # never contradicts its frames
    window.go("History")
    history = window.history
    rows = {r.result_id: row for row, r in enumerate(history.records)}
    assert history.table.item(rows[first.result_id], 6).text() == f"1 · 2 views\n{LESION_WORDS[concern]}"
    assert history.table.item(rows[second.result_id], 6).text() == "1 · 2nd view"
    assert history.table.horizontalScrollBar().maximum() == 0  # every column in view at 800x480, the Lesion one too


def test_new_lesion_undoes_and_a_voided_view_leaves_its_lesion(qtbot, window) -> None:
    exam = start_exam(qtbot, window, "10452", "L")
    analyse(qtbot, window)
    tap(qtbot, window.live.freeze)
    second = analyse(qtbot, window).record
    lesion = window.live.lesion
    tap(qtbot, lesion.same_button)
    assert len(window.store.lesions(exam.exam_id)) == 1
    tap(qtbot, lesion.new_button)  # undone: two lesions
    assert [len(x.frames) for x in window.store.lesions(exam.exam_id)] == [1, 1]
    tap(qtbot, lesion.same_button)
    tap(qtbot, window.nav["Exam"])
    summary = window.exam.summary
    tap_row(qtbot, summary.table, 0)
    tap(qtbot, summary.correct)
    flow = window.correction
    tap(qtbot, flow.void_button)
    tap(qtbot, flow.reason_buttons[CorrectionReason.POOR_IMAGE])
    tap(qtbot, flow.accept_button)
    (left,) = window.store.lesions(exam.exam_id)  # recomputed from the view that remains
    assert [f.result_id for f in left.frames] == [second.result_id]
    assert summary.table.item(0, 4).text() == "not counted" and summary.table.item(1, 4).text().startswith("1: ")
    assert "views" not in summary.table.item(1, 4).text()


def test_other_reason_asks_for_a_note_and_stores_it(qtbot, window) -> None:
    start_exam(qtbot, window, "10452", "L")
    record = analyse(qtbot, window).record
    tap(qtbot, window.nav["Exam"])
    summary = window.exam.summary
    tap_row(qtbot, summary.table, 0)
    tap(qtbot, summary.correct)
    flow = window.correction
    tap(qtbot, flow.void_button)
    tap(qtbot, flow.reason_buttons[CorrectionReason.OTHER])
    note = window.note_entry
    assert note.isVisible() and flow.isVisible()
    assert layout_problems(window) == []
    keyboard = note.keypad
    tap(qtbot, keyboard.keys["OK"])  # no note: refused, the keyboard stays
    assert note.isVisible() and "needs a note" in note.message.text()
    type_digits(qtbot, keyboard, "GEL")
    tap(qtbot, keyboard.keys[" "])
    type_digits(qtbot, keyboard, "ARTEFACT")
    tap(qtbot, keyboard.keys["OK"])
    assert not note.isVisible() and flow.pages.currentWidget() is flow.confirm_page
    assert "Other — GEL ARTEFACT" in flow.summary.text()
    tap(qtbot, flow.accept_button)
    (stored,) = window.store.corrections(record.result_id)
    assert stored.kind is CorrectionKind.VOID and stored.reason is CorrectionReason.OTHER
    assert stored.note == "GEL ARTEFACT"


def test_a_result_moved_into_the_open_exam_is_in_its_summary(qtbot, window) -> None:
    start_exam(qtbot, window, "10452", "L")
    wrong = analyse(qtbot, window).record
    finish_exam(qtbot, window)
    target = start_exam(qtbot, window, "20001", "L")
    own = analyse(qtbot, window).record
    tap(qtbot, window.nav["History"])
    history = window.history
    tap_row(qtbot, history.table, [r.result_id for r in history.records].index(wrong.result_id))
    tap(qtbot, history.correct_button)
    flow = window.correction
    tap(qtbot, flow.move_button)
    tap(qtbot, flow.exam_buttons[target.exam_id])
    tap(qtbot, flow.reason_buttons[CorrectionReason.WRONG_PATIENT])
    tap(qtbot, flow.accept_button)
    assert window.store.placement(wrong.result_id).state is State.MOVED
    tap(qtbot, window.nav["Exam"])
    summary = window.exam.summary
    assert [r.result_id for r in summary.records] == [wrong.result_id, own.result_id]
    assert summary.table.item(0, 2).text().startswith("From 10452 · ")
    assert "2 frame(s) in 2 lesions" in summary.summary.text()
    tap(qtbot, summary.finish)
    assert "It holds 2 results" in window.confirm.message.text()
    tap(qtbot, window.confirm.cancel_button)
    tap(qtbot, window.nav["History"])  # the moved result's patient on two lines: the Lesion column stays in view
    row = [r.result_id for r in history.records].index(wrong.result_id)
    assert (
        history.table.item(row, 2).text() == "20001 L\n(moved)"
        and history.table.item(row, 6).text() == "1 · one view\n" + history.table.item(row, 6).text().split("\n")[1]
    )
    qtbot.waitUntil(lambda: history.table.horizontalScrollBar().maximum() == 0, timeout=2_000)


def test_the_note_keyboard_has_a_space_and_no_double_spaces(qtbot, window) -> None:
    keyboard = window.note_entry.keypad
    for key in (" ", "A", " ", " ", "B"):
        keyboard.press(key)
    assert keyboard.value == "A B"
