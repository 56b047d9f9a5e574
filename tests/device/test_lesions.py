"""Two views of one lesion (device/lesions.py): the lesion-level decision from its views' decisions.

Properties over any two views' probabilities: with the ``max`` rule a lesion is suspicious whenever either view is
(a second view never talks a suspicious view down), its category is never less concerning than its most
concerning view's, and the label follows the category. Inconclusive views take no part; more than two views,
or views judged with different thresholds, are refused. ``model_build two-views`` measures the rule on BUS-BRA's
two-view test patients of the shipped bundle (skipped without the shared datasets).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.decision import CATEGORY_LABEL, CONCERN, Category, decide
from device.lesions import LesionError, ViewRule, combine_views
from device.model.bundle import DecisionSpec, ModeSpec
from model_build.__main__ import main

LABELS = ("normal", "benign", "malignant")
SPEC = DecisionSpec(modes={"balanced": ModeSpec(0.05)}, lesion_threshold=0.35)
OTHER = DecisionSpec(modes={"balanced": ModeSpec(0.2)}, lesion_threshold=0.35)


def view(normal: float, malignant: float, inconclusive: bool = False, spec: DecisionSpec = SPEC):
    probs = {"normal": normal, "benign": max(0.0, 1.0 - normal - malignant), "malignant": malignant}
    return decide(probs, LABELS, spec, "balanced", None, inconclusive)


unit_pair = st.tuples(st.floats(0, 1), st.floats(0, 1)).map(lambda t: (t[0] * (1 - t[1]), t[1]))


@settings(max_examples=300, deadline=None)
@given(unit_pair, unit_pair)
def test_max_rule_is_never_less_concerning_than_either_view(a, b) -> None:
    views = [view(*a), view(*b)]
    lesion = combine_views(views, ViewRule.MAX)
    assert CONCERN[lesion.category] >= max(CONCERN[v.category] for v in views)
    assert (lesion.category is Category.SUSPICIOUS) == any(v.category is Category.SUSPICIOUS for v in views)
    assert lesion.label == CATEGORY_LABEL[lesion.category]
    assert lesion.views_disagree == (views[0].category != views[1].category)


def test_mean_rule_can_talk_a_view_down() -> None:
    views = [view(0.1, 0.08), view(0.1, 0.01)]  # one suspicious (0.08 >= 0.05), one not
    assert combine_views(views, ViewRule.MAX).category is Category.SUSPICIOUS
    assert combine_views(views, ViewRule.MEAN).category is Category.LOW_SUSPICION  # mean 0.045 < 0.05
    assert combine_views(views).rule is ViewRule.MAX  # the rule in use


def test_inconclusive_views_take_no_part() -> None:
    lesion = combine_views([view(0.1, 0.9, inconclusive=True), view(0.9, 0.01)])
    assert lesion.category is Category.NO_LESION and lesion.views == 2 and lesion.views_used == 1
    none = combine_views([view(0.1, 0.9, inconclusive=True)])
    assert none.category is Category.INCONCLUSIVE and none.label is None and none.p_malignant is None


def test_three_views_or_mixed_thresholds_are_refused() -> None:
    with pytest.raises(LesionError, match="1 to 2 views, got 3"):
        combine_views([view(0.5, 0.1)] * 3)
    with pytest.raises(LesionError, match="different thresholds"):
        combine_views([view(0.5, 0.1), view(0.5, 0.1, spec=OTHER)])
    with pytest.raises(LesionError, match="got 0"):
        combine_views([])


def test_two_views_measured_on_bus_bra(shipped_bundle_dir: Path, datasets: Path, capsys) -> None:
    assert (
        main(
            [
                "two-views",
                "--bundle",
                str(shipped_bundle_dir),
                "--data",
                str(datasets / "busi"),
                "--data",
                str(datasets / "bus-bra"),
                "--bootstrap",
                "50",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "bus-bra test lesions with two views" in out
    for row in ("each view alone (per frame)", "lesion, `max` of two views", "lesion, `mean` of two views"):
        assert row in out
