"""The Live screen: the image (Freeze/Live, finger-drawn region), Analyse, the live-analysis toggle
and the result card. Frames come from the FrameReader, results from the AnalysisService: both by signal.

A frozen frame is captured with the exam open at that moment; Analyse stores it only under that exam (the
device refuses anything else), and only while an exam is open. When the exam changes, finishes or the screen
locks, the frozen frame, the region of interest, the live estimate and the card are all cleared.

Tapping a lesion seeds the region around it (ui/live_view.py ``seed_roi``; a tap inside a region keeps it); on a
frozen frame with an exam open the tap also analyses that region, as Analyse does — S-Detect's gesture: freeze, tap
the lesion, its result and outline on the card — unless the card already shows this frame's result for that very
region (a second tap stores no duplicate). On the moving image the tap only seeds the region (the live score
follows it): nothing is stored from a touch on a frame the clinician has not frozen. While an analysis runs the
region cannot be changed (the card will show the region it was asked for)."""

from __future__ import annotations

import logging
import time

from PyQt5.QtCore import pyqtSignal
from PyQt5.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from device.crop import Box
from device.dicom_patient import (
    FilePatient,
    dicom_patient,
    frame_file,
    is_dicom_origin,
    mismatch,
)
from device.results import EXAM_BINDING_CODES, CapturedFrame, Exam
from device.sources.base import Frame
from device.store import ResultStore
from ui import theme
from ui.background import Background
from ui.banners import is_disk_full, store_reason
from ui.exam import ExamSession, exam_short
from ui.frames import FramePacket
from ui.lesion_choice import LesionChoice
from ui.live_view import LiveView
from ui.result_card import MALIGNANT, ResultCard
from ui.theme import Theme
from ui.workers import AnalysisOutcome, AnalysisService, FrameReader

log = logging.getLogger(__name__)


def not_saved_text(message: str) -> str:
    """The card after a failed save: why, in words (never the database's file path), and what to do."""
    reason = store_reason(message)
    if is_disk_full(reason):
        return (
            "The device's storage is full, so this result was not stored and nothing was sent. The frame is "
            "kept: ask support to free space, then Analyse again."
        )
    return f"This result could not be stored ({reason}). The frame is kept: Analyse again; if it repeats, ask support."


