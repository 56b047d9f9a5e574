"""Settings › Model › *Teach this scanner* (behind the PIN): mark finished, lesion-free exams as normal, watch the
count grow towards the documented minimum, *Teach now* (``device site-adapt`` in the background), read the
before/after figures and the warnings, and use the site bundle only after a confirmation — recorded in the app-owned
``<data_dir>/site-bundle.json`` (device/site_choice.py; the configuration is root-owned and never written);
*Undo: back to the base model* removes the record. docs/ui.md ("Teach this scanner") argues where the mark lives.

The marks are kept by :class:`ui.teach_folder.TeachFolder`; the work runs in :mod:`ui.teach_worker`."""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PyQt5.QtCore import Qt, pyqtSignal
from PyQt5.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from device import site_choice
from device.config import DeviceConfig
from device.errors import SonopiError
from device.model.bundle import Manifest
from device.results import Exam, ResultRecord
from device.site_adapt import MIN_NORMALS, REVIEW_BASE_P_MALIGNANT, Adaptation
from device.store import ResultStore
from ui import theme
from ui.background import Background
from ui.exam import thumbnail_pixmap
from ui.history import local_time
from ui.settings import scrolling, wrapped
from ui.teach_folder import MarkOutcome, TeachFolder
from ui.teach_worker import TeachFailure, TeachJob, TeachOutcome, base_bundle_path, use_site_bundle
from ui.theme import Theme

log = logging.getLogger(__name__)

EXAMS_LISTED = 60  # newest finished exams offered for marking
MARK_TEXT = "Normal scan — use to teach"
MARKED_TEXT = "✓ Normal — teaching with it"
Ask = Callable[[str, str, str, Callable[[], None]], None]  # title, message, action, on_accept (ConfirmOverlay.ask)


@dataclass(frozen=True)
class ExamRow:
    exam: Exam
    frames: int  # conclusive results stored under the exam (whether their full frame is still kept is known on marking)
    thumbnail: ResultRecord | None  # the first conclusive result (its thumbnail is shown)


def progress_bar(th: Theme) -> QProgressBar:
    bar = QProgressBar()
    bar.setTextVisible(True)
    bar.setMinimumHeight(th.control // 2)
    bar.setStyleSheet(
        f"QProgressBar {{ background: {theme.PANEL}; border: 1px solid {theme.BORDER}; border-radius: 6px;"
        f" text-align: center; color: {theme.TEXT}; font-size: {th.small}px; }}"
        f" QProgressBar::chunk {{ background: {theme.ACCENT}; border-radius: 6px; }}"
    )
    return bar


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.0f} %"


def figures_html(a: Adaptation) -> str:
    """The before → after figures a clinician reads before using the site bundle (device.site_adapt.report_text)."""
    hb, ha, tb, ta = a.holdout["before"], a.holdout["after"], a.base_test["before"], a.base_test["after"]
    rows = [
        (
            f"Held-out normal frames of this scanner ({a.holdout['normals']}, {a.holdout['split']}): called <i>no lesion</i>",
            pct(hb["normals_called_normal"]),
            pct(ha["normals_called_normal"]),
        ),
        ("… called <i>suspicious</i>", pct(hb["normals_called_malignant"]), pct(ha["normals_called_malignant"])),
        (f"Other sites (the model's own test images, {a.base_test['n']}): malignant AUC", f"{tb['auc_malignant']:.3f}", f"{ta['auc_malignant']:.3f}"),
        ("… cancers called <i>suspicious</i>", pct(tb["malignant_sensitivity"]), pct(ta["malignant_sensitivity"])),
        ("… normals called <i>no lesion</i>", pct(tb["normals_called_normal"]), pct(ta["normals_called_normal"])),
    ]
    if ha.get("auc_benign_vs_malignant") is not None:
        rows.append(("Held-out lesions: benign-vs-malignant AUC", f"{hb['auc_benign_vs_malignant']:.3f}", f"{ha['auc_benign_vs_malignant']:.3f}"))
    cells = "".join(
        f"<tr><td>{name}</td><td align='right'>&nbsp;{b}</td><td>&nbsp;→&nbsp;</td><td align='right'><b>{after}</b></td></tr>"
        for name, b, after in rows
    )
    counts = ", ".join(f"{v} {k}" for k, v in a.counts.items() if v)
    temperature = (
        f" Temperature refitted on the site's held-out lesions: {a.temperature['base']:.3f} → {a.temperature['site']:.3f}."
        if getattr(a, "temperature", None) and a.temperature.get("refitted")
        else " Temperature and thresholds: the base model's."
    )
    return (
        f"<b>Site bundle ready</b> — {counts}"
        + (f" from {a.patients} patients" if a.patients else "")
        + f"; site weight {a.site_weight}."
        + temperature
        + f"<table cellspacing='2'><tr><td></td><td align='right'><i>before</i></td><td></td>"
        f"<td align='right'><i>after</i></td></tr>{cells}</table>"
    )


