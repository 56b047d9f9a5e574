"""The rest of issue 18 in a real headless Chromium (Debian's /usr/bin/chromium via Playwright) against the
real processes on SQLite and on PostgreSQL (the rig of tests/hub/test_web_queue_browser.py: a device's store ->
`python -m device uplink` -> Mosquitto -> `python -m hub serve` -> hub database -> `python -m hub web`).

It proves that, in the browser:
- an operator assigns a result to himself, an exam to a named colleague, and unassigns; the assignee is
  shown in the queue, "assigned to me" filters the inbox, each change is in the audit trail, and a viewer
  account cannot be chosen;
- a v2 result the device delivers with clock position and age: the result page shows them and says honestly
  that the thumbnail is the analysed region and the message carries no ROI coordinates; the exam's FHIR report
  (a button, one DiagnosticReport for every frame, valid R4B) and the CSV carry clock and age;
- the devices page tells what the heartbeat now carries, each with a plain-language action: the real uplink
  of a device without a model says "no model", then "model refused" once a broken bundle is put there; the
  application's "source lost" report travels in the next heartbeat; a provisioned device that never connected
  (from `[console] devices_file`) is listed as such; and a device row leads to its results;
- the queue is worked with the arrow keys too: down/up move through the inbox rows, Enter opens one, right/left
  walk the queue on the result page; keys typed into a field are not taken; the escalation list answers the
  same keys; at phone width the assignment controls and the devices page stay inside the window.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from device.link.uplink.heartbeat import write_source_state

pytest.importorskip("fastapi")
pytest.importorskip("playwright.sync_api", reason="playwright (Python package) not installed")

from hub.web.accounts import Accounts
from hub.web.db import WebDb
from tests.hub.test_web_queue_browser import (  # noqa: F401  (browser, rig, target: fixtures)
    DESKTOP,
    PASSWORD,
    PHONE,
    Rig,
    browser,
    fits,
    new_page,
    record,
    rig,
    row_ids,
    shot,
    sign_in,
    target,
)
from tests.mqtt_broker import postgres_server  # noqa: F401  (fixture)

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
    frames = [
        replace(
            record(p, patient="PT-CLOCK-1"),
            exam_id=exam_id,
            side="R",
            clock=10,
            age=54,
            category="suspicious" if p >= 0.35 else "low_suspicion",
            p_malignant=p,
            mode="balanced",
        )
        for p in (0.71, 0.22)
    ]
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
    assert {
        "url": "urn:sonopi:patient-age",
        "valueAge": {"value": 54, "unit": "years", "system": "http://unitsofmeasure.org", "code": "a"},
    } in report["extension"]
    assert report["conclusionCode"][0]["coding"][0]["code"] == "suspicious" and "2 frame(s), 1 suspicious" in report["conclusion"]
    assert report["subject"]["identifier"]["value"] == "PT-CLOCK-1"

    page.goto(f"{rig.url}/inbox?device={frames[0].device_id}&sort=newest")
    with page.expect_download() as download:
        page.click("button.export")
    rows = {r["result_id"]: r for r in csv.DictReader(io.StringIO(Path(download.value.path()).read_text()))}
    assert [(rows[f.result_id]["clock"], rows[f.result_id]["age"]) for f in frames] == [("10", "54")] * 2
    page.goto(f"{rig.url}/audit")
    assert f"DiagnosticReport of exam {exam_id}, 2 frame(s)" in page.inner_text("main")


def device_row(page, rig: Rig, key: str, must: str) -> str:
    """The devices table row for ``site/device``, reloaded until it says ``must`` (heartbeats come every second)."""
    row = page.locator(f'tr[data-device="{key}"]')
    for _ in range(30):
        page.goto(f"{rig.url}/devices")
        if row.count() and must in row.inner_text():
            return row.inner_text()
        page.wait_for_timeout(500)
    raise AssertionError(f"{key}: {must!r} not shown; row: {row.inner_text() if row.count() else 'missing'}")


def test_devices_show_model_source_and_never_connected(rig: Rig, browser, target: str) -> None:
    page = new_page(browser, DESKTOP)
    sign_in(page, rig)
    key = f"{rig.examples.site}/{rig.examples.device}"
    # The rig's device has no model bundle at its configured path: its own uplink says so.
    text = device_row(page, rig, key, "no model")
    assert "No model installed: the device cannot analyse images" in text and "critical" in text
    # Never connected: on the provisioning list (plain line and acl "user" line), never heard of by the hub.
    never = page.locator('tr[data-device="riverside/pi-river-9"]').inner_text()
    assert "provisioned, never connected" in never and "Check that the device is powered" in never
    assert page.locator('tr[data-device="st-marys/pi-st-ma-2"] .presence').inner_text() != "provisioned, never connected"
    assert page.locator("tr[data-device^='sonopi-hub']").count() == 0
    shot(page, "devices-states-1366", target)

    # The application reports its image source lost: the next heartbeat carries it.
    write_source_state(rig.device_store, "lost", "/dev/video0: no such device")
    text = device_row(page, rig, key, "No image from the scanner")
    assert "/dev/video0: no such device" in text

    # A broken bundle where the model should be: "refused", with the reason.
    bundle = rig.root / "no-model"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")
    (bundle / "model.tflite").write_bytes(b"not a model")
    text = device_row(page, rig, key, "model refused")
    assert "Reinstall the release's bundle" in text

    # The device row leads to its results.
    page.click(f'tr[data-device="{key}"] a.device-results')
    page.wait_for_url(f"**/inbox?site={rig.examples.site}&device={rig.examples.device}&sort=newest")
    assert row_ids(page)


def focused(page, table: str = "#results") -> str:
    return page.locator(f"{table} tbody tr.focused a.open").get_attribute("href").split("?")[0].rsplit("/", 1)[-1]


def test_arrow_keys_work_the_queue(rig: Rig, browser, target: str) -> None:
    e = rig.examples
    page = new_page(browser, DESKTOP)
    sign_in(page, rig)
    ids = row_ids(page)
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowUp")
    assert focused(page) == ids[1]
    page.keyboard.press("x")
    assert page.inner_text("#picked") == "1"
    page.focus("input[name=from]")  # typing in a field moves nothing
    page.keyboard.press("ArrowDown")
    assert focused(page) == ids[1]
    page.locator("h1").click()
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/results/{ids[1]}*")
    page.keyboard.press("ArrowRight")
    page.wait_for_url(f"**/results/{ids[2]}*")
    page.keyboard.press("ArrowLeft")
    page.wait_for_url(f"**/results/{ids[1]}*")

    page.goto(f"{rig.url}/escalations")
    page.keyboard.press("ArrowDown")
    assert focused(page, "#escalations") == e.escalated
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/results/{e.escalated}")

    phone = new_page(browser, PHONE)
    sign_in(phone, rig)
    for path, name in (
        (f"/results/{e.suspicious}", "result-assign-phone"),
        ("/devices", "devices-states-phone"),
        (f"/exams/{e.exam_with_patient}", "exam-assign-phone"),
    ):
        phone.goto(f"{rig.url}{path}")
        assert fits(phone), path
        shot(phone, name, target)
    box = phone.locator("#assign-me").bounding_box()
    assert box is not None and box["x"] + box["width"] <= PHONE["width"]
