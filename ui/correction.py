"""Correct… a stored result: void it, or move it to the exam it belongs to — a few big taps, then a confirmation.

Opened from History and from the open exam's summary (a row selected, then *Correct…*). The steps, one panel each
(an overlay, like every dialog of the app)::

    what:     Void it | Move to another exam | Cancel
    void:     reason (Poor image, Test scan, Wrong patient, Duplicate, Other)      -> confirm
    move:     exam (the device's newest exams) -> side (only if the exam has none)
              -> reason (Wrong patient, Wrong side, Wrong exam, Other)             -> confirm
    Other:    a short note on the on-screen keyboard (letters, digits, space; up to 40) -> confirm
    confirm:  what will happen, from -> to, why; Back | Void result / Move result

Reasons are a fixed list to tap (gloves); only ``other`` asks for typing: its note (required, device/link/corrections.py)
is stored with the correction and travels with it to the hub.
The correction is stored through :meth:`device.store.ResultStore.add_correction`, which checks it again (the result
exists and is not voided, the exam exists...) and never changes the result itself; a refusal is shown in the
panel. The uplink delivers it to the hub.
"""

from __future__ import annotations

import html
import logging

from PyQt5.QtCore import pyqtSignal
from PyQt5.QtWidgets import QGridLayout, QHBoxLayout, QLabel, QPushButton, QStackedWidget, QVBoxLayout, QWidget

from device.errors import StoreError
from device.link.corrections import (
    REASON_WORDS,
    REASONS,
    Correction,
    CorrectionError,
    CorrectionKind,
    CorrectionReason,
    Place,
    make_correction,
)
from device.results import Exam, ResultRecord
from device.store import ResultStore
from ui.history import local_time
from ui.number_entry import NumberEntry
from ui.overlay import Overlay
from ui.result_words import category_text
from ui.theme import Theme

log = logging.getLogger(__name__)

SIDE_WORDS = {"L": "Left", "R": "Right"}
EXAMS_SHOWN = 6  # the device's newest exams offered as a move's target
UI_REASONS = REASONS  # every reason, "Other" last: it asks for a note


def place_text(place: Place) -> str:
    return f"{place.patient_ref or 'no patient'} {SIDE_WORDS.get(place.side or '', '')}".strip()


def exam_button_text(exam: Exam) -> str:
    side = SIDE_WORDS.get(exam.side or "", "both sides")
    return f"{exam.patient_ref} · {side}\n{local_time(exam.created_at)}"