def warnings_html(a: Adaptation, describe: Callable[[str], str] = lambda name: name) -> str:
    """The guards' warnings; ``describe`` names a marked frame (its file is ``<result_id>.png``) by patient and time."""
    lines = []
    if a.scanner.odd:
        lines.append(
            f"<b style='color:{theme.WARN}'>{len(a.scanner.odd)} frame(s) look like another scanner</b> "
            f"(contrast or speckle grain far from the rest; below the refusal limit): "
            + ", ".join(describe(n) for n in a.scanner.odd[:6])
            + " — were they taken on this scanner?"
        )
    if a.review:
        left_out = sum(r.base_p_malignant >= REVIEW_BASE_P_MALIGNANT for r in a.review)
        lines.append(
            f"<b style='color:{theme.WARN}'>{len(a.review)} frame(s) marked normal look like a lesion</b> — "
            f"check them below; {left_out} were left out of the teaching (the base model finds them "
            "malignant-looking): "
            + ", ".join(describe(r.file) for r in a.review[:8])
            + ". If one is not lesion-free, unmark its exam and teach again."
        )
    if a.unfit:
        lines.append(f"{len(a.unfit)} frame(s) were not used (unreadable or refused by the quality check).")
    return "<br>".join(lines)


class ExamToggleRow(QFrame):
    """One finished exam: its first thumbnail, patient, side, time and frames, and the glove-size toggle."""

    def __init__(self, th: Theme, row: ExamRow, marked: bool, on_toggle: Callable[[str, bool], None]) -> None:
        super().__init__()
        self.setProperty("role", "panel")
        self.exam_id = row.exam.exam_id
        layout = QHBoxLayout(self)
        layout.setContentsMargins(th.gap, th.gap // 2, th.gap, th.gap // 2)
        icon = QLabel()
        size = th.control
        icon.setFixedSize(size, size)
        if row.thumbnail is not None:
            icon.setPixmap(thumbnail_pixmap(row.thumbnail, size - 4))
        layout.addWidget(icon)
        exam = row.exam
        side = {"L": "left", "R": "right"}.get(exam.side or "", "side ?")
        self.text = wrapped(
            f"<b>{exam.patient_ref}</b> · {side} · {local_time(exam.created_at)} · {row.frames} frame{'' if row.frames == 1 else 's'}"
        )
        layout.addWidget(self.text, 1)
        self.toggle = QPushButton(MARKED_TEXT if marked else MARK_TEXT)
        self.toggle.setCheckable(True)
        self.toggle.setChecked(marked)
        self.toggle.setEnabled(row.frames > 0)
        self.toggle.setMinimumWidth(th.control * 5)
        self.toggle.clicked.connect(lambda checked: on_toggle(self.exam_id, checked))
        layout.addWidget(self.toggle)

    def set_marked(self, marked: bool) -> None:
        self.toggle.setChecked(marked)
        self.toggle.setText(MARKED_TEXT if marked else MARK_TEXT)


class TeachPage(QWidget):
    """Settings › Model › Teach this scanner. ``model_switched(DeviceConfig)``: the site-bundle record was written or
    removed; the window reloads the model (the configuration itself is unchanged). ``back_requested``: to Settings › Model."""

    model_switched = pyqtSignal(object)
    back_requested = pyqtSignal()

    def __init__(
        self,
        th: Theme,
        config: DeviceConfig,
        config_path: Path | None,
        background: Background,
        open_exam: Callable[[], str | None],
        current_model: Callable[[], Manifest | None],
        ask: Ask,
    ) -> None:
        super().__init__()
        self.th = th
        self.config = config
        self.config_path = config_path
        self.folder = TeachFolder(config.device.data_dir)
        self._background = background
        self._open_exam = open_exam
        self._current_model = current_model
        self._ask = ask
        self.job = TeachJob(self)
        self.job.progress.connect(self._job_progress)
        self.job.fitting.connect(lambda: self.run_status.setText("Fitting the model's last layer…"))
        self.job.finished.connect(self._job_finished)
        self.outcome: TeachOutcome | None = None
        self.rows: dict[str, ExamToggleRow] = {}
        self._busy: set[str] = set()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(th.gap)
        self.count = wrapped("")
        self.count.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(self.count)
        self.bar = progress_bar(th)
        self.bar.setRange(0, MIN_NORMALS)
        layout.addWidget(self.bar)
        self.views = QStackedWidget()
        self.views.addWidget(self._collect_view())
        self.views.addWidget(self._run_view())
        self.views.addWidget(self._result_view())
        layout.addWidget(self.views, 1)
        self.message = wrapped("", "muted")
        layout.addWidget(self.message)
        row = QHBoxLayout()
        self.back = QPushButton("‹ Back")
        self.back.clicked.connect(self.back_requested)
        self.undo = QPushButton("Undo: base model")
        self.undo.clicked.connect(self.ask_undo)
        self.teach_now = QPushButton("Teach now")
        self.teach_now.setProperty("role", "primary")
        self.teach_now.clicked.connect(self.teach)
        self.discard = QPushButton("Discard")
        self.discard.clicked.connect(self.discard_bundle)
        self.use = QPushButton("Use it…")
        self.use.setProperty("role", "primary")
        self.use.clicked.connect(self.ask_use)
        row.addWidget(self.back)
        for button in (self.undo, self.teach_now, self.discard, self.use):
            row.addWidget(button, 1)
        layout.addLayout(row)
        self._show_view(0)

    # --- views -------------------------------------------------------------------------------------------

    def _collect_view(self) -> QWidget:
        self._list_widget = QWidget()
        self._list = QVBoxLayout(self._list_widget)
        self._list.setContentsMargins(0, 0, 0, 0)
        self._list.setSpacing(self.th.gap // 2)
        self._list.addStretch(1)
        self.list_area = scrolling(self._list_widget)
        return self.list_area

    def _run_view(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.addStretch(1)
        self.run_status = wrapped("")
        self.run_status.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout.addWidget(self.run_status)
        self.run_bar = progress_bar(self.th)
        layout.addWidget(self.run_bar)
        layout.addStretch(1)
        return page

    def _result_view(self) -> QWidget:
        page = QWidget()
        layout = QVBoxLayout(page)
        layout.setContentsMargins(0, 0, 0, 0)
        self.figures = wrapped("")
        self.figures.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(self.figures)
        self.warnings = wrapped("")
        self.warnings.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(self.warnings)
        self.review_row = QHBoxLayout()
        self.review_row.setSpacing(self.th.gap)
        layout.addLayout(self.review_row)
        layout.addStretch(1)
        self.review_thumbs: list[QLabel] = []
        return scrolling(page)

    def _show_view(self, index: int) -> None:
        self.views.setCurrentIndex(index)
        collecting, result = index == 0, index == 2
        self.back.setVisible(index != 1)
        self.undo.setVisible(collecting)
        self.teach_now.setVisible(collecting)
        self.discard.setVisible(result)
        self.use.setVisible(result and self.outcome is not None)
        self.count.setVisible(index != 2)
        self.bar.setVisible(index != 2)
        self._update_buttons()

    # --- collecting ----------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the finished exams and the marks (the page is opened, or a mark changed)."""
        if self.job.running or self.views.currentIndex() == 2:
            return
        try:
            marked = self.folder.marked_exams()
        except SonopiError as exc:
            self.message.setText(str(exc))
            marked = set()
        open_id = self._open_exam()
        with ResultStore(self.config.store_path) as store:
            exams = [e for e in store.exams(limit=EXAMS_LISTED) if e.exam_id != open_id]
            rows = []
            for exam in exams:
                records = [r for r in store.history(exam_id=exam.exam_id, newest_first=False) if not r.inconclusive]
                rows.append(ExamRow(exam, len(records), records[0] if records else None))
        for widget in self.rows.values():
            widget.deleteLater()
        self.rows = {}
        for row in rows:
            widget = ExamToggleRow(self.th, row, row.exam.exam_id in marked, self.toggle)
            self._list.insertWidget(self._list.count() - 1, widget)
            self.rows[row.exam.exam_id] = widget
        if not rows:
            self.message.setText("No finished exam yet. Scan, finish the exam, then mark it here if it is lesion-free.")
        self._show_counts()

    def _show_counts(self) -> None:
        try:
            progress = self.folder.progress()
        except SonopiError as exc:
            self.count.setText(str(exc))
            return
        self.progress = progress
        self.count.setText(progress.text())
        self.bar.setValue(min(progress.frames, MIN_NORMALS))
        self.bar.setFormat(
            f"{progress.frames} of {MIN_NORMALS} frames"
            if progress.frames < MIN_NORMALS
            else f"{progress.frames} frames — minimum reached" + ("" if progress.enough else ", more patients needed")
        )
        self._update_buttons()

    def _update_buttons(self) -> None:
        progress = getattr(self, "progress", None)
        self.teach_now.setEnabled(bool(progress and progress.enough) and not self.job.running)
        self.undo.setEnabled(self._on_site_bundle())

    def _on_site_bundle(self) -> bool:
        """A site bundle runs, or a record exists (applied or not: Undo also clears one that could not be applied)."""
        manifest = self._current_model()
        return (manifest is not None and manifest.head is not None) or site_choice.record_file(self.config.device.data_dir).exists()

    def toggle(self, exam_id: str, checked: bool) -> None:
        """The clinician's mark: ``checked`` = this finished exam is lesion-free, teach with its frames."""
        if exam_id in self._busy:
            return
        self._busy.add(exam_id)
        self.rows[exam_id].toggle.setEnabled(False)
        folder, store_path, open_id = self.folder, self.config.store_path, self._open_exam()

        def work() -> MarkOutcome | int:
            if not checked:
                return folder.unmark_exam(exam_id)
            with ResultStore(store_path) as store:
                return folder.mark_exam(store, exam_id, open_id)

        self._background.run(work, lambda outcome: self._toggled(exam_id, checked, outcome), "teach-mark")

    def _toggled(self, exam_id: str, checked: bool, outcome: object) -> None:
        self._busy.discard(exam_id)
        row = self.rows.get(exam_id)
        if row is not None:
            row.toggle.setEnabled(True)
        if isinstance(outcome, Exception):
            self.message.setText(f"Not marked: {outcome}")
            if row is not None:
                row.set_marked(not checked)
        else:
            if row is not None:
                row.set_marked(checked)
            if isinstance(outcome, MarkOutcome):
                extra = []
                if outcome.no_frame:
                    extra.append(f"{outcome.no_frame} without a kept full frame ([store] keep_images_days)")
                if outcome.inconclusive:
                    extra.append(f"{outcome.inconclusive} inconclusive, not used")
                self.message.setText(f"{outcome.added} frame(s) added for teaching" + (f"; {', '.join(extra)}." if extra else "."))
            else:
                self.message.setText(f"{outcome} frame(s) no longer used for teaching.")
        self._show_counts()

    # --- teaching --------------------------------------------------------------------------------------------

    def teach(self) -> None:
        try:
            base = base_bundle_path(self.config, None)  # the configured bundle: a site bundle specialises it
        except SonopiError as exc:
            self.message.setText(f"Cannot teach: {exc}")
            return
        out = self.folder.new_bundle_dir()
        self.run_status.setText(f"Reading {self.progress.frames} marked frame(s) through the model…")
        self.run_bar.setRange(0, max(1, self.progress.frames))
        self.run_bar.setValue(0)
        self.message.setText("The device keeps working while it learns; this takes about a minute.")
        self.job.start(self.config, base, self.folder.cases, out)
        self._show_view(1)

    def _job_progress(self, done: int, total: int) -> None:
        self.run_bar.setRange(0, max(1, total))
        self.run_bar.setValue(done)
        self.run_bar.setFormat(f"{done} of {total} frames")

    def _job_finished(self, outcome: object) -> None:
        for label in self.review_thumbs:
            label.deleteLater()
        self.review_thumbs = []
        if isinstance(outcome, TeachFailure):
            self.outcome = None
            message = re.sub(
                r"\b([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.png\b",
                lambda found: self._describe(found.group(0)),
                outcome.message,
            )  # marked frames by patient
            self.figures.setText(f"<b>{'Not taught' if outcome.refused else 'Teaching failed'}:</b> {message}")
            self.warnings.setText("")
            self.message.setText("Nothing was changed: the device still uses the same model.")
        elif isinstance(outcome, TeachOutcome):
            self.outcome = outcome
            self.figures.setText(figures_html(outcome.adaptation))
            self.warnings.setText(warnings_html(outcome.adaptation, self._describe))
            self._show_review(outcome.adaptation)
            self.message.setText("Nothing is switched yet: read the figures, then use the site bundle or discard it.")
        self._show_view(2)

    def _describe(self, filename: str) -> str:
        with ResultStore(self.config.store_path) as store:
            record = store.get(Path(filename).stem)
        return filename if record is None else f"{record.patient_ref} ({local_time(record.created_at)})"

    def _show_review(self, a: Adaptation) -> None:
        names = [r.file for r in a.review[:8]] + [n for n in a.scanner.odd[:4] if n not in {r.file for r in a.review}]
        if not names:
            return
        with ResultStore(self.config.store_path) as store:
            for name in names:
                record = store.get(Path(name).stem)
                label = QLabel()
                label.setFixedSize(self.th.control + 8, self.th.control + 8)
                label.setToolTip(name)
                if record is not None:
                    label.setPixmap(thumbnail_pixmap(record, self.th.control))
                label.setStyleSheet(f"border: 2px solid {theme.WARN};")
                self.review_row.addWidget(label)
                self.review_thumbs.append(label)
        self.review_row.addStretch(1)

    def discard_bundle(self) -> None:
        if self.outcome is not None:
            shutil.rmtree(self.outcome.bundle.path, ignore_errors=True)
        self.outcome = None
        self._show_view(0)
        self.refresh()

    # --- switching ----------------------------------------------------------------------------------------

    def ask_use(self) -> None:
        if self.outcome is None:
            return
        bundle = self.outcome.bundle
        self._ask(
            "Use the site bundle on this device?",
            f"From the next result on, results come from {bundle.manifest.name} {bundle.manifest.version} "
            "(the hub sees this version on each result). The choice is kept on this device "
            f"({site_choice.record_file(self.config.device.data_dir)}); the configuration is not changed. "
            "Undo: back to the base model is always here.",
            "Use it",
            lambda: self._switch(bundle.path),
        )

    def ask_undo(self) -> None:
        base = self.config.model.path
        self._ask(
            "Go back to the base model?",
            f"From the next result on, results come from the base bundle at {base} again. The site bundle and "
            "the marked frames stay on the device (teach again or switch back later).",
            "Back to the base model",
            lambda: self._switch(None),
        )

    def _switch(self, site: Path | None) -> None:
        """``site``: record it as the bundle to run (after a load check); None: remove the record (the base)."""
        if self._open_exam() is not None:
            self.message.setText("Finish the open exam first: one exam's results come from one model.")
            return
        self.message.setText("Checking that the bundle loads…" if site is not None else "Going back to the base model…")
        self.use.setEnabled(False)
        self.undo.setEnabled(False)
        config = self.config

        def work() -> object:
            return use_site_bundle(config, site) if site is not None else site_choice.undo_site_bundle(config)

        self._background.run(work, lambda r: self._switched(r, site), "teach-switch")

    def _switched(self, result: object, site: Path | None) -> None:
        self.use.setEnabled(True)
        if isinstance(result, Exception):
            self.message.setText(f"Not switched (the model in use is unchanged): {result}")
            self._update_buttons()
            return
        if site is not None:
            log.info("site bundle %s recorded as the one to run", site)
            self.message.setText(f"Switched to the site bundle {site}. The model is loading.")
        else:
            log.info("site bundle record removed: back to the base model %s", self.config.model.path)
            self.message.setText(f"Switched back to the base model {self.config.model.path}. The model is loading.")
        self.outcome = None
        self._show_view(0)
        self.refresh()
        self.model_switched.emit(self.config)

    def model_changed(self) -> None:
        """The window loaded another model: the Undo button follows it."""
        self._update_buttons()
