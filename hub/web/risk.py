"""What a result means for the operator: p(malignant), the threshold it was judged against, its category.

Contract v2 results carry the device's own ``category``, ``p_malignant`` and operating ``mode`` (stored by
the hub in nullable columns of ``results``); for v1 results (those columns NULL or absent) the console
derives them from the stored probabilities, thresholds and label exactly as the device decided the label:
a result is *suspicious* when it is not inconclusive and its label is ``malignant`` or p(malignant)
reaches the malignant threshold. The risk figure is always p(malignant), never the top class's
probability.

A result is *late* when it reached the hub more than :data:`LATE_AFTER_S` after the device created it.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import datetime

MALIGNANT = "malignant"
LATE_AFTER_S = 300.0  # 5 min: longer than any live delivery (ack timeout, retries); a backlog is older


class Category(enum.Enum):
    NO_LESION = "no_lesion"
    LOW_SUSPICION = "low_suspicion"
    SUSPICIOUS = "suspicious"
    INCONCLUSIVE = "inconclusive"

    @property
    def wording(self) -> str:
        return _WORDING[self]

    @classmethod
    def parse(cls, value: str | None) -> Category | None:
        try:
            return cls(value) if value else None
        except ValueError:
            return None


_WORDING = {
    Category.NO_LESION: "No lesion seen",
    Category.LOW_SUSPICION: "Lesion — low suspicion",
    Category.SUSPICIOUS: "Suspicious — refer",
    Category.INCONCLUSIVE: "Inconclusive — rescan",
}

MODE_WORDING = {"high_sensitivity": "high sensitivity", "balanced": "balanced", "high_specificity": "high specificity"}


@dataclass(frozen=True)
class Assessment:
    category: Category
    p_malignant: float | None
    threshold: float | None  # the malignant threshold the device applied
    mode: str | None  # high_sensitivity | balanced | high_specificity (contract v2), else None
    from_device: bool  # category sent by the device (v2) rather than derived here

    @property
    def suspicious(self) -> bool:
        return self.category is Category.SUSPICIOUS

    @property
    def judged_against(self) -> str:
        """``≥ 35.0% (balanced)``: the threshold and mode, as far as they are known."""
        parts = []
        if self.threshold is not None:
            parts.append(f"threshold {100 * self.threshold:.1f}%")
        if self.mode:
            parts.append(MODE_WORDING.get(self.mode, self.mode))
        return ", ".join(parts)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def derive_category(label: str | None, inconclusive: bool, p_malignant: float | None, threshold: float | None) -> Category:
    """The v1 rule (the device's label decision, see ``device.engine.decide_label``)."""
    if inconclusive:
        return Category.INCONCLUSIVE
    reached = p_malignant is not None and threshold is not None and p_malignant >= threshold
    if label == MALIGNANT or reached:
        return Category.SUSPICIOUS
    if label == "normal":
        return Category.NO_LESION
    return Category.LOW_SUSPICION


def assess(
    *,
    probabilities: dict[str, float],
    thresholds: dict[str, float],
    label: str | None,
    inconclusive: bool,
    category: str | None = None,
    p_malignant: float | None = None,
    mode: str | None = None,
) -> Assessment:
    """The device's v2 fields where present, the v1 derivation for whatever is missing."""
    p = _number(p_malignant)
    if p is None:
        p = _number(probabilities.get(MALIGNANT))
    threshold = _number(thresholds.get(MALIGNANT))
    sent = Category.parse(category)
    chosen = sent or derive_category(label, inconclusive, p, threshold)
    return Assessment(category=chosen, p_malignant=p, threshold=threshold, mode=mode or None, from_device=sent is not None)


def delay_s(created_at: str, received_at: str) -> float | None:
    try:
        created = datetime.fromisoformat(created_at)
        received = datetime.fromisoformat(received_at)
    except ValueError:
        return None
    return (received - created).total_seconds()


def is_late(created_at: str, received_at: str) -> bool:
    """Reached the hub more than :data:`LATE_AFTER_S` after it was created (device clock vs hub clock)."""
    delay = delay_s(created_at, received_at)
    return delay is not None and delay > LATE_AFTER_S
