"""Background work: reading frames (a QThread) and analysing/storing them (the device InferenceWorker
plus a one-thread store writer). Results reach widgets only through Qt signals."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from PyQt5.QtCore import QObject, QThread, pyqtSignal
from PyQt5.QtGui import QImage

from device.analysis import AnalysisOptions, Analyzer, load_configured
from device.config import DeviceConfig
from device.crop import Box, detect_scan_region
from device.decision import Mode
from device.engine import Classification, Classifier, InferenceWorker
from device.errors import ImageDecodeError, SonopiError, SourceError
from device.link.uplink.heartbeat import write_source_state
from device.model.bundle import Manifest
from device.results import CapturedFrame, Exam, ExamBindingError, ExamDesk, ResultRecord
from device.site_choice import ModelChoice
from device.source_state import SourceState, SourceStateReporter
from device.sources import Frame, FrameSource, open_source
from device.sources.spec import parse_spec
from device.store import ResultStore
from ui.frames import FramePacket, display_image

log = logging.getLogger(__name__)

SourceOpener = Callable[[str], FrameSource]


@dataclass(frozen=True)
class SourceStatus:
    state: str  # "starting", "streaming", "still", "finished", "disconnected", "error"
    detail: str
    spec: str


class FrameReader(QThread):
    """Reads frames on its own thread and emits display-ready packets.

    Live sources (capture card, camera) pace themselves. File and folder sources are still images:
    the current image is re-sent at ``preview_fps`` and the next one is read on :meth:`step` (or every
    ``hold_s`` seconds when set). A packet is sent only when the view has taken the previous one
    (:meth:`frame_shown`), so the GUI never queues up frames: slow painting drops frames instead.
    """

    packet_ready = pyqtSignal(object)  # FramePacket
    status_changed = pyqtSignal(object)  # SourceStatus

    def __init__(
        self,
        spec: str,
        opener: SourceOpener,
        *,
        preview_fps: float = 30.0,
        hold_s: float = 0.0,
        reopen_interval_s: float = 2.0,
        scan_every: int = 10,
    ) -> None:
        super().__init__()
        self._opener = opener
        self._preview_period = 1.0 / max(1.0, preview_fps)
        self._hold_s = hold_s
        self._reopen_interval_s = reopen_interval_s
        self._scan_every = max(1, scan_every)
        self._lock = threading.Lock()
        self._spec = spec
        self._spec_changed = True
        self._stop = threading.Event()
        self._paused = False
        self._steps = 0
        self._view_free = threading.Event()
        self._view_free.set()
        self._target = (640, 480)
        self._scaled: tuple[Frame, tuple[int, int], QImage, float] | None = None  # last display_image result
        self._last_status: SourceStatus | None = None
        self._source: FrameSource | None = None
        self.dropped = 0
        self.sent = 0

    # --- called from the GUI thread -----------------------------------------------------------------

    @property
    def spec(self) -> str:
        with self._lock:
            return self._spec

    def set_spec(self, spec: str) -> None:
        with self._lock:
            self._spec, self._spec_changed = spec, True

    def set_paused(self, paused: bool) -> None:
        self._paused = paused

    def step(self) -> None:
        """Show the next image of a file/folder source."""
        with self._lock:
            self._steps += 1

    def set_target_size(self, width: int, height: int) -> None:
        self._target = (max(1, width), max(1, height))

    def frame_shown(self) -> None:
        self._view_free.set()

    def stop(self, timeout_ms: int = 5000) -> None:
        self._stop.set()
        self.wait(timeout_ms)

    # --- the reader thread ----------------------------------------------------------------------------

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self._stream()
            except Exception:  # never let one bad frame or driver error end the preview for good
                log.exception("frame reader failed; restarting it")
                self._emit_status("error", "the image reader restarted after an internal error", self.spec)
                self._stop.wait(1.0)
                with self._lock:
                    self._spec_changed = True

    def _stream(self) -> None:
        self._source = None
        try:
            self._follow()
        finally:
            self._close(self._source)
            self._source = None

    def _follow(self) -> None:
        source: FrameSource | None = None
        current: Frame | None = None
        scan_box: Box | None = None
        shown_at = 0.0
        count = 0
        while not self._stop.is_set():
            with self._lock:
                spec, changed = self._spec, self._spec_changed
                self._spec_changed = False
            if changed:
                self._close(source)
                source, current, scan_box = None, None, None
            if source is None:
                source = self._source = self._open(spec)
                if source is None:
                    self._stop.wait(self._reopen_interval_s)
                    continue
            if self._paused:
                self._stop.wait(0.05)
                continue
            started = time.monotonic()
            fresh = False
            if current is None or not source.finite or self._want_next(shown_at):
                frame = self._read(source, spec)
                if frame is None:
                    if current is None or not source.finite:
                        self._stop.wait(0.05)
                        continue
                else:
                    current, fresh, shown_at = frame, True, time.monotonic()
                    if source.finite:
                        self._emit_status("still", f"image {frame.index + 1}: {_short(frame.origin)}", spec)
            if current is None:
                continue
            if fresh and (source.finite or count % self._scan_every == 0 or scan_box is None):
                scan_box = detect_scan_region(current.image)
            count += int(fresh)
            self._send(current, scan_box, fresh)
            if source.finite:
                self._stop.wait(max(0.0, self._preview_period - (time.monotonic() - started)))

    def _want_next(self, shown_at: float) -> bool:
        with self._lock:
            if self._steps:
                self._steps -= 1
                return True
        return self._hold_s > 0 and time.monotonic() - shown_at >= self._hold_s

    def _open(self, spec: str) -> FrameSource | None:
        self._emit_status("starting", "opening", spec)
        try:
            source = self._opener(spec)
            source.open()
        except SonopiError as exc:
            self._emit_status("disconnected", str(exc), spec)
            return None
        except Exception as exc:  # a driver problem must not kill the reader thread
            log.exception("opening source %s failed", spec)
            self._emit_status("error", f"{spec}: {exc}", spec)
            return None
        self._emit_status("streaming" if not source.finite else "still", _short(spec), spec)
        return source

    def _read(self, source: FrameSource, spec: str) -> Frame | None:
        try:
            frame = source.read()
        except ImageDecodeError as exc:
            self._emit_status("error", str(exc), spec)
            return None
        except SourceError as exc:
            self._emit_status("disconnected", str(exc), spec)
            self._stop.wait(min(0.5, self._reopen_interval_s))
            return None
        if frame is None and source.finite:
            self._emit_status("finished", "end of images — tap Next to start again", spec)
            source.close()
            try:
                source.open()  # ready to start over when asked
            except SonopiError as exc:
                self._emit_status("disconnected", str(exc), spec)
        elif frame is not None and not source.finite:
            self._emit_status("streaming", _short(spec), spec)
        return frame

    def _send(self, frame: Frame, scan_box: Box | None, fresh: bool) -> None:
        if not self._view_free.is_set():
            self.dropped += 1
            return
        target = self._target
        cached = self._scaled
        if cached is not None and cached[0] is frame and cached[1] == target:
            image, scale = cached[2], cached[3]  # a still image re-sent at preview_fps: already scaled
        else:
            image, scale = display_image(frame.image, *target)
            self._scaled = (frame, target, image, scale)
        self._view_free.clear()
        self.sent += 1
        self.packet_ready.emit(FramePacket(frame, image, scale, scan_box, fresh))

    def _close(self, source: FrameSource | None) -> None:
        if source is not None:
            try:
                source.close()
            except Exception:  # closing a vanished device may fail; nothing to keep
                log.debug("closing source failed", exc_info=True)
        return None

    def _emit_status(self, state: str, detail: str, spec: str) -> None:
        status = SourceStatus(state, detail, spec)
        if status != self._last_status:
            self._last_status = status
            self.status_changed.emit(status)


def _short(text: str, limit: int = 48) -> str:
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def default_opener(config: DeviceConfig) -> SourceOpener:
    def opener(spec: str) -> FrameSource:
        parse_spec(spec)  # raises SourceError with the accepted forms
        return open_source(spec, config.source)

    return opener


# --- analysis and storage ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnalysisOutcome:
    frame: Frame
    classification: Classification
    record: ResultRecord | None  # None for live (not stored) results
    requested_at: float  # time.monotonic() when the request was made
    captured: CapturedFrame | None = None  # the stored request's frame and exam token (None for live results)


class AnalysisService(QObject):
    """Runs the classifier on the device :class:`InferenceWorker` and stores results on a writer thread.

    Stored analyses take a :class:`CapturedFrame`; the device :class:`Analyzer` stores it only under the exam
    it was captured under, while that exam is open on ``exams`` (shared with the window's exam session)."""

    model_ready = pyqtSignal(object)  # Manifest
    model_failed = pyqtSignal(str)
    result_ready = pyqtSignal(object)  # AnalysisOutcome (stored)
    live_result = pyqtSignal(object)  # AnalysisOutcome (not stored)
    analysis_failed = pyqtSignal(str, str)  # code, message
    request_failed = pyqtSignal(object, str, str)  # CapturedFrame, code, message: that request stored nothing
    exam_stored = pyqtSignal(object)  # Exam
    exam_failed = pyqtSignal(object, str)  # Exam, message: not stored, so not opened

    def __init__(self, config: DeviceConfig, classifier_factory: Callable[[], Classifier] | None = None, exams: ExamDesk | None = None) -> None:
        super().__init__()
        self.config = config
        self.options = AnalysisOptions.from_config(config)  # once per configuration, not per frame
        self.exams = exams if exams is not None else ExamDesk()
        self.site_choice: ModelChoice | None = None  # what the default loader chose (device/site_choice.py)
        self._factory = classifier_factory or (lambda: self._load_configured(config))
        self._worker: InferenceWorker | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._store: ResultStore | None = None
        self._source_reporter = SourceStateReporter(self._write_source_state)
        self._analyzer: Analyzer | None = None
        self.manifest: Manifest | None = None
        self.thresholds: dict[str, float] = {}
        self.mode: Mode | None = None  # the operating mode results are judged in ([model] mode or the bundle's default)
        self.classifier: Classifier | None = None
        self.error: str | None = None

    def start(self) -> None:
        self._worker = InferenceWorker(self._factory)
        threading.Thread(target=self._wait_for_model, name="model-loader", daemon=True).start()

    def reload(self, config: DeviceConfig) -> None:
        """Use ``config``'s model from now on (Settings › Model › Teach this scanner: the site bundle, or back to the
        base): analysis is off until it has loaded, then ``model_ready`` (or ``model_failed``) as at start-up. The
        caller makes sure no exam is open, so one exam's results come from one model."""
        old = self._worker
        self.config = config
        self.options = AnalysisOptions.from_config(config)
        self._factory = lambda: self._load_configured(config)
        self._analyzer, self.manifest, self.classifier, self.error = None, None, None, None
        self.start()
        if old is not None:  # finishes a request already under way, off the GUI thread
            threading.Thread(target=old.close, name="model-unloader", daemon=True).start()

    def _load_configured(self, config: DeviceConfig) -> Classifier:
        """``[model] path``, or the site bundle chosen on the device when it applies (on the inference thread)."""
        classifier, self.site_choice = load_configured(config)
        return classifier

    @property
    def ready(self) -> bool:
        return self._analyzer is not None

    def _inference(self) -> InferenceWorker:
        assert self._worker is not None  # start() makes the worker before the model can load or be asked
        return self._worker

    def _wait_for_model(self) -> None:
        try:
            classifier = self._inference().wait_ready()
            store = self._store or self._writer.submit(ResultStore, self.config.store_path).result()
        except Exception as exc:  # BundleError, RuntimeUnavailableError, StoreError...
            self.error = str(exc)
            log.error("analysis unavailable: %s", exc)
            self.model_failed.emit(str(exc))
            return
        self.classifier, self._store = classifier, store
        self._analyzer = Analyzer(self.config, classifier, store, self.exams)
        self.manifest = classifier.manifest
        self.thresholds = dict(classifier.thresholds)  # applied: the mode's, or the site's stricter one
        self.mode = classifier.mode
        self.model_ready.emit(classifier.manifest)

    def _options(self, roi: Box | None, heatmap: bool) -> dict:
        """The classifier's options: the configuration's (``AnalysisOptions.from_config``), a drawn ROI instead of its own."""
        return self.options.with_roi(roi).classify_kwargs(heatmap)

    def analyse(self, captured: CapturedFrame, *, roi: Box | None = None, heatmap: bool = True) -> bool:
        """Classify ``captured`` and durably store it under the exam it was captured under; the outcome
        arrives as ``result_ready``, or ``request_failed`` + ``analysis_failed`` (nothing stored)."""
        if not self.ready:
            self._fail(captured, "model_unavailable", self.error or "the model is still loading")
            return False
        try:
            self.exams.check(captured)  # refused now rather than after the model's time is spent
        except ExamBindingError as exc:
            self._fail(captured, exc.code, str(exc))
            return False
        requested = time.monotonic()
        future = self._inference().submit(captured.frame.image, **self._options(roi, heatmap))
        future.add_done_callback(lambda f: self._classified(f, captured, requested))
        return True

    def _fail(self, captured: CapturedFrame, code: str, message: str) -> None:
        log.warning("analysis of %s not stored (%s): %s", captured.frame.origin, code, message)
        self.request_failed.emit(captured, code, message)
        self.analysis_failed.emit(code, message)

    def analyse_live(self, frame: Frame, *, roi: Box | None = None) -> bool:
        """Classify ``frame`` without storing it, replacing any live request not yet started."""
        if not self.ready:
            return False
        requested = time.monotonic()
        options = {**self._options(roi, False), "outline": False}  # the live score shows no outline: do not compute one
        future = self._inference().submit_latest(frame.image, **options)
        future.add_done_callback(lambda f: self._live_done(f, frame, requested))
        return True

    def add_exam(self, exam: Exam) -> None:
        def write() -> Exam:
            return self._writer_store().add_exam(exam)

        self._writer.submit(write).add_done_callback(lambda f: self._exam_done(f, exam))

    def report_source(self, state: SourceState, detail: str = "") -> None:
        """The image source's state as the heartbeat carries it (device/source_state.py): written on a change and
        when ``refresh_source_state`` finds it due, on the store's own thread."""
        self._source_reporter.report(state, detail)

    def refresh_source_state(self) -> None:
        self._source_reporter.refresh()

    def _write_source_state(self, state: str, detail: str) -> None:
        def write() -> None:
            write_source_state(self._writer_store(), state, detail)

        try:
            future = self._writer.submit(write)
        except RuntimeError:  # shutting down: the heartbeat's staleness rule says "unknown" soon enough
            return
        future.add_done_callback(_log_source_state_failure)

    def _writer_store(self) -> ResultStore:
        if self._store is None:  # no model: still allow exams to be recorded
            self._store = ResultStore(self.config.store_path)
        return self._store

    def _exam_done(self, future: Future, exam: Exam) -> None:
        try:
            self.exam_stored.emit(future.result())
        except Exception as exc:
            self.exam_failed.emit(exam, str(exc))
            self.analysis_failed.emit(getattr(exc, "code", "store_failed"), str(exc))

    def _classified(self, future: Future, captured: CapturedFrame, requested: float) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self._fail(captured, getattr(error, "code", "analysis_failed"), str(error))
            return
        classification = future.result()
        self._writer.submit(self._record, captured, classification, requested)

    def _record(self, captured: CapturedFrame, classification: Classification, requested: float) -> None:
        analyzer = self._analyzer
        if analyzer is None:  # the model is being switched (reload): nothing is stored with a half-known model
            self._fail(captured, "model_unavailable", "the model was being switched; analyse again")
            return
        try:
            record = analyzer.record(captured, classification)
        except ExamBindingError as exc:  # the exam ended (Finish, lock) while the model was working
            self._fail(captured, exc.code, str(exc))
            return
        except Exception as exc:  # StoreError (disk full...), encoding problems
            log.error("result not stored: %s", exc)
            self._fail(captured, getattr(exc, "code", "store_failed"), str(exc))
            return
        self.result_ready.emit(AnalysisOutcome(captured.frame, classification, record, requested, captured))

    def _live_done(self, future: Future, frame: Frame, requested: float) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        self.live_result.emit(AnalysisOutcome(frame, future.result(), None, requested))

    def shutdown(self) -> None:
        if self._worker is not None:
            self._worker.close()
        self._writer.shutdown(wait=True)
        if self._store is not None:
            self._store.close()


def _log_source_state_failure(future: Future[None]) -> None:
    if future.exception():
        log.warning("source state not stored: %s", future.exception())
