"""Lesions of an exam on the device (device/lesions.py, device/store.py ``lesion_views``): every stored frame starts
as a lesion of its own; ``same_lesion`` makes a frame the second view of an earlier frame's lesion, durably; the
store refuses to combine frames of two exams or two sides (also when a correction put them there) and a third view;
a voided or moved-out frame leaves its lesion and the lesion result is recomputed from what remains; a frame moved
in is a lesion of its own in its new exam; the lesion result is the more concerning view's and never contradicts
its frames (property over any two stored frames); a store written before lesions existed opens and gets one lesion
per result."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device.decision import CONCERN, Category, categorise
from device.lesions import LesionError, combine_records
from device.link.corrections import Place, make_correction
from device.results import Exam
from device.store import ResultStore
from tests.device.test_store import make_record

T_MAL, T_LES = 0.3, 0.35


def frame(exam: str = "E1", side: str = "L", normal: float = 0.1, malignant: float = 0.7, inconclusive: bool = False):
    probs = {"normal": normal, "benign": max(0.0, 1 - normal - malignant), "malignant": malignant}
    category = Category.INCONCLUSIVE if inconclusive else categorise(malignant, 1 - normal, T_MAL, T_LES)
    return make_record(
        exam_id=exam,
        side=side,
        probabilities=probs,
        p_malignant=malignant,
        category=category.value,
        inconclusive=inconclusive,
        mode="balanced",
        thresholds={"malignant": T_MAL},
    )


@pytest.fixture()
def store(tmp_path: Path):
    with ResultStore(tmp_path / "r.sqlite") as s:
        s.add_exam(Exam("E1", "P-001", side="L", clock=10))
        s.add_exam(Exam("E2", "P-002", side="L"))
        s.add_exam(Exam("E3", "P-001", side=None))
        yield s


def _move(result_id: str, exam: str, side: str | None = None):
    return make_correction(
        result_id=result_id, kind="move", reason="wrong_exam", device_id="d", site="s", origin=Place(None, None, None), target=Place(exam, None, side)
    )


def _void(result_id: str):
    return make_correction(result_id=result_id, kind="void", reason="poor_image", device_id="d", site="s", origin=Place(None, None, None))


def test_each_frame_is_a_new_lesion_until_grouped_and_the_grouping_is_durable(store, tmp_path: Path) -> None:
    a = store.add(frame(malignant=0.1, normal=0.2))  # low suspicion
    b = store.add(frame(malignant=0.8))  # suspicious
    assert [len(x.frames) for x in store.lesions("E1")] == [1, 1]
    view = store.same_lesion(b.result_id, a.result_id)
    assert view.lesion == store.lesion_views([a])[a.result_id].lesion
    with ResultStore(tmp_path / "r.sqlite") as reopened:
        (lesion,) = reopened.lesions("E1")
    assert [f.result_id for f in lesion.frames] == [a.result_id, b.result_id]
    assert lesion.decision is not None and lesion.decision.category is Category.SUSPICIOUS  # the more concerning view
    assert lesion.decision.p_malignant == pytest.approx(0.8) and lesion.decision.views_disagree
    assert (lesion.side, lesion.clock) == ("L", None) and lesion.number == 1
    store.new_lesion(b.result_id)  # undone: two lesions again
    assert [len(x.frames) for x in store.lesions("E1")] == [1, 1]


def test_never_two_exams_two_sides_or_three_views(store) -> None:
    a, b, c = store.add(frame()), store.add(frame()), store.add(frame())
    other = store.add(frame(exam="E2"))
    with pytest.raises(LesionError, match="different exams"):
        store.same_lesion(other.result_id, a.result_id)
    store.same_lesion(b.result_id, a.result_id)
    with pytest.raises(LesionError, match="already has 2 views"):
        store.same_lesion(c.result_id, a.result_id)
    with pytest.raises(LesionError, match="itself"):
        store.same_lesion(a.result_id, a.result_id)
    # a both-sides exam: frames of its two sides are never one lesion
    left, right = store.add(frame(exam="E3", side="L")), store.add(frame(exam="E3", side="R"))
    with pytest.raises(LesionError, match="different sides"):
        store.same_lesion(right.result_id, left.result_id)
    # a frame moved to another exam cannot join a lesion of its first exam
    store.add_correction(_move(c.result_id, "E2"))
    store.new_lesion(b.result_id)
    with pytest.raises(LesionError, match="different exams"):
        store.same_lesion(c.result_id, a.result_id)
    assert [len(x.frames) for x in store.lesions("E1")] == [1, 1]  # a, b; c left


def test_a_voided_or_moved_out_frame_leaves_its_lesion(store) -> None:
    a = store.add(frame(malignant=0.8))
    b = store.add(frame(malignant=0.1, normal=0.2))
    store.same_lesion(b.result_id, a.result_id)
    store.add_correction(_void(a.result_id))
    (lesion,) = store.lesions("E1")
    assert [f.result_id for f in lesion.frames] == [b.result_id]
    assert lesion.decision is not None and lesion.decision.category is Category.LOW_SUSPICION  # from what remains
    with pytest.raises(LesionError, match="voided"):
        store.same_lesion(a.result_id, b.result_id)
    store.add_correction(_move(b.result_id, "E2"))
    assert store.lesions("E1") == []
    (moved_in,) = store.lesions("E2")  # moved in: a lesion of its own in its new exam
    assert [f.result_id for f in moved_in.frames] == [b.result_id]
    here = store.add(frame(exam="E2"))
    store.same_lesion(here.result_id, b.result_id)  # and it can be grouped there
    assert [len(x.frames) for x in store.lesions("E2")] == [2]


def test_frames_judged_with_other_thresholds_are_not_combined(store) -> None:
    a = store.add(frame())
    b = store.add(make_record(exam_id="E1", side="L", p_malignant=0.7, category="suspicious", mode="balanced", thresholds={"malignant": 0.5}))
    with pytest.raises(LesionError, match="different thresholds"):
        store.same_lesion(b.result_id, a.result_id)
    old = store.add(make_record(exam_id="E1", side="L"))  # stored before the category rule
    with pytest.raises(LesionError, match="before the category rule"):
        store.same_lesion(old.result_id, a.result_id)


probability = st.floats(0, 1)


@settings(max_examples=300, deadline=None)
@given(st.tuples(probability, probability, st.booleans()), st.tuples(probability, probability, st.booleans()))
def test_the_lesion_result_never_contradicts_its_frames(a, b) -> None:
    views = [frame(normal=n * (1 - m), malignant=m, inconclusive=i) for n, m, i in (a, b)]
    lesion = combine_records(views)
    conclusive = [Category(v.category) for v in views if not v.inconclusive]
    if not conclusive:
        assert lesion.category is Category.INCONCLUSIVE
        return
    assert lesion.category is max(conclusive, key=CONCERN.__getitem__)  # the most concerning view's category
    assert lesion.p_malignant == max(v.p_malignant for v in views if not v.inconclusive)


def test_a_store_from_before_lesions_opens_with_one_lesion_per_result(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with ResultStore(path) as store:
        first, second = store.add(frame()), store.add(frame())
    db = sqlite3.connect(path)  # the schema-2 file an older build wrote: no lesion_views
    db.execute("DROP TABLE lesion_views")
    db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with ResultStore(path) as store:
        assert store.get_meta("schema_version") == "5"  # and 4 (lesion), 5 (close_up) on top
        views = store.lesion_views([first, second])
        assert sorted(v.lesion for v in views.values()) == [1, 2]
        assert [len(x.frames) for x in store.lesions("E1")] == [1, 1]
        store.same_lesion(second.result_id, first.result_id)
        assert [len(x.frames) for x in store.lesions("E1")] == [2]
