"""``python -m hub results`` and ``hub export`` (real processes on a real SQLite hub database) say what the
clinician corrected: a voided result is marked VOIDED, a moved one MOVED with where to, in the listing, the JSON
lines and the CSV (``state`` and the effective exam, patient and side); an uncorrected result stays ``valid``
with its own place."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from device.link.contract import CorrectionMessage, ResultMessage
from device.link.corrections import CorrectionKind, CorrectionReason, Place, new_correction_id
from device.link.uplink.outbox import message_from_record
from hub.store import HubStore
from tests.device.link.test_uplink import make_record


def _result(seq: int) -> ResultMessage:
    record = replace(make_record("site-a", "dev-1", seq), seq=seq, exam_id="E1", patient_ref="P-100", side="L")
    return message_from_record(record, historical=False, prev_result_id=None)


def _correction(result: ResultMessage, kind: CorrectionKind, seq: int, target: Place | None = None) -> CorrectionMessage:
    return CorrectionMessage(
        correction_id=new_correction_id(),
        seq=seq,
        result_id=result.result_id,
        device_id="dev-1",
        site="site-a",
        created_at="2026-12-01T10:00:00.000Z",
        kind=kind,
        reason=CorrectionReason.POOR_IMAGE if kind is CorrectionKind.VOID else CorrectionReason.WRONG_PATIENT,
        origin=Place("E1", "P-100", "L"),
        target=target,
    )


def _hub(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "hub", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_results_and_export_show_voided_and_moved(tmp_path: Path) -> None:
    db = tmp_path / "hub.sqlite"
    kept, voided, moved = _result(1), _result(2), _result(3)
    with HubStore.open(str(db)) as store:
        store.add_results([kept, voided, moved])
        assert store.add_correction(_correction(voided, CorrectionKind.VOID, 1))
        assert store.add_correction(_correction(moved, CorrectionKind.MOVE, 2, Place("E9", "P-900", "R")))

    listing = _hub("results", "--db", str(db))
    lines = {line.split()[2]: line for line in listing.splitlines()[1:]}  # by seq
    assert "VOIDED" in lines["2"] and "MOVED to P-900 R (exam E9)" in lines["3"] and "[" not in lines["1"]

    rows = {json.loads(line)["seq"]: json.loads(line) for line in _hub("results", "--db", str(db), "--json").splitlines()}
    assert rows[1]["state"] == "valid" and rows[1]["effective_patient_ref"] == "P-100"
    assert rows[2]["state"] == "voided"
    assert (rows[3]["state"], rows[3]["effective_exam_id"], rows[3]["effective_patient_ref"], rows[3]["effective_side"]) == (
        "moved",
        "E9",
        "P-900",
        "R",
    )
    assert rows[3]["patient_ref"] == "P-100"  # the stored result itself is never rewritten

    exported = {int(r["seq"]): r for r in csv.DictReader(io.StringIO(_hub("export", "--db", str(db), "--csv")))}
    assert [exported[s]["state"] for s in (1, 2, 3)] == ["valid", "voided", "moved"]
    assert exported[3]["effective_patient_ref"] == "P-900" and exported[3]["patient_ref"] == "P-100"
    json_export = [json.loads(line) for line in _hub("export", "--db", str(db), "--json").splitlines()]
    assert {r["seq"]: r["state"] for r in json_export} == {1: "valid", 2: "voided", 3: "moved"}
