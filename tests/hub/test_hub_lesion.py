"""The hub and its console with contract v3's lesion outline (issue 16), on real SQLite and PostgreSQL.

It proves that:
- the hub database keeps each result's outline and crop box and reads them back validated: an identical re-send is
  a duplicate; ``hub export --csv`` and ``--json`` carry them; a schema-2 database opens and gains the columns, its
  results intact; a damaged stored outline is refused naming the result (the queue lists the result without it);
- ``python -m hub serve`` on a real broker still takes an old device's v2 result, refuses malformed outlines for good
  (a nack, the rejection counted with a detail that names the key) and goes on storing the next result;
- the console's result page draws the device's outline over the thumbnail (an SVG polygon in image pixels, its
  viewBox the crop box), with a toggle, the size ("W × D mm, A mm²", or "uncalibrated: N px", never mm without a
  spacing) and only the shown descriptors labelled automatic; "No lesion outlined" when none was found; nothing
  for a result sent without an outline; the exam page lists the size per frame and draws each frame's outline on
  its 64 px thumbnail;
- in a real headless Chromium the polygon lands on the thumbnail where the contour's image pixels are (its box
  measured on screen against the box computed from the crop), on the result page and on the exam page's 64 px
  thumbnail; the toggle hides it, and PNGs of the pages are saved.

The outlines are the device's own: the real Analyzer with the tiny segmentation bundle (tests/device/
tiny_segmentation.py, which outlines what is brighter than mid-grey) and a clinician's ROI, so the crop, the
thumbnail and the contour are what a device sends.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sqlite3
import sys
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from device.link.contract import encode_result
from device.link.uplink.outbox import message_from_record
from device.results import ResultRecord
from device.store import ResultStore
from hub.store import SCHEMA_VERSION, DamagedRowError, HubStore
from tests.device.link.test_contract_lesion import DEVICE, ROI, SITE, analyse
from tests.hub.test_hub_poison import HubProcess
from tests.hub.test_hub_service import RawDevice
from tests.mqtt_broker import (  # noqa: F401  (fixtures)
    MosquittoBroker,
    free_port,
    mosquitto_broker,
    postgres_server,
    start_process,
    stop_process,
    wait_for,
)

pytestmark = pytest.mark.timeout(240)

PASSWORD = "correct horse battery"
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(os.environ["SONOPI_WEB_SCREENSHOTS"]) if os.environ.get("SONOPI_WEB_SCREENSHOTS") else None


LESION_SEEN = {
    "category": "low_suspicion",
    "label": "benign",
    "probabilities": {"normal": 0.2, "benign": 0.795, "malignant": 0.005},
    "p_malignant": 0.005,
}


@dataclass(frozen=True)
class Analysed:
    """The device's records (mm outline, px outline, withheld) and one stored without an outline."""

    mm: ResultRecord
    px: ResultRecord
    withheld: ResultRecord
    plain: ResultRecord

    def all(self) -> tuple[ResultRecord, ...]:
        return (self.mm, self.px, self.withheld, self.plain)


@pytest.fixture(scope="module")
def analysed(tiny_bundle_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Analysed:
    from device.results import new_result_id
    from tests.device.tiny_segmentation import build_tiny_segmentation_bundle

    root = tmp_path_factory.mktemp("lesion-hub")
    build_tiny_segmentation_bundle(root / "bundle", tiny_bundle_dir, root / "segment-out")
    with ResultStore(root / "device.sqlite") as store:
        mm, px, withheld = analyse(store, root / "bundle", root)
        plain = store.add(replace(px, result_id=new_result_id(), seq=None, lesion=None))
    # The tiny classifier calls these synthetic frames "No lesion seen"; the console's lesion tests want a lesion seen
    # (the two models agreeing): the records as the device stores a low-suspicion result. The disagreement has its own test.
    mm, px = (replace(r, **LESION_SEEN) for r in (mm, px))
    assert mm.lesion.found and mm.lesion.calibrated and px.lesion.found and not px.lesion.calibrated and withheld.lesion.withheld
    return Analysed(mm, px, withheld, plain)


def messages(analysed: Analysed) -> list:
    return [message_from_record(r, historical=False, prev_result_id=None) for r in analysed.all()]


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "hub.sqlite")
    return request.getfixturevalue("postgres_server").create_database(f"hub_lesion_{uuid.uuid4().hex[:10]}")


# --- the hub database ------------------------------------------------------------------------------------------------


