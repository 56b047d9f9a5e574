"""New lesion / Same lesion, second view: the per-capture choice on the Live screen, after a stored result.

Every stored frame starts as a lesion of its own (device/store.py). When the exam's previous frame (that still
counts, on the same side) is a lesion with one view, two big buttons offer *New lesion* (chosen) and *Same lesion,
2nd view*: the second makes this frame the other orthogonal view of that lesion (at most two views, as Koios DS
takes); tapping *New lesion* again undoes it. The grouping is stored at once, and the lesion result — the more
concerning view's (device/lesions.py) — is shown under the buttons in words. The store refuses a grouping across
exams or sides; its refusal is shown here."""

from __future__ import annotations

import logging
from collections.abc import Callable

from PyQt5.QtCore import pyqtSignal
from PyQt5.QtWidgets import QButtonGroup, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from device.errors import StoreError
from device.lesions import MAX_VIEWS, Lesion, LesionError
from device.results import ResultRecord
from device.store import ResultStore
from ui.exam import lesion_result_text
from ui.theme import Theme

log = logging.getLogger(__name__)


def lesion_of(lesions: list[Lesion], result_id: str) -> Lesion | None:
    return next((lesion for lesion in lesions if any(f.result_id == result_id for f in lesion.frames)), None)


class LesionChoice(QWidget):
    """``offer(record)`` after a stored result; ``clear()`` when the frame goes; ``grouped`` after a change."""

    grouped = pyqtSignal()

    def __init__(self, th: Theme, store: ResultStore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.record: ResultRecord | None = None
        self.previous: ResultRecord | None = None  # the frame this one may be the second view of
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(max(2, th.gap // 2))
        row = QHBoxLayout()
        row.setSpacing(th.gap)
        self.new_button = QPushButton("New\nlesion")
        self.same_button = QPushButton("Same lesion\n2nd view")
        self._group = QButtonGroup(self)
        for button in (self.new_button, self.same_button):
            button.setCheckable(True)
            button.setMinimumHeight(th.control)
            button.setStyleSheet(f"padding: 0 {th.gap}px; font-size: {th.small}px;")
            self._group.addButton(button)
            row.addWidget(button, 1)
        self.new_button.clicked.connect(self.choose_new)
        self.same_button.clicked.connect(self.choose_same)
        layout.addLayout(row)
        self.words = QLabel("")  # the lesion and its result, or why the grouping was refused
        self.words.setWordWrap(True)
        self.words.setStyleSheet(f"font-size: {th.small}px;")
        layout.addWidget(self.words)
        self.hide()

    def clear(self) -> None:
        self.record, self.previous = None, None
        self.hide()

    def offer(self, record: ResultRecord) -> None:
        """Show the choice for ``record`` if the exam's previous counted frame can take it as its second view."""
        self.record, self.previous = record, None
        if record.exam_id is None:
            self.hide()
            return
        lesions = self.store.lesions(record.exam_id)
        frames = sorted((f for lesion in lesions for f in lesion.frames), key=lambda f: f.seq or 0)
        ids = [f.result_id for f in frames]
        if record.result_id not in ids or ids.index(record.result_id) == 0:
            self.hide()  # the exam's first frame: nothing to group it with
            return
        previous = frames[ids.index(record.result_id) - 1]
        own, theirs = lesion_of(lesions, record.result_id), lesion_of(lesions, previous.result_id)
        together = own is not None and own is theirs
        if theirs is None or (not together and (len(theirs.frames) >= MAX_VIEWS or theirs.side != record.side)):
            self.hide()  # that lesion has its two views, or is on the other side: this frame is a new lesion
            return
        self.previous = previous
        self._show(lesions, together)
        self.show()

    def _show(self, lesions: list[Lesion], together: bool) -> None:
        assert self.record is not None
        (self.same_button if together else self.new_button).setChecked(True)
        lesion = lesion_of(lesions, self.record.result_id)
        if lesion is None:
            self.words.setText("")
        elif together:  # the rule in plain words, short: the summary says it in full (LESION_RULE)
            self.words.setText(f"Lesion {lesion.number} · 2 views: <b>{lesion_result_text(lesion)}</b> (the more concerning view)")
        else:
            self.words.setText(f"Lesion {lesion.number} · one view")

    def choose_same(self) -> None:
        self._change(lambda r, p: self.store.same_lesion(r.result_id, p.result_id))

    def choose_new(self) -> None:
        self._change(lambda r, _p: self.store.new_lesion(r.result_id))

    def _change(self, action: Callable[[ResultRecord, ResultRecord], object]) -> None:
        record, previous = self.record, self.previous
        if record is None or previous is None:
            return
        try:
            action(record, previous)
        except (LesionError, StoreError) as exc:
            log.warning("lesion of result %s not changed: %s", record.result_id, exc)
            self.words.setText(f"Not grouped: {exc}")
            self.new_button.setChecked(True)
            return
        self.offer(record)
        self.grouped.emit()
