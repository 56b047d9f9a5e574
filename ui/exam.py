"""The exam: patient ID on the on-screen keyboard or from the wristband scanner, read back before Start; side,
optional clock position and age; several frames per exam combined into a summary (highest malignant probability,
every frame listed, with its lesion and each lesion's result beside its frames: device/lesions.py; frames moved into
the exam by a correction included); the other side of the same patient as a new exam with one tap.

The exam open on the device lives in the Qt-free :class:`device.results.ExamDesk`; :class:`ExamSession` is its
face for the widgets. Every frame is captured with the open exam's id and can only be stored under it."""

from __future__ import annotations

import html
from dataclasses import dataclass, replace

from PyQt5.QtCore import QObject, QPointF, Qt, pyqtSignal
from PyQt5.QtGui import QPainter, QPixmap, QPolygonF
from PyQt5.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QScroller,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from device.barcode import PatientIdFormat, normalise
from device.decision import Category
from device.lesions import Lesion
from device.link.corrections import Placement, State
from device.results import (
    CapturedFrame,
    Exam,
    ExamDesk,
    ExamEnd,
    ResultRecord,
    new_result_id,
)
from device.sources.base import Frame
from device.store import ResultStore
from ui import theme
from ui.live_view import paint_outline
from ui.number_entry import NumberEntry
from ui.result_words import COLOURS as LESION_COLOURS
from ui.result_words import category_colour, result_lines
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
    """The result in the card's words (History's), never a bare label next to p(malignant); the lesion outline's
    size on a second line when the frame has one (ui.result_words.result_lines)."""
    return result_lines(record)


