"""The decision rule: from calibrated probabilities to a category a clinician acts on (no Qt, no numpy).

Two questions, asked separately:

1. *Is there a lesion?*  ``p_lesion = 1 - p(normal)`` against the bundle's ``lesion_threshold``.
2. *How suspicious is it?*  ``p_malignant`` (the calibrated softmax probability of ``malignant``) against the
   operating mode's ``malignant_threshold`` (or a site's lower one).

Categories, in order of concern: ``no_lesion`` < ``low_suspicion`` < ``suspicious``; ``inconclusive`` when the
quality gate objected. The label is derived from the category (``no_lesion`` -> normal, ``low_suspicion`` ->
benign, ``suspicious`` -> malignant), so it can never contradict ``p_malignant`` and the threshold.
The bundle's side of it (``decision`` in manifest format 3) is :class:`device.model.bundle.DecisionSpec`;
docs/model-bundle.md documents both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from device.errors import ConfigError

if TYPE_CHECKING:  # device.model.bundle imports this module for the enums
    from device.model.bundle import DecisionSpec

MALIGNANT = "malignant"
NORMAL = "normal"
IMPLICIT_LESION_THRESHOLD = 0.5  # bundles without a decision block (formats 1, 2): documented, not validated
IMPLICIT_MALIGNANT_THRESHOLD = 0.5  # an old bundle with no thresholds.malignant at all


class Category(StrEnum):
    NO_LESION = "no_lesion"
    LOW_SUSPICION = "low_suspicion"
    SUSPICIOUS = "suspicious"
    INCONCLUSIVE = "inconclusive"


class Mode(StrEnum):
    """Operating modes, most sensitive first; their malignant thresholds are ordered the same way."""

    HIGH_SENSITIVITY = "high_sensitivity"
    BALANCED = "balanced"
    HIGH_SPECIFICITY = "high_specificity"


MODE_ORDER: tuple[Mode, ...] = (Mode.HIGH_SENSITIVITY, Mode.BALANCED, Mode.HIGH_SPECIFICITY)
DEFAULT_MODE = Mode.BALANCED
CATEGORY_LABEL: dict[Category, str] = {
    Category.NO_LESION: NORMAL,
    Category.LOW_SUSPICION: "benign",
    Category.SUSPICIOUS: MALIGNANT,
}
CONCERN: dict[Category, int] = {Category.NO_LESION: 0, Category.LOW_SUSPICION: 1, Category.SUSPICIOUS: 2}


@dataclass(frozen=True)
class Decision:
    """What the rule made of one frame. ``label`` is the rule's label even when the quality gate objected
    (``category`` is then ``inconclusive``); the store and the UI withhold it in that case."""

    category: Category
    label: str  # normal | benign | malignant, derived from the category the probabilities give
    p_malignant: float
    p_lesion: float
    mode: Mode
    malignant_threshold: float  # the one applied: the mode's, or a site's lower one
    lesion_threshold: float
    spec: DecisionSpec | None = field(default=None, compare=False, repr=False)  # where the mode's figures are

    @property
    def inconclusive(self) -> bool:
        return self.category is Category.INCONCLUSIVE

    @property
    def site_threshold(self) -> bool:
        """The applied threshold is a site's, lower than the one the mode was validated with."""
        return self.spec is not None and self.malignant_threshold < self.spec.mode(self.mode).malignant_threshold


def parse_mode(value: str, where: str = "mode") -> Mode:
    try:
        return Mode(value)
    except ValueError:
        raise ConfigError(f"{where} = {value!r} is not an operating mode (one of {', '.join(MODE_ORDER)})") from None


def applied_threshold(spec: DecisionSpec, mode: Mode | str, site_malignant_threshold: float | None, model: str = "the model") -> float:
    """The malignant threshold used in ``mode``: the mode's, or a site's when it is lower (more sensitive).
    A site threshold above the mode's is refused: it would give away sensitivity the mode was validated for."""
    chosen = spec.mode(mode, model)
    threshold = chosen.malignant_threshold
    if site_malignant_threshold is None:
        return threshold
    if site_malignant_threshold > threshold:
        raise ConfigError(
            f"[model] malignant_threshold = {site_malignant_threshold} is above the threshold {model} was validated with "
            f"({threshold:.4f}) in {Mode(mode).value} mode; a site may only lower it (more sensitive), never raise it"
        )
    return site_malignant_threshold


def _as_mapping(probabilities: Mapping[str, float] | Sequence[float], labels: Sequence[str]) -> Mapping[str, float]:
    if isinstance(probabilities, Mapping):
        return probabilities
    if len(probabilities) != len(labels):
        raise ValueError(f"{len(probabilities)} probabilities for {len(labels)} labels")
    return {name: float(p) for name, p in zip(labels, probabilities)}


def categorise(p_malignant: float, p_lesion: float, malignant_threshold: float, lesion_threshold: float) -> Category:
    """The rule without the quality gate: suspicious, else a lesion seen, else none."""
    if p_malignant >= malignant_threshold:
        return Category.SUSPICIOUS
    if p_lesion >= lesion_threshold:
        return Category.LOW_SUSPICION
    return Category.NO_LESION


def decide(
    probabilities: Mapping[str, float] | Sequence[float],
    labels: Sequence[str],
    decision_spec: DecisionSpec,
    mode: Mode | str,
    site_malignant_threshold: float | None,
    inconclusive: bool,
) -> Decision:
    """Apply the rule (module docstring) to one frame's calibrated probabilities."""
    probs = _as_mapping(probabilities, labels)
    p_malignant = float(probs.get(MALIGNANT, 0.0))
    p_lesion = 1.0 - float(probs.get(NORMAL, 0.0))  # a model without a normal class sees a lesion everywhere
    threshold = applied_threshold(decision_spec, mode, site_malignant_threshold)
    category = categorise(p_malignant, p_lesion, threshold, decision_spec.lesion_threshold)
    return Decision(
        category=Category.INCONCLUSIVE if inconclusive else category,
        label=CATEGORY_LABEL[category],
        p_malignant=p_malignant,
        p_lesion=p_lesion,
        mode=Mode(mode),
        malignant_threshold=threshold,
        lesion_threshold=decision_spec.lesion_threshold,
        spec=decision_spec,
    )
