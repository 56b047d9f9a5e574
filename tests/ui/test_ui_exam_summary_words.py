"""The exam summary names each frame's result in the card's (and History's) words, not by its bare label.

Proves that a result whose probabilities make it 'Suspicious — refer' is listed so in the exam summary (before,
it said 'Malignant' beside a p(malignant) of a few per cent), that an older result without a category says
'old rule', and that an inconclusive one says so.
"""

from __future__ import annotations

from device.results import ResultRecord
from ui.exam import result_text


def _record(**kw) -> ResultRecord:
    base = dict(
        result_id="r1",
        created_at="2026-12-01T12:00:00Z",
        device_id="d",
        site="s",
        model_name="m",
        model_version="1",
        model_sha256="0" * 64,
        probabilities={"normal": 0.6, "benign": 0.36, "malignant": 0.04},
        label="malignant",
        inconclusive=False,
    )
    return ResultRecord(**{**base, **kw})


def test_summary_uses_the_category_words() -> None:
    assert result_text(_record(category="suspicious", p_malignant=0.04, mode="balanced")) == "Suspicious — refer"
    assert result_text(_record(category="no_lesion", label="normal", p_malignant=0.04)) == "No lesion seen"


def test_old_and_inconclusive_results() -> None:
    assert result_text(_record()) == "Malignant · old rule"
    assert result_text(_record(inconclusive=True, label=None, category="inconclusive")) == "Inconclusive"
