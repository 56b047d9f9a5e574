"""A close-up never makes a result less concerning than its whole scan.

A clinician's ROI (drawn, or a tapped lesion's square) makes the classifier look at a close-up. The operating modes
were validated on whole scan regions, and a close-up ranks an unseen source's lesions worse: on the committed
region study a Lite0 fold's sensitivity at the balanced threshold fell from 0.78 to 0.67 on a close-up
(docs/lesion-outline.md, "A close-up is checked against its whole scan"). So every analysis with a clinician's ROI
classifies both views of the same frame, and the result reports the *close-up's* decision unless the *scan
region's* is more concerning (:func:`scan_decides`). Sensitivity is then never below the whole scan's, at a cost
in specificity the docs state.

:class:`CloseUpCheck` is what a result keeps of the two views: which decided, and each one's category and
p(malignant) — the ``close_up`` object of ``classify --json`` and of the store's column, validated whenever it is
read back. Qt-, NumPy- and OpenCV-free: the hub imports device.results (and so this module) through the contract.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from device.decision import CONCERN, Category, Decision


class View(StrEnum):
    CLOSE_UP = "close_up"  # the clinician's ROI: drawn, or a tapped lesion's square
    SCAN = "scan"  # the scan region (auto-crop, or the configured source ROI): what the modes were validated on


class CloseUpCheckError(ValueError):
    """A stored close-up check that is not one (wrong keys, types or values); the message names the field."""


def scan_decides(close_up: Decision, scan: Decision) -> bool:
    """Whether the scan region's decision, not the close-up's, is the result's: the scan is conclusive and more
    concerning than the close-up. An inconclusive close-up (a region too small or blank to judge) gives way only to
    a suspicious scan; otherwise it stays inconclusive, and the clinician redraws. On a tie the close-up, the view
    the clinician asked about, decides."""
    if scan.inconclusive:
        return False
    if close_up.inconclusive:
        return scan.category is Category.SUSPICIOUS
    return CONCERN[scan.category] > CONCERN[close_up.category]


@dataclass(frozen=True)
class Reading:
    """One view's decision: its category and p(malignant)."""

    category: Category
    p_malignant: float

    @classmethod
    def of(cls, decision: Decision) -> Reading:
        return cls(decision.category, decision.p_malignant)

    def to_json(self) -> dict[str, Any]:
        return {"category": self.category.value, "p_malignant": self.p_malignant}

    @classmethod
    def from_json(cls, data: Any, where: str) -> Reading:
        if not isinstance(data, dict) or set(data) != {"category", "p_malignant"}:
            raise CloseUpCheckError(f"{where}: expected an object with 'category' and 'p_malignant', got {data!r}")
        try:
            category = Category(data["category"])
        except ValueError:
            raise CloseUpCheckError(f"{where}.category: {data['category']!r} is not one of {[c.value for c in Category]}") from None
        p = data["p_malignant"]
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or not 0.0 <= p <= 1.0:
            raise CloseUpCheckError(f"{where}.p_malignant: {p!r} is not a probability")
        return cls(category, float(p))


@dataclass(frozen=True)
class CloseUpCheck:
    """The two views of an analysis with a clinician's ROI, and which one the result reports."""

    decided_by: View
    close_up: Reading
    scan: Reading

    @classmethod
    def of(cls, close_up: Decision, scan: Decision) -> CloseUpCheck:
        view = View.SCAN if scan_decides(close_up, scan) else View.CLOSE_UP
        return cls(view, Reading.of(close_up), Reading.of(scan))

    @property
    def raised(self) -> bool:
        """The scan's decision replaced the close-up's: the close-up alone read less concerning."""
        return self.decided_by is View.SCAN

    @property
    def decided(self) -> Reading:
        """The deciding view's reading: the result's own category and p(malignant)."""
        return self.scan if self.decided_by is View.SCAN else self.close_up

    def check_agrees(self, category: str | None, p_malignant: float | None, where: str) -> None:
        """CloseUpCheckError unless the result's ``category`` and ``p_malignant`` are the deciding view's: a stored
        result never says one thing and keeps another."""
        decided = self.decided
        if category != decided.category.value or p_malignant is None or abs(p_malignant - decided.p_malignant) > 1e-6:
            raise CloseUpCheckError(
                f"{where}: decided by the {self.decided_by.value} view ({decided.category.value}, p(malignant) "
                f"{decided.p_malignant:.6f}), but the result says {category} with p(malignant) {p_malignant}"
            )

    def to_json(self) -> dict[str, Any]:
        return {"decided_by": self.decided_by.value, "close_up": self.close_up.to_json(), "scan": self.scan.to_json()}

    def to_text(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))

    @classmethod
    def from_json(cls, data: Any, where: str = "close_up") -> CloseUpCheck:
        """Validate ``data`` (the ``close_up`` object of ``classify --json``, or a stored one) into a check."""
        if not isinstance(data, dict) or set(data) != {"decided_by", "close_up", "scan"}:
            keys = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise CloseUpCheckError(f"{where}: expected an object with 'decided_by', 'close_up' and 'scan', got {keys}")
        try:
            view = View(data["decided_by"])
        except ValueError:
            raise CloseUpCheckError(f"{where}.decided_by: {data['decided_by']!r} is not one of {[v.value for v in View]}") from None
        return cls(view, Reading.from_json(data["close_up"], f"{where}.close_up"), Reading.from_json(data["scan"], f"{where}.scan"))

    @classmethod
    def from_text(cls, text: str, where: str = "close_up") -> CloseUpCheck:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CloseUpCheckError(f"{where}: not JSON ({exc})") from None
        return cls.from_json(data, where)
