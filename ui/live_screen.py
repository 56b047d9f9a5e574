"""The Live screen: the image (Freeze/Live, finger-drawn region), Analyse, the live-analysis toggle
and the result card. Frames come from the FrameReader, results from the AnalysisService: both by signal."""

from __future__ import annotations

import logging
import time

from PyQt5.QtCore import pyqtSignal
from PyQt5.QtWidgets import QHBoxLayout, QPushButton, QVBoxLayout, QWidget

from device.results import Exam
from ui.exam import ExamSession, exam_short
from ui.frames import FramePacket
from ui.live_view import LiveView
from ui.result_card import MALIGNANT, ResultCard
from ui.theme import Theme
from ui.workers import AnalysisOutcome, AnalysisService, FrameReader

log = logging.getLogger(__name__)


class LiveScreen(QWidget):
    open_exam = pyqtSignal()
    result_shown = pyqtSignal(object)  # AnalysisOutcome, after the card shows it

    def __init__(self, th: Theme, reader: FrameReader, service: AnalysisService, session: ExamSession,
                 smoothing: float = 0.3) -> None:
        super().__init__()
        self.reader, self.service, self.session = reader, service, session
        self.smoothing = smoothing
        self.smoothed: float | None = None
        self.last_live: AnalysisOutcome | None = None
        self.last_result: AnalysisOutcome | None = None
        self.analysing = False
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
        self.card = ResultCard(th)

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
        self.view.target_size_changed.connect(self.reader.set_target_size)
        self.view.packet_taken.connect(self.reader.frame_shown)
        self.view.roi_changed.connect(self._roi_changed)
        reader.packet_ready.connect(self._packet)
        service.result_ready.connect(self._result)
        service.live_result.connect(self._live_result)
        service.analysis_failed.connect(self._failed)
        session.changed.connect(self._exam_changed)
        self._exam_changed(session.exam)
        self._update_buttons()

    # --- frames -------------------------------------------------------------------------------------------

    def _packet(self, packet: FramePacket) -> None:
        self.view.show_packet(packet)
        if self.live_toggle.isChecked() and not self.view.frozen and packet.fresh:
            self.service.analyse_live(packet.frame, roi=self.view.roi)

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
            if live is not None:  # keep the frame and its result together
                self.card.show_result(live.classification, live=True)
                self.card.detail.setText("Frozen with its live estimate. Tap Analyse to store a full result.")
        else:
            self.view.unfreeze()
            self.last_result = None
            self.card.clear()
            self.card.set_live_mode(self.live_toggle.isChecked())
        self.reader.set_paused(frozen)
        self._update_buttons()

    def request_analysis(self) -> None:
        """Analyse (and store) the frame on screen; freezes first so the clinician sees what was analysed."""
        if self.analysing or self.view.frame is None or not self.service.ready:
            return
        self._tapped_at = time.monotonic()
        self.set_frozen(True)
        heatmap = self.service.manifest is not None and self.service.manifest.cam is not None
        if self.service.analyse(self.view.frame, roi=self.view.roi, exam=self.session.exam, heatmap=heatmap):
            self.analysing = True
            self.card.clear("Analysing…", "The result is stored on this device before it is shown.")
        self._update_buttons()

    def _result(self, outcome: AnalysisOutcome) -> None:
        self.analysing = False
        self.last_result = outcome
        classification = outcome.classification
        self.view.crop_box = classification.crop
        self.view.set_heatmap(classification.crop, classification.heatmap)
        self.card.set_live_mode(False)
        self.card.show_result(classification, stored=outcome.record, heatmap_available=classification.heatmap is not None)
        self.tap_to_result_ms = (time.monotonic() - self._tapped_at) * 1000.0
        log.info("result %s shown %.0f ms after the tap", outcome.record.result_id if outcome.record else "-",
                 self.tap_to_result_ms)
        self._update_buttons()
        self.result_shown.emit(outcome)

    def _failed(self, code: str, message: str) -> None:
        if self.analysing or code in ("model_unavailable",):
            self.analysing = False
            self.card.clear("Not analysed", message)
            self._update_buttons()

    # --- live analysis ----------------------------------------------------------------------------------

    def set_live_analysis(self, on: bool) -> None:
        if self.live_toggle.isChecked() != on:
            self.live_toggle.setChecked(on)
            return
        self.smoothed, self.last_live = None, None
        if not self.view.frozen:
            self.card.clear("Live score on" if on else "Freeze, then Analyse",
                            "The score follows the probe; Freeze keeps the frame and its estimate." if on else "")
        self.card.set_live_mode(on and not self.view.frozen)
        if on and self.view.frame is not None and not self.view.frozen:
            self.service.analyse_live(self.view.frame, roi=self.view.roi)

    def _live_result(self, outcome: AnalysisOutcome) -> None:
        if not self.live_toggle.isChecked() or self.view.frozen:
            return
        self.last_live = outcome
        p = outcome.classification.probabilities.get(MALIGNANT)
        if p is not None:
            self.smoothed = p if self.smoothed is None else self.smoothed + self.smoothing * (p - self.smoothed)
        self.card.set_live_mode(True)
        self.card.set_gauge(self.smoothed, outcome.classification.thresholds.get(MALIGNANT))
        self.card.show_result(outcome.classification, live=True)

    def _roi_changed(self, roi) -> None:
        if self.live_toggle.isChecked() and not self.view.frozen and self.view.frame is not None:
            self.service.analyse_live(self.view.frame, roi=roi)

    def _heatmap_toggled(self, on: bool) -> None:
        self.view.heatmap_visible = on
        self.view.update()

    # --- exam -------------------------------------------------------------------------------------------

    def _exam_changed(self, exam: Exam | None) -> None:
        self.exam_button.setText(exam_short(exam) if exam else "No exam — tap to start")

    def _update_buttons(self) -> None:
        self.analyse.setEnabled(not self.analysing and self.service.ready)
        self.analyse.setText("Analysing…" if self.analysing else "Analyse")
        self.live_toggle.setEnabled(self.service.ready)

    def model_state_changed(self) -> None:
        self._update_buttons()
