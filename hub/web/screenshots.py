"""``python -m hub.web.screenshots [OUT_DIR]``: render the console's pages to PNG with Debian's Chromium.

Seeds a temporary hub database with synthetic results and device states (:mod:`hub.web.demo`), serves
the console on a free loopback port, signs in and saves ``web-inbox.png``, ``web-result.png``,
``web-exam.png``, ``web-escalations.png``, ``web-devices.png``, ``web-login.png`` (1366x768) and
``web-inbox-phone.png``, ``web-result-phone.png``, ``web-devices-phone.png`` (390x844). The devices page has a
provisioning list with one device that never connected. Needs the ``dev`` extra (playwright, the Python package only)
and ``/usr/bin/chromium``.
"""

from __future__ import annotations

import logging
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import uvicorn

from hub.store import HubStore
from hub.web.accounts import Accounts
from hub.web.app import create_app
from hub.web.assignments import Assignments
from hub.web.config import WebConfig
from hub.web.db import WebDb
from hub.web.demo import (
    DemoSpec,
    seed_device_states,
    seed_queue_examples,
    seed_results_as_delivered,
)
from hub.web.inbox import Filters, Inbox
from hub.web.reviews import Reviews

log = logging.getLogger(__name__)

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
USER, PASSWORD = "demo-operator", "demo-password-1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def seed(db_path: Path) -> tuple[str, str]:
    """Demo data; returns the result to show on the result page (a suspicious one in an exam) and its exam."""
    with HubStore.open(db_path) as store:
        seed_results_as_delivered(store, 400, spec=DemoSpec(thumbnail_every=1))
        seed_device_states(store)
        examples = seed_queue_examples(store)
    db = WebDb.open(str(db_path))
    try:
        accounts = Accounts(db)
        accounts.add_user(USER, PASSWORD, "operator")
        accounts.add_user("pavel", PASSWORD, "operator")
        inbox, reviews = Inbox(db), Reviews(db)
        rows = inbox.page(Filters()).rows
        for row, state, note in ((rows[4], "reviewed", "Consistent with prior imaging."), (rows[9], "follow_up", "Recall for biopsy.")):
            reviews.set_review(result_pk=row.id, result_id=row.result_id, state=state, note=note, username=USER)
        shown = next(r for r in rows if r.label == "malignant" and not r.inconclusive)
        reviews.set_review(
            result_pk=shown.id,
            result_id=shown.result_id,
            state="follow_up",
            note="Suspicious lesion upper outer quadrant; recall booked.",
            username=USER,
        )
        frames = inbox.exam(examples.exam_with_patient)
        Assignments(db, accounts).assign([(r.id, r.result_id) for r in frames], to=USER, by=USER, scope="exam")
        escalated = inbox.by_pks([r.id for r in inbox.escalations("9999")][:1])
        Assignments(db, accounts).assign([(r.id, r.result_id) for r in escalated], to="pavel", by=USER)
        frame = next(r for r in frames if r.result_id == examples.normal)
        reviews.set_review(result_pk=frame.id, result_id=frame.result_id, state="reviewed", note="", username=USER)
        return examples.suspicious, examples.exam_with_patient
    finally:
        db.close()


def render(out_dir: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sonopi-shots-") as tmp:
        db_path = Path(tmp) / "hub.sqlite"
        result_id, exam_id = seed(db_path)
        port = _free_port()
        listing = Path(tmp) / "devices.txt"
        listing.write_text("# provisioned for this hub\nst-marys/pi-st-ma-1\nriverside/pi-river-3\n")
        app = create_app(WebConfig(db=str(db_path), port=port, live_poll_s=0.5, devices_file=listing))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        base = f"http://localhost:{port}"
        written: list[Path] = []
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
                page = browser.new_page(viewport={"width": 1366, "height": 768})
                page.goto(f"{base}/login")
                written.append(_shot(page, out_dir / "web-login.png"))
                page.fill("input[name=username]", USER)
                page.fill("input[name=password]", PASSWORD)
                page.click("button[type=submit]")
                page.wait_for_url("**/inbox")
                page.wait_for_selector("#live[data-state=on]")
                written.append(_shot(page, out_dir / "web-inbox.png"))
                page.goto(f"{base}/results/{result_id}")
                page.wait_for_function("document.querySelector('.thumb img').complete")
                written.append(_shot(page, out_dir / "web-result.png", full=True))
                page.goto(f"{base}/exams/{exam_id}")
                written.append(_shot(page, out_dir / "web-exam.png", full=True))
                page.goto(f"{base}/escalations")
                written.append(_shot(page, out_dir / "web-escalations.png"))
                page.goto(f"{base}/devices")
                written.append(_shot(page, out_dir / "web-devices.png"))
                page.set_viewport_size({"width": 390, "height": 844})
                page.goto(f"{base}/inbox")
                written.append(_shot(page, out_dir / "web-inbox-phone.png"))
                page.goto(f"{base}/results/{result_id}")
                written.append(_shot(page, out_dir / "web-result-phone.png"))
                page.goto(f"{base}/devices")
                written.append(_shot(page, out_dir / "web-devices-phone.png"))
                browser.close()
        finally:
            server.should_exit = True
            thread.join(timeout=10)
    return written


def _shot(page, path: Path, full: bool = False) -> Path:
    page.screenshot(path=str(path), full_page=full)
    log.info("wrote %s", path)
    return path


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(argv[0]) if argv else Path("docs/screenshots")
    for path in render(out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