def test_outlines_are_stored_and_read_back_identically(target: str, analysed: Analysed) -> None:
    sent = messages(analysed)
    with HubStore.open(target) as store:
        assert store.add_results(sent) == [True] * 4
        assert store.add_results(sent) == [False] * 4  # an identical re-send: a duplicate
        for m in sent:
            row = store.result(m.result_id)
            assert (row.lesion, row.crop, row.schema_version) == (m.lesion, m.crop, m.schema)
        assert [m.schema for m in sent] == [3, 3, 3, 2]
        assert store.result(analysed.mm.result_id).summary()["lesion"] == analysed.mm.lesion.to_json()
        assert store.result(analysed.plain.result_id).crop is None  # sent as schema 2: no crop either


def test_the_exports_carry_the_outline(target: str, analysed: Analysed) -> None:
    import csv
    import io
    import subprocess

    from tests.mqtt_broker import REPO

    with HubStore.open(target) as store:
        store.add_results(messages(analysed))
    run = [sys.executable, "-m", "hub", "export", "--db", target]
    done = subprocess.run([*run, "--csv"], cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    rows = {r["result_id"]: r for r in csv.DictReader(io.StringIO(done.stdout))}
    assert json.loads(rows[analysed.mm.result_id]["lesion"]) == analysed.mm.lesion.to_json()
    assert json.loads(rows[analysed.mm.result_id]["crop"]) == list(ROI)
    assert rows[analysed.plain.result_id]["lesion"] == "" == rows[analysed.plain.result_id]["crop"]
    done = subprocess.run([*run, "--json"], cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    objects = {o["result_id"]: o for o in map(json.loads, done.stdout.splitlines())}
    assert objects[analysed.px.result_id]["lesion"] == analysed.px.lesion.to_json() and objects[analysed.plain.result_id]["lesion"] is None


def test_a_schema_2_database_gains_the_columns(target: str, analysed: Analysed) -> None:
    old, new = messages(analysed)[3], messages(analysed)[0]
    with HubStore.open(target) as store:
        store.add_result(old)
    _run(
        target,
        "ALTER TABLE results DROP COLUMN lesion",
        "ALTER TABLE results DROP COLUMN crop",
        "UPDATE hub_meta SET value = '2' WHERE key = 'schema_version'",
    )
    with HubStore.open(target) as store:
        assert store.result(old.result_id).lesion is None and store.result(old.result_id).category == old.category
        assert store.add_result(new) and store.result(new.result_id).lesion == new.lesion
    assert _run(target, "SELECT value FROM hub_meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)] == [("3",)]


def test_a_damaged_stored_outline_is_refused_naming_the_result(target: str, analysed: Analysed, caplog: pytest.LogCaptureFixture) -> None:
    m = messages(analysed)[0]
    with HubStore.open(target) as store:
        store.add_result(m)
    broken = json.dumps({**m.lesion.to_json(), "contour": [[1, 2]]})
    _run(target, ("UPDATE results SET lesion = ? WHERE result_id = ?", (broken, m.result_id)))
    refused = f"result {m.result_id}: the stored lesion outline is damaged .*contour"
    with HubStore.open(target) as store, pytest.raises(DamagedRowError, match=refused):
        store.result(m.result_id)
    from hub.web.db import WebDb
    from hub.web.inbox import Inbox

    db = WebDb.open(target)  # the queue and the exam page still list it, without the outline (logged)
    try:
        with caplog.at_level(logging.ERROR, logger="hub.web.inbox"):
            rows = Inbox(db).exam(m.exam_id)
        assert [(r.result_id, r.lesion) for r in rows] == [(m.result_id, None)]
        assert f"result {m.result_id}: the stored lesion outline is damaged" in caplog.text
    finally:
        db.close()
    client = _signed_in(target)  # its page says so (not "database unavailable": the database is fine)
    page = client.get(f"/results/{m.result_id}")
    assert page.status_code == 500 and "stored data is damaged" in page.text and client.get("/inbox").status_code == 200


@pytest.mark.parametrize("crop", ["[1, 2, 0, 4]", "[1, 2, 3]", "[-1, 2, 3, 4]", "[1, 2, 3, true]", "{not json"])
def test_a_damaged_stored_crop_box_is_refused_naming_the_result(target: str, analysed: Analysed, crop: str) -> None:
    m = messages(analysed)[0]
    with HubStore.open(target) as store:
        store.add_result(m)
    _run(target, ("UPDATE results SET crop = ? WHERE result_id = ?", (crop, m.result_id)))
    with HubStore.open(target) as store, pytest.raises(DamagedRowError, match=f"result {m.result_id}: the stored crop box is damaged"):
        store.result(m.result_id)


def _run(target: str, *statements) -> list:
    """Run SQL straight on the hub database (what an older hub left, or damage); the last statement's rows."""
    rows: list = []
    if "://" in target:
        import psycopg

        with psycopg.connect(target, autocommit=True) as conn:
            for s in statements:
                sql, params = s if isinstance(s, tuple) else (s, ())
                cur = conn.execute(sql.replace("?", "%s"), params)
                rows = cur.fetchall() if cur.description else []
        return rows
    conn = sqlite3.connect(target)
    try:
        for s in statements:
            sql, params = s if isinstance(s, tuple) else (s, ())
            rows = conn.execute(sql, params).fetchall()
        conn.commit()
    finally:
        conn.close()
    return rows


# --- hub serve: an old device, and poison ---------------------------------------------------------------------------


def test_hub_serve_takes_v2_and_refuses_malformed_outlines_naming_the_key(
    tmp_path: Path, mosquitto_broker: MosquittoBroker, analysed: Analysed
) -> None:
    hub = HubProcess(tmp_path, mosquitto_broker.address, str(tmp_path / "hub.sqlite"))
    raw = RawDevice(mosquitto_broker, SITE, DEVICE)
    try:
        hub.start()
        v2 = messages(analysed)[3]  # an old device's result: schema 2, no outline
        for _ in range(15):  # the first may race the hub's subscription
            raw.publish(encode_result(v2))
            try:
                hub.wait(lambda: v2.result_id in raw.acks(), "the v2 result's ack", timeout_s=2)
                break
            except pytest.fail.Exception:
                if not hub.alive:
                    raise
        assert hub.store.result(v2.result_id).schema_version == 2
        good = messages(analysed)[0].to_payload()
        poisons = {
            "lesion/contour": {**good["lesion"], "contour": [[i, i % 5] for i in range(65)]},
            "lesion/width_mm": {**good["lesion"], "spacing_mm": None},
            "lesion/shape/value": {**good["lesion"], "shape": {"value": "lobulated", "shown": True}},
            "lesion/box": {**good["lesion"], "box": [1, 2, 0, 3]},
        }
        sent = []
        for key, lesion in poisons.items():
            payload = {**good, "result_id": str(uuid.uuid4()), "lesion": lesion}
            raw.publish(json.dumps(payload).encode())
            sent.append((key, payload["result_id"]))
        hub.wait(lambda: {rid for _, rid in sent} <= {r.result_id for r in raw.nacks()}, "the malformed outlines' nacks")
        nacks = {r.result_id: r for r in raw.nacks()}
        for key, rid in sent:
            assert f"result {key}:" in nacks[rid].detail and "lobulated" not in nacks[rid].detail, nacks[rid]
            assert hub.store.result(rid) is None
        assert hub.rejected() == len(poisons)
        details = " | ".join(r.last_detail or "" for r in hub.store.rejections())
        assert "result lesion/" in details and "lobulated" not in details
        after = message_from_record(analysed.mm, historical=False, prev_result_id=None)  # the hub goes on
        raw.publish(encode_result(after))
        hub.wait(lambda: after.result_id in raw.acks(), "the next result's ack")
        assert hub.store.result(after.result_id).lesion == analysed.mm.lesion and hub.alive
    finally:
        raw.close()
        hub.close()


def test_hub_serve_goes_on_when_a_re_sent_result_has_a_damaged_stored_outline(
    tmp_path: Path, mosquitto_broker: MosquittoBroker, analysed: Analysed
) -> None:
    hub = HubProcess(tmp_path, mosquitto_broker.address, str(tmp_path / "hub.sqlite"))
    raw = RawDevice(mosquitto_broker, SITE, DEVICE)
    try:
        first = messages(analysed)[0]
        hub.store.add_result(first)
        broken = json.dumps({**first.lesion.to_json(), "contour": [[1, 2]]})
        _run(hub.target, ("UPDATE results SET lesion = ? WHERE result_id = ?", (broken, first.result_id)))
        hub.start()
        for _ in range(15):  # an identical re-send of the damaged one: a duplicate, acked (the first may race the subscription)
            raw.publish(encode_result(first))
            try:
                hub.wait(lambda: first.result_id in raw.acks(), "the re-send's ack", timeout_s=2)
                break
            except pytest.fail.Exception:
                if not hub.alive:
                    raise
        after = message_from_record(analysed.px, historical=False, prev_result_id=None)
        raw.publish(encode_result(after))
        hub.wait(lambda: after.result_id in raw.acks(), "the next result's ack")
        assert hub.store.result(after.result_id).lesion == analysed.px.lesion and hub.alive
        assert "the stored lesion outline is damaged" in hub.log() and "retrying" not in hub.log()
    finally:
        raw.close()
        hub.close()


# --- the console ------------------------------------------------------------------------------------------------------


@pytest.fixture
def console(target: str, analysed: Analysed):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from hub.web.accounts import Accounts
    from hub.web.app import create_app
    from hub.web.config import WebConfig
    from hub.web.db import WebDb

    with HubStore.open(target) as store:
        store.add_results(messages(analysed))
    db = WebDb.open(target)
    try:
        Accounts(db).add_user("olga", PASSWORD, "operator")
    finally:
        db.close()
    app = create_app(WebConfig(db=target, escalate_after_s=3600))
    client = TestClient(app, base_url="https://console.test", follow_redirects=False)
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    assert client.post("/login", data={"username": "olga", "password": PASSWORD, "csrf_token": token}).status_code == 303
    yield client
    app.state.services.close()


def test_the_result_page_draws_the_outline_with_its_size(console, analysed: Analysed) -> None:
    mm = analysed.mm.lesion
    page = console.get(f"/results/{analysed.mm.result_id}").text
    points = " ".join(f"{x},{y}" for x, y in mm.contour)
    assert f'viewBox="{ROI[0]} {ROI[1]} {ROI[2]} {ROI[3]}"' in page and f'<polygon points="{points}"/>' in page
    assert 'id="outline-toggle"' in page and "checked" in page
    assert f"Lesion {mm.width_mm:.1f} × {mm.depth_mm:.1f} mm, {mm.area_mm2:.0f} mm²" in page
    shown = mm.shown_descriptors()
    assert shown == {"shape": mm.shape.value}  # the display rule: shape only
    assert f"Shape (automatic): {mm.shape.value}" in page and "Margin (automatic)" not in page and "Orientation (automatic)" not in page
    assert f"carries the region's coordinates ({ROI[2]} × {ROI[3]} px at {ROI[0]}, {ROI[1]} in the frame)" in " ".join(page.split())

    px = analysed.px.lesion
    page = console.get(f"/results/{analysed.px.result_id}").text
    lesion = _lesion_block(page)
    assert f"Lesion uncalibrated: {px.area_px:.0f} px" in lesion and "mm²" not in lesion and " × " not in lesion
    assert "<polygon" in page

    page = console.get(f"/results/{analysed.withheld.result_id}").text
    assert "<polygon" not in page and "Not outlined: the result is inconclusive." in page and "Lesion " not in _lesion_block(page)

    page = console.get(f"/results/{analysed.plain.result_id}").text  # sent without an outline (v2): nothing
    assert 'id="lesion"' not in page and "<svg" not in page and "outline-toggle" not in page
    assert "carries neither the region's coordinates" in " ".join(page.split())


def test_no_lesion_outlined_is_said(target: str, analysed: Analysed) -> None:
    from device.lesion_record import LesionRecord

    none_found = replace(messages(analysed)[1], result_id=str(uuid.uuid4()), lesion=LesionRecord(found=False))
    with HubStore.open(target) as store:
        store.add_result(none_found)
    client = _signed_in(target)
    page = client.get(f"/results/{none_found.result_id}").text
    assert "No lesion outlined" in page and "<polygon" not in page


def test_an_outline_under_no_lesion_seen_is_not_called_a_lesion(target: str, analysed: Analysed) -> None:
    """The device's classifier said *No lesion seen* and its outline model outlined a region (the models disagree):
    the console, like the device's card, names the region and asks for a look instead of "Lesion N px"."""
    px = messages(analysed)[1]
    disagree = replace(
        px,
        result_id=str(uuid.uuid4()),
        category="no_lesion",
        label="normal",
        probabilities={"normal": 0.93, "benign": 0.065, "malignant": 0.005},
        p_malignant=0.005,
    )
    with HubStore.open(target) as store:
        store.add_result(disagree)
    console = _signed_in(target)
    page = console.get(f"/results/{disagree.result_id}").text
    lesion = " ".join(_lesion_block(page).split())
    assert f"Region outlined (uncalibrated: {px.lesion.area_px:.0f} px) though no lesion seen: look again" in lesion
    assert "Lesion " not in lesion and "(automatic)" not in lesion and "<polygon" in page
    # the exam page's frame list says the same, shortly, as the device's History does
    exam = console.get(f"/exams/{disagree.exam_id}").text
    row = re.search(rf'data-id="[^"]*"[^>]*>(?:(?!</tr>).)*?/results/{disagree.result_id}"', exam, re.S)
    assert row is not None, "the frame is not listed on its exam's page"
    cells = re.findall(r'<td class="lesion-size">(.*?)</td>', row.group(0))
    assert cells == ["outlined: recheck"], cells


def test_the_exam_page_lists_the_size_per_frame(console, analysed: Analysed) -> None:
    page = console.get(f"/exams/{analysed.mm.exam_id}").text
    cells = re.findall(r'<td class="lesion-size">(.*?)</td>', page)
    assert len(cells) == 4
    mm, px = analysed.mm.lesion, analysed.px.lesion
    assert f"{mm.width_mm:.1f} × {mm.depth_mm:.1f} mm, {mm.area_mm2:.0f} mm²" in cells
    assert f"uncalibrated: {px.area_px:.0f} px" in cells
    assert '<span class="muted">not outlined</span>' in cells and '<span class="muted">—</span>' in cells


def test_the_exam_summary_counts_suspicious_frames_as_its_fhir_report_does(console, analysed: Analysed) -> None:
    """The exam (two low-suspicion frames, one inconclusive, one no lesion seen) has no suspicious frame: the page's
    summary says 0 of 4 and names the inconclusive one apart, as the exam's FHIR DiagnosticReport concludes (an
    inconclusive frame is a rescan, not a suspicious finding; the old page said "1 of 4")."""
    page = console.get(f"/exams/{analysed.mm.exam_id}").text
    summary = re.search(r"<dt>Suspicious frames</dt><dd[^>]*>(.*?)</dd>", page, re.S)
    assert summary is not None and " ".join(re.sub(r"<[^>]+>", "", summary.group(1)).split()) == "0 of 4 · 1 inconclusive (rescan)"
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    report = console.post(f"/exams/{analysed.mm.exam_id}/fhir.json", data={"csrf_token": token}).json()
    assert report["conclusion"].startswith("4 frame(s), 0 suspicious"), report["conclusion"]


def test_the_exam_page_draws_each_frames_outline_on_its_thumbnail(console, analysed: Analysed) -> None:
    """The frame list's 64 px thumbnails carry the outline as the result page's does (an SVG polygon in image pixels,
    its viewBox the crop box); the frames without one (withheld, sent without an outline) show the bare thumbnail."""
    page = console.get(f"/exams/{analysed.mm.exam_id}").text
    cells = {rid: cell for cell, rid in re.findall(r'<td class="thumbcell">(.*?)</td>.*?<a class="open" href="/results/([0-9a-f-]+)"', page, re.S)}
    assert set(cells) == {r.result_id for r in analysed.all()}, sorted(cells)
    for record in (analysed.mm, analysed.px):
        cell = cells[record.result_id]
        x, y, w, h = ROI
        assert f'viewBox="{x} {y} {w} {h}"' in cell, cell
        points = re.search(r'<polygon points="([^"]+)"', cell).group(1)
        assert points == " ".join(f"{px},{py}" for px, py in record.lesion.contour)
    for record in (analysed.withheld, analysed.plain):
        assert "<polygon" not in cells[record.result_id] and "thumbnail.jpg" in cells[record.result_id]


def _signed_in(target: str):
    from fastapi.testclient import TestClient

    from hub.web.accounts import Accounts
    from hub.web.app import create_app
    from hub.web.config import WebConfig
    from hub.web.db import WebDb

    db = WebDb.open(target)
    try:
        Accounts(db).add_user("olga", PASSWORD, "operator")
    finally:
        db.close()
    client = TestClient(create_app(WebConfig(db=target, escalate_after_s=3600)), base_url="https://console.test", follow_redirects=False)
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    assert client.post("/login", data={"username": "olga", "password": PASSWORD, "csrf_token": token}).status_code == 303
    return client


def _lesion_block(page: str) -> str:
    start = page.index('<div class="lesion" id="lesion">')
    return page[start : page.index("</div>", start)]


# --- in a real browser -----------------------------------------------------------------------------------------------


def test_in_chromium_the_outline_lands_where_the_contour_is(tmp_path: Path, analysed: Analysed) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does this)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python package) not installed")
    from hub.web.accounts import Accounts
    from hub.web.db import WebDb

    target = str(tmp_path / "hub.sqlite")
    with HubStore.open(target) as store:
        store.add_results(messages(analysed))
    db = WebDb.open(target)
    Accounts(db).add_user("olga", PASSWORD, "operator")
    db.close()
    (tmp_path / "hub.toml").write_text("")
    port = free_port()
    web = start_process(
        [sys.executable, "-m", "hub", "web", "--config", str(tmp_path / "hub.toml"), "--db", target, "--port", str(port)], tmp_path / "web.log"
    )
    url = f"http://localhost:{port}"
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"], headless=True)
            try:
                page = browser.new_context(viewport={"width": 1366, "height": 900}).new_page()
                page.set_default_timeout(30_000)
                wait_for(lambda: _up(page, f"{url}/login", web), 30, f"the console\n{(tmp_path / 'web.log').read_text(errors='replace')[-2000:]}")
                page.fill("input[name=username]", "olga")
                page.fill("input[name=password]", PASSWORD)
                page.click("button[type=submit]")
                page.wait_for_url("**/inbox")
                page.goto(f"{url}/results/{analysed.mm.result_id}")
                page.wait_for_function("document.querySelector('#outlined img').complete && document.querySelector('#outlined img').naturalWidth > 0")
                image = page.locator("#outlined img").bounding_box()
                drawn = page.locator("#outline polygon").bounding_box()
                got, expected = _drawn_and_expected(drawn, image, analysed.mm.lesion.contour)
                assert all(abs(g - e) <= 3 for g, e in zip(got, expected, strict=True)), (got, expected)  # within the stroke's width
                assert page.inner_text("#lesion-size").startswith("Lesion ") and " mm, " in page.inner_text("#lesion-size")
                out = SCREENSHOTS or tmp_path
                out.mkdir(parents=True, exist_ok=True)
                page.locator("section.thumb").screenshot(path=str(out / "web-result-outline.png"))
                page.screenshot(path=str(out / "web-result-outline-page.png"), full_page=True)
                assert page.locator("#outline").is_visible()
                page.click("label[for=outline-toggle]")
                assert not page.locator("#outline").is_visible() and page.locator("#outlined img").is_visible()
                page.goto(f"{url}/exams/{analysed.mm.exam_id}")
                assert "uncalibrated:" in page.inner_text("#results")
                cell = page.locator(f'tr:has(a[href="/results/{analysed.mm.result_id}"]) td.thumbcell')
                cell.locator("img").wait_for()
                page.wait_for_function("[...document.querySelectorAll('td.thumbcell img')].every(i => i.complete)")
                image, drawn = cell.locator("img").bounding_box(), cell.locator("polygon").bounding_box()
                assert (round(image["width"]), round(image["height"])) == (64, 64)
                got, expected = _drawn_and_expected(drawn, image, analysed.mm.lesion.contour)
                assert all(abs(g - e) <= 2 for g, e in zip(got, expected, strict=True)), (got, expected)  # the 64 px thumbnail's outline
                page.screenshot(path=str(out / "web-exam-outline.png"), full_page=True)
            finally:
                browser.close()
    finally:
        stop_process(web, signal.SIGKILL)


def _drawn_and_expected(drawn: dict, image: dict, contour) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The polygon's on-screen box, and the box the contour's image pixels map to on the thumbnail ``image`` (the
    crop box ROI scaled to the image's on-screen size)."""
    xs, ys = [x for x, _ in contour], [y for _, y in contour]
    sx, sy = image["width"] / ROI[2], image["height"] / ROI[3]
    expected = (image["x"] + (min(xs) - ROI[0]) * sx, image["y"] + (min(ys) - ROI[1]) * sy, (max(xs) - min(xs)) * sx, (max(ys) - min(ys)) * sy)
    return (drawn["x"], drawn["y"], drawn["width"], drawn["height"]), expected


def _up(page, url: str, proc) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"hub web exited with {proc.returncode}")
    try:
        page.goto(url)
        return page.locator("input[name=username]").count() == 1
    except Exception:
        return False
