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

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from device.decision import (
    CATEGORY_LABEL,
    DEFAULT_MODE,
    IMPLICIT_LESION_THRESHOLD,
    Category,
    Decision,
    Mode,
    categorise,
)
from device.errors import SonopiError
from device.link.corrections import Placement
from device.results import ResultRecord

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
        raise LesionError(f"the views of one lesion were judged with different thresholds {sorted(thresholds)}: one lesion, one model and mode")
    used = [d for d in decisions if not d.inconclusive]
    if not used:
        return LesionDecision(Category.INCONCLUSIVE, None, None, None, len(decisions), 0, False, rule)
    p_malignant = combine([d.p_malignant for d in used], rule)
    p_lesion = combine([d.p_lesion for d in used], rule)
    category = categorise(p_malignant, p_lesion, used[0].malignant_threshold, used[0].lesion_threshold)
    disagree = len({d.category for d in used}) > 1
    return LesionDecision(category, CATEGORY_LABEL[category], p_malignant, p_lesion, len(decisions), len(used), disagree, rule)


# --- the lesions of an exam: stored frames grouped by the clinician --------------------------------------------
#
# The store keeps one lesion number per result within its exam (``device/store.py``, table ``lesion_views``): every
# stored frame starts as a new lesion; the clinician may make it the second view of an earlier frame's lesion. The
# rules, enforced by the store when grouping and again here when the lesions are read back:
#
# * a lesion's frames are all in one exam and on one side (its effective placement: a frame voided, moved to another
#   exam or to the other side leaves its lesion, and the lesion result is recomputed from what remains);
# * at most MAX_VIEWS frames per lesion;
# * the lesion's side and clock position are its frames' (the exam's).


@dataclass(frozen=True)
class LesionView:
    """The stored grouping of one result: lesion number ``lesion`` of exam ``exam_id``."""

    result_id: str
    exam_id: str
    lesion: int


@dataclass(frozen=True)
class Lesion:
    """One lesion of an exam as shown: its frames (oldest first) and the lesion-level result beside theirs."""

    number: int  # 1, 2, ... in the order of the lesions' first frames (as the summary lists them)
    side: str | None
    clock: int | None
    frames: tuple[ResultRecord, ...]
    decision: LesionDecision | None  # None: the frames cannot be combined (``problem`` says why)
    problem: str | None = None


def record_decision(record: ResultRecord, lesion_threshold: float) -> Decision:
    """A stored frame's decision as the rule made it: its category, p(malignant), p(lesion) = 1 - p(normal) and the
    applied malignant threshold (all stored with the result), with ``lesion_threshold`` (not stored)."""
    if record.category is None or record.p_malignant is None or "malignant" not in record.thresholds:
        raise LesionError(f"result {record.result_id} was stored before the category rule: it has no category to combine")
    category = Category(record.category)
    p_lesion = 1.0 - float(record.probabilities.get("normal", 0.0))
    return Decision(
        category=category,
        label=record.label or CATEGORY_LABEL.get(category, "") or "",
        p_malignant=float(record.p_malignant),
        p_lesion=p_lesion,
        mode=Mode(record.mode or DEFAULT_MODE),
        malignant_threshold=float(record.thresholds["malignant"]),
        lesion_threshold=lesion_threshold,
    )


def implied_lesion_threshold(records: Sequence[ResultRecord]) -> float:
    """A lesion threshold under which every conclusive record's stored category is what the rule gives.

    A result keeps the malignant threshold it was judged with but not the lesion threshold; with the ``max`` rule any
    threshold consistent with the views' own categories gives the same lesion category (the most concerning view's),
    so the lesion result can never contradict its frames. Raises :class:`LesionError` when no threshold reproduces
    the stored categories (the frames were judged by different rules)."""
    below = [1.0 - r.probabilities.get("normal", 0.0) for r in records if r.category == Category.NO_LESION]
    at_or_above = [1.0 - r.probabilities.get("normal", 0.0) for r in records if r.category == Category.LOW_SUSPICION]
    low = max(below, default=None)
    high = min(at_or_above, default=None)
    if high is not None:
        threshold = high
    elif low is not None:
        threshold = math.nextafter(low, math.inf)
    else:
        threshold = IMPLICIT_LESION_THRESHOLD
    if low is not None and not low < threshold:
        raise LesionError("the views' categories contradict one lesion threshold: they were judged by different rules")
    return threshold


