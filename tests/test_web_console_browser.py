"""The rest of issue 18 in a real headless Chromium (Debian's /usr/bin/chromium via Playwright) against the
real processes on SQLite and on PostgreSQL (the rig of tests/test_web_queue_browser.py: a device's store ->
`python -m device uplink` -> Mosquitto -> `python -m hub serve` -> hub database -> `python -m hub web`).

It proves that, in the browser:
- an operator assigns a result to himself, an exam to a named colleague, and unassigns; the assignee is
  shown in the queue, "assigned to me" filters the inbox, each change is in the audit trail, and a viewer
  account cannot be chosen;
- a v2 result the device delivers with clock position and age: the result page shows them and says honestly
  that the thumbnail is the analysed region and the message carries no ROI coordinates; the exam's FHIR report
  (a button, one DiagnosticReport for every frame, valid R4B) and the CSV carry clock and age;
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("playwright.sync_api", reason="playwright (Python package) not installed")

from hub.web.accounts import Accounts
from hub.web.db import WebDb
from tests.mqtt_broker import postgres_server  # noqa: F401  (fixture)
from tests.test_web_queue_browser import (  # noqa: F401  (browser, rig, target: fixtures)
    DESKTOP,
    PASSWORD,
    Rig,
    browser,
    new_page,
    record,
    rig,
    row_ids,
    shot,
    sign_in,
    target,
)

pytestmark = pytest.mark.timeout(300)


def add_user(target: str, name: str, role: str) -> None:
    db = WebDb.open(target)
    try:
        Accounts(db).add_user(name, PASSWORD, role)
    finally:
        db.close()


def audit_rows(page) -> list[str]:
    return page.locator("#audit tbody tr").all_inner_texts()


def test_operator_assigns_results_and_exams(rig: Rig, browser, target: str, tmp_path: Path) -> None:
    e = rig.examples
    add_user(target, "pavel", "operator")
    add_user(target, "vera", "viewer")
    page = new_page(browser, DESKTOP)
    sign_in(page, rig)

    # A result: assign to me; the queue shows it, "assigned to me" filters to it.
    page.goto(f"{rig.url}/results/{e.escalated}")
    assert page.inner_text("#assignee") == "nobody"
    assert "vera" not in page.locator("#assign-to option").all_inner_texts()  # a viewer cannot review
    page.click("#assign-me")
    page.wait_for_selector("#assignee:text('olga')")
    assert any("assign" in r and "to olga" in r for r in audit_rows(page))
    page.goto(f"{rig.url}/inbox?assigned=me")
    assert row_ids(page) == [e.escalated]
    assert page.locator("#results .tag.assignee.mine").inner_text() == "→ olga"
    page.goto(f"{rig.url}/inbox")
    page.select_option("select[name=assigned]", "me")
    page.click("form.filters button[type=submit]:text('Filter')")
    page.wait_for_url("**/inbox?*assigned=me*")
    assert row_ids(page) == [e.escalated]

    # An exam: assign every frame to a named colleague; each frame says so, and olga's filter no longer has them.
    page.goto(f"{rig.url}/exams/{e.exam_with_patient}")
    page.select_option("#assign-to", "pavel")
    page.click("#assign-named")
    page.wait_for_selector("#assignee:text('pavel')")
    assert page.locator("#results .tag.assignee").all_inner_texts() == ["→ pavel"] * 3
    assert sum("to pavel (exam, 3 frame(s))" in r for r in audit_rows(page)) == 3
    shot(page, "exam-assigned-1366", target)
    page.goto(f"{rig.url}/inbox")
    row = page.locator(f'#results tr:has(a[href^="/results/{e.suspicious}"])')
    assert "→ pavel" in row.inner_text()
    shot(page, "inbox-assigned-1366", target)

    # Taking one frame over from pavel, then unassigning it: the audit trail says who had it.
    page.goto(f"{rig.url}/results/{e.suspicious}")
    page.click("#assign-me")
    page.wait_for_selector("#assignee:text('olga')")
    assert any("to olga (was pavel)" in r for r in audit_rows(page))
    page.click("#unassign")
    page.wait_for_selector("#assignee:text('nobody')")
    assert any("unassign" in r and "was olga" in r for r in audit_rows(page))
    page.goto(f"{rig.url}/inbox?assigned=me")
    assert row_ids(page) == [e.escalated]

    # Bulk: tick two rows in the inbox and take them.
    page.goto(f"{rig.url}/inbox?assigned=nobody")
    picked = row_ids(page)[:2]
    for rid in picked:
        page.check(f'input[value="{rid}"]')
    page.click("#bulk-assign-me")
    page.wait_for_url("**/inbox*")
    page.goto(f"{rig.url}/inbox?assigned=me")
    assert set(row_ids(page)) == {e.escalated, *picked}


def test_result_and_exam_exports_carry_clock_and_age(rig: Rig, browser, target: str) -> None:
    fhir = pytest.importorskip("fhir.resources.R4B.diagnosticreport", reason="fhir.resources not installed")
    exam_id = str(uuid.uuid4())
    frames = [replace(record(p, patient="PT-CLOCK-1"), exam_id=exam_id, side="R", clock=10, age=54,
                      category="suspicious" if p >= 0.35 else "low_suspicion", p_malignant=p, mode="balanced")
              for p in (0.71, 0.22)]
    for frame in frames:
        rig.device_store.add(frame)
    page = new_page(browser, DESKTOP)
    sign_in(page, rig)
    page.wait_for_selector(f'#results a[href^="/results/{frames[1].result_id}"]')

    page.goto(f"{rig.url}/results/{frames[0].result_id}")
    assert page.inner_text("#clock") == "10 o'clock" and page.inner_text("#age") == "54 years"
    note = page.inner_text("#roi-note")
    assert "region of interest" in note and "carries neither the region's coordinates" in note
    assert page.locator("#frames li").count() == 2

    page.click("#exam-link")
    page.wait_for_url(f"**/exams/{exam_id}")
    with page.expect_download() as download:
        page.click("#fhir-exam")
    report = json.loads(Path(download.value.path()).read_text())
    parsed = fhir.DiagnosticReport.model_validate(report)
    assert len(parsed.contained) == 2 and report["identifier"][0]["value"] == exam_id
    assert [o["bodySite"]["text"] for o in report["contained"]] == ["right breast, 10 o'clock"] * 2
    assert [o["valueQuantity"]["value"] for o in report["contained"]] == [0.71, 0.22]
    assert {"url": "urn:sonopi:patient-age", "valueAge": {"value": 54, "unit": "years",
                                                           "system": "http://unitsofmeasure.org", "code": "a"}} in report["extension"]
    assert report["conclusionCode"][0]["coding"][0]["code"] == "suspicious" and "2 frame(s), 1 suspicious" in report["conclusion"]
    assert report["subject"]["identifier"]["value"] == "PT-CLOCK-1"

    page.goto(f"{rig.url}/inbox?device={frames[0].device_id}&sort=newest")
    with page.expect_download() as download:
        page.click("button.export")
    rows = {r["result_id"]: r for r in csv.DictReader(io.StringIO(Path(download.value.path()).read_text()))}
    assert [(rows[f.result_id]["clock"], rows[f.result_id]["age"]) for f in frames] == [("10", "54")] * 2
    page.goto(f"{rig.url}/audit")
    assert f"DiagnosticReport of exam {exam_id}, 2 frame(s)" in page.inner_text("main")
