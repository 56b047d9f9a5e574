"""A stored result in the card's words, shortened: History and the exam summary say the same thing."""

from __future__ import annotations

from device.decision import Category
from device.results import ResultRecord
from ui import theme
from ui.result_card import COLOURS, lesion_size_short

SHORT = {
    Category.NO_LESION: "No lesion seen",
    Category.LOW_SUSPICION: "Low suspicion",
    Category.SUSPICIOUS: "Suspicious — refer",
    Category.INCONCLUSIVE: "Inconclusive",
}  # the card's words, shortened


def category_text(record: ResultRecord) -> str:
    """The category; a result stored before the category rule shows its label and says so."""
    if record.inconclusive:
        return SHORT[Category.INCONCLUSIVE]
    category = _category(record)
    if category is None:
        return (record.label or record.top_label).capitalize() + " · old rule"
    return SHORT[category]


WHOLE_SCAN = "from the whole scan"  # the clinician's region alone read less (device/close_up.py)


def result_lines(record: ResultRecord) -> str:
    """The category; below it, when the clinician's region alone read less, that the result is the whole scan's
    (device/close_up.py); then the frame's lesion outline when it has one (lesion_size_short)."""
    size = lesion_size_short(record.lesion, None if record.inconclusive else _category(record))
    raised = record.close_up is not None and record.close_up.raised  # the scan decided: conclusive (device/close_up.py)
    return category_text(record) + (f"\n{WHOLE_SCAN}" if raised else "") + (f"\n{size}" if size else "")


def category_colour(record: ResultRecord) -> str:
    if record.inconclusive:
        return theme.WARN
    category = _category(record)
    if category is None:
        return theme.label_colour(record.label)
    return COLOURS[category]


def _category(record: ResultRecord) -> Category | None:
    """The stored category, or None for a result stored before the category rule (none, or not one we know)."""
    try:
        return Category(record.category) if record.category is not None else None
    except ValueError:
        return None
