"""The exam: patient reference on the keypad, side, optional clock position and age; several frames per
exam combined into a summary (highest malignant probability, every frame listed).

The exam open on the device lives in the Qt-free :class:`device.results.ExamDesk`; :class:`ExamSession` is its
face for the widgets. Every frame is captured with the open exam's id and can only be stored under it."""

from __future__ import annotations

from dataclasses import dataclass

from PyQt5.QtCore import QObject, Qt, pyqtSignal
from PyQt5.QtGui import QPixmap
from PyQt5.QtWidgets import (
    QButtonGroup, QGridLayout, QHBoxLayout, QLabel, QPushButton, QStackedWidget, QTableWidget,
    QTableWidgetItem, QVBoxLayout, QWidget, QAbstractItemView, QHeaderView, QScroller,
)

from device.results import CapturedFrame, Exam, ExamDesk, ExamEnd, ResultRecord, new_result_id
from device.sources.base import Frame
from device.store import ResultStore
from ui import theme
from ui.keypad import Keypad
from ui.theme import Theme

MALIGNANT = "malignant"
SIDE_NAMES = {"L": "Left", "R": "Right"}


@dataclass(frozen=True)
class ExamSummary:
    frames: int
    inconclusive: int
    highest_malignant: float | None
    highest_frame: int | None  # 1-based position of that frame in the exam


def summarise(records: list[ResultRecord]) -> ExamSummary:
    """Combine an exam's frames (oldest first): the highest malignant probability among conclusive frames."""
    best: tuple[float, int] | None = None
    for position, record in enumerate(records, start=1):
        if record.inconclusive or MALIGNANT not in record.probabilities:
            continue
        p = record.probabilities[MALIGNANT]
        if best is None or p > best[0]:
            best = (p, position)
    return ExamSummary(
        frames=len(records),
        inconclusive=sum(r.inconclusive for r in records),
        highest_malignant=best[0] if best else None,
        highest_frame=best[1] if best else None,
    )


def exam_title(exam: Exam) -> str:
    parts = [f"Patient {exam.patient_ref}", SIDE_NAMES.get(exam.side or "", "side ?")]
    if exam.clock:
        parts.append(f"{exam.clock} o'clock")
    if exam.age is not None:
        parts.append(f"age {exam.age}")
    return " · ".join(parts)


def exam_short(exam: Exam) -> str:
    """One line for the Live screen's exam button."""
    text = f"Exam: {exam.patient_ref} {exam.side or ''}"
    return text + (f" · {exam.clock}h" if exam.clock else "")


def result_text(record: ResultRecord) -> str:
    return "Inconclusive" if record.inconclusive else (record.label or record.top_label).capitalize()


def thumbnail_pixmap(record: ResultRecord, size: int) -> QPixmap:
    pixmap = QPixmap()
    if record.thumbnail:
        pixmap.loadFromData(record.thumbnail, "JPG")
    return pixmap.scaled(size, size, Qt.KeepAspectRatio, Qt.SmoothTransformation) if not pixmap.isNull() else pixmap


@dataclass(frozen=True)
class ExamEnded:
    exam: Exam
    reason: ExamEnd


class ExamSession(QObject):
    """The exam in progress (or none), kept by the device's :class:`ExamDesk`. Frames captured while it is
    open belong to it; finishing it (or the lock) ends it for good — it is never resumed."""

    changed = pyqtSignal(object)  # Exam | None
    ended = pyqtSignal(object)  # ExamEnded, before ``changed(None)``

    def __init__(self, desk: ExamDesk | None = None) -> None:
        super().__init__()
        self.desk = desk if desk is not None else ExamDesk()

    @property
    def exam(self) -> Exam | None:
        return self.desk.current

    def begin(self, exam: Exam) -> None:
        self.desk.open(exam)  # ExamAlreadyOpenError: never two at once
        self.changed.emit(exam)

    def finish(self, reason: ExamEnd = ExamEnd.FINISHED) -> Exam | None:
        exam = self.desk.close(reason)
        if exam is not None:
            self.ended.emit(ExamEnded(exam, reason))
            self.changed.emit(None)
        return exam

    def capture(self, frame: Frame) -> CapturedFrame:
        """Stamp ``frame`` with the exam open now (or none): the only exam it may ever be stored under."""
        return self.desk.capture(frame)


