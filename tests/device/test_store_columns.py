"""The result store's column lists come from ResultRecord: every field is a column of the results table (same name),
a record with every field set comes back equal, the CSV export carries every field but the thumbnail, and the
delivery states read back are the Delivery values (a file's stored text, unchanged)."""

from __future__ import annotations

import csv
import io
import sqlite3
from dataclasses import fields
from pathlib import Path

from device.close_up import CloseUpCheck, Reading, View
from device.decision import Category
from device.lesion_record import LesionRecord
from device.link.delivery import Delivery
from device.results import ResultRecord
from device.store import EXPORT_FIELDS, RESULT_FIELDS, ResultStore
from tests.device.test_store import make_record
from tests.device.test_store_lesion import OUTLINE


def _table_columns(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        return {row[1] for row in db.execute("PRAGMA table_info(results)")}


def test_every_record_field_is_a_column(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "r.sqlite"):
        pass
    assert RESULT_FIELDS == tuple(f.name for f in fields(ResultRecord))
    assert set(RESULT_FIELDS) <= _table_columns(tmp_path / "r.sqlite")


def test_a_record_with_every_field_set_comes_back_equal(tmp_path: Path) -> None:
    record = make_record(
        reasons=("low_confidence",),
        inconclusive=True,
        label=None,
        roi=(5, 6, 7, 8),
        category="inconclusive",
        p_malignant=0.7,
        mode="balanced",
        clock=3,
        age=54,
        lesion=LesionRecord.from_json(OUTLINE),
        close_up=CloseUpCheck(View.CLOSE_UP, Reading(Category.INCONCLUSIVE, 0.7), Reading(Category.LOW_SUSPICION, 0.05)),
    )
    unset = [f.name for f in fields(ResultRecord) if getattr(record, f.name) in (None, (), {}) and f.name not in ("seq", "label")]
    assert unset == [], f"the round trip would not cover {unset}"
    with ResultStore(tmp_path / "r.sqlite") as store:
        stored = store.add(record)
        assert stored.seq == 1 and stored.delivery == Delivery.STORED
        assert store.get(record.result_id) == stored
        store.mark_sent([record.result_id])
        assert store.get(record.result_id).delivery == Delivery.SENT == "sent"


def test_the_csv_export_has_every_field_but_the_thumbnail(tmp_path: Path) -> None:
    assert set(EXPORT_FIELDS) == set(RESULT_FIELDS) - {"thumbnail"}
    with ResultStore(tmp_path / "r.sqlite") as store:
        store.add(make_record(clock=2, age=40))
        out = io.StringIO()
        store.export_csv(out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert tuple(rows[0]) == EXPORT_FIELDS and rows[0]["clock"] == "2" and rows[0]["delivery"] == "stored"
