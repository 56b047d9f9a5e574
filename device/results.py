"""The result record: what the device keeps (and later sends) for every analysed frame; the exam it belongs to,
and the exam desk that binds every captured frame to the exam open when it was captured."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from device.clock import utc_now_iso
from device.close_up import CloseUpCheck
from device.errors import SonopiError
from device.lesion_record import LesionRecord
from device.link.delivery import Delivery

if TYPE_CHECKING:  # the hub imports this module through the contract: no frame sources (OpenCV) at run time
    from device.sources.base import Frame

log = logging.getLogger(__name__)

DELIVERY_STATES = tuple(Delivery)  # on device / sent to hub / received by hub (device.link.delivery)


def new_result_id() -> str:
    """A fresh random UUID: created once per result, never reused."""
    return str(uuid.uuid4())


@dataclass(frozen=True)
class ResultRecord:
    result_id: str
    created_at: str  # ISO 8601, UTC
    device_id: str
    site: str
    model_name: str
    model_version: str
    model_sha256: str
    probabilities: dict[str, float]
    label: str | None  # None when inconclusive
    inconclusive: bool
    reasons: tuple[str, ...] = ()
    thresholds: dict[str, float] = field(default_factory=dict)
    # The category rule (device.decision); None for results stored before it existed (contract v1)
    category: str | None = None  # no_lesion | low_suspicion | suspicious | inconclusive
    p_malignant: float | None = None  # calibrated softmax probability of 'malignant'
    mode: str | None = None  # operating mode the result was judged in
    exam_id: str | None = None
    patient_ref: str | None = None  # as entered by the clinician; never a name
    side: str | None = None  # "L" or "R"
    clock: int | None = None  # clock position of the lesion, 1..12, from the exam; None when not entered
    age: int | None = None  # the patient's age in years, 0..130, from the exam; None when not entered
    crop: tuple[int, int, int, int] | None = None  # x, y, w, h in source pixels
    roi: tuple[int, int, int, int] | None = None  # manual region of interest, if any
    source: str | None = None  # where the frame came from (file path, /dev/video0, ...)
    latency_ms: float | None = None
    # the lesion outline (device/lesion_record.py): None when the bundle had no segmentation model (or the result was
    # stored before outlines); withheld when inconclusive; found False: no lesion outlined
    lesion: LesionRecord | None = None
    # with a clinician's ROI: the close-up's and the scan region's decisions and which one this result is
    # (device/close_up.py); None without one (or stored before the check)
    close_up: CloseUpCheck | None = None
    thumbnail: bytes | None = None  # small JPEG
    seq: int | None = None  # per-device, monotonically increasing; assigned by the store
    delivery: str = Delivery.STORED  # a Delivery value (str: read back from the store as text)

    @property
    def top_label(self) -> str:
        return max(self.probabilities, key=self.probabilities.__getitem__)

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly view without the thumbnail (CLI, exports, logs)."""
        return {
            "result_id": self.result_id,
            "seq": self.seq,
            "created_at": self.created_at,
            "device_id": self.device_id,
            "site": self.site,
            "exam_id": self.exam_id,
            "patient_ref": self.patient_ref,
            "side": self.side,
            "clock": self.clock,
            "age": self.age,
            "model": {"name": self.model_name, "version": self.model_version, "sha256": self.model_sha256},
            "label": self.label,
            "category": self.category,
            "p_malignant": self.p_malignant,
            "mode": self.mode,
            "inconclusive": self.inconclusive,
            "reasons": list(self.reasons),
            "probabilities": dict(self.probabilities),
            "thresholds": dict(self.thresholds),
            "crop": list(self.crop) if self.crop else None,
            "roi": list(self.roi) if self.roi else None,
            "source": self.source,
            "latency_ms": self.latency_ms,
            "delivery": self.delivery,
            "lesion": self.lesion.to_json() if self.lesion is not None else None,
            "close_up": self.close_up.to_json() if self.close_up is not None else None,
        }


@dataclass(frozen=True)
class Exam:
    exam_id: str
    patient_ref: str
    side: str | None = None
    clock: int | None = None  # clock position 1..12
    age: int | None = None
    created_at: str = field(default_factory=utc_now_iso)


