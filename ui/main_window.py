"""The main window: status bar, fault banners, the four screens (Live, Exam, History, Settings) behind
a bottom navigation bar with the always-visible notice, and the PIN / lock / first-run overlays."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from PyQt5.QtCore import Qt, QTimer
from PyQt5.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from device.barcode import BarcodeError, PatientIdFormat, normalise, parse_scan
from device.config import DeviceConfig
from device.model.bundle import Manifest
from device.results import Exam, ExamAlreadyOpenError, ExamEnd
from device.source_state import REFRESH_S as SOURCE_REFRESH_S
from device.source_state import SourceState
from device.store import ResultStore
from ui import banners
from ui.background import Background
from ui.banners import BannerArea
from ui.confirm import ConfirmOverlay
from ui.correction import CorrectionOverlay
from ui.exam import (
    ExamScreen,
    ExamSession,
    counted,
    exam_title,
    readback_html,
    readback_message,
    summarise,
)
from ui.history import HistoryScreen
from ui.hub import hub_status
from ui.live_screen import LiveScreen
from ui.lock import FirstRun, IdleWatcher, LockScreen
from ui.number_entry import NumberEntry
from ui.scanner import ScannerInput
from ui.settings import SettingsScreen
from ui.status_bar import StatusBar
from ui.teach import TeachPage
from ui.theme import NOTICE, Theme
from ui.workers import AnalysisService, FrameReader, SourceStatus

log = logging.getLogger(__name__)

SCREENS = ("Live", "Exam", "History", "Settings")
STATUS_POLL_MS = 3000
FILE_KINDS = ("folder", "file", "video", "dicom")


def still_source_path(spec: str) -> Path | None:
    """The path of a file/folder source (a USB stick's), None for a capture card or camera."""
    kind, sep, target = spec.partition(":")
    return Path(target) if sep and kind in FILE_KINDS and target else None


@dataclass(frozen=True)
class Services:
    reader: FrameReader
    analysis: AnalysisService


class MainWindow(QMainWindow):
    def __init__(
        self,
        config: DeviceConfig,
        services: Services,
        size: tuple[int, int],
        id_format: PatientIdFormat | None = None,
        config_path: Path | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.config_path = config_path  # the TOML file, written by Settings › Model › Teach this scanner
        self.services = services
        self.id_format = id_format or config.ui.patient_id_format()  # the site's ([ui] patient_id_*)
        self.th = Theme.for_size(*size)
        self.setWindowTitle("sonopi")
        self.setStyleSheet(self.th.stylesheet())
        self.resize(*size)
        self.store = ResultStore(config.store_path)  # GUI-thread reads; the writer has its own connection
        self.background = Background(self)
        self.session = ExamSession(services.analysis.exams)  # the device's exam desk, shared with the Analyzer
        self.settings_unlocked = False
        self._hub_probe_running = False
        self._source_check_running = False
        self._closed = False
        self._build()
        self._connect()
        self._start_timers()

    # --- construction ---------------------------------------------------------------------------------------

    def _build(self) -> None:
        th = self.th
        reader, analysis = self.services.reader, self.services.analysis
        root = QWidget()
        column = QVBoxLayout(root)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        self.status = StatusBar(th)
        self.banners = BannerArea(th)
        self.live = LiveScreen(th, reader, analysis, self.session, smoothing=self.config.ui.live_smoothing, store=self.store)
        self.exam = ExamScreen(th, self.session, self.store, id_format=self.id_format)
        self.history = HistoryScreen(th, self.store)
        self.settings = SettingsScreen(th, self.config, self.background, f"{self.width()}×{self.height()}")
        self.stack = QStackedWidget()
        self.screens = {"Live": self.live, "Exam": self.exam, "History": self.history, "Settings": self.settings}
        for widget in self.screens.values():
            self.stack.addWidget(widget)
        column.addWidget(self.status)
        column.addWidget(self.banners)
        column.addWidget(self.stack, 1)
        column.addWidget(self._nav_bar())
        self.setCentralWidget(root)
        self.entry = NumberEntry(root, th)
        self.id_entry = NumberEntry(root, th, alphanumeric=True)  # patient IDs: the exam form, the History filter
        self.exam.form.use_entries(self.id_entry, self.entry)
        self.pin_entry = NumberEntry(root, th, masked=True)
        self.confirm = ConfirmOverlay(root, th)
        self.correction = CorrectionOverlay(root, th, self.store, self.config.device.id, self.config.device.site)
        self.note_entry = NumberEntry(root, th, note=True)  # a correction's "other" note
        self.correction.note_entry = self.note_entry
        self.teach = TeachPage(
            th,
            self.config,
            self.config_path,
            self.background,
            lambda: self.session.exam.exam_id if self.session.exam is not None else None,
            lambda: self.services.analysis.manifest,
            lambda title, message, action, on_accept: self.confirm.ask(title, message, action, on_accept, cancel="Not now"),
        )
        self.lock_screen = LockScreen(root, th, self.config.ui.pin)
        self.first_run = FirstRun(root, th, self.config.device.data_dir)
        self.idle = IdleWatcher(self.config.ui.idle_lock_s, self)
        self.scanner = ScannerInput(self)

    def _nav_bar(self) -> QWidget:
        bar = QWidget()
        bar.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        bar.setStyleSheet("QWidget { background: #182028; }")
        row = QHBoxLayout(bar)
        row.setContentsMargins(0, 0, self.th.gap * 2, 0)
        row.setSpacing(0)
        self.nav: dict[str, QPushButton] = {}
        for name in SCREENS:
            button = QPushButton(name)
            button.setProperty("role", "nav")
            button.setCheckable(True)
            button.setAutoExclusive(True)
            button.setMinimumWidth(self.th.control * 2)
            button.clicked.connect(lambda _=False, n=name: self.go(n))
            row.addWidget(button)
            self.nav[name] = button
        row.addStretch(1)
        self.notice = QLabel(NOTICE)
        self.notice.setProperty("role", "notice")
        row.addWidget(self.notice)
        return bar

    def _connect(self) -> None:
        reader, analysis = self.services.reader, self.services.analysis
        reader.status_changed.connect(self._source_status)
        self._source_refresh = QTimer(self)  # the heartbeat ignores a stale report: keep it fresh while unchanged
        self._source_refresh.timeout.connect(analysis.refresh_source_state)
        self._source_refresh.start(int(SOURCE_REFRESH_S * 1000))
        analysis.model_ready.connect(self._model_ready)
        analysis.model_failed.connect(self._model_failed)
        analysis.analysis_failed.connect(self._analysis_failed)
        analysis.result_ready.connect(self._result_stored)
        analysis.exam_stored.connect(self._exam_stored)
        analysis.exam_failed.connect(lambda _exam, _message: self.exam.form.start_failed())
        self.exam.form.start_requested.connect(analysis.add_exam)
        self.exam.form.readback_requested.connect(self.read_back)
        self.exam.finish_requested.connect(self.ask_finish)
        self.exam.other_side_requested.connect(self.other_side)
        self.exam.back_to_live.connect(lambda: self.go("Live"))
        self.session.changed.connect(self._exam_changed)
        self.live.open_exam.connect(lambda: self.go("Exam"))
        self.live.file_patient_found.connect(self._file_patient_found)
        self.live.capture_dropped.connect(lambda: self.banners.clear_fault("store"))  # "Analyse again" of a frame gone
        self.history.filter_requested.connect(self._ask_filter)
        self.history.correct_requested.connect(self.correction.start)
        self.exam.correct_requested.connect(self.correction.start)
        self.correction.corrected.connect(lambda _c: self.history.refresh())  # slots run in the order connected
        self.correction.corrected.connect(lambda _c: self.exam.refresh())
        if self.live.lesion is not None:
            self.live.lesion.grouped.connect(self.exam.refresh)
        self.settings.source.source_chosen.connect(self._source_chosen)
        self.settings.lock_requested.connect(self.lock)
        self.settings.teach_requested.connect(self.open_teach)
        self.teach.back_requested.connect(lambda: self.settings.show_section("Model"))
        self.teach.model_switched.connect(self._model_switched)
        self.idle.idle.connect(self.lock)
        self.lock_screen.unlocked.connect(self._unlocked)
        self.scanner.scanned.connect(self.scanned)

    def _start_timers(self) -> None:
        self.clock_timer = QTimer(self)
        self.clock_timer.timeout.connect(self.status.tick)
        self.clock_timer.start(1000)
        self.poll_timer = QTimer(self)
        self.poll_timer.timeout.connect(self.poll)
        self.poll_timer.start(STATUS_POLL_MS)
        self.hub_timer = QTimer(self)
        self.hub_timer.timeout.connect(self.probe_hub)
        if self.config.uplink.enabled:
            self.hub_timer.start(int(self.config.ui.hub_probe_s * 1000))
        else:
            self.status.set_hub(None, "off")

    def start(self) -> None:
        """After show(): first-run notice, idle lock, first status poll."""
        self.go("Live")
        app = QApplication.instance()
        assert app is not None  # the window is shown inside the running QApplication
        app.installEventFilter(self.scanner)  # the filter installed last sees events first: the idle watcher must
        app.installEventFilter(self.idle)  # see a scan's keys (activity) before the scanner swallows them
        self.idle.start()
        if self.first_run.needed:
            self.first_run.open()
        self.poll()
        if self.config.uplink.enabled:
            self.probe_hub()

    # --- navigation -------------------------------------------------------------------------------------------

    def go(self, name: str) -> None:
        if name == "Settings" and not self.settings_unlocked:
            self.nav[self._current_name()].setChecked(True)
            self.pin_entry.ask("Settings PIN", self._check_pin, "Settings are for staff with the PIN.")
            return
        if name != "Settings":
            self.settings_unlocked = False
        self.nav[name].setChecked(True)
        self.stack.setCurrentWidget(self.screens[name])
        if name == "History":
            self.history.refresh()
        elif name == "Exam":
            self.exam.refresh()
        elif name == "Settings":
            self.settings.show_section("Source")

    def _current_name(self) -> str:
        current = self.stack.currentWidget()
        return next((n for n, w in self.screens.items() if w is current), "Live")

    def _check_pin(self, value: str) -> str | None:
        if value != self.config.ui.pin:
            return "Wrong PIN."
        self.settings_unlocked = True
        QTimer.singleShot(0, lambda: self.go("Settings"))
        return None

    def _ask_filter(self) -> None:
        self.id_entry.ask("Patient ID", self._filter_entered, "Empty + OK shows every patient.")

    def _filter_entered(self, value: str) -> None:
        self.history.set_filter(normalise(value) or None)

    def lock(self) -> None:
        """Idle lock and Settings › Lock: the open exam is finished (never suspended), so whoever unlocks
        next starts from an empty form and no frame, region or result of the previous patient is left."""
        self.settings_unlocked = False
        self.pin_entry.close_overlay()
        self.entry.close_overlay()
        self.id_entry.close_overlay()
        self.note_entry.close_overlay()
        self.confirm.close_overlay()
        self.correction.close_overlay()  # a correction half chosen is not left for whoever unlocks
        if self.end_exam(ExamEnd.LOCKED) is None:
            self.exam.form.reset()  # a reference typed but not started is not left for whoever unlocks
        if self._current_name() == "Settings":
            self.go("Live")
        self.lock_screen.lock()

    # --- the exam ---------------------------------------------------------------------------------------------

    def _exam_stored(self, exam: Exam) -> None:
        if not self.exam.form.take_pending(exam):  # the form was reset (the lock) while the exam was being stored
            log.warning("exam %s stored after its form was reset: not opened", exam.exam_id)
            return
        try:
            self.session.begin(exam)
        except ExamAlreadyOpenError as exc:  # the form is hidden while an exam is open: a second, late start
            log.error("%s", exc)

    def read_back(self, exam: Exam) -> None:
        """Start exam: the patient ID big, letters and digits apart, with the side; only *Start exam* here starts it."""
        form = self.exam.form
        self.confirm.ask(
            "Start the exam for this patient?",
            readback_message(exam, form.id_source),
            "Start exam",
            lambda: form.confirm_start(exam),
            cancel="Correct it",
            readback=readback_html(exam.patient_ref, self.th),
        )

    def other_side(self) -> None:
        """The open exam's other side for the same patient, one tap: a new exam (new id), the ID not typed again."""
        following = self.exam.switch_side()
        if following is not None:
            self.services.analysis.add_exam(following)

    def scanned(self, raw: str) -> None:
        """A wristband or label was scanned: with no exam open it fills the form's patient ID (the clinician still
        confirms it in the readback); never behind the lock or the first-run notice; never into an open exam."""
        if self.lock_screen.isVisible() or self.first_run.isVisible():
            log.info("scan ignored: the screen is locked")
            return
        try:
            scan = parse_scan(raw, self.id_format)
        except BarcodeError as exc:
            self._scan_refused(str(exc))
            return
        exam = self.session.exam
        if exam is not None:
            if scan.reference != exam.patient_ref:
                self.banners.show_fault(banners.scan_fault(scan.reference, exam.patient_ref))
            return
        if self.exam.form.pending is not None:
            return  # an exam is being started: the form no longer takes another ID
        self.id_entry.close_overlay()
        self.confirm.close_overlay()  # a readback of the previous ID must not be confirmed for this one
        self.go("Exam")
        self.exam.form.set_scanned(scan.reference)

    def _file_patient_found(self, patient_id: str) -> None:
        """A DICOM file on screen names its patient: with no exam open and nothing typed or scanned yet, it
        pre-fills the form (the readback at Start still asks). An open exam is never changed by it."""
        form = self.exam.form
        if self.session.exam is None and form.pending is None and not form.values["patient"]:
            form.set_from_file(patient_id)

    def _scan_refused(self, message: str) -> None:
        if self.session.exam is None:
            self.go("Exam")
            self.exam.form.say(f"Not a patient ID: {message}. Scan the wristband again or type the ID.")

    def ask_finish(self) -> None:
        """Finish exam: confirm first, showing whose exam it is and what it holds."""
        exam = self.session.exam
        if exam is None:
            return
        records = self.store.exam_results(exam.exam_id)
        summary = summarise(counted(records, self.store.placements(records), exam.exam_id))
        lesions = len(self.store.lesions(exam.exam_id))
        held = f"It holds {summary.frames} result{'' if summary.frames == 1 else 's'}"
        if summary.frames:
            held += f" in {lesions} lesion{'' if lesions == 1 else 's'}"
        if summary.inconclusive:
            held += f" ({summary.inconclusive} inconclusive)"
        message = f"{held}, stored on this device and sent to the hub as they are. After finishing, nothing more can be added to it."
        self.confirm.ask(f"Finish the exam? {exam_title(exam)}", message, "Finish exam", lambda: self.end_exam(ExamEnd.FINISHED))

    def end_exam(self, reason: ExamEnd) -> Exam | None:
        """Finish the open exam: its frozen frame, region and result card go with it (LiveScreen, ExamScreen)."""
        return self.session.finish(reason)

    def _unlocked(self) -> None:
        self.idle.start()

    # --- events from the workers -------------------------------------------------------------------------------

    def _source_status(self, status: SourceStatus) -> None:
        self.status.set_source(status.state, status.detail)
        if status.state == "disconnected":  # for the hub's device health (the heartbeat's source_state)
            self.services.analysis.report_source(SourceState.LOST, status.detail)
        elif status.state in ("streaming", "still", "finished"):
            self.services.analysis.report_source(SourceState.OK, status.detail)
        files = still_source_path(status.spec) is not None
        self.live.set_still_source(files)
        if status.state == "disconnected" and files:  # a USB stick's folder or file that is not there
            self._files_gone(status.detail)
        elif status.state == "disconnected":
            self.banners.show_fault(banners.source_fault(status.detail))
            if self.live.view.frame is None or not self.live.view.frozen:
                self.live.view.clear_frame(f"No image: {status.detail}")
        elif status.state == "error" and files:
            self.check_source()  # a file that vanished on Next: is the whole stick gone?
        elif status.state in ("streaming", "still"):
            self.banners.clear_fault("source")

    def check_source(self) -> None:
        """Files and folders (a USB stick) are read only on Next, so a pulled stick would go unnoticed with its
        last image on screen: check that the path is still there (off the GUI thread: a dying USB device may hang)."""
        spec = self.services.reader.spec
        path = still_source_path(spec)
        if path is None or self._source_check_running or self.live.source_lost:
            return
        self._source_check_running = True
        self.background.run(path.exists, lambda present: self._source_checked(spec, path, present), "source-check")

    def _source_checked(self, spec: str, path: Path, present: object) -> None:
        self._source_check_running = False
        if present is True or spec != self.services.reader.spec or self._closed:
            return
        self._files_gone(f"{path}: not found")
        self.services.reader.set_spec(spec)  # reopen: retried every reopen interval until the path is back

    def _files_gone(self, detail: str) -> None:
        self.banners.show_fault(banners.files_gone_fault(detail))
        self.live.lose_source(f"No image: {detail}")

    def _model_ready(self, manifest: Manifest) -> None:
        self.status.set_model(f"{manifest.name} {manifest.version}")
        self.banners.clear_fault("model")
        thresholds = self.services.analysis.thresholds
        self.settings.set_model(manifest, None, thresholds, self.services.analysis.mode, signature_checked=self.config.model.public_key is not None)
        self.live.card.set_labels(manifest.labels, thresholds)
        self.first_run.set_intended_use(manifest.intended_use)
        self.live.model_state_changed()
        self.teach.model_changed()
        if self.config.ui.live_analysis:
            self.live.set_live_analysis(True)

    def _model_failed(self, message: str) -> None:
        self.status.set_model(None, message)
        self.banners.show_fault(banners.model_fault(message))
        self.settings.set_model(None, message)
        self.live.card.clear("Analysis unavailable", "No valid model is installed. The live image still works.")
        self.live.model_state_changed()

    def _analysis_failed(self, code: str, message: str) -> None:
        if code == "store_failed":
            self.banners.show_fault(banners.store_fault(banners.store_reason(message)))
            self.poll()

    def _result_stored(self, _outcome) -> None:
        if self._closed:  # a result signalled just before shutdown: the GUI connection is closed
            return
        self.banners.clear_fault("store")
        self.poll()
        if self.session.exam is not None:
            self.exam.refresh()

    def _exam_changed(self, exam: Exam | None) -> None:
        self.banners.clear_fault("scan")  # a wristband scanned during the previous exam is no longer a question
        if exam is not None:
            self.go("Live")

    def open_teach(self) -> None:
        self.settings.show_page(self.teach)
        self.teach.refresh()

    def _model_switched(self, config: DeviceConfig) -> None:
        """Teach this scanner wrote [model] path (the site bundle, or back to the base): load that model now."""
        self.config = config
        self.live.set_live_analysis(False)
        self.status.set_model(None, "loading the new model…")
        self.services.analysis.reload(config)
        self.live.model_state_changed()  # Analyse is off until the new model has loaded

    def _source_chosen(self, spec: str) -> None:
        log.info("source changed to %s", spec)
        self.live.set_frozen(False)
        self.live.view.set_roi(None)
        self.services.reader.set_spec(spec)

    # --- periodic status -----------------------------------------------------------------------------------------

    def poll(self) -> None:
        """Backlog, free disk, history delivery states: cheap reads on the GUI thread's own connection."""
        try:
            backlog = self.store.backlog()
            self.status.set_pending(backlog.pending)
            self.settings.hub.set_backlog(backlog.pending, backlog.oldest_created_at)
        except Exception as exc:  # StoreError: shown, never fatal
            self.status.set_pending(None)
            log.warning("store poll failed: %s", exc)
        self._check_disk()
        self.check_source()
        if self.stack.currentWidget() is self.history:
            self.history.refresh()

    def _check_disk(self) -> None:
        folder = self.config.store_path.parent
        try:
            free = shutil.disk_usage(folder if folder.exists() else folder.parent).free
        except OSError:
            self.status.set_disk(None)
            return
        low = free < self.config.ui.disk_low_mb * 1024 * 1024
        self.status.set_disk(free, low)
        if low:  # a warning: saving still works; a save that fails says so itself (store_fault)
            self.banners.show_fault(banners.disk_low_fault(free // (1024 * 1024)))
        else:
            self.banners.clear_fault("disk")

    def probe_hub(self) -> None:
        if self._hub_probe_running:
            return
        self._hub_probe_running = True
        broker, heartbeat_s, store = self.config.uplink.broker, self.config.uplink.heartbeat_s, self.store
        self.background.run(lambda: hub_status(store, broker, heartbeat_s), self._hub_probed, "hub-probe")

    def _hub_probed(self, outcome) -> None:
        self._hub_probe_running = False
        reachable, detail = outcome if isinstance(outcome, tuple) else (False, str(outcome))
        self.status.set_hub(reachable, detail)
        if reachable:
            self.banners.clear_fault("hub")
        else:
            self.banners.show_fault(banners.hub_fault(detail))

    # --- shutdown ---------------------------------------------------------------------------------------------------

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        for timer in (self.clock_timer, self.poll_timer, self.hub_timer):
            timer.stop()
        self.idle.stop()  # else it could lock later and finish the exam against the closed store
        app = QApplication.instance()
        if app is not None:
            app.removeEventFilter(self.idle)
            app.removeEventFilter(self.scanner)
        self.services.reader.stop()
        self.services.analysis.shutdown()
        self.store.close()

    def closeEvent(self, event) -> None:
        self.shutdown()
        super().closeEvent(event)
