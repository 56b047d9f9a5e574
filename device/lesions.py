"""One lesion seen in up to two orthogonal views: the lesion-level result beside the frames' own.

Koios DS takes up to two orthogonal views of a lesion; so does the exam here (docs/ui.md, "Two views of one
lesion"). Each view keeps its own frame result; the lesion gets one more, combined by :data:`VIEW_RULE`:

* views the quality gate found inconclusive take no part (all inconclusive -> the lesion is inconclusive);
* ``max`` (the rule in use): the lesion's p(malignant) and p(lesion) are its most concerning view's, so a lesion
  is *suspicious* when either view is — a second view can only add concern, never talk a suspicious view down;
* ``mean`` is measured beside it (``python -m model_build two-views``; figures in docs/model.md).

Every view of one lesion must have been judged with the same thresholds (one bundle, one mode).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from device.decision import CATEGORY_LABEL, Category, Decision, categorise
from device.errors import SonopiError

MAX_VIEWS = 2


class LesionError(SonopiError):
    code = "lesion_invalid"


class ViewRule(StrEnum):
    MAX = "max"
    MEAN = "mean"


VIEW_RULE = ViewRule.MAX  # chosen on BUS-BRA's two-view patients (docs/model.md): never less sensitive than one view


@dataclass(frozen=True)
class LesionDecision:
    category: Category
    label: str | None  # None when inconclusive
    p_malignant: float | None
    p_lesion: float | None
    views: int  # the views given
    views_used: int  # the conclusive ones
    views_disagree: bool  # the conclusive views' categories differ: worth a look at both
    rule: ViewRule


def combine(values: Sequence[float], rule: ViewRule) -> float:
    if not values:
        raise LesionError("no view to combine")
    return max(values) if rule is ViewRule.MAX else sum(values) / len(values)


def combine_views(decisions: Sequence[Decision], rule: ViewRule = VIEW_RULE) -> LesionDecision:
    """The lesion-level decision from its views' frame decisions (module docstring)."""
    if not 1 <= len(decisions) <= MAX_VIEWS:
        raise LesionError(f"a lesion has 1 to {MAX_VIEWS} views, got {len(decisions)}")
    thresholds = {(d.malignant_threshold, d.lesion_threshold) for d in decisions}
    if len(thresholds) != 1:
        raise LesionError(f"the views of one lesion were judged with different thresholds {sorted(thresholds)}: "
                          "one lesion, one model and mode")
    used = [d for d in decisions if not d.inconclusive]
    if not used:
        return LesionDecision(Category.INCONCLUSIVE, None, None, None, len(decisions), 0, False, rule)
    p_malignant = combine([d.p_malignant for d in used], rule)
    p_lesion = combine([d.p_lesion for d in used], rule)
    category = categorise(p_malignant, p_lesion, used[0].malignant_threshold, used[0].lesion_threshold)
    disagree = len({d.category for d in used}) > 1
    return LesionDecision(category, CATEGORY_LABEL[category], p_malignant, p_lesion, len(decisions), len(used), disagree, rule)
