"""A measured figure as text for reports and cards: ``0.852 [0.828, 0.871]``, one formatter for every writer."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def ci_text(entry: Mapping[str, Any] | None, digits: int = 3, missing: str = "n/a") -> str:
    """``{"value": v, "ci95": [lo, hi]}`` as ``"v [lo, hi]"``; the value alone without a CI; ``missing`` when there is
    no value or it is not finite (a subset with nothing to measure)."""
    if not entry or entry.get("value") is None or not math.isfinite(entry["value"]):
        return missing
    low, high = entry.get("ci95") or (None, None)
    if low is None or high is None:
        return f"{entry['value']:.{digits}f}"
    return f"{entry['value']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