# --- binding results to the exam open when their frame was captured ------------------------------------


class ExamBindingError(SonopiError):
    """A frame cannot be stored: no exam was open when it was captured, or that exam is no longer the open one.

    A result always belongs to exactly one open exam, or it is not stored (docs/ui.md)."""

    code = "exam_binding"


class NoOpenExamError(ExamBindingError):
    """The frame was captured while no exam was open: there is no patient to store it under."""

    code = "no_open_exam"


class ExamClosedError(ExamBindingError):
    """The exam the frame was captured under was finished (or the screen locked) before it could be stored."""

    code = "exam_closed"


class ExamMismatchError(ExamBindingError):
    """The frame was captured under one exam and another exam is open now."""

    code = "exam_mismatch"


class ExamAlreadyOpenError(ExamBindingError):
    """An exam is opened while another one is still open: finish that one first."""

    code = "exam_already_open"


EXAM_BINDING_CODES = frozenset(cls.code for cls in (ExamBindingError, NoOpenExamError, ExamClosedError, ExamMismatchError, ExamAlreadyOpenError))


class ExamEnd(Enum):
    """Why an exam stopped being the open one."""

    FINISHED = "finished"  # the clinician confirmed Finish exam
    LOCKED = "locked"  # the screen locked (idle or Settings › Lock): the exam is finished, never resumed


@dataclass(frozen=True)
class CapturedFrame:
    """A frame as captured (frozen, or tapped for analysis) with the id of the exam open at that moment.

    ``exam_id`` is the exam token: the frame may only ever be stored under that exam, and only while it
    is still the open one. None: no exam was open, so the frame can be looked at but never stored."""

    frame: Frame
    exam_id: str | None
    captured_at: str = field(default_factory=utc_now_iso)


class ExamDesk:
    """The one exam open on this device, or none — Qt-free and thread-safe.

    Frames are stamped with the open exam when captured (:meth:`capture`); :meth:`bound` lets a writer store
    a captured frame only while its exam is still open, and holds the desk for the duration of the write, so
    finishing an exam waits for a write already under way and no write can land under an exam after it closed."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._exam: Exam | None = None

    @property
    def current(self) -> Exam | None:
        with self._lock:
            return self._exam

    def open(self, exam: Exam) -> Exam:
        with self._lock:
            if self._exam is not None:
                raise ExamAlreadyOpenError(f"exam {exam.exam_id} not opened: exam {self._exam.exam_id} is still open; finish it first")
            self._exam = exam
        log.info("exam %s opened", exam.exam_id)
        return exam

    def close(self, reason: ExamEnd = ExamEnd.FINISHED) -> Exam | None:
        """End the open exam (if any) and return it; waits for a store write under it that is under way."""
        with self._lock:
            exam, self._exam = self._exam, None
        if exam is not None:
            log.info("exam %s %s", exam.exam_id, reason.value)
        return exam

    def capture(self, frame: Frame) -> CapturedFrame:
        with self._lock:
            return CapturedFrame(frame, self._exam.exam_id if self._exam else None)

    def check(self, captured: CapturedFrame) -> Exam:
        """The open exam ``captured`` may be stored under; raises :class:`ExamBindingError` naming the problem."""
        with self._lock:
            exam = self._exam
            if captured.exam_id is None:
                raise NoOpenExamError(
                    f"frame from {captured.frame.origin} not stored: no exam was open when it was captured; "
                    "start an exam, then capture the frame again"
                )
            if exam is None:
                raise ExamClosedError(
                    f"frame from {captured.frame.origin} not stored: exam {captured.exam_id} it was captured under "
                    "was finished before it could be stored; no exam is open"
                )
            if exam.exam_id != captured.exam_id:
                raise ExamMismatchError(
                    f"frame from {captured.frame.origin} not stored: it was captured under exam {captured.exam_id}, "
                    f"but exam {exam.exam_id} is open now"
                )
            return exam

    @contextmanager
    def bound(self, captured: CapturedFrame) -> Iterator[Exam]:
        """Hold the desk while a result for ``captured`` is written under the exam this yields."""
        with self._lock:
            yield self.check(captured)