def thumbnail_pixmap(record: ResultRecord, size: int) -> QPixmap:
    """The stored thumbnail (the analysed crop) scaled to fit ``size``, with the result's outline on it when it
    has one and a crop box to place it by (as the hub's thumbnail)."""
    pixmap = QPixmap()
    if record.thumbnail:
        pixmap.loadFromData(record.thumbnail, "JPG")
    if pixmap.isNull():
        return pixmap
    scaled = pixmap.scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
    lesion = record.lesion
    if lesion is not None and lesion.found and lesion.contour and record.crop is not None and record.crop[2] > 0 and record.crop[3] > 0:
        x0, y0, w, h = record.crop
        sx, sy = scaled.width() / w, scaled.height() / h  # the thumbnail is the crop box, resized
        painter = QPainter(scaled)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setClipRect(0, 0, scaled.width(), scaled.height())
        paint_outline(painter, QPolygonF([QPointF((x - x0 + 0.5) * sx, (y - y0 + 0.5) * sy) for x, y in lesion.contour]), line_px=1.5)
        painter.end()
    return scaled


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
    """Patient ID (on-screen keyboard or the wristband scanner), optional age, side L/R, optional clock position.

    Start does not start the exam: it asks for the readback (``readback_requested``) — the ID shown big, letters
    and digits apart, with the side — and only the clinician's confirmation (:meth:`confirm_start`) sends
    ``start_requested``. Typed IDs are checked against the site's :class:`PatientIdFormat` before they reach the
    form; a scan is checked by :func:`device.barcode.parse_scan` before :meth:`set_scanned`."""

    start_requested = pyqtSignal(object)  # Exam, confirmed by the clinician
    readback_requested = pyqtSignal(object)  # Exam: show it back before it is started

    def __init__(self, th: Theme, id_format: PatientIdFormat | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._th = th
        self.id_format = id_format or PatientIdFormat()
        self.id_entry: NumberEntry | None = None  # the keyboard overlay, given by the window (covers all of it)
        self.age_entry: NumberEntry | None = None
        self.values = {"patient": "", "age": ""}
        self.id_source = ""  # "typed" | "scanned": said in the readback
        self.side: str | None = None
        self.clock: int | None = None
        self.pending: Exam | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(th.gap * 2, th.gap, th.gap * 2, th.gap)
        layout.setSpacing(th.gap)
        fields = QHBoxLayout()
        fields.setSpacing(th.gap)
        self.field_buttons: dict[str, QPushButton] = {"patient": QPushButton(), "age": QPushButton()}
        self.field_buttons["patient"].clicked.connect(self.edit_patient)
        self.field_buttons["age"].clicked.connect(self.edit_age)
        fields.addWidget(self.field_buttons["patient"], 3)
        fields.addWidget(self.field_buttons["age"], 1)
        layout.addLayout(fields)
        sides = QHBoxLayout()
        sides.setSpacing(th.gap)
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
        layout.addLayout(sides)
        clock_caption = QLabel("Clock position (optional)")
        clock_caption.setProperty("role", "muted")
        layout.addWidget(clock_caption)
        grid = QGridLayout()
        grid.setSpacing(max(2, th.gap // 2))
        self.clock_buttons: dict[int, QPushButton] = {}
        for hour in range(1, 13):
            button = QPushButton(str(hour))
            button.setCheckable(True)
            button.setMinimumWidth(th.control - 4)
            button.setStyleSheet("padding: 0;")
            button.clicked.connect(lambda _=False, h=hour: self._set_clock(h))
            grid.addWidget(button, 0, hour - 1)
            self.clock_buttons[hour] = button
        layout.addLayout(grid)
        layout.addStretch(1)
        self.notice = QLabel("")  # what happened to the previous exam, or why a scan was refused
        self.notice.setProperty("role", "muted")
        self.notice.setWordWrap(True)
        self.notice.hide()
        layout.addWidget(self.notice)
        self.start = QPushButton("Start exam")
        self.start.setProperty("role", "primary")
        self.start.clicked.connect(self._start)
        layout.addWidget(self.start)
        self.reset()

    def use_entries(self, id_entry: NumberEntry, age_entry: NumberEntry) -> None:
        self.id_entry, self.age_entry = id_entry, age_entry

    def reset(self, notice: str = "") -> None:
        """An empty form: nothing selected that the next exam would not get (a new exam starts from scratch)."""
        self.values = {"patient": "", "age": ""}
        self.id_source = ""
        self.side, self.clock = None, None
        self.pending = None  # asked for by Start, not yet stored and opened
        group = self._side_group
        group.setExclusive(False)  # an exclusive group refuses to uncheck its checked button
        for button in list(self.side_buttons.values()) + list(self.clock_buttons.values()):
            button.setChecked(False)
        group.setExclusive(True)
        self.say(notice)
        self._refresh()

    def say(self, notice: str) -> None:
        self.notice.setText(notice)
        self.notice.setVisible(bool(notice))

    # --- the fields ---------------------------------------------------------------------------------------

    def edit_patient(self) -> None:
        if self.id_entry is not None:
            self.id_entry.ask(
                "Patient ID",
                self._patient_entered,
                f"Letters, digits and -, as on the wristband (e.g. {self.id_format.example}).",
                initial=self.values["patient"],
            )

    def _patient_entered(self, text: str) -> str | None:
        reference = normalise(text)
        problem = self.id_format.problem(reference)
        if problem is not None:
            return problem  # the keyboard stays open with the ID, to correct it
        self.values["patient"], self.id_source = reference, "typed"
        self._refresh()
        return None

    def set_scanned(self, reference: str) -> None:
        """A wristband was scanned (already checked by :func:`device.barcode.parse_scan`): the ID is filled in; the
        clinician still confirms it in the readback at Start."""
        self.values["patient"], self.id_source = reference, "scanned"
        self.say("Scanned from the wristband: check the readback at Start.")
        self._refresh()

    def set_from_file(self, reference: str) -> None:
        """The DICOM file on screen carries this PatientID: pre-fill it if it is in the site's format."""
        if self.id_format.problem(reference) is None:
            self.values["patient"], self.id_source = reference, "dicom"
            self.say("From the DICOM file's PatientID: check the readback at Start.")
            self._refresh()

    def edit_age(self) -> None:
        if self.age_entry is not None:
            self.age_entry.ask("Age (optional)", self._age_entered, "Empty + OK: no age.")

    def _age_entered(self, text: str) -> str | None:
        if text and not 0 <= int(text) <= 130:
            return f"Age {text} is not 0-130"
        self.values["age"] = text
        self._refresh()
        return None

    def _set_side(self, side: str) -> None:
        self.side = side
        self._refresh()

    def _set_clock(self, hour: int) -> None:
        self.clock = None if self.clock == hour else hour  # tap again to clear (it is optional)
        for h, button in self.clock_buttons.items():
            button.setChecked(h == self.clock)

    def problem(self) -> str | None:
        if not self.values["patient"]:
            return "Type or scan the patient ID"
        problem = self.id_format.problem(self.values["patient"])
        if problem is not None:
            return problem
        if self.side is None:
            return "Choose the side"
        if self.values["age"] and not 0 <= int(self.values["age"]) <= 130:
            return "Age must be 0-130"
        return None

    def _refresh(self) -> None:
        patient = self.values["patient"]
        self.field_buttons["patient"].setText(f"Patient ID: {patient}" if patient else "Patient ID: tap to type, or scan")
        self.field_buttons["age"].setText(f"Age: {self.values['age'] or '—'}")
        problem = self.problem()
        starting = self.pending is not None
        self.start.setEnabled(problem is None and not starting)
        self.start.setText(problem or ("Starting…" if starting else "Start exam"))  # says what is missing

    # --- start: readback, confirmation, storing -------------------------------------------------------------

    def candidate(self) -> Exam:
        age = int(self.values["age"]) if self.values["age"] else None
        return Exam(new_result_id(), self.values["patient"], self.side, self.clock, age)

    def _start(self) -> None:
        if self.problem() is not None or self.pending is not None:
            return
        self.readback_requested.emit(self.candidate())

    def confirm_start(self, exam: Exam) -> None:
        """The clinician confirmed the readback of ``exam``: store and open it (if the form still says the same)."""
        if self.pending is not None or self.problem() is not None or (exam.patient_ref, exam.side) != (self.values["patient"], self.side):
            return
        self.pending = exam  # one tap, one exam: a second confirmation before it opens starts nothing
        self._refresh()
        self.start_requested.emit(exam)

    def expect(self, exam: Exam, notice: str = "") -> None:
        """``exam`` is being stored without the form's Start (the other side of the same patient): show it."""
        self.reset(notice)
        self.values = {"patient": exam.patient_ref, "age": "" if exam.age is None else str(exam.age)}
        self.id_source = "same patient"
        self.side = exam.side
        assert exam.side is not None  # switch_side's exam: the other side (other_side), never none
        self.side_buttons[exam.side].setChecked(True)
        self.pending = exam
        self._refresh()

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


def readback_html(reference: str, th: Theme) -> str:
    """The patient ID big and spaced, letters in another colour than digits (O/0, I/1, S/5, B/8 told apart)."""
    spans = []
    for char in reference:
        colour = theme.INFO if char.isalpha() else theme.TEXT
        spans.append(f"<span style='color:{colour}'>{html.escape(char)}</span>")
    return f"<div style='font-family:monospace; font-size:{th.huge}px; font-weight:bold; letter-spacing:6px'>{''.join(spans)}</div>"


def readback_message(exam: Exam, id_source: str) -> str:
    how = {"scanned": "Scanned from the wristband", "typed": "Typed on the screen", "dicom": "From the DICOM file's PatientID"}.get(
        id_source, "Entered"
    )
    details = [f"<b>{SIDE_NAMES.get(exam.side or '', '?')} side</b>"]
    if exam.clock:
        details.append(f"{exam.clock} o'clock")
    if exam.age is not None:
        details.append(f"age {exam.age}")
    return (
        f"{' · '.join(details)}. {how}: compare it with the wristband or the request, character by character "
        "(letters are blue). Every result of this exam is stored under this ID."
    )


def counted(records: list[ResultRecord], placements: dict[str, Placement], exam_id: str) -> list[ResultRecord]:
    """The exam's results that count: not voided, not moved to another exam (a move to its other side still counts)."""

    def counts(r: ResultRecord) -> bool:
        p = placements.get(r.result_id)
        return p is None or (not p.voided and p.place.exam_id == exam_id)

    return [r for r in records if counts(r)]


def correction_mark(placement: Placement | None, exam_id: str, record: ResultRecord | None = None) -> str:
    """What the summary's row says of a corrected result ("" when it was not corrected)."""
    if placement is None or placement.state is State.VALID:
        return ""
    if placement.voided:
        return "Voided · "
    if placement.place.exam_id == exam_id:
        if record is not None and record.exam_id != exam_id:
            return f"From {record.patient_ref or 'no patient'} · "  # moved in by a correction
        return f"Moved to {SIDE_NAMES.get(placement.place.side or '', '?')} · "
    return f"Moved to {placement.place.patient_ref} · "


LESION_WORDS = {
    Category.NO_LESION: "No lesion",
    Category.LOW_SUSPICION: "Low suspicion",
    Category.SUSPICIOUS: "Suspicious",
    Category.INCONCLUSIVE: "Inconclusive",
}  # History's narrow column


LESION_RULE = "A lesion seen in two views takes the result of its more concerning view."


def lesion_result_text(lesion: Lesion) -> str:
    """The lesion-level result in the card's words (never a bare label): category and p(malignant)."""
    d = lesion.decision
    if d is None:
        return "no combined result (see its frames)"
    if d.p_malignant is None:
        return LESION_WORDS[Category.INCONCLUSIVE]
    return f"{LESION_WORDS[d.category]} · {d.p_malignant * 100:.0f}%"


def lesion_cells(lesions: list[Lesion], narrow: bool = False) -> dict[str, tuple[str, str]]:
    """Per frame of a lesion: the text of the Lesion column and its colour. The lesion's first frame carries the
    lesion result; a second view says whose view it is. ``narrow`` (History): two short lines, the category only."""
    cells: dict[str, tuple[str, str]] = {}
    for lesion in lesions:
        colour = theme.MUTED if lesion.decision is None else LESION_COLOURS[lesion.decision.category]
        first, *others = lesion.frames
        if narrow:
            views = "2 views" if others else "one view"
            word = "see frames" if lesion.decision is None else LESION_WORDS[lesion.decision.category]
            cells[first.result_id] = (f"{lesion.number} · {views}\n{word}", colour)
        else:
            views = f" ({len(lesion.frames)} views)" if others else ""
            cells[first.result_id] = (f"{lesion.number}{views}: {lesion_result_text(lesion)}", colour)
        for record in others:
            cells[record.result_id] = (f"{lesion.number} · 2nd view" if narrow else f"{lesion.number}: 2nd view", colour)
    return cells


class ExamSummaryView(QWidget):
    back_to_live = pyqtSignal()
    finish_requested = pyqtSignal()
    other_side_requested = pyqtSignal()  # the same patient's other side, as a new exam
    correct_requested = pyqtSignal(object)  # the selected frame's ResultRecord

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
        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(["", "Time", "Model output", "Malignant", "Lesion"])
        rows_header = self.table.verticalHeader()
        assert rows_header is not None  # a QTableWidget makes both its headers
        rows_header.hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)  # a frame, to correct it
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.records: list[ResultRecord] = []
        self.lesions: list[Lesion] = []
        self.table.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        assert header is not None
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Fixed)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        QScroller.grabGesture(self.table.viewport(), QScroller.ScrollerGestureType.LeftMouseButtonGesture)
        buttons = QHBoxLayout()
        self.back = QPushButton("Back to live")
        self.back.setProperty("role", "primary")
        self.back.clicked.connect(self.back_to_live)
        self.other_side = QPushButton("")
        self.other_side.clicked.connect(self.other_side_requested)
        self.finish = QPushButton("Finish exam")
        self.finish.clicked.connect(self.finish_requested)
        self.correct = QPushButton("Correct…")
        self.correct.setEnabled(False)
        self.correct.clicked.connect(self._correct)
        buttons.addWidget(self.back, 1)
        buttons.addWidget(self.other_side, 1)
        buttons.addWidget(self.correct, 1)
        buttons.addWidget(self.finish, 1)
        layout.addWidget(self.title)
        layout.addWidget(self.summary)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)

    def selected(self) -> ResultRecord | None:
        selection = self.table.selectionModel()
        assert selection is not None  # a QTableWidget makes its selection model
        rows = selection.selectedRows()
        return self.records[rows[0].row()] if rows and rows[0].row() < len(self.records) else None

    def _selection_changed(self) -> None:
        self.correct.setEnabled(self.selected() is not None)

    def _correct(self) -> None:
        record = self.selected()
        if record is not None:
            self.correct_requested.emit(record)

    def show_exam(
        self, exam: Exam, records: list[ResultRecord], placements: dict[str, Placement] | None = None, lesions: list[Lesion] | None = None
    ) -> None:
        """The exam's frames (its own and those moved into it, oldest first), its figures from the frames that count,
        and each lesion's result beside its frames (``lesions``: :meth:`device.store.ResultStore.lesions`)."""
        self.title.setText(exam_title(exam))
        self.other_side.setText(f"{SIDE_NAMES[other_side(exam.side)]} side ▶")
        placements = placements or {}
        self.records = records
        self.lesions = lesions or []
        self.summary.setText(summary_text(records, placements, exam.exam_id, self.lesions))
        thumb = self._th.control
        cells = lesion_cells(self.lesions)
        self.table.setRowCount(len(records))
        for row, record in enumerate(records):
            icon = QLabel()
            icon.setPixmap(thumbnail_pixmap(record, thumb - 4))
            icon.setAlignment(Qt.AlignmentFlag.AlignCenter)
            self.table.setCellWidget(row, 0, icon)
            self.table.setItem(row, 1, QTableWidgetItem(f"{row + 1}. {record.created_at[11:19]}"))
            mark = correction_mark(placements.get(record.result_id), exam.exam_id, record)
            item = QTableWidgetItem(mark + result_text(record))
            counts = record.result_id in cells
            item.setForeground(_brush(theme.MUTED if mark and not counts else category_colour(record)))
            self.table.setItem(row, 2, item)
            p = record.probabilities.get(MALIGNANT)
            self.table.setItem(row, 3, QTableWidgetItem("—" if p is None or record.inconclusive else f"{p * 100:.0f}%"))
            text, colour = cells.get(record.result_id, ("not counted", theme.MUTED))
            lesion_item = QTableWidgetItem(text)
            lesion_item.setForeground(_brush(colour))
            self.table.setItem(row, 4, lesion_item)
            self.table.setRowHeight(row, thumb)
        self.table.setColumnWidth(0, thumb + 8)
        self.correct.setEnabled(self.selected() is not None)


