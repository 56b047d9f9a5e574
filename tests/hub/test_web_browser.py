"""The console in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright), fed by real
processes: device store -> `python -m device uplink` -> Mosquitto -> `python -m hub serve` -> hub DB ->
`python -m hub web`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python package) not installed")

from device.results import ResultRecord, new_result_id, utc_now_iso
from device.store import ResultStore
from hub.web import DISCLAIMER
from hub.web.accounts import Accounts
from hub.web.db import WebDb
from hub.web.demo import demo_thumbnail
from tests.mqtt_broker import (
    MosquittoBroker,
    device_uplink_command,
    free_port,
    start_process,
    stop_process,
    wait_for,
)

pytestmark = pytest.mark.timeout(240)

CHROMIUM = "/usr/bin/chromium"
# SONOPI_WEB_SCREENSHOTS=DIR: also save the result page (with its export buttons) as a PNG there.
SCREENSHOTS = Path(os.environ["SONOPI_WEB_SCREENSHOTS"]) if os.environ.get("SONOPI_WEB_SCREENSHOTS") else None
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PASSWORD = "operator-password-1"
SITE, DEVICE = "st-marys", "pi-us-1"


def chromium_or_skip() -> str:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does this)")
    return CHROMIUM


def record(i: int, *, malignant: bool, thumbnail: bytes | None = None) -> ResultRecord:
    probabilities = {"benign": 0.12, "malignant": 0.81, "normal": 0.07} if malignant else {"benign": 0.86, "malignant": 0.06, "normal": 0.08}
    return ResultRecord(
        result_id=new_result_id(),
        created_at=utc_now_iso(),
        device_id=DEVICE,
        site=SITE,
        model_name="sonopi-lite0",
        model_version="1.3.0",
        model_sha256="5f" * 32,
        probabilities=probabilities,
        label="malignant" if malignant else "benign",
        inconclusive=False,
        thresholds={"malignant": 0.35},
        exam_id=f"EX-{i:04d}",
        patient_ref=f"PT-E2E-{i:03d}",
        side="L",
        latency_ms=88.0,
        thumbnail=thumbnail,
    )


@dataclass
class Rig:
    root: Path
    broker: MosquittoBroker
    hub_db: Path
    url: str
    device_store: ResultStore
    procs: dict[str, subprocess.Popen[bytes]]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}" for p in self.root.glob("*.log"))


def device_config(root: Path, broker: str, store_path: Path, site: str = SITE, device: str = DEVICE) -> Path:
    """A device.toml for a real uplink to ``broker`` (fast timings, no model)."""
    path = root / "device.toml"
    path.write_text(
        f'[device]\nid = "{device}"\nsite = "{site}"\ndata_dir = "{root / "device"}"\n'
        f'[model]\npath = "{root / "no-model"}"\n[store]\npath = "{store_path}"\n'
        f'[uplink]\nbroker = "{broker}"\nheartbeat_s = 1.0\nkeepalive_s = 5\nack_timeout_s = 2.0\n'
        f"reconnect_min_s = 0.1\nreconnect_max_s = 1.0\npoll_s = 0.05\n"
    )
    return path


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"web console exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    wait_for(up, timeout_s, "web console listening")


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    chromium_or_skip()
    broker = MosquittoBroker(tmp_path / "broker").start()
    hub_db = tmp_path / "hub.sqlite"
    web_db = WebDb.open(str(hub_db))
    Accounts(web_db).add_user("olga", PASSWORD, "operator")
    web_db.close()
    (tmp_path / "hub.toml").write_text("")
    store_path = tmp_path / "device" / "results.sqlite"
    store_path.parent.mkdir()
    device_store = ResultStore(store_path)
    port = free_port()
    procs = {
        "hub": start_process(
            [sys.executable, "-m", "hub", "serve", "--config", str(tmp_path / "hub.toml"), "--db", str(hub_db), "--broker", broker.address],
            tmp_path / "hub.log",
        ),
        "web": start_process(
            [sys.executable, "-m", "hub", "web", "--db", str(hub_db), "--port", str(port), "--live-poll", "0.3", "--devices-refresh", "1"],
            tmp_path / "web.log",
        ),
        "uplink": start_process(
            device_uplink_command() + ["--config", str(device_config(tmp_path, broker.address, store_path))], tmp_path / "uplink.log"
        ),
    }
    # "localhost" (not 127.0.0.1) so Chromium treats plain HTTP as a secure context and keeps the
    # Secure __Host- session cookie, exactly as behind the TLS proxy in production.
    url = f"http://localhost:{port}"
    rig = Rig(tmp_path, broker, hub_db, url, device_store, procs)
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz", procs["web"])
        yield rig
    except BaseException:
        print(rig.logs())
        raise
    finally:
        for proc in procs.values():
            stop_process(proc, signal.SIGKILL)
        device_store.close()
        broker.kill()


@pytest.fixture
def page(rig: Rig, tmp_path: Path):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
        context.set_default_timeout(30_000)
        try:
            yield context.new_page()
        finally:
            context.close()
            browser.close()


def test_operator_workflow_live_inbox_review_export_and_device_going_offline(rig: Rig, page, tmp_path: Path) -> None:
    # Unauthenticated: redirected to the login page.
    page.goto(f"{rig.url}/inbox")
    assert page.url.endswith("/login")
    page.fill("input[name=username]", "olga")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/inbox")
    page.wait_for_selector("#live[data-state=on]")
    page.evaluate("window.__noReload = 'still here'")

    # Results published by the device's uplink appear without a reload.
    malignant = record(1, malignant=True, thumbnail=demo_thumbnail(1))
    benign = record(2, malignant=False)
    rig.device_store.add(malignant)
    rig.device_store.add(benign)
    page.wait_for_selector(f'#results a[href^="/results/{benign.result_id}"]')
    row = page.locator(f'#results tr:has(a[href^="/results/{malignant.result_id}"])')
    assert "malignant" in (row.get_attribute("class") or "")  # stands out
    assert page.evaluate("window.__noReload") == "still here"
    assert page.url.endswith("/inbox")

    # Filter to malignant.
    page.select_option("select[name=label]", "malignant")
    page.click(".filters button[type=submit]")
    page.wait_for_url("**/inbox?*label=malignant*")
    classes = page.locator("#results tbody tr").evaluate_all("rows => rows.map(r => r.className)")
    assert classes and all("malignant" in c for c in classes)
    assert page.locator(f'a[href^="/results/{benign.result_id}"]').count() == 0
    # The filtered inbox stays live and shows only what matches its filter.
    page.wait_for_selector("#live[data-state=on]")
    later_benign, later_malignant = record(3, malignant=False), record(4, malignant=True)
    rig.device_store.add(later_benign)
    rig.device_store.add(later_malignant)  # sent, stored and streamed after the benign one
    page.wait_for_selector(f'#results a[href^="/results/{later_malignant.result_id}"]')
    assert page.locator(f'a[href^="/results/{later_benign.result_id}"]').count() == 0

    # CSV of the current filter: a button that POSTs the filter with the session's CSRF token.
    with page.expect_download() as download:
        page.click("button.export")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert [r["result_id"] for r in rows] == [later_malignant.result_id, malignant.result_id]
    assert rows[1]["patient_ref"] == malignant.patient_ref and {r["outcome"] for r in rows} == {"malignant"}
    assert "/inbox?" in page.url and "label=malignant" in page.url  # a download: the page stays where it was

    # Open it: everything on the result page, with the disclaimer and the thumbnail.
    page.click(f'a[href^="/results/{malignant.result_id}"]')
    page.wait_for_url(f"**/results/{malignant.result_id}*")  # with the queue it came from
    body = page.inner_text("main")
    assert DISCLAIMER in body
    for text in (malignant.patient_ref, malignant.exam_id, SITE, DEVICE, "sonopi-lite0 1.3.0", "81.0%"):
        assert text in body, text
    assert page.eval_on_selector(".thumb img", "img => img.complete && img.naturalWidth") > 0

    # FHIR export (a POST button too).
    with page.expect_download() as download:
        page.click("#fhir")
    report = json.loads(Path(download.value.path()).read_text())
    assert report["resourceType"] == "DiagnosticReport" and len(report["contained"]) == 3
    assert report["identifier"][0]["value"] == malignant.result_id
    if SCREENSHOTS:
        page.screenshot(path=str(SCREENSHOTS / "web-result-exports.png"), full_page=True)

    # Review with a note; the audit entry shows on the page and in the audit log.
    page.fill("textarea[name=note]", "discussed with radiologist, biopsy booked")
    page.click("button[value=reviewed]")
    page.wait_for_selector("#review-state.reviewed")
    audit_row = page.locator("#audit tbody tr").first.inner_text()
    assert "olga" in audit_row and "review:reviewed" in audit_row and "biopsy booked" in audit_row
    page.click("nav >> text=Audit log")
    page.wait_for_url("**/audit")
    audit_log = page.locator("#audit tbody").inner_text()
    assert "review:reviewed" in audit_log
    assert audit_log.count("export:csv") == 1 and audit_log.count("export:fhir") == 1  # each export, once

    # Devices page: online, then offline once the uplink is killed (Last Will), without a reload.
    page.click("nav >> text=Devices")
    page.wait_for_url("**/devices")
    device_row = f'tr[data-device="{SITE}/{DEVICE}"]'
    page.wait_for_selector(f"{device_row} .presence.online")
    page.evaluate("window.__noReload = 'devices'")
    stop_process(rig.procs["uplink"], signal.SIGKILL)
    page.wait_for_selector(f"{device_row} .presence.offline", timeout=45_000)
    assert page.evaluate("window.__noReload") == "devices"
    assert rig.procs["web"].poll() is None and rig.procs["hub"].poll() is None
    # The console's own log (access log included) names no patient, though every page above showed one.
    web_log = (rig.root / "web.log").read_text(errors="replace")
    assert "GET /inbox" in web_log and "POST /results/" in web_log
    assert "PT-E2E-" not in web_log
