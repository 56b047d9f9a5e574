"""Corrections on the device: a void or a move is stored append-only (the result row is never overwritten, even
by SQL), its effective placement is derived, bad corrections are clear errors naming the problem, the outbox
columns deliver a correction only after its result is acked, and ``device history`` / ``device correct`` show
and make them (the real CLI in a subprocess)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from device.config import load_config
from device.errors import StoreError
from device.link.corrections import (
    CorrectionError,
    CorrectionKind,
    CorrectionReason,
    Place,
    State,
    make_correction,
)
from device.results import Exam
from device.store import ResultStore
from tests.device.test_store import make_record


def _store(tmp_path: Path) -> ResultStore:
    store = ResultStore(tmp_path / "r.sqlite")
    store.add_exam(Exam("E1", "P-001", side="L"))
    store.add_exam(Exam("E2", "P-002", side=None))
    store.add_exam(Exam("E3", "P-003", side="R"))
    return store


def _void(result_id: str, reason: str = "poor_image", **kw) -> object:
    return make_correction(result_id=result_id, kind="void", reason=reason, device_id="dev-1", site="site-a", origin=Place(None, None, None), **kw)


def _move(result_id: str, exam: str, side: str | None = None, reason: str = "wrong_patient", **kw) -> object:
    return make_correction(
        result_id=result_id,
        kind="move",
        reason=reason,
        device_id="dev-1",
        site="site-a",
        origin=Place(None, None, None),
        target=Place(exam, None, side),
        **kw,
    )


def test_void_is_stored_and_the_result_row_is_unchanged(tmp_path: Path) -> None:
    with _store(tmp_path) as store:
        record = store.add(make_record())
        c = store.add_correction(_void(record.result_id, note="gel artefact"))
        assert c.seq == 1 and c.origin == Place("E1", "P-001", "L") and c.target is None
        assert store.get(record.result_id) == record  # the row itself: as stored
        placement = store.placement(record.result_id)
        assert placement.state is State.VOIDED and placement.place == Place("E1", "P-001", "L")
        assert [x.correction_id for x in placement.corrections] == [c.correction_id]
        assert store.corrections(record.result_id)[0].note == "gel artefact"


def test_move_takes_the_exams_patient_and_then_a_void(tmp_path: Path) -> None:
    with _store(tmp_path) as store:
        record = store.add(make_record())
        moved = store.add_correction(_move(record.result_id, "E2", "R"))
        assert moved.origin == Place("E1", "P-001", "L") and moved.target == Place("E2", "P-002", "R")
        assert store.placement(record.result_id).state is State.MOVED
        again = store.add_correction(_move(record.result_id, "E3", reason="wrong_exam"))  # E3 is side R: taken from it
        assert again.origin == Place("E2", "P-002", "R") and again.target == Place("E3", "P-003", "R")
        store.add_correction(_void(record.result_id, reason="test_scan"))
        placement = store.placement(record.result_id)
        assert placement.state is State.VOIDED and placement.place == Place("E3", "P-003", "R")
        assert [c.kind for c in placement.corrections] == [CorrectionKind.MOVE, CorrectionKind.MOVE, CorrectionKind.VOID]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda rid: _void("00000000-0000-4000-8000-000000000000"), "no result 00000000-0000-4000-8000-000000000000"),
        (lambda rid: _move(rid, "E9", "L"), "there is no exam E9 on this device"),
        (lambda rid: _move(rid, "E1", "L"), "already in exam E1 side L"),
        (lambda rid: _move(rid, "E3", "L"), "exam E3 is side R, not L"),
        (lambda rid: _move(rid, "E2"), "choose the side"),
        (lambda rid: _void(rid, reason="wrong_side"), "'wrong_side' is not a reason to void"),
        (lambda rid: _move(rid, "E2", "L", reason="poor_image"), "'poor_image' is not a reason to move"),
        (lambda rid: _void(rid, reason="other"), "'other' needs a note"),
        (lambda rid: _void(rid, note="x" * 201), "note: longer than 200"),
        (lambda rid: _void(rid, note="line\nbreak"), "note: contains a control character"),
        (lambda rid: _void(rid, by="nurse\u202eevil"), "by: contains a control character"),
    ],
)
def test_bad_corrections_are_clear_errors_and_store_nothing(tmp_path: Path, build, message: str) -> None:
    with _store(tmp_path) as store:
        record = store.add(make_record())
        with pytest.raises(CorrectionError, match=message.replace("(", r"\(")):
            store.add_correction(build(record.result_id))
        assert store.corrections() == [] and store.placement(record.result_id).state is State.VALID


def test_unknown_kind_or_reason_names_the_value() -> None:
    with pytest.raises(CorrectionError, match="correction kind 'erase': must be one of void, move"):
        make_correction(result_id="x", kind="erase", reason="poor_image", device_id="d", site="s", origin=Place(None, None, None))
    with pytest.raises(CorrectionError, match="correction reason 'bored'"):
        make_correction(result_id="x", kind="void", reason="bored", device_id="d", site="s", origin=Place(None, None, None))


def test_second_void_and_move_after_void_are_errors(tmp_path: Path) -> None:
    with _store(tmp_path) as store:
        record = store.add(make_record())
        first = store.add_correction(_void(record.result_id))
        for second in (_void(record.result_id, reason="test_scan"), _move(record.result_id, "E2", "L")):
            with pytest.raises(CorrectionError, match=f"already voided .*correction {first.correction_id}"):
                store.add_correction(second)
        assert len(store.corrections()) == 1


def test_sql_cannot_overwrite_a_result_or_a_correction(tmp_path: Path) -> None:
    with _store(tmp_path) as store:
        record = store.add(make_record())
        c = store.add_correction(_void(record.result_id))
    db = sqlite3.connect(tmp_path / "r.sqlite")
    for sql in (
        "UPDATE results SET patient_ref = 'P-999'",
        "UPDATE results SET exam_id = 'E2'",
        "UPDATE corrections SET reason = 'test_scan'",
        "DELETE FROM corrections",
    ):
        with pytest.raises(sqlite3.IntegrityError, match="never overwritten|append-only"):
            db.execute(sql)
    db.execute("UPDATE results SET delivery = 'sent'")  # the delivery columns still move
    db.commit()
    db.close()
    with ResultStore(tmp_path / "r.sqlite") as store:
        assert store.get(record.result_id).patient_ref == "P-001" and store.corrections()[0].correction_id == c.correction_id


def test_a_correction_is_pending_only_once_its_result_is_acked(tmp_path: Path) -> None:
    with _store(tmp_path) as store:
        a, b = store.add(make_record(0)), store.add(make_record(1))
        ca = store.add_correction(_void(a.result_id))
        cb = store.add_correction(_move(b.result_id, "E2", "R"))
        assert store.pending_corrections() == [] and store.correction_backlog() == 2
        store.mark_acked([b.result_id])
        assert [c.correction_id for c in store.pending_corrections()] == [cb.correction_id]
        store.mark_acked([a.result_id])
        assert [c.correction_id for c in store.pending_corrections()] == [ca.correction_id, cb.correction_id]
        store.mark_corrections_sent([ca.correction_id])
        assert store.corrections(a.result_id)[0].delivery == "sent"
        assert store.mark_corrections_acked([ca.correction_id, "unknown"]) == 1
        assert store.mark_corrections_rejected([(cb.correction_id, "unknown_result", "the hub has no such result")]) == 1
        assert store.pending_corrections() == [] and store.correction_backlog() == 0
        assert store.corrections(b.result_id)[0].delivery == "rejected: unknown_result"
        assert store.corrections(a.result_id)[0].delivery == "acked"


def test_a_full_disk_keeps_the_correction_out(tmp_path: Path) -> None:
    """A failed write is a StoreError and leaves no half correction (the store's transaction rolls back)."""
    with _store(tmp_path) as store:
        record = store.add(make_record())
        store._db.execute("PRAGMA max_page_count = 1")  # what SQLite does on a full disk: SQLITE_FULL on the next page
        with pytest.raises(StoreError, match="write failed"):
            for _ in range(200):
                store.add_correction(_move(record.result_id, "E2", "R" if len(store.corrections()) % 2 == 0 else "L", note="n" * 190))
        count = len(store.corrections())
    with ResultStore(tmp_path / "r.sqlite") as reopened:
        assert len(reopened.corrections()) == count and reopened.integrity_ok()


def _device(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "device", *args], capture_output=True, text=True, timeout=120)