class CorrectionOverlay(Overlay):
    """``start(record)`` opens the flow for one stored result; ``corrected`` is emitted once a correction is stored."""

    corrected = pyqtSignal(object)  # device.link.corrections.Correction

    def __init__(self, parent: QWidget, th: Theme, store: ResultStore, device_id: str, site: str) -> None:
        super().__init__(parent)
        self._th, self.store, self.device_id, self.site = th, store, device_id, site
        self.record: ResultRecord | None = None
        self.origin = Place(None, None, None)
        self.kind: CorrectionKind | None = None
        self.target_exam: Exam | None = None
        self.side: str | None = None
        self.reason: CorrectionReason | None = None
        self.note = ""  # the "other" reason's note, typed on note_entry
        self.note_entry: NumberEntry | None = None  # the window's note keyboard (ui/keypad.py NoteKeyboard)
        outer = QVBoxLayout(self.panel)
        outer.setContentsMargins(th.gap * 3, th.gap * 2, th.gap * 3, th.gap * 2)
        outer.setSpacing(th.gap)
        self.title = QLabel("")
        self.title.setProperty("role", "heading")
        self.title.setWordWrap(True)
        self.about = QLabel("")  # the result being corrected, on every step
        self.about.setWordWrap(True)
        self.about.setProperty("role", "muted")
        self.pages = QStackedWidget()
        outer.addWidget(self.title)
        outer.addWidget(self.about)
        outer.addWidget(self.pages, 1)
        self._build_what()
        self.reason_page, self.reason_grid = self._grid_page()
        self.exam_page, self.exam_grid = self._grid_page()
        self._build_side()
        self._build_confirm()
        self.reason_buttons: dict[CorrectionReason, QPushButton] = {}
        self.exam_buttons: dict[str, QPushButton] = {}
        for i in range(self.pages.count()):  # the steps on the panel's own colour, not the window's
            page = self.pages.widget(i)
            assert page is not None  # i < count()
            page.setObjectName("correction-step")
        self.pages.setObjectName("correction-steps")
        self.panel.setStyleSheet("QWidget#correction-step, QStackedWidget#correction-steps { background: transparent; }")

    # --- pages ---------------------------------------------------------------------------------------

    def _row(self, *buttons: QPushButton) -> QHBoxLayout:
        row = QHBoxLayout()
        row.setSpacing(self._th.gap * 2)
        for b in buttons:
            row.addWidget(b, 1)
        return row

    def _build_what(self) -> None:
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(self._th.gap * 2)
        self.void_button = QPushButton("Void it")
        self.void_button.clicked.connect(lambda: self._choose_kind(CorrectionKind.VOID))
        self.move_button = QPushButton("Move to another exam")
        self.move_button.clicked.connect(lambda: self._choose_kind(CorrectionKind.MOVE))
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.close_overlay)
        self.what_note = QLabel("The result stays stored; it is marked, never changed. The hub is told.")
        self.what_note.setWordWrap(True)
        layout.addLayout(self._row(self.void_button, self.move_button))
        layout.addWidget(self.what_note)
        layout.addLayout(self._row(self.cancel_button))
        self.what_page = page
        self.pages.addWidget(page)

    def _grid_page(self) -> tuple[QWidget, QGridLayout]:
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(self._th.gap * 2)
        grid = QGridLayout()
        grid.setSpacing(self._th.gap * 2)
        layout.addLayout(grid)
        back = QPushButton("Back")
        back.clicked.connect(self._back)
        layout.addLayout(self._row(back))
        page.setProperty("back", back)
        self.pages.addWidget(page)
        return page, grid

    def _build_side(self) -> None:
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(self._th.gap * 2)
        self.side_buttons = {s: QPushButton(words) for s, words in SIDE_WORDS.items()}
        for s, button in self.side_buttons.items():
            button.clicked.connect(lambda _=False, s=s: self._choose_side(s))
        back = QPushButton("Back")
        back.clicked.connect(self._back)
        layout.addLayout(self._row(*self.side_buttons.values()))
        layout.addLayout(self._row(back))
        self.side_page = page
        self.pages.addWidget(page)

    def _build_confirm(self) -> None:
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(self._th.gap * 2)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.error = QLabel("")
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #ff7a70; font-weight: bold;")
        self.error.hide()
        self.confirm_back = QPushButton("Back")
        self.confirm_back.clicked.connect(self._back)
        self.accept_button = QPushButton("")
        self.accept_button.setProperty("role", "primary")
        self.accept_button.clicked.connect(self._store)
        layout.addWidget(self.summary)
        layout.addWidget(self.error)
        layout.addLayout(self._row(self.confirm_back, self.accept_button))
        self.confirm_page = page
        self.pages.addWidget(page)

    # --- the flow ------------------------------------------------------------------------------------

    def start(self, record: ResultRecord) -> None:
        """Open the flow for ``record``; a voided result is said to be so and offers nothing but Close."""
        self.record, self.kind, self.target_exam, self.side, self.reason = record, None, None, None, None
        self.note = ""
        placement = self.store.placement(record.result_id)
        self.origin = placement.place if placement else Place(record.exam_id, record.patient_ref, record.side)
        self.about.setText(f"{local_time(record.created_at)} · {place_text(self.origin)} · {category_text(record)}")
        voided = placement is not None and placement.voided
        self.void_button.setVisible(not voided)
        self.move_button.setVisible(not voided)
        self.cancel_button.setText("Close" if voided else "Cancel")
        self.what_note.setText(
            "This result was voided; it cannot be corrected again."
            if voided
            else "The result stays stored; it is marked, never changed. The hub is told."
        )
        self._show(self.what_page, "Correct this result")
        self.panel.setFixedWidth(max(320, int(self.host().width() * 0.9)))
        self.open()

    def _show(self, page: QWidget, title: str) -> None:
        self.title.setText(title)
        self.pages.setCurrentWidget(page)

    def _choose_kind(self, kind: CorrectionKind) -> None:
        self.kind = kind
        if kind is CorrectionKind.VOID:
            self._show_reasons()
        else:
            self._show_exams()

    def _show_exams(self) -> None:
        _clear(self.exam_grid)
        self.exam_buttons = {}
        for i, exam in enumerate(self.store.exams(limit=EXAMS_SHOWN)):
            button = QPushButton(exam_button_text(exam))
            button.setMinimumHeight(int(self._th.control * 1.3))
            button.clicked.connect(lambda _=False, e=exam: self._choose_exam(e))
            button.setEnabled(not self._is_current(exam, exam.side))
            self.exam_grid.addWidget(button, i // 2, i % 2)
            self.exam_buttons[exam.exam_id] = button
        self._show(self.exam_page, "Move it to which exam?")

    def _is_current(self, exam: Exam, side: str | None) -> bool:
        """The exam (and side) the result is already in: not a move."""
        return exam.exam_id == self.origin.exam_id and side is not None and side == self.origin.side

    def _choose_exam(self, exam: Exam) -> None:
        self.target_exam = exam
        if exam.side is not None:
            self.side = exam.side
            self._show_reasons()
            return
        self.side = None
        for s, button in self.side_buttons.items():
            button.setEnabled(not self._is_current(exam, s))
        self._show(self.side_page, f"Which side of {exam.patient_ref}?")

    def _choose_side(self, side: str) -> None:
        self.side = side
        self._show_reasons()

    def _show_reasons(self) -> None:
        assert self.kind is not None
        _clear(self.reason_grid)
        self.reason_buttons = {}
        for i, reason in enumerate(UI_REASONS[self.kind]):
            button = QPushButton(REASON_WORDS[reason])
            button.clicked.connect(lambda _=False, r=reason: self._choose_reason(r))
            self.reason_grid.addWidget(button, i // 2, i % 2)
            self.reason_buttons[reason] = button
        self._show(self.reason_page, "Why void it?" if self.kind is CorrectionKind.VOID else "Why move it?")

    def _choose_reason(self, reason: CorrectionReason) -> None:
        if reason is CorrectionReason.OTHER and self.note_entry is not None:
            self.note_entry.ask(
                "Other: why? (a short note)",
                self._note_entered,
                "Stored with the correction and sent to the hub. Letters, digits and space.",
                initial=self.note,
            )
            return
        self._confirm(reason)

    def _note_entered(self, text: str) -> str | None:
        note = " ".join(text.split())
        if not note:
            return "Type a few words: 'Other' needs a note saying why."
        self.note = note
        self._confirm(CorrectionReason.OTHER)
        return None

    def _confirm(self, reason: CorrectionReason) -> None:
        self.reason = reason
        why = REASON_WORDS[reason] + (f" — {html.escape(self.note)}" if reason is CorrectionReason.OTHER else "")
        if self.kind is CorrectionKind.VOID:
            self.summary.setText(
                f"Void this result of <b>{place_text(self.origin)}</b>?<br>Reason: <b>{why}</b>.<br>"
                "It stays stored, marked void, and leaves the hub's worklist."
            )
            self.accept_button.setText("Void result")
        else:
            assert self.target_exam is not None
            to = Place(self.target_exam.exam_id, self.target_exam.patient_ref, self.side)
            self.summary.setText(f"Move this result<br>from <b>{place_text(self.origin)}</b><br>to <b>{place_text(to)}</b>?<br>Reason: <b>{why}</b>.")
            self.accept_button.setText("Move result")
        self.error.hide()
        self._show(self.confirm_page, "Confirm the correction")

    def _back(self) -> None:
        page = self.pages.currentWidget()
        if page is self.confirm_page:
            self._show_reasons()
        elif page is self.reason_page and self.kind is CorrectionKind.MOVE:
            if self.target_exam is not None and self.target_exam.side is None:
                self._show(self.side_page, f"Which side of {self.target_exam.patient_ref}?")
            else:
                self._show_exams()
        elif page is self.side_page:
            self._show_exams()
        else:
            self._show(self.what_page, "Correct this result")

    def _store(self) -> None:
        assert self.record is not None and self.kind is not None and self.reason is not None
        target = None
        if self.kind is CorrectionKind.MOVE:
            assert self.target_exam is not None
            target = Place(self.target_exam.exam_id, self.target_exam.patient_ref, self.side)
        try:
            stored: Correction = self.store.add_correction(
                make_correction(
                    result_id=self.record.result_id,
                    kind=self.kind,
                    reason=self.reason,
                    device_id=self.device_id,
                    site=self.site,
                    origin=self.origin,
                    target=target,
                    note=self.note if self.reason is CorrectionReason.OTHER else "",
                )
            )
        except (CorrectionError, StoreError) as exc:
            log.warning("correction of result %s not stored: %s", self.record.result_id, exc)
            self.error.setText(f"Not stored: {exc}")
            self.error.show()
            return
        log.info("result %s corrected: %s", stored.result_id, stored.kind.value)
        self.close_overlay()
        self.corrected.emit(stored)


def _clear(grid: QGridLayout) -> None:
    while grid.count():
        item = grid.takeAt(0)
        widget = item.widget() if item is not None else None
        if widget is not None:  # off the panel now: deleteLater waits for the event loop's next deferred-delete pass
            widget.hide()
            widget.setParent(None)
            widget.deleteLater()