class ExamForm(QWidget):
    """Patient reference and age on the keypad, side L/R, optional clock position."""

    start_requested = pyqtSignal(object)  # Exam

    def __init__(self, th: Theme, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._th = th
        self.values = {"patient": "", "age": ""}
        self.side: str | None = None
        self.clock: int | None = None
        outer = QHBoxLayout(self)
        outer.setContentsMargins(th.gap, th.gap, th.gap, th.gap)
        outer.setSpacing(th.gap * 2)
        self.keypad = Keypad(th, max_length=12, ok_text="Next")
        self.keypad.setFixedWidth(th.control * 4 + th.gap * 2 + 20)
        self.keypad.changed.connect(self._typed)
        self.keypad.accepted.connect(self._keypad_ok)
        outer.addWidget(self.keypad)
        right = QVBoxLayout()
        right.setSpacing(th.gap)
        fields = QHBoxLayout()
        self.field_buttons: dict[str, QPushButton] = {}
        self._fields = QButtonGroup(self)
        for key in ("patient", "age"):
            button = QPushButton()
            button.setCheckable(True)
            button.clicked.connect(lambda _=False, k=key: self.select_field(k))
            self._fields.addButton(button)
            self.field_buttons[key] = button
            fields.addWidget(button, 3 if key == "patient" else 2)
        right.addLayout(fields)
        sides = QHBoxLayout()
        side_caption = QLabel("Side")
        side_caption.setProperty("role", "muted")
        sides.addWidget(side_caption)
        self.side_buttons: dict[str, QPushButton] = {}
        group = self._side_group = QButtonGroup(self)
        for side in ("L", "R"):
            button = QPushButton(SIDE_NAMES[side])
            button.setCheckable(True)
            button.clicked.connect(lambda _=False, s=side: self._set_side(s))
            group.addButton(button)
            self.side_buttons[side] = button
            sides.addWidget(button, 1)
        right.addLayout(sides)
        clock_caption = QLabel("Clock position (optional)")
        clock_caption.setProperty("role", "muted")
        right.addWidget(clock_caption)
        grid = QGridLayout()
        grid.setSpacing(max(2, th.gap // 2))
        self.clock_buttons: dict[int, QPushButton] = {}
        for hour in range(1, 13):
            button = QPushButton(str(hour))
            button.setCheckable(True)
            button.setMinimumWidth(th.control - 4)
            button.setStyleSheet("padding: 0;")
            button.clicked.connect(lambda _=False, h=hour: self._set_clock(h))
            grid.addWidget(button, (hour - 1) // 6, (hour - 1) % 6)
            self.clock_buttons[hour] = button
        right.addLayout(grid)
        right.addStretch(1)
        self.notice = QLabel("")  # what happened to the previous exam (finished, or finished by the lock)
        self.notice.setProperty("role", "muted")
        self.notice.setWordWrap(True)
        self.notice.hide()
        right.addWidget(self.notice)
        self.start = QPushButton("Start exam")
        self.start.setProperty("role", "primary")
        self.start.clicked.connect(self._start)
        right.addWidget(self.start)
        outer.addLayout(right, 1)
        self.reset()

    def reset(self, notice: str = "") -> None:
        """An empty form: nothing selected that the next exam would not get (a new exam starts from scratch)."""
        self.values = {"patient": "", "age": ""}
        self.side, self.clock = None, None
        self.pending: Exam | None = None  # asked for by Start, not yet stored and opened
        group = self._side_group
        group.setExclusive(False)  # an exclusive group refuses to uncheck its checked button
        for button in list(self.side_buttons.values()) + list(self.clock_buttons.values()):
            button.setChecked(False)
        group.setExclusive(True)
        self.notice.setText(notice)
        self.notice.setVisible(bool(notice))
        self.select_field("patient")
        self._refresh()

    def select_field(self, key: str) -> None:
        self.active_field = key
        self.field_buttons[key].setChecked(True)
        self.keypad.max_length = 12 if key == "patient" else 3
        self.keypad.set_value(self.values[key])

    def _typed(self, value: str) -> None:
        self.values[self.active_field] = value
        self._refresh()

    def _keypad_ok(self, _value: str) -> None:
        self.select_field("age" if self.active_field == "patient" else "patient")

    def _set_side(self, side: str) -> None:
        self.side = side
        self._refresh()

    def _set_clock(self, hour: int) -> None:
        self.clock = None if self.clock == hour else hour  # tap again to clear (it is optional)
        for h, button in self.clock_buttons.items():
            button.setChecked(h == self.clock)

    def problem(self) -> str | None:
        if not self.values["patient"]:
            return "Enter the patient reference"
        if self.side is None:
            return "Choose the side"
        if self.values["age"] and not 0 <= int(self.values["age"]) <= 130:
            return "Age must be 0-130"
        return None

    def _refresh(self) -> None:
        self.field_buttons["patient"].setText(f"Patient: {self.values['patient'] or '—'}")
        self.field_buttons["age"].setText(f"Age: {self.values['age'] or '—'}")
        problem = self.problem()
        starting = self.pending is not None
        self.start.setEnabled(problem is None and not starting)
        self.start.setText(problem or ("Starting…" if starting else "Start exam"))  # says what is missing

    def _start(self) -> None:
        if self.problem() is not None or self.pending is not None:
            return
        age = int(self.values["age"]) if self.values["age"] else None
        # one tap, one exam: a second tap before it opens starts nothing
        self.pending = Exam(new_result_id(), self.values["patient"], self.side, self.clock, age)
        self._refresh()
        self.start_requested.emit(self.pending)

    def take_pending(self, exam: Exam) -> bool:
        """``exam`` was stored: True if it is the one this form is still waiting for (not reset since by the lock)."""
        if self.pending is None or self.pending.exam_id != exam.exam_id:
            return False
        self.pending = None
        return True

    def start_failed(self) -> None:
        """The exam could not be stored: the form stays filled in for another try."""
        self.pending = None
        self._refresh()


class ExamSummaryView(QWidget):
    back_to_live = pyqtSignal()
    finish_requested = pyqtSignal()

    def __init__(self, th: Theme, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._th = th
        layout = QVBoxLayout(self)
        layout.setContentsMargins(th.gap, th.gap, th.gap, th.gap)
        layout.setSpacing(th.gap)
        self.title = QLabel("")
        self.title.setProperty("role", "heading")
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["", "Time", "Model output", "Malignant"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.NoSelection)
        self.table.setVerticalScrollMode(QAbstractItemView.ScrollPerPixel)
        self.table.setWordWrap(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.Fixed)
        self.table.horizontalHeader().setSectionResizeMode(2, QHeaderView.Stretch)
        QScroller.grabGesture(self.table.viewport(), QScroller.LeftMouseButtonGesture)
        buttons = QHBoxLayout()
        self.back = QPushButton("Back to live")
        self.back.setProperty("role", "primary")
        self.back.clicked.connect(self.back_to_live)
        self.finish = QPushButton("Finish exam")
        self.finish.clicked.connect(self.finish_requested)
        buttons.addWidget(self.back, 1)
        buttons.addWidget(self.finish, 1)
        layout.addWidget(self.title)
        layout.addWidget(self.summary)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)

    def show_exam(self, exam: Exam, records: list[ResultRecord]) -> None:
        self.title.setText(exam_title(exam))
        summary = summarise(records)
        if summary.frames == 0:
            text = "No frames yet. Go back to live, freeze a view and tap Analyse."
        elif summary.highest_malignant is None:
            text = f"{summary.frames} frame(s), all inconclusive — rescan."
        else:
            text = (f"{summary.frames} frame(s). Highest malignant probability: "
                    f"<b>{summary.highest_malignant * 100:.0f}%</b> (frame {summary.highest_frame})")
            if summary.inconclusive:
                text += f"; {summary.inconclusive} inconclusive"
        self.summary.setText(text)
        thumb = self._th.control
        self.table.setRowCount(len(records))
        for row, record in enumerate(records):
            icon = QLabel()
            icon.setPixmap(thumbnail_pixmap(record, thumb - 4))
            icon.setAlignment(Qt.AlignCenter)
            self.table.setCellWidget(row, 0, icon)
            self.table.setItem(row, 1, QTableWidgetItem(f"{row + 1}. {record.created_at[11:19]}"))
            item = QTableWidgetItem(result_text(record))
            item.setForeground(_brush(theme.WARN if record.inconclusive else theme.label_colour(record.label)))
            self.table.setItem(row, 2, item)
            p = record.probabilities.get(MALIGNANT)
            self.table.setItem(row, 3, QTableWidgetItem("—" if p is None or record.inconclusive else f"{p * 100:.0f}%"))
            self.table.setRowHeight(row, thumb)
        self.table.setColumnWidth(0, thumb + 8)


def _brush(colour: str):
    from PyQt5.QtGui import QBrush, QColor

    return QBrush(QColor(colour))


class ExamScreen(QWidget):
    """Form when no exam is open; the exam's summary while one is. Finish asks the window to confirm."""

    back_to_live = pyqtSignal()
    finish_requested = pyqtSignal()

    def __init__(self, th: Theme, session: ExamSession, store: ResultStore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.store = store
        self.form = ExamForm(th)
        self.summary = ExamSummaryView(th)
        self.summary.back_to_live.connect(self.back_to_live)
        self.summary.finish_requested.connect(self.finish_requested)
        self.pages = QStackedWidget()
        self.pages.addWidget(self.form)
        self.pages.addWidget(self.summary)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.pages)
        self._ended_notice = ""
        session.ended.connect(self._session_ended)
        session.changed.connect(self._session_changed)

    def _session_ended(self, ended: ExamEnded) -> None:
        count = len(self.store.history(exam_id=ended.exam.exam_id))
        held = f"{count} result{'' if count == 1 else 's'} stored"
        if ended.reason is ExamEnd.LOCKED:
            self._ended_notice = f"The screen locked, so the previous exam was finished ({held}). Start a new exam."
        else:
            self._ended_notice = f"Previous exam finished ({held}). Start a new exam."

    def _session_changed(self, exam: Exam | None) -> None:
        if exam is None:
            self.form.reset(self._ended_notice)
            self._ended_notice = ""
            self.pages.setCurrentWidget(self.form)
        else:
            self.refresh()
            self.pages.setCurrentWidget(self.summary)

    def refresh(self) -> None:
        exam = self.session.exam
        if exam is not None:
            records = self.store.history(exam_id=exam.exam_id, newest_first=False)
            self.summary.show_exam(exam, records)
