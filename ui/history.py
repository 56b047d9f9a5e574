"""History: past results with thumbnails, the decision rule's category and p(malignant), and per-result delivery
state (on device / sent / received by hub / rejected by the hub with its reason), filterable by patient reference.
Read from the store (the source of truth), refreshed on a timer. The Lesion column says which lesion of its exam a
result is a view of (device/lesions.py), with the lesion-level result on the lesion's first frame. A result voided or moved (ui/correction.py) shows
its effective state: "Voided" before its output, or the patient and side it was moved to; a row selected, *Correct…*
opens the correction flow."""

from __future__ import annotations

from datetime import datetime

from PyQt5.QtCore import Qt, pyqtSignal
from PyQt5.QtGui import QBrush, QColor
from PyQt5.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QScroller,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from device.link.corrections import Placement, State
from device.results import ResultRecord
from device.store import ResultStore
from ui import theme
from ui.exam import MALIGNANT, lesion_cells, thumbnail_pixmap
from ui.result_words import category_colour, result_lines
from ui.theme import Theme

COLUMNS = ("", "Time", "Patient", "Model output", "p(malig.)", "Delivery", "Lesion")  # p(malignant), short for the 7" panel
LIMIT = 100
REJECTED = "rejected: "  # the store's delivery text for a result the hub refused for good


def delivery_text(delivery: str, compact: bool = False) -> str:
    """The delivery state in words; the long ones on two lines on the 7" panel (``compact``), so the Lesion column
    stays in view."""
    if delivery.startswith(REJECTED):
        return f"Rejected:\n{delivery[len(REJECTED) :].replace('_', ' ')}"
    return (theme.DELIVERY_TEXT_COMPACT if compact else theme.DELIVERY_TEXT).get(delivery, delivery)


def delivery_colour(delivery: str) -> str:
    return theme.DANGER if delivery.startswith(REJECTED) else theme.DELIVERY_COLOURS.get(delivery, theme.MUTED)


def local_time(created_at: str) -> str:
    """'2026-01-02T10:11:12.123Z' -> '02 Jan 10:11' in local time."""
    try:
        moment = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    except ValueError:
        return created_at
    return moment.astimezone().strftime("%d %b %H:%M") if moment.tzinfo else moment.strftime("%d %b %H:%M")


def placed_patient(record: ResultRecord, placement: Placement | None) -> str:
    """The patient column: where the result belongs now (a move's target, marked as moved)."""
    if placement is not None and placement.state is State.MOVED:
        where = f"{placement.place.patient_ref or '—'} {placement.place.side or ''}".strip()
        return f"{where}\n(moved)"  # two lines: the 7" panel keeps every column in view
    return (record.patient_ref or "—") + (f" {record.side}" if record.side else "")


def placed_output(record: ResultRecord, placement: Placement | None) -> str:
    """The result, short for the 7" panel, with the lesion outline's size on a second line when there is one."""
    if placement is not None and placement.voided:
        return "Voided"
    return result_lines(record)