def summary_text(records: list[ResultRecord], placements: dict[str, Placement], exam_id: str, lesions: list[Lesion]) -> str:
    """The line above the frames: how many count, in how many lesions, the highest p(malignant), and the rule."""
    counting = counted(records, placements, exam_id)
    summary = summarise(counting)
    if summary.highest_frame is not None:  # numbered as the table shows the frames, corrected ones included
        summary = replace(summary, highest_frame=records.index(counting[summary.highest_frame - 1]) + 1)
    left_out = len(records) - len(counting)
    if summary.frames == 0:
        return "No frames count: every frame was voided or moved." if left_out else "No frames yet. Go back to live, freeze a view and tap Analyse."
    in_lesions = f" in {len(lesions)} lesion{'' if len(lesions) == 1 else 's'}" if lesions else ""
    if summary.highest_malignant is None:
        text = f"{summary.frames} frame(s){in_lesions}, all inconclusive — rescan."
    else:
        text = (
            f"{summary.frames} frame(s){in_lesions}. Highest malignant probability: "
            f"<b>{summary.highest_malignant * 100:.0f}%</b> (frame {summary.highest_frame})"
        )
        if summary.inconclusive:
            text += f"; {summary.inconclusive} inconclusive"
    if left_out:
        text += f"; {left_out} voided or moved, not counted"
    if any(len(lesion.frames) > 1 for lesion in lesions):
        text += f". {LESION_RULE}"
    return text