def test_cli_correct_and_history(tmp_path: Path) -> None:
    config = tmp_path / "device.toml"
    config.write_text(f'[device]\nid = "dev-1"\nsite = "site-a"\ndata_dir = "{tmp_path / "data"}"\n')
    with ResultStore(load_config(config).store_path) as store:
        store.add_exam(Exam("E1", "P-001", side="L"))
        store.add_exam(Exam("E2", "P-002", side="R"))
        a, b = store.add(make_record(0)), store.add(make_record(1))
    moved = _device("correct", "--config", str(config), b.result_id, "--move-to", "E2", "--reason", "wrong_patient", "--by", "dr-k")
    assert moved.returncode == 0, moved.stderr
    assert "moved P-001 L (exam E1) -> P-002 R (exam E2) (Wrong patient)" in moved.stdout
    voided = _device("correct", "--config", str(config), a.result_id, "--void", "--reason", "test_scan")
    assert voided.returncode == 0, voided.stderr
    twice = _device("correct", "--config", str(config), a.result_id, "--void", "--reason", "poor_image")
    assert twice.returncode == 1 and f"result {a.result_id} was already voided" in twice.stderr
    unknown = _device("correct", "--config", str(config), "nope", "--void", "--reason", "poor_image")
    assert unknown.returncode == 1 and "no result nope on this device" in unknown.stderr
    text = _device("history", "--config", str(config)).stdout
    assert "VOIDED" in text and "MOVED to P-002 R (exam E2)" in text and "by dr-k [stored]" in text
    rows = {r["result_id"]: r for r in map(json.loads, _device("history", "--config", str(config), "--json").stdout.splitlines())}
    assert rows[a.result_id]["state"] == "voided" and rows[a.result_id]["patient_ref"] == "P-001"
    assert rows[b.result_id]["state"] == "moved" and rows[b.result_id]["effective"] == {"exam_id": "E2", "patient_ref": "P-002", "side": "R"}
    assert rows[b.result_id]["corrections"][0]["reason"] == CorrectionReason.WRONG_PATIENT.value


def test_history_by_patient_finds_a_result_moved_to_that_patient(tmp_path: Path) -> None:
    with _store(tmp_path) as store:
        moved, stays = store.add(make_record(0)), store.add(make_record(1))
        store.add_correction(_move(moved.result_id, "E2", "R"))
        assert [r.result_id for r in store.history(patient_ref="P-002")] == [moved.result_id]
        assert {r.result_id for r in store.history(patient_ref="P-001")} == {moved.result_id, stays.result_id}
        assert store.placements(store.history(patient_ref="P-002"))[moved.result_id].place.patient_ref == "P-002"