class LiveScreen(QWidget):
    open_exam = pyqtSignal()
    result_shown = pyqtSignal(object)  # AnalysisOutcome, after the card shows it
    file_patient_found = pyqtSignal(str)  # a DICOM frame's PatientID (normalised), for the exam form to pre-fill
    capture_dropped = pyqtSignal()  # the frozen frame is gone (Live, an exam change, the source lost): no retry of it

    def __init__(
        self, th: Theme, reader: FrameReader, service: AnalysisService, session: ExamSession, smoothing: float = 0.3, store: ResultStore | None = None
    ) -> None:
        super().__init__()
        self.reader, self.service, self.session = reader, service, session
        self.smoothing = smoothing
        self.smoothed: float | None = None
        self.last_live: AnalysisOutcome | None = None
        self.last_result: AnalysisOutcome | None = None
        self.analysing = False
        self.captured: CapturedFrame | None = None  # the frozen frame and the exam it was captured under
        self._pending: CapturedFrame | None = None  # the request whose outcome the card waits for
        self.source_lost = False  # a file source (USB stick) vanished: no image, no Analyse until a new frame
        self.file_patient: FilePatient | None = None  # the DICOM PatientID of the file on screen, once read
        self._reading_patient: str | None = None  # the DICOM file whose PatientID is being read (off this thread)
        self._background = Background(self)
        self.tap_to_result_ms: float | None = None
        self._tapped_at = 0.0

        self.view = LiveView(handle_px=th.control // 2)
        self.freeze = QPushButton("Freeze")
        self.freeze.setCheckable(True)
        self.analyse = QPushButton("Analyse")
        self.analyse.setProperty("role", "primary")
        self.live_toggle = QPushButton("Live score")
        self.live_toggle.setCheckable(True)
        self.clear_roi = QPushButton("Clear ROI")
        self.next_image = QPushButton("Next ▶")
        self.next_image.hide()
        self.exam_button = QPushButton("")
        self.file_label = QLabel("")  # the DICOM file's own PatientID, beside the exam's patient
        self.file_label.setWordWrap(True)
        self.file_label.setStyleSheet(f"font-size: {th.small}px;")
        self.file_label.hide()
        self.card = ResultCard(th)
        self.lesion = LesionChoice(th, store) if store is not None else None  # New lesion / Same lesion, 2nd view

        buttons = QHBoxLayout()
        buttons.setSpacing(th.gap)
        for button in (self.freeze, self.analyse, self.live_toggle, self.clear_roi, self.next_image):
            button.setStyleSheet(f"padding: 0 {th.gap}px;")
            buttons.addWidget(button, 1)
        left = QVBoxLayout()
        left.setSpacing(th.gap)
        left.addWidget(self.view, 1)
        left.addLayout(buttons)
        right = QVBoxLayout()
        right.setSpacing(th.gap)
        right.addWidget(self.exam_button)
        right.addWidget(self.file_label)
        if self.lesion is not None:
            right.addWidget(self.lesion)
        right.addWidget(self.card, 1)
        right_widget = QWidget()
        right_widget.setLayout(right)
        right_widget.setFixedWidth(th.side_panel)
        outer = QHBoxLayout(self)
        outer.setContentsMargins(th.gap, th.gap, th.gap, th.gap)
        outer.setSpacing(th.gap)
        outer.addLayout(left, 1)
        outer.addWidget(right_widget)

        self.freeze.toggled.connect(self.set_frozen)
        self.analyse.clicked.connect(self.request_analysis)
        self.live_toggle.toggled.connect(self.set_live_analysis)
        self.clear_roi.clicked.connect(lambda: self.view.set_roi(None))
        self.next_image.clicked.connect(self.reader.step)
        self.exam_button.clicked.connect(self.open_exam)
        self.card.heatmap_toggled.connect(self._heatmap_toggled)
        self.card.outline_toggled.connect(self._outline_toggled)
        self.view.target_size_changed.connect(self.reader.set_target_size)
        self.view.packet_taken.connect(self.reader.frame_shown)
        self.view.roi_changed.connect(self._roi_changed)
        self.view.lesion_tapped.connect(self._lesion_tapped)
        reader.packet_ready.connect(self._packet)
        service.result_ready.connect(self._result)
        service.live_result.connect(self._live_result)
        service.request_failed.connect(self._failed)
        service.analysis_failed.connect(self._unavailable)
        session.changed.connect(self._exam_changed)
        self._exam_changed(session.exam)
        self._update_buttons()

    # --- frames -------------------------------------------------------------------------------------------

    def _packet(self, packet: FramePacket) -> None:
        if self.source_lost:
            if not packet.fresh:  # the reader re-sending the last image it read before the stick went
                self.reader.frame_shown()
                return
            self.source_lost = False  # a frame read now: the source is back
            self._update_buttons()
        self.view.show_packet(packet)
        if packet.fresh:
            self._read_file_patient(packet.frame)
        if self.live_toggle.isChecked() and not self.view.frozen and packet.fresh:
            self.service.analyse_live(packet.frame, roi=self.view.roi)

    # --- the DICOM file's own patient ---------------------------------------------------------------------

    def _read_file_patient(self, frame: Frame) -> None:
        """A new frame: if it comes from a DICOM file, read that file's PatientID (header only, off the GUI thread);
        Analyse waits for it, so a frame is never stored before its file's patient was compared with the exam's."""
        if not is_dicom_origin(frame.origin):
            self.file_patient, self._reading_patient = None, None
        else:
            path = str(frame_file(frame.origin))
            if self.file_patient is not None and str(self.file_patient.path) == path:
                return
            self.file_patient, self._reading_patient = None, path
            self._background.run(lambda: dicom_patient(frame.origin), lambda found: self._file_patient_read(path, found), "dicom-patient")
        self._show_file_patient()

    def _file_patient_read(self, path: str, found: object) -> None:
        if path != self._reading_patient:
            return  # another file is on screen by now
        self._reading_patient = None
        if not isinstance(found, FilePatient):  # unreadable header: its pixels were read, so say nothing about it
            log.warning("PatientID of %s not read: %s", path, found)
            found = FilePatient(frame_file(path), None)
        self.file_patient = found
        if found.patient_id is not None:
            self.file_patient_found.emit(found.patient_id)
        self._show_file_patient()

    def file_problem(self, frame: Frame) -> str | None:
        """Why ``frame`` must not be stored under the open exam because of its DICOM file's PatientID, or None."""
        if not is_dicom_origin(frame.origin):
            return None
        known = self.file_patient
        if known is None or known.path != frame_file(frame.origin):
            return "The DICOM file's patient ID is still being read: tap Analyse again in a moment."
        exam = self.session.exam
        return mismatch(known, exam.patient_ref) if exam is not None else None

    def _show_file_patient(self) -> None:
        known, exam = self.file_patient, self.session.exam
        if known is None or known.patient_id is None:
            self.file_label.hide()
        else:
            problem = mismatch(known, exam.patient_ref) if exam is not None else None
            if exam is None:
                text, colour = f"DICOM file: patient {known.patient_id}", theme.MUTED
            elif problem is None:
                text, colour = f"DICOM file: patient {known.patient_id} ✓ this exam's", theme.OK
            else:
                text, colour = f"DICOM file: patient {known.patient_id} — not this exam's patient", theme.DANGER
            self.file_label.setText(f"<span style='color:{colour}'>{text}</span>")
            self.file_label.show()
            if problem is not None and not self.view.frozen and not self.analysing:
                self.card.clear(
                    "Other patient's file",
                    f"{problem}. Not analysed: finish this exam and start one for {known.patient_id}, or show this exam's images.",
                )
        self._update_buttons()

    def lose_source(self, message: str) -> None:
        """The source's files are gone (USB stick pulled): clear the image — frozen or not, it can no longer be
        shown as what is on the stick — and keep Analyse off until a frame is read again."""
        self.source_lost = True
        if self.freeze.isChecked():
            self.set_frozen(False)
        self.captured, self.last_result, self.last_live = None, None, None
        self._clear_lesion()
        self.view.clear_frame(message)
        self.view.set_roi(None)
        self.card.clear(
            "No image", "The USB stick or folder with the images is gone. Put it back: the images return by themselves, and Analyse with them."
        )
        self._update_buttons()

    def set_still_source(self, still: bool) -> None:
        """File/folder sources show a Next button."""
        self.next_image.setVisible(still)

    # --- freeze / analyse ---------------------------------------------------------------------------------

    def set_frozen(self, frozen: bool) -> None:
        if self.freeze.isChecked() != frozen:
            self.freeze.setChecked(frozen)  # re-enters through toggled
            return
        self.freeze.setText("Live" if frozen else "Freeze")
        if frozen:
            live = self.last_live if self.live_toggle.isChecked() else None
            self.view.freeze(live.frame if live else None)
            self.captured = self.session.capture(self.view.frame) if self.view.frame is not None else None
            if live is not None:  # keep the frame and its result together
                self.card.show_result(live.classification, live=True)
                self.card.detail.setText(
                    "Frozen with its live estimate. "
                    + ("Tap Analyse to store a full result." if self.session.exam else "Start an exam to store a result.")
                )
        else:
            self.view.unfreeze()
            self.captured, self.last_result = None, None
            self._clear_lesion()
            self._idle_card()
            self.card.set_live_mode(self.live_toggle.isChecked())
            self.capture_dropped.emit()
        self.reader.set_paused(frozen)
        self._update_buttons()

    def request_analysis(self) -> None:
        """Analyse (and store) the frame on screen under the open exam; freezes first so the clinician sees
        what was analysed. With no exam open nothing is analysed: there is no patient to store it under."""
        if self.analysing or self.view.frame is None or not self.service.ready or self.source_lost:
            return
        if self.session.exam is None:
            self._idle_card()
            return
        problem = self.file_problem(self.captured.frame if self.view.frozen and self.captured else self.view.frame)
        if problem is not None:
            self.card.clear("Not analysed", problem)
            return
        self._tapped_at = time.monotonic()
        if not self.view.frozen:
            self.set_frozen(True)  # captures the frame on screen under the open exam
        captured = self.captured
        if captured is None:
            return
        heatmap = self.service.manifest is not None and self.service.manifest.cam is not None
        self._pending = captured
        self._clear_lesion()  # the choice is for the result about to be stored
        if self.service.analyse(captured, roi=self.view.roi, heatmap=heatmap):
            self.analysing = True
            self.card.clear("Analysing…", "The result is stored on this device before it is shown.")
            self.view.set_outline(())  # the previous result's outline is not this frame's
        self._update_buttons()

    def _result(self, outcome: AnalysisOutcome) -> None:
        if outcome.captured is None or outcome.captured is not self._pending:
            log.info("result %s not shown: the exam or frame it was for is no longer on screen", outcome.record.result_id if outcome.record else "-")
            return
        self._pending = None
        self.analysing = False
        self.last_result = outcome
        classification = outcome.classification
        self.view.crop_box = classification.crop
        self.view.set_heatmap(classification.crop, None if classification.inconclusive else classification.heatmap)
        self.card.set_live_mode(False)
        self.card.show_result(
            classification, stored=outcome.record, heatmap_available=classification.heatmap is not None and not classification.inconclusive
        )
        lesion = self.card.lesion  # None for an inconclusive result or without a segmentation model
        self.view.set_outline(lesion.contour if lesion is not None and lesion.found else ())
        if self.lesion is not None and outcome.record is not None:
            self.lesion.offer(outcome.record)
        self.tap_to_result_ms = (time.monotonic() - self._tapped_at) * 1000.0
        log.info("result %s shown %.0f ms after the tap", outcome.record.result_id if outcome.record else "-", self.tap_to_result_ms)
        self._update_buttons()
        self.result_shown.emit(outcome)

    def _failed(self, captured: CapturedFrame, code: str, message: str) -> None:
        """A stored-analysis request failed: shown only if it is the one the card is waiting for."""
        if captured is not self._pending:
            return
        self._pending = None
        self.analysing = False
        if code in EXAM_BINDING_CODES:
            self.card.clear("Not stored", message)
        elif code == "store_failed":
            self.card.clear("Not saved", not_saved_text(message))
        else:
            self.card.clear("Not analysed", message)
        self._update_buttons()

    def _unavailable(self, code: str, message: str) -> None:
        if code == "model_unavailable" and not self.analysing:
            self.card.clear("Not analysed", message)

    # --- live analysis ----------------------------------------------------------------------------------

    def set_live_analysis(self, on: bool) -> None:
        if self.live_toggle.isChecked() != on:
            self.live_toggle.setChecked(on)
            return
        self.smoothed, self.last_live = None, None
        if not self.view.frozen and on:
            self.card.clear("Live score on", "The score follows the probe; Freeze keeps the frame and its estimate.")
        elif not self.view.frozen:
            self._idle_card()
        self.card.set_live_mode(on and not self.view.frozen)
        if on and self.view.frame is not None and not self.view.frozen:
            self.service.analyse_live(self.view.frame, roi=self.view.roi)

    def _live_result(self, outcome: AnalysisOutcome) -> None:
        if not self.live_toggle.isChecked() or self.view.frozen:
            return
        self.last_live = outcome
        p = outcome.classification.probabilities.get(MALIGNANT)
        if outcome.classification.inconclusive:
            self.smoothed = None  # an unfit view says nothing about the lesion: no score, start over
        elif p is not None:
            self.smoothed = p if self.smoothed is None else self.smoothed + self.smoothing * (p - self.smoothed)
        self.card.set_live_mode(True)
        self.card.set_gauge(self.smoothed, outcome.classification.thresholds.get(MALIGNANT))
        self.card.show_result(outcome.classification, live=True)

    def _roi_changed(self, roi) -> None:
        if self.live_toggle.isChecked() and not self.view.frozen and self.view.frame is not None:
            self.service.analyse_live(self.view.frame, roi=roi)

    def _lesion_tapped(self, roi: Box) -> None:
        """A tapped lesion: on a frozen frame with an exam open, analyse its region at once (the tap is the Analyse),
        unless the card already shows this captured frame's result for that region."""
        if not (self.view.frozen and self.session.exam is not None and self.analyse.isEnabled()):
            return
        last = self.last_result
        if last is not None and last.captured is self.captured and last.record is not None and last.record.roi == roi.as_tuple():
            return
        self.request_analysis()

    def _heatmap_toggled(self, on: bool) -> None:
        self.view.heatmap_visible = on
        self.view.update()

    def _outline_toggled(self, on: bool) -> None:
        self.view.outline_visible = on
        self.view.update()

    # --- exam -------------------------------------------------------------------------------------------

    def _exam_changed(self, exam: Exam | None) -> None:
        """A new exam, or none: nothing captured under the previous one stays on screen."""
        self.exam_button.setText(exam_short(exam) if exam else "No exam — tap to start")
        self._pending, self.analysing = None, False  # a late outcome of the old exam's request is ignored
        self.last_live, self.smoothed = None, None
        if self.view.roi is not None:
            self.view.set_roi(None)
        if self.freeze.isChecked():
            self.set_frozen(False)  # unfreezes, forgets the capture, clears the card
        else:
            self.captured, self.last_result = None, None
            self.view.unfreeze()
            self._idle_card()
        self._clear_lesion()
        self.card.set_live_mode(self.live_toggle.isChecked())
        self._show_file_patient()

    def _clear_lesion(self) -> None:
        if self.lesion is not None:
            self.lesion.clear()

    def _idle_card(self) -> None:
        if self.session.exam is None:
            self.card.clear("No exam open", "Start an exam to analyse: results are stored only under a patient's exam.")
        else:
            self.card.clear()

    def _update_buttons(self) -> None:
        frame = self.view.frame
        self.analyse.setEnabled(
            not self.analysing
            and self.service.ready
            and self.session.exam is not None
            and not self.source_lost
            and (frame is None or self.file_problem(frame) is None)
        )
        self.analyse.setText("Analysing…" if self.analysing else "Analyse")
        self.view.touch_locked = self.analysing
        self.live_toggle.setEnabled(self.service.ready)

    def model_state_changed(self) -> None:
        self._update_buttons()