def other_side(side: str | None) -> str:
    return "R" if side == "L" else "L"


def _brush(colour: str):
    from PyQt5.QtGui import QBrush, QColor

    return QBrush(QColor(colour))


class ExamScreen(QWidget):
    """Form when no exam is open; the exam's summary while one is. Finish asks the window to confirm."""

    back_to_live = pyqtSignal()
    finish_requested = pyqtSignal()
    other_side_requested = pyqtSignal()
    correct_requested = pyqtSignal(object)  # a frame of the open exam to correct (ui/correction.py)

    def __init__(
        self, th: Theme, session: ExamSession, store: ResultStore, parent: QWidget | None = None, id_format: PatientIdFormat | None = None
    ) -> None:
        super().__init__(parent)
        self.session = session
        self.store = store
        self.form = ExamForm(th, id_format)
        self.summary = ExamSummaryView(th)
        self.summary.back_to_live.connect(self.back_to_live)
        self.summary.finish_requested.connect(self.finish_requested)
        self.summary.other_side_requested.connect(self.other_side_requested)
        self.summary.correct_requested.connect(self.correct_requested)
        self.pages = QStackedWidget()
        self.pages.addWidget(self.form)
        self.pages.addWidget(self.summary)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.pages)
        self._ended_notice = ""
        self._switching = False
        session.ended.connect(self._session_ended)
        session.changed.connect(self._session_changed)

    def _session_ended(self, ended: ExamEnded) -> None:
        count = len(self.store.history(exam_id=ended.exam.exam_id))
        held = f"{count} result{'' if count == 1 else 's'} stored"
        side = SIDE_NAMES.get(ended.exam.side or "", "")
        if self._switching:
            self._ended_notice = f"{side} side finished ({held}); the other side is a new exam for the same patient."
        elif ended.reason is ExamEnd.LOCKED:
            self._ended_notice = f"The screen locked, so the previous exam was finished ({held}). Start a new exam."
        else:
            self._ended_notice = f"Previous exam finished ({held}). Start a new exam."

    def switch_side(self) -> Exam | None:
        """Finish the open exam and return the same patient's other side as a new exam, shown as being started
        (the window stores and opens it). The ID is not typed again and nothing of the finished side carries over
        but the patient and the age."""
        exam = self.session.exam
        if exam is None:
            return None
        following = Exam(new_result_id(), exam.patient_ref, other_side(exam.side), None, exam.age)
        self._switching = True
        try:
            self.session.finish(ExamEnd.FINISHED)
        finally:
            self._switching = False
        self.form.expect(following, self.form.notice.text())
        return following

    def _session_changed(self, exam: Exam | None) -> None:
        if exam is None:
            self.form.reset(self._ended_notice)
            self._ended_notice = ""
            self.pages.setCurrentWidget(self.form)
        else:
            self.refresh()
            self.pages.setCurrentWidget(self.summary)

    def refresh(self) -> None:
        """The open exam's summary: its own frames and those a correction moved into it (device/link/corrections.py
        ``effective_placement``); voided and moved-out frames are listed, marked, and not counted."""
        exam = self.session.exam
        if exam is not None:
            records = self.store.exam_results(exam.exam_id)
            self.summary.show_exam(exam, records, self.store.placements(records), self.store.lesions(exam.exam_id))
