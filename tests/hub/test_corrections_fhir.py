"""FHIR of corrected results (the console's POST exports, a real app on SQLite through the ASGI client): a voided
result's DiagnosticReport has status entered-in-error and says so; a moved one names the patient, side and exam it
belongs to now, with the corrections as an extension; an exam's report leaves out its voided and moved-out frames and
takes in the result moved into it; an exam none of whose frames counts any more is a 404, not a report."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from device.link.contract import CorrectionMessage
from device.link.corrections import CorrectionKind, CorrectionReason, Place, new_correction_id
from hub.store import HubStore
from hub.web.accounts import Accounts
from hub.web.app import create_app
from hub.web.config import WebConfig
from hub.web.db import WebDb
from tests.device.link.test_contract_v2 import v2_message


def _correction(result, kind: str, target: Place | None = None, seq: int = 1) -> CorrectionMessage:  # type: ignore[no-untyped-def]
    return CorrectionMessage(
        correction_id=new_correction_id(),
        seq=seq,
        result_id=result.result_id,
        device_id=result.device_id,
        site=result.site,
        created_at="2026-12-01T10:00:00.000Z",
        kind=CorrectionKind(kind),
        reason=CorrectionReason.POOR_IMAGE if kind == "void" else CorrectionReason.WRONG_PATIENT,
        origin=Place(result.exam_id, result.patient_ref, result.side),
        target=target,
    )


def test_fhir_reports_follow_the_corrections(tmp_path: Path) -> None:
    target = str(tmp_path / "hub.sqlite")
    a1, a2, a3 = (replace(v2_message(i), exam_id="EX-A", patient_ref="PT-A", side="L") for i in (1, 2, 3))
    b1 = replace(v2_message(4), exam_id="EX-B", patient_ref="PT-B", side="R")
    c1 = replace(v2_message(5), exam_id="EX-C", patient_ref="PT-C", side="L")
    with HubStore.open(target) as store:
        for m in (a1, a2, a3, b1, c1):
            store.add_result(m)
        store.add_correction(_correction(a1, "void"))
        store.add_correction(_correction(a2, "move", Place("EX-B", "PT-B", "R"), seq=2))
        store.add_correction(_correction(c1, "void", seq=3))
    db = WebDb.open(target)
    Accounts(db).add_user("olga", "correct horse battery", "operator")
    db.close()
    app = create_app(WebConfig(db=target))
    try:
        client = TestClient(app, base_url="https://console.test", follow_redirects=False)
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
        assert client.post("/login", data={"username": "olga", "password": "correct horse battery", "csrf_token": token}).status_code == 303

        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/inbox").text).group(1)  # the session's

        def export(path: str):  # type: ignore[no-untyped-def]
            return client.post(path, data={"csrf_token": token})

        voided = export(f"/results/{a1.result_id}/fhir.json").json()
        assert voided["status"] == "entered-in-error" and voided["conclusion"].startswith("Voided on the device")
        moved = export(f"/results/{a2.result_id}/fhir.json").json()
        assert moved["status"] == "preliminary" and moved["subject"]["identifier"]["value"] == "PT-B"
        assert "EX-B" in [i["value"] for i in moved["identifier"]] and "EX-A" not in json.dumps(moved["identifier"])
        trail = next(e for e in moved["extension"] if e["url"].endswith(":corrections"))["valueString"]
        assert "moved PT-A L (exam EX-A) -> PT-B R (exam EX-B)" in trail
        plain = export(f"/results/{a3.result_id}/fhir.json").json()
        assert plain["subject"]["identifier"]["value"] == "PT-A" and not any(e["url"].endswith(":corrections") for e in plain["extension"])

        exam_a = export("/exams/EX-A/fhir.json").json()
        assert exam_a["extension"][0]["valueInteger"] == 1 and exam_a["subject"]["identifier"]["value"] == "PT-A"
        exam_b = export("/exams/EX-B/fhir.json").json()
        assert exam_b["extension"][0]["valueInteger"] == 2 and exam_b["subject"]["identifier"]["value"] == "PT-B"
        gone = export("/exams/EX-C/fhir.json")
        assert gone.status_code == 404 and "voided or moved" in gone.text
        assert json.dumps(exam_b).count("PT-A") == 0  # the moved frame is reported under its new patient only
    finally:
        app.state.services.close()