def combine_records(records: Sequence[ResultRecord], rule: ViewRule = VIEW_RULE) -> LesionDecision:
    """:func:`combine_views` of stored frames (:func:`record_decision`); each conclusive view's stored category must
    be what its probabilities and threshold give (else :class:`LesionError`)."""
    threshold = implied_lesion_threshold(records)
    decisions = [record_decision(r, threshold) for r in records]
    for record, d in zip(records, decisions):
        if not d.inconclusive and categorise(d.p_malignant, d.p_lesion, d.malignant_threshold, threshold) is not d.category:
            raise LesionError(
                f"result {record.result_id}: its stored category {d.category.value} is not what its "
                "p(malignant) and threshold give; it cannot be combined"
            )
    return combine_views(decisions, rule)


def lesion_key(record: ResultRecord, placement: Placement | None, view: LesionView | None, exam_id: str) -> tuple[str, int, str | None] | None:
    """Which lesion of exam ``exam_id`` a frame is grouped in — (exam, number, side) — or None when it does not count
    in this exam (voided, moved out). A frame whose grouping is of another exam (moved in) is a lesion of its own."""
    place_exam, side = record.exam_id, record.side
    if placement is not None:
        if placement.voided:
            return None
        place_exam, side = placement.place.exam_id, placement.place.side
    if place_exam != exam_id:
        return None
    if view is None or view.exam_id != exam_id:
        return (f"alone:{record.result_id}", 0, side)
    return (exam_id, view.lesion, side)


def group_lesions(
    records: Sequence[ResultRecord], placements: Mapping[str, Placement], views: Mapping[str, LesionView], exam_id: str, rule: ViewRule = VIEW_RULE
) -> list[Lesion]:
    """The lesions of exam ``exam_id`` from its frames (oldest first): only frames that count in it, grouped by their
    stored lesion number and side, at most MAX_VIEWS each (a further frame becomes a lesion of its own), numbered in
    the order of their first frame, each with its combined result."""
    groups: dict[tuple[str, int, str | None], list[ResultRecord]] = {}
    for record in records:
        key = lesion_key(record, placements.get(record.result_id), views.get(record.result_id), exam_id)
        if key is None:
            continue
        if len(groups.get(key, ())) >= MAX_VIEWS:
            key = (f"alone:{record.result_id}", 0, key[2])
        groups.setdefault(key, []).append(record)
    lesions = []
    for number, ((_, _, side), frames) in enumerate(groups.items(), start=1):
        try:
            decision, problem = combine_records(frames, rule), None
        except LesionError as exc:
            decision, problem = None, str(exc)
        lesions.append(Lesion(number, side, frames[0].clock, tuple(frames), decision, problem))
    return lesions


def check_same_lesion(
    frame: ResultRecord, frame_place: Placement | None, first: ResultRecord, first_place: Placement | None, views_of_lesion: int
) -> None:
    """Whether ``frame`` may become the second view of ``first``'s lesion: both count in one exam, on one side, the
    lesion has room (``views_of_lesion``: its frames that count, ``frame`` not among them), and the two can be
    combined. Raises :class:`LesionError` naming the problem."""
    if frame.result_id == first.result_id:
        raise LesionError(f"result {frame.result_id} cannot be a second view of itself")
    where = []
    for record, placement in ((frame, frame_place), (first, first_place)):
        if placement is not None and placement.voided:
            raise LesionError(f"result {record.result_id} was voided: it is no view of a lesion")
        place = placement.place if placement is not None else None
        where.append((place.exam_id if place else record.exam_id, place.side if place else record.side))
    (exam_a, side_a), (exam_b, side_b) = where
    if exam_a is None or exam_a != exam_b:
        raise LesionError(
            f"results {frame.result_id} and {first.result_id} are in different exams ({exam_a}, {exam_b}): a lesion is seen within one exam"
        )
    if side_a != side_b:
        raise LesionError(f"results {frame.result_id} and {first.result_id} are on different sides ({side_a}, {side_b}): one lesion is on one side")
    if views_of_lesion >= MAX_VIEWS:
        raise LesionError(f"the lesion of result {first.result_id} already has {MAX_VIEWS} views")
    combine_records([first, frame])
