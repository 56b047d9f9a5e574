"""Working the queue in a real headless Chromium (Debian's /usr/bin/chromium via Playwright) against real
processes on SQLite and on PostgreSQL: a device's store -> `python -m device uplink` -> Mosquitto ->
`python -m hub serve` -> hub database (seeded with hand-made examples) -> `python -m hub web`.

It proves that, in the browser:
- the inbox opens on the unreviewed suspicious results, showing p(malignant) and its threshold, and a
  result the device delivers after a few seconds in its backlog is not tagged late; a new suspicious
  result streamed live is put at the top, a low-risk one further down (not on top as before);
- the keyboard works the queue: j/k move, Enter opens, and j on a result page goes to the next one; a
  review can go straight on to the next result;
- an exam's frames can be ticked and reviewed in one go; the patient search leaves the reference out of
  the address bar and the console's log (access log included);
- the escalation list and device health (temperature, disk, throttling, with an action) are shown, and a
  device row leads to that device's results;
- at 1366x768 and at phone width (390 px) the pages fit the window (wide tables scroll inside themselves).

SONOPI_WEB_SCREENSHOTS=DIR saves each page looked at as a PNG there (e.g. build/web-queue).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python package) not installed")

from device.results import ResultRecord, new_result_id, utc_now_iso
from device.store import ResultStore
from hub.store import HubStore
from hub.web.accounts import Accounts
from hub.web.db import WebDb
from hub.web.demo import QueueExamples, seed_device_states, seed_queue_examples
from tests.hub.test_web_browser import device_config
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

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
SCREENSHOTS = Path(os.environ["SONOPI_WEB_SCREENSHOTS"]) if os.environ.get("SONOPI_WEB_SCREENSHOTS") else None
PASSWORD = "operator-password-1"
SITE, DEVICE = "st-marys", "pi-st-ma-1"
DESKTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}


def record(p_malignant: float, *, created_at: str | None = None, patient: str = "PT-LIVE-1") -> ResultRecord:
    rest = round(1 - p_malignant, 4)
    return ResultRecord(
        result_id=new_result_id(),
        created_at=created_at or utc_now_iso(),
        device_id=DEVICE,
        site=SITE,
        model_name="sonopi-lite0",
        model_version="1.3.0",
        model_sha256="5f" * 32,
        probabilities={"benign": round(rest * 0.8, 4), "malignant": p_malignant, "normal": round(rest * 0.2, 4)},
        label="malignant" if p_malignant >= 0.35 else "benign",
        inconclusive=False,
        thresholds={"malignant": 0.35},
        exam_id=str(uuid.uuid4()),
        patient_ref=patient,
        side="R",
        latency_ms=90.0,
    )


@dataclass
class Rig:
    root: Path
    url: str
    examples: QueueExamples
    device_store: ResultStore
    procs: dict[str, subprocess.Popen[bytes]]
    backlog: ResultRecord  # stored on the device before its uplink started: sent as historical

    def web_log(self) -> str:
        return (self.root / "web.log").read_text(errors="replace")


def _http_up(url: str, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"web console exited with {proc.returncode}")
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "hub.sqlite")
    return request.getfixturevalue("postgres_server").create_database(f"qb_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def rig(target: str, tmp_path: Path) -> Iterator[Rig]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does this)")
    with HubStore.open(target) as store:
        examples = seed_queue_examples(store)
        seed_device_states(store)
    db = WebDb.open(target)
    Accounts(db).add_user("olga", PASSWORD, "operator")
    db.close()
    # Provisioned: a plain site/device line, and an excerpt of the broker's acl (user lines read, the rest skipped).
    (tmp_path / "devices.txt").write_text(
        f"# provisioned for this hub\n{SITE}/{DEVICE}\nst-marys/pi-st-ma-2\n"
        "user sonopi-hub\n\n# device riverside/pi-river-9\nuser riverside/pi-river-9\n"
        "topic write sonopi/v1/riverside/pi-river-9/result\n"
    )
    (tmp_path / "hub.toml").write_text(f'[console]\nescalate_after_min = 60\ndevices_file = "{tmp_path / "devices.txt"}"\n')
    broker = MosquittoBroker(tmp_path / "broker").start()
    store_path = tmp_path / "device" / "results.sqlite"
    store_path.parent.mkdir()
    device_store = ResultStore(store_path)
    backlog = record(0.12, created_at=utc_now_iso(), patient="PT-BACKLOG")
    device_store.add(backlog)  # waits for the uplink: delivered as historical a few seconds after creation
    port = free_port()
    common = ["--config", str(tmp_path / "hub.toml"), "--db", target]
    procs = {
        "hub": start_process([sys.executable, "-m", "hub", "serve", *common, "--broker", broker.address], tmp_path / "hub.log"),
        "web": start_process(
            [sys.executable, "-m", "hub", "web", *common, "--port", str(port), "--live-poll", "0.3", "--devices-refresh", "60"], tmp_path / "web.log"
        ),
    }
    rig = Rig(tmp_path, f"http://localhost:{port}", examples, device_store, procs, backlog)
    try:
        wait_for(lambda: _http_up(f"http://127.0.0.1:{port}/healthz", procs["web"]), 30, "web console listening")
        procs["uplink"] = start_process(
            device_uplink_command() + ["--config", str(device_config(tmp_path, broker.address, store_path, SITE, DEVICE))], tmp_path / "uplink.log"
        )
        yield rig
    except BaseException:
        for log in tmp_path.glob("*.log"):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-2500:]}")
        raise
    finally:
        for proc in procs.values():
            stop_process(proc, signal.SIGKILL)
        device_store.close()
        broker.kill()


@pytest.fixture
def browser():
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


def new_page(browser, viewport: dict[str, int]):
    context = browser.new_context(viewport=viewport)
    context.set_default_timeout(30_000)
    return context.new_page()


def sign_in(page, rig: Rig) -> None:
    page.goto(f"{rig.url}/login")
    page.fill("input[name=username]", "olga")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/inbox")


def shot(page, name: str, target: str) -> None:
    if SCREENSHOTS:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{'pg' if '://' in target else 'sqlite'}.png"), full_page=True)


def fits(page) -> bool:
    """No horizontal scrolling of the page itself (wide tables scroll inside their own box)."""
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def row_ids(page) -> list[str]:
    return page.locator("#results tbody tr a.open").evaluate_all("links => links.map(a => new URL(a.href).pathname.split('/').pop())")


def test_operator_works_the_queue_in_the_browser(rig: Rig, browser, target: str) -> None:
    e = rig.examples
    page = new_page(browser, DESKTOP)
    sign_in(page, rig)
    page.wait_for_selector("#live[data-state=on]")
    # The backlog result arrives (historical, a few seconds after creation): shown, not tagged late.
    page.wait_for_selector(f'#results tr:has(a[href^="/results/{rig.backlog.result_id}"])')
    assert page.locator(f'#results tr:has(a[href^="/results/{rig.backlog.result_id}"]) .tag.late').count() == 0
    assert page.locator(f'#results tr:has(a[href^="/results/{e.backlog_late}"]) .tag.late').count() == 1
    ids = row_ids(page)
    assert ids[:3] == [e.suspicious, e.escalated, e.no_patient]  # unreviewed suspicious, highest risk first
    first = page.locator("#results tbody tr").first.inner_text()
    assert "Suspicious — refer" in first and "81.0%" in first and "35.0%" in first
    low = page.locator(f'#results tr:has(a[href^="/results/{e.low_benign}"])').inner_text()
    assert "19.6%" in low and "63.1%" not in low
    assert "1 suspicious result(s) unreviewed for more than 1 h" in page.inner_text("main")
    assert fits(page)
    shot(page, "inbox-1366", target)

    # Live: a new suspicious result goes to the top, a low-risk one below the other low-risk ones' betters.
    page.evaluate("window.__noReload = 'queue'")
    urgent, calm = record(0.93), record(0.15)
    rig.device_store.add(urgent)
    rig.device_store.add(calm)
    page.wait_for_selector(f'#results a[href^="/results/{calm.result_id}"]')
    page.wait_for_selector(f'#results a[href^="/results/{urgent.result_id}"]')
    ids = row_ids(page)
    assert ids[0] == urgent.result_id and ids.index(calm.result_id) == ids.index(e.low_benign) + 1
    assert page.evaluate("window.__noReload") == "queue"

    # Keyboard: j, j, Enter opens the second row; on the result page j goes to the next in the queue.
    page.keyboard.press("j")
    page.keyboard.press("j")
    assert page.locator("#results tbody tr.focused a.open").get_attribute("href").startswith(f"/results/{e.suspicious}")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/results/{e.suspicious}*")
    assert "p(malignant) 81.0%" in page.inner_text("main")
    page.keyboard.press("j")
    page.wait_for_url(f"**/results/{e.escalated}*")
    page.keyboard.press("k")
    page.wait_for_url(f"**/results/{e.suspicious}*")
    shot(page, "result-1366", target)
    # Review it and go straight on to the next one in the queue.
    page.check("#then-next")
    page.fill("textarea[name=note]", "recalled")
    page.click("button[value=reviewed]")
    page.wait_for_url(f"**/results/{e.escalated}*")
    page.goto(f"{rig.url}/results/{e.suspicious}")

    # The exam: every frame; tick two and review them in one go.
    page.click("#exam-link")
    page.wait_for_url(f"**/exams/{e.exam_with_patient}")
    assert page.locator("#results tbody tr").count() == 3
    page.check(f'input[value="{e.low_benign}"]')
    page.check(f'input[value="{e.normal}"]')
    assert page.inner_text("#picked") == "2"
    page.fill("#bulk input[name=note]", "benign-looking frames, seen")
    page.click("#bulk button[value=reviewed]")
    page.wait_for_url(f"**/exams/{e.exam_with_patient}")
    states = {rid: page.locator(f'#results tr:has(a[href^="/results/{rid}"]) .review').inner_text() for rid in (e.low_benign, e.suspicious, e.normal)}
    assert states == dict.fromkeys((e.low_benign, e.suspicious, e.normal), "Reviewed")
    assert page.locator("#results tr:has(input:checked)").count() == 0
    shot(page, "exam-1366", target)

    # Patient search: a form POST; the reference stays out of the address bar and the console's log.
    page.click("nav >> text=Patients")
    page.fill("input[name=patient_ref]", e.patient)
    page.click("#patient-search button[type=submit]")
    page.wait_for_selector("#found")
    assert page.url == f"{rig.url}/patients" and "3 result(s) in 1 exam(s)" in page.inner_text("#found")
    shot(page, "patients-1366", target)

    # Escalations and devices.
    page.click("nav >> text=Escalations")
    page.wait_for_url("**/escalations")
    escalated = page.locator("#escalations a.open").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert escalated == [f"/results/{e.escalated}"]  # 3 h old; the urgent live one is not (yet) escalated
    page.click("nav >> text=Devices")
    page.wait_for_url("**/devices")
    hot = page.locator('tr[data-device="st-marys/pi-st-ma-2"]').inner_text()
    assert "82 °C" in hot and "Overheating" in hot
    assert "Disk almost full" in page.locator('tr[data-device="north-clinic/pi-north-1"]').inner_text()
    assert fits(page)
    shot(page, "devices-1366", target)
    page.click(f'tr[data-device="{SITE}/{DEVICE}"] a.device-results')
    page.wait_for_url("**/inbox?site=st-marys&device=pi-st-ma-1&sort=newest")
    assert e.escalated not in row_ids(page) and row_ids(page)[:2] == [calm.result_id, urgent.result_id]

    web_log = rig.web_log()
    assert "POST /patients" in web_log and "GET /exams/" in web_log
    for ref in (e.patient, "PT-LIVE-1", "PT-BACKLOG"):
        assert ref not in web_log, ref


def test_pages_fit_a_phone_width_window(rig: Rig, browser, target: str) -> None:
    e = rig.examples
    page = new_page(browser, PHONE)
    sign_in(page, rig)
    for path, name in (
        ("/inbox", "inbox-phone"),
        (f"/results/{e.suspicious}", "result-phone"),
        (f"/exams/{e.exam_with_patient}", "exam-phone"),
        ("/devices", "devices-phone"),
        ("/escalations", "escalations-phone"),
    ):
        page.goto(f"{rig.url}{path}")
        assert fits(page), path
        shot(page, name, target)
    # The queue's first result and its category are visible without scrolling sideways.
    page.goto(f"{rig.url}/results/{e.suspicious}")
    box = page.locator("#category").bounding_box()
    assert box is not None and box["x"] + box["width"] <= PHONE["width"]