class HistoryScreen(QWidget):
    filter_requested = pyqtSignal()
    correct_requested = pyqtSignal(object)  # the selected ResultRecord

    def __init__(self, th: Theme, store: ResultStore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._th = th
        self.store = store
        self.patient_filter: str | None = None
        self.records: list[ResultRecord] = []
        self.placements: dict[str, Placement] = {}
        self.lesion_cells: dict[str, tuple[str, str]] = {}
        self._signature: tuple = ()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(th.gap, th.gap, th.gap, th.gap)
        layout.setSpacing(th.gap)
        top = QHBoxLayout()
        self.filter_button = QPushButton("Filter by patient")
        self.filter_button.clicked.connect(self.filter_requested)
        self.all_button = QPushButton("Show all")
        self.all_button.clicked.connect(lambda: self.set_filter(None))
        self.count = QLabel("")
        self.count.setProperty("role", "muted")
        self.correct_button = QPushButton("Correct…")
        self.correct_button.setEnabled(False)
        self.correct_button.clicked.connect(self._correct)
        top.addWidget(self.filter_button)
        top.addWidget(self.all_button)
        top.addWidget(self.count, 1)
        top.addWidget(self.correct_button)
        layout.addLayout(top)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        rows_header = self.table.verticalHeader()
        assert rows_header is not None  # a QTableWidget makes both its headers
        rows_header.hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)  # a row, to correct it
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.table.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        assert header is not None
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Fixed)
        header.setSectionResizeMode(6, QHeaderView.ResizeMode.Stretch)  # the rest: the lesion and its result
        QScroller.grabGesture(self.table.viewport(), QScroller.ScrollerGestureType.LeftMouseButtonGesture)
        layout.addWidget(self.table, 1)
        self.set_filter(None)

    def set_filter(self, patient_ref: str | None) -> None:
        self.patient_filter = patient_ref or None
        self.filter_button.setText(f"Patient: {patient_ref}" if patient_ref else "Filter by patient")
        self.all_button.setVisible(self.patient_filter is not None)
        self.refresh()

    def refresh(self) -> None:
        """Re-read the store; rebuild the table only when something changed (keeps the scroll position)."""
        records = self.store.history(patient_ref=self.patient_filter, limit=LIMIT)
        placements = self.store.placements(records)
        views = self.store.lesion_views(records)
        signature = tuple(
            (r.result_id, r.delivery, placements[r.result_id].state, placements[r.result_id].place, views.get(r.result_id)) for r in records
        )
        if signature == self._signature:
            return
        self._signature, self.records, self.placements = signature, records, placements
        self.lesion_cells = self._lesion_cells(records, placements)
        scope = f"patient {self.patient_filter}" if self.patient_filter else "all patients"
        more = f" (newest {LIMIT})" if len(records) == LIMIT else ""
        self.count.setText(f"{len(records)} result(s), {scope}{more}")
        self._fill(records)

    def _lesion_cells(self, records: list[ResultRecord], placements: dict[str, Placement]) -> dict[str, tuple[str, str]]:
        """Each shown result's lesion in the exam it counts in now, with the lesion result on its first frame."""
        exams = {placements[r.result_id].place.exam_id for r in records if not placements[r.result_id].voided}
        cells: dict[str, tuple[str, str]] = {}
        for exam_id in sorted(e for e in exams if e is not None):
            cells.update(lesion_cells(self.store.lesions(exam_id), narrow=True))
        return cells

    def delivery_of(self, result_id: str) -> str | None:
        return next((r.delivery for r in self.records if r.result_id == result_id), None)

    def selected(self) -> ResultRecord | None:
        selection = self.table.selectionModel()
        assert selection is not None  # a QTableWidget makes its selection model
        rows = selection.selectedRows()
        return self.records[rows[0].row()] if rows and rows[0].row() < len(self.records) else None

    def _selection_changed(self) -> None:
        self.correct_button.setEnabled(self.selected() is not None)

    def _correct(self) -> None:
        record = self.selected()
        if record is not None:
            self.correct_requested.emit(record)

    def _fill(self, records: list[ResultRecord]) -> None:
        thumb = self._th.control + 8
        self.table.setRowCount(len(records))
        for row, record in enumerate(records):
            icon = QLabel()
            icon.setPixmap(thumbnail_pixmap(record, thumb - 4))
            icon.setAlignment(Qt.AlignmentFlag.AlignCenter)
            self.table.setCellWidget(row, 0, icon)
            placement = self.placements.get(record.result_id)
            when = local_time(record.created_at)
            if self._th.compact:  # date over time on the 7" panel: room for the Lesion column
                when = "\n".join(when.rsplit(" ", 1))
            cells = [when, placed_patient(record, placement), placed_output(record, placement)]
            p = record.p_malignant if record.p_malignant is not None else record.probabilities.get(MALIGNANT)
            cells.append("—" if p is None or record.inconclusive else f"{p * 100:.1f}%")
            cells.append(delivery_text(record.delivery, self._th.compact))
            lesion_text, lesion_colour = self.lesion_cells.get(record.result_id, ("—", theme.MUTED))
            cells.append(lesion_text)
            items: dict[int, QTableWidgetItem] = {}
            for column, text in enumerate(cells, start=1):
                item = items[column] = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, record.result_id)
                self.table.setItem(row, column, item)
            voided = placement is not None and placement.voided
            items[3].setForeground(QBrush(QColor(theme.MUTED if voided else category_colour(record))))
            items[5].setForeground(QBrush(QColor(delivery_colour(record.delivery))))
            items[6].setForeground(QBrush(QColor(lesion_colour)))
            self.table.setRowHeight(row, thumb)
        self.table.setColumnWidth(0, thumb + 8)
        self.correct_button.setEnabled(self.selected() is not None)
