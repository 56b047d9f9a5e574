"""The console shows corrections, in a real headless Chromium against real processes on SQLite and PostgreSQL: a
device's store (results, then a void and a move made on the device) -> `python -m device uplink` -> Mosquitto ->
`python -m hub serve` -> hub database -> `python -m hub web`.

In the browser: the voided result is out of the inbox (the needs-attention queue) and the others are in it; the
voided result's page says VOIDED with the audit trail (when, who — the device —, what, why); the moved result's page
says MOVED with a link to its new exam and from -> to; the original exam's page marks both frames, and the target
exam's page lists the result moved into it (also an exam no frame was captured under). SONOPI_WEB_SCREENSHOTS=DIR saves the pages as PNGs there."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python package) not installed")

from device.link.corrections import Place, make_correction
from device.results import Exam
from device.store import ResultStore
from hub.web.accounts import Accounts
from hub.web.db import WebDb
from tests.hub.test_web_browser import device_config
from tests.hub.test_web_queue_browser import (  # noqa: F401  (browser: fixture)
    CHROMIUM,
    DESKTOP,
    PASSWORD,
    _http_up,
    browser,
    new_page,
    record,
    row_ids,
    shot,
    target,
)
from tests.mqtt_broker import (  # noqa: F401  (postgres_server: fixture)
    MosquittoBroker,
    device_uplink_command,
    free_port,
    postgres_server,
    start_process,
    stop_process,
    wait_for,
)

pytestmark = pytest.mark.timeout(300)
SITE, DEVICE = "st-marys", "pi-st-ma-1"


def _sign_in(page, url: str) -> None:
    page.goto(f"{url}/login")
    page.fill("input[name=username]", "olga")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/inbox")


def test_the_console_shows_voided_and_moved_results(tmp_path: Path, target: str, browser) -> None:
    import os

    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does this)")
    db = WebDb.open(target)
    Accounts(db).add_user("olga", PASSWORD, "operator")
    db.close()
    broker = MosquittoBroker(tmp_path / "broker").start()
    store_path = tmp_path / "device" / "results.sqlite"
    store_path.parent.mkdir()
    store = ResultStore(store_path)
    exam_a, exam_b = Exam("EXAM-A-1", "PT-A", "L"), Exam("EXAM-B-2", "PT-B", "R")
    exam_c = Exam("EXAM-C-3", "PT-C", None)  # no frame captured under it at all
    for exam in (exam_a, exam_b, exam_c):
        store.add_exam(exam)

    def under(exam: Exam, p: float):  # type: ignore[no-untyped-def]
        r = record(p, patient=exam.patient_ref)
        return store.add(r.__class__(**{**r.__dict__, "exam_id": exam.exam_id, "side": exam.side}))

    voided, moved, kept, other = under(exam_a, 0.91), under(exam_a, 0.83), under(exam_a, 0.72), under(exam_b, 0.2)
    port = free_port()
    common = ["--db", target]
    procs = {
        "hub": start_process([sys.executable, "-m", "hub", "serve", *common, "--broker", broker.address], tmp_path / "hub.log"),
        "web": start_process([sys.executable, "-m", "hub", "web", *common, "--port", str(port)], tmp_path / "web.log"),
    }
    url = f"http://localhost:{port}"
    try:
        wait_for(lambda: _http_up(f"http://127.0.0.1:{port}/healthz", procs["web"]), 30, "web console listening")
        procs["uplink"] = start_process(
            device_uplink_command() + ["--config", str(device_config(tmp_path, broker.address, store_path, SITE, DEVICE))], tmp_path / "uplink.log"
        )
        wait_for(lambda: store.backlog().pending == 0, 60, "the results acked")
        for c in (
            make_correction(
                result_id=voided.result_id,
                kind="void",
                reason="poor_image",
                device_id=DEVICE,
                site=SITE,
                origin=Place(None, None, None),
                note="probe lifted",
            ),
            make_correction(
                result_id=moved.result_id,
                kind="move",
                reason="wrong_patient",
                device_id=DEVICE,
                site=SITE,
                origin=Place(None, None, None),
                target=Place(exam_b.exam_id, None, "R"),
            ),
            make_correction(
                result_id=kept.result_id,
                kind="move",
                reason="wrong_exam",
                device_id=DEVICE,
                site=SITE,
                origin=Place(None, None, None),
                target=Place(exam_c.exam_id, None, "L"),
            ),
        ):
            store.add_correction(c)
        wait_for(lambda: store.correction_backlog() == 0, 60, "the corrections acked")

        page = new_page(browser, DESKTOP)
        _sign_in(page, url)
        ids = row_ids(page)
        assert voided.result_id not in ids and {moved.result_id, kept.result_id, other.result_id} <= set(ids)
        shot(page, "corrections-inbox", target)

        page.goto(f"{url}/results/{voided.result_id}")
        assert "VOIDED" in page.inner_text("#correction-state")
        trail = page.inner_text("#correction table")
        assert "Voided" in trail and "Poor image — probe lifted" in trail and f"device {SITE}/{DEVICE}" in trail
        assert "patient PT-A, left, exam EXAM-A-1" in trail
        shot(page, "corrections-voided", target)

        page.goto(f"{url}/results/{moved.result_id}")
        assert "MOVED" in page.inner_text("#correction-state")
        assert page.get_attribute("#correction-target", "href") == f"/exams/{exam_b.exam_id}"
        trail = page.inner_text("#correction table")
        assert "Wrong patient" in trail and "patient PT-A, left, exam EXAM-A-1" in trail
        assert "patient PT-B, right, exam EXAM-B-2" in trail
        shot(page, "corrections-moved", target)

        page.goto(f"{url}/exams/{exam_a.exam_id}")
        section = page.inner_text("#exam-corrections")
        assert "VOIDED" in section and "MOVED" in section and "Poor image" in section
        shot(page, "corrections-exam", target)
        page.goto(f"{url}/exams/{exam_b.exam_id}")
        assert page.locator(f'#exam-corrections a[href="/results/{moved.result_id}"]').count() == 1
        assert "Moved into this exam" in page.inner_text("#exam-corrections")
        shot(page, "corrections-exam-target", target)
        page.goto(f"{url}/exams/{exam_c.exam_id}")  # only a result moved in: the page exists, no frames of its own
        assert page.locator("#moved-in-only").count() == 1
        assert page.locator(f'#exam-corrections a[href="/results/{kept.result_id}"]').count() == 1
        assert "patient PT-C, left, exam EXAM-C-3" in page.inner_text("#exam-corrections")
        assert page.goto(f"{url}/exams/NO-SUCH-EXAM").status == 404
        shot(page, "corrections-exam-moved-in-only", target)
    finally:
        for proc in procs.values():
            stop_process(proc, signal.SIGKILL)
        store.close()
        broker.kill()
