"""The result record: what the device keeps (and later sends) for every analysed frame."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

SIDES = ("L", "R")
DELIVERY_STATES = ("stored", "sent", "acked")  # on device / sent to hub / received by hub


def new_result_id() -> str:
    """A fresh random UUID: created once per result, never reused."""
    return str(uuid.uuid4())


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
    exam_id: str | None = None
    patient_ref: str | None = None  # as entered by the clinician; never a name
    side: str | None = None  # "L" or "R"
    crop: tuple[int, int, int, int] | None = None  # x, y, w, h in source pixels
    roi: tuple[int, int, int, int] | None = None  # manual region of interest, if any
    source: str | None = None  # where the frame came from (file path, /dev/video0, ...)
    latency_ms: float | None = None
    thumbnail: bytes | None = None  # small JPEG
    seq: int | None = None  # per-device, monotonically increasing; assigned by the store
    delivery: str = "stored"

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
            "model": {"name": self.model_name, "version": self.model_version, "sha256": self.model_sha256},
            "label": self.label,
            "inconclusive": self.inconclusive,
            "reasons": list(self.reasons),
            "probabilities": dict(self.probabilities),
            "thresholds": dict(self.thresholds),
            "crop": list(self.crop) if self.crop else None,
            "roi": list(self.roi) if self.roi else None,
            "source": self.source,
            "latency_ms": self.latency_ms,
            "delivery": self.delivery,
        }


@dataclass(frozen=True)
class Exam:
    exam_id: str
    patient_ref: str
    side: str | None = None
    clock: int | None = None  # clock position 1..12
    age: int | None = None
    created_at: str = field(default_factory=utc_now_iso)
