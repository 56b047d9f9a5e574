"""The rest of issue 18 in a real headless Chromium (Debian's /usr/bin/chromium via Playwright) against the
real processes on SQLite and on PostgreSQL (the rig of tests/test_web_queue_browser.py: a device's store ->
`python -m device uplink` -> Mosquitto -> `python -m hub serve` -> hub database -> `python -m hub web`).

It proves that, in the browser:
- an operator assigns a result to himself, an exam to a named colleague, and unassigns; the assignee is
  shown in the queue, "assigned to me" filters the inbox, each change is in the audit trail, and a viewer
  account cannot be chosen;
"""

from __future__ import annotations

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
