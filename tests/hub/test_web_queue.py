"""The console as a queue (issue 18), over HTTP against the real application on real SQLite and PostgreSQL.

It proves that:
- the risk figure is p(malignant) with the threshold it was judged against and the category in clinician
  wording, never the top class's probability; contract v2 columns (category, p_malignant, mode) are shown
  when the hub stores them, and derived from probabilities/thresholds/label for v1 rows;
- the inbox puts unreviewed suspicious results first, then p(malignant) highest first, then the oldest; a
  review moves a result down; keyset paging covers every result once in every ordering, both directions;
- the CSV has one column per class probability, the threshold, category, p_malignant, mode, review state,
  reviewer and note;
- the exam page lists every frame and reviews the exam at once; a bulk review marks exactly the selected
  results, one audit entry each; results without a patient are flagged and can be filtered;
- patient search is a POST: the reference is never in a URL, a log line or the audit entry, and each
  search is audited;
- the escalation list holds unreviewed suspicious results older than the configured time, and the hub
  configuration refuses a bad value at start-up;
- devices show disk, temperature and throttling with a state and an action, and link to their results;
- "late" needs a delay over the documented threshold (a historical result delivered 3 s after creation
  is not late);
- the result page's previous/next follow the queue it was opened from and it links the exam's frames;
- on 2,500 results, whichever plan each attention rank takes (index walk, or filter index and sort), the
  pages equal the order computed from the rule, with and without filters.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("argon2")

from fastapi.testclient import TestClient

from device.errors import SonopiError
from hub.config import load_hub_config
from hub.store import HubStore
from hub.web.accounts import Accounts
from hub.web.app import create_app
from hub.web.config import WebConfig
from hub.web.db import WebDb
from hub.web.demo import (
    QueueExamples,
    seed_device_states,
    seed_queue_examples,
    seed_results,
)
from hub.web.inbox import Filters, Inbox, Queue, Sort
from hub.web.provisioned import ProvisionError, parse
from hub.web.reviews import Reviews
from tests.mqtt_broker import postgres_server  # noqa: F401  (fixture)

PASSWORD = "correct horse battery"
BASE = "https://console.test"
OPEN_LINK = re.compile(r'class="open" href="/results/([0-9a-f-]{36})')


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "hub.sqlite")
    server = request.getfixturevalue("postgres_server")
    return server.create_database(f"queue_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def examples(target: str) -> QueueExamples:
    with HubStore.open(target) as store:
        seeded = seed_queue_examples(store, thumbnails=False)
        seed_device_states(store)
    db = WebDb.open(target)
    try:
        for name, role in (("olga", "operator"), ("vic", "viewer")):
            Accounts(db).add_user(name, PASSWORD, role)
    finally:
        db.close()
    return seeded


@pytest.fixture
def app(target: str, examples: QueueExamples) -> Iterator:
    application = create_app(WebConfig(db=target, escalate_after_s=3600))
    yield application
    application.state.services.close()


def signed_in(app, username: str = "olga") -> tuple[TestClient, str]:
    c = TestClient(app, base_url=BASE, follow_redirects=False)
    token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/login").text).group(1)
    assert c.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token}).status_code == 303
    inbox = c.get("/inbox")
    return c, re.search(r'name="csrf_token" value="([^"]+)"', inbox.text).group(1)


def row_html(page: str, result_id: str) -> str:
    start = page.index(f'href="/results/{result_id}')
    return page[page.rindex("<tr", 0, start) : page.index("</tr>", start)]


def test_risk_is_p_malignant_with_threshold_and_category_not_the_top_class(app, examples: QueueExamples) -> None:
    c, _ = signed_in(app)
    row = row_html(c.get("/inbox").text, examples.low_benign)
    assert "19.6%" in row and "35.0%" in row and "Lesion — low suspicion" in row
    assert "63.1%" not in row  # the top class (benign) is not the risk figure
    assert "Suspicious — refer" in row_html(c.get("/inbox").text, examples.suspicious)
    assert "Inconclusive — rescan" in row_html(c.get("/inbox").text, examples.inconclusive)
    assert "No lesion seen" in row_html(c.get("/inbox").text, examples.normal)
    page = c.get(f"/results/{examples.low_benign}").text
    assert "p(malignant) 19.6%" in page and "threshold 35.0%" in page and "Lesion — low suspicion" in page


def test_v2_columns_are_shown_when_the_hub_stores_them(target: str, examples: QueueExamples) -> None:
    db = WebDb.open(target)
    try:
        columns = db.columns("results")
        real = "DOUBLE PRECISION" if db.pg else "REAL"
        with db.transaction() as tx:  # the hub's contract-v2 columns, if this hub does not have them yet
            for name, kind in (("category", "TEXT"), ("p_malignant", real), ("mode", "TEXT")):
                if name not in columns:
                    tx.execute(f"ALTER TABLE results ADD COLUMN {name} {kind}")
            tx.execute(
                "UPDATE results SET category = 'suspicious', p_malignant = 0.4, mode = 'high_sensitivity' WHERE result_id = ?", (examples.low_benign,)
            )
    finally:
        db.close()
    app = create_app(WebConfig(db=target))
    try:
        c, _ = signed_in(app)
        inbox = c.get("/inbox").text
        row = row_html(inbox, examples.low_benign)
        assert "Suspicious — refer" in row and "40.0%" in row and "high sensitivity" in row
        assert OPEN_LINK.findall(inbox)[:4] == [
            examples.suspicious,
            examples.escalated,
            examples.no_patient,
            examples.low_benign,
        ]  # the device's category puts it with them
        assert "category sent by the device" in c.get(f"/results/{examples.low_benign}").text
        assert "category derived" in c.get(f"/results/{examples.normal}").text
    finally:
        app.state.services.close()


def test_attention_order_then_a_review_moves_the_result_down(app, examples: QueueExamples) -> None:
    c, token = signed_in(app)
    e = examples
    expected = [
        e.suspicious,
        e.escalated,
        e.no_patient,  # unreviewed suspicious, p(malignant) highest first
        e.inconclusive,
        e.no_patient_other,
        e.low_benign,
        e.live_late,
        e.backlog_late,
        e.normal,
    ]
    assert OPEN_LINK.findall(c.get("/inbox").text) == expected
    assert c.post(f"/results/{e.suspicious}/review", data={"state": "reviewed", "note": "", "csrf_token": token}).status_code == 303
    assert OPEN_LINK.findall(c.get("/inbox").text) == [*expected[1:], e.suspicious]
    risk = OPEN_LINK.findall(c.get("/inbox?sort=risk").text)
    assert risk[:3] == [e.suspicious, e.escalated, e.no_patient] and risk[-1] == e.normal
    newest = OPEN_LINK.findall(c.get("/inbox?sort=newest").text)
    assert newest == [r.result_id for r in app.state.services.store.results(limit=None)]
    assert c.get("/inbox?sort=sideways").status_code == 400


@pytest.mark.parametrize("sort", list(Sort))
def test_keyset_paging_covers_every_result_once_in_each_ordering(app, examples: QueueExamples, sort: Sort) -> None:
    inbox: Inbox = app.state.services.inbox
    queue = Queue(Filters(), sort)
    whole = inbox.page(queue, size=100).rows
    pages, before = [], None
    while True:
        page = inbox.page(queue, before=before, size=2)
        pages.append(page)
        if page.older is None:
            break
        before = page.older
    assert [r.id for p in pages for r in p.rows] == [r.id for r in whole] and len(whole) == 9
    back = inbox.page(queue, after=pages[2].newer, size=2)  # the previous page, from the third one
    assert [r.id for r in back.rows] == [r.id for r in pages[1].rows]


def test_csv_has_a_column_per_probability_threshold_category_and_review(app, examples: QueueExamples) -> None:
    c, token = signed_in(app)
    c.post(f"/results/{examples.low_benign}/review", data={"state": "follow_up", "note": "=recall in 6 months", "csrf_token": token})
    rows = {r["result_id"]: r for r in csv.DictReader(io.StringIO(c.post("/inbox/export.csv", data={"csrf_token": token}).text))}
    row = rows[examples.low_benign]
    assert (row["p_benign"], row["p_malignant"], row["p_normal"]) == ("0.6310", "0.1960", "0.1730")
    assert (row["threshold_malignant"], row["category"], row["category_source"]) == ("0.3500", "low_suspicion", "derived")
    assert (row["review_state"], row["reviewer"], row["review_note"]) == ("follow_up", "olga", "'=recall in 6 months")
    assert row["mode"] == "" and row["reviewed_at"]
    assert rows[examples.suspicious]["category"] == "suspicious" and rows[examples.suspicious]["review_state"] == "unreviewed"


def test_exam_page_lists_every_frame_and_reviews_the_whole_exam(app, examples: QueueExamples) -> None:
    c, token = signed_in(app)
    page = c.get(f"/exams/{examples.exam_with_patient}").text
    assert OPEN_LINK.findall(page) == [examples.low_benign, examples.suspicious, examples.normal]  # as created
    assert examples.patient in page and "81.0%" in page and "1 of 3" in page
    assert (
        c.post(f"/exams/{examples.exam_with_patient}/review", data={"state": "follow_up", "note": "biopsy booked", "csrf_token": token}).status_code
        == 303
    )
    reviews = app.state.services.reviews
    for rid in (examples.low_benign, examples.suspicious, examples.normal):
        review = reviews.review(rid)
        assert (review.state, review.note, review.username) == ("follow_up", "biopsy booked", "olga")
        assert [e.action for e in reviews.entries(result_id=rid)] == ["review:follow_up"]
    assert reviews.review(examples.no_patient) is None
    assert c.get("/exams/no-such-exam").status_code == 404
    viewer, viewer_token = signed_in(app, "vic")
    assert viewer.post(f"/exams/{examples.exam_with_patient}/review", data={"state": "reviewed", "csrf_token": viewer_token}).status_code == 403


def test_bulk_review_marks_exactly_the_selected_results(app, examples: QueueExamples) -> None:
    c, token = signed_in(app)
    picked = [examples.escalated, examples.no_patient]
    r = c.post("/reviews/bulk", data={"result": picked, "state": "reviewed", "note": "seen at MDT", "back": "/inbox?sort=risk", "csrf_token": token})
    assert r.status_code == 303 and r.headers["location"] == "/inbox?sort=risk"
    reviews = app.state.services.reviews
    assert {rid: reviews.review(rid).note for rid in picked} == dict.fromkeys(picked, "seen at MDT")
    assert reviews.review(examples.suspicious) is None
    assert all(len(reviews.entries(result_id=rid)) == 1 for rid in picked)
    away = c.post("/reviews/bulk", data={"result": picked, "state": "reviewed", "back": "https://evil.example/", "csrf_token": token})
    assert away.headers["location"] == "/inbox"  # never redirected off the console
    assert c.post("/reviews/bulk", data={"state": "reviewed", "csrf_token": token}).status_code == 400


def test_results_without_a_patient_are_flagged_and_filterable(app, examples: QueueExamples) -> None:
    c, _ = signed_in(app)
    assert "no patient" in row_html(c.get("/inbox").text, examples.no_patient)
    assert "no patient" not in row_html(c.get("/inbox").text, examples.suspicious)
    assert set(OPEN_LINK.findall(c.get("/inbox?patient=missing").text)) == {examples.no_patient, examples.no_patient_other}
    assert "no patient reference sent" in c.get(f"/exams/{examples.exam_without_patient}").text


def test_patient_search_is_a_post_audited_without_the_reference(app, examples: QueueExamples, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    c, token = signed_in(app, "vic")  # viewers may search
    form = c.get("/patients").text
    assert 'method="post" action="/patients"' in form
    page = c.post("/patients", data={"patient_ref": examples.patient, "csrf_token": token}).text
    assert set(OPEN_LINK.findall(page)) == {examples.low_benign, examples.suspicious, examples.normal}
    assert "1 exam(s)" in page
    urls = re.findall(r'(?:href|src|action)="([^"]*)"', page)
    assert urls and not any(examples.patient in u for u in urls)
    entries = [e for e in app.state.services.reviews.entries() if e.action == "search:patient"]
    assert [(e.username, e.detail) for e in entries] == [("vic", "3 result(s) found")]
    assert examples.patient not in caplog.text
    assert c.post("/patients", data={"patient_ref": examples.patient}).status_code == 403  # no CSRF token
    assert c.get(f"/patients?patient_ref={examples.patient}").text.count(examples.patient) == 0


def test_escalation_list_and_its_setting(app, examples: QueueExamples, tmp_path: Path) -> None:
    c, token = signed_in(app)
    assert OPEN_LINK.findall(c.get("/escalations").text) == [examples.escalated]  # the 3-hour-old one only
    assert "1 suspicious result(s) unreviewed for more than 1 h" in c.get("/inbox").text
    c.post(f"/results/{examples.escalated}/review", data={"state": "follow_up", "csrf_token": token})
    assert OPEN_LINK.findall(c.get("/escalations").text) == []
    (tmp_path / "hub.toml").write_text("[console]\nescalate_after_min = 15\n")
    assert load_hub_config(tmp_path / "hub.toml").console.escalate_after_min == 15
    (tmp_path / "bad.toml").write_text("[console]\nescalate_after_min = -5\n")
    with pytest.raises(SonopiError):
        load_hub_config(tmp_path / "bad.toml")


def test_a_bad_provisioning_list_stops_the_console_naming_file_and_line(target: str, tmp_path: Path) -> None:
    listing = tmp_path / "devices.txt"
    listing.write_text("# provisioned\nst-marys/pi-1\nst marys pi 2\n")
    with pytest.raises(ProvisionError, match=r"devices\.txt:3: not a device .*'st marys pi 2'"):
        create_app(WebConfig(db=target, devices_file=listing))
    with pytest.raises(ProvisionError, match="cannot read"):
        create_app(WebConfig(db=target, devices_file=tmp_path / "absent.txt"))
    listing.write_text("user sonopi-hub\ntopic read sonopi/v1/+/+/result\nuser st-marys/pi-1\nnorth/pi-2\n")
    assert parse(listing.read_text(), "x") == {("st-marys", "pi-1"), ("north", "pi-2")}
    (tmp_path / "hub.toml").write_text(f'[console]\ndevices_file = "{listing}"\n')
    assert load_hub_config(tmp_path / "hub.toml").console.devices_file == listing


def test_devices_show_health_with_actions_and_link_to_their_results(app, examples: QueueExamples) -> None:
    c, _ = signed_in(app)
    page = c.get("/devices").text
    rows = {m.group(1): m.group(0) for m in re.finditer(r'<tr class="device[^"]*" data-device="([^"]+)">.*?</tr>', page, re.DOTALL)}
    hot = rows["st-marys/pi-st-ma-2"]
    assert "82 °C" in hot and "Overheating" in hot and "soft temperature limit now" in hot and "critical" in hot
    assert "300 MiB free" in rows["north-clinic/pi-north-1"] and "Disk almost full" in rows["north-clinic/pi-north-1"]
    assert "under-voltage, throttling since boot" in rows["north-clinic/pi-north-2"]  # 0x50000: bits 16, 18
    assert "21.0 GiB free" in rows["st-marys/pi-st-ma-1"] and "health ok" in rows["st-marys/pi-st-ma-1"]
    link = re.search(r'href="(/inbox\?site=st-marys&amp;device=pi-st-ma-1&amp;sort=newest)"', rows["st-marys/pi-st-ma-1"])
    listed = OPEN_LINK.findall(c.get(link.group(1).replace("&amp;", "&")).text)
    assert examples.suspicious in listed and examples.escalated not in listed  # the other device's


def test_late_needs_a_delay_over_the_threshold(app, examples: QueueExamples) -> None:
    c, _ = signed_in(app)
    inbox = c.get("/inbox").text
    assert "tag late" not in row_html(inbox, examples.live_late)  # historical, but delivered after 3 s
    assert "tag late" in row_html(inbox, examples.backlog_late)  # delivered 2 h after it was created
    assert "delivered late, 2 h after it was created" in c.get(f"/results/{examples.backlog_late}").text
    assert "delivered late" not in c.get(f"/results/{examples.live_late}").text


def test_result_page_previous_next_follow_the_queue_and_link_the_exam(app, examples: QueueExamples) -> None:
    c, _ = signed_in(app)
    e = examples
    page = c.get(f"/results/{e.escalated}").text
    assert re.search(rf'id="prev" rel="prev" href="/results/{e.suspicious}"', page)
    assert re.search(rf'id="next" rel="next" href="/results/{e.no_patient}"', page)
    first = c.get(f"/results/{e.suspicious}").text
    assert 'id="prev"' not in first and "first in queue" in first
    newest = c.get(f"/results/{e.escalated}?sort=newest").text  # the queue it was opened from
    assert re.search(rf'id="next" rel="next" href="/results/{e.inconclusive}\?sort=newest"', newest)
    filtered = c.get(f"/results/{e.low_benign}?label=benign&sort=risk").text
    assert re.search(rf'id="prev" rel="prev" href="/results/{e.no_patient_other}\?label=benign&amp;sort=risk"', filtered)
    assert f'href="/exams/{e.exam_with_patient}"' in filtered and "(3 frame(s))" in filtered
    frames = re.search(r'<ul class="frames" id="frames">(.*?)</ul>', filtered, re.DOTALL).group(1)
    assert re.findall(r'href="/results/([0-9a-f-]{36})"', frames) == [e.low_benign, e.suspicious, e.normal]


@pytest.fixture
def many(target: str) -> Iterator[Inbox]:
    """2,500 demo results (more than the walk threshold per rank) with every 7th one reviewed."""
    with HubStore.open(target) as store:
        seed_results(store, 2500)
    db = WebDb.open(target)
    inbox = Inbox(db)
    reviews = Reviews(db)
    for n, row in enumerate(list(inbox.all(Filters()))[::7]):
        reviews.set_review(result_pk=row.id, result_id=row.result_id, state="follow_up" if n % 3 else "reviewed", note="", username="olga")
    try:
        yield inbox
    finally:
        db.close()


@pytest.mark.parametrize(
    "filters",
    [
        Filters(),
        Filters(site="riverside"),
        Filters(label="benign"),
        Filters(label="malignant", site="st-marys"),
        Filters(label="inconclusive"),
        Filters(review="unreviewed", device_id="pi-river-2"),
    ],
    ids=["all", "site", "benign", "site+malignant", "inconclusive", "device+unreviewed"],
)
def test_index_walks_and_sorted_probes_give_the_reference_order(many: Inbox, filters: Filters) -> None:
    """Whichever plan each attention rank takes (index walk or filter index and sort), pages joined in
    either direction equal the order computed here from the rule."""

    def reference(sort: Sort) -> list[int]:
        rows = list(many.all(filters))
        risk = {r.id: r.assessment.p_malignant if r.assessment.p_malignant is not None else -1.0 for r in rows}
        rank = {r.id: r.rank if sort is Sort.ATTENTION else 0 for r in rows}
        return [r.id for r in sorted(rows, key=lambda r: (rank[r.id], -risk[r.id], r.created_at, r.id))]

    for sort in (Sort.ATTENTION, Sort.RISK):
        queue, seen, before = Queue(filters, sort), [], None
        while True:
            page = many.page(queue, before=before)
            seen += [r.id for r in page.rows]
            if page.older is None:
                break
            before = page.older
        assert seen == reference(sort) and seen, sort
        if len(seen) > 120:
            back = many.page(queue, after=seen[100])
            assert [r.id for r in back.rows] == seen[50:100]


def test_review_then_next_opens_the_next_result_in_the_same_queue(app, examples: QueueExamples) -> None:
    """ "Mark reviewed" with "then open the next" goes to the result that followed it before the review moved
    it down, keeping the queue; without it the page stays on the result."""
    c, token = signed_in(app)
    e = examples
    assert 'name="then" value="next"' in c.get(f"/results/{e.suspicious}").text
    r = c.post(f"/results/{e.suspicious}/review", data={"state": "reviewed", "then": "next", "csrf_token": token})
    assert r.headers["location"] == f"/results/{e.escalated}"
    r = c.post(f"/results/{e.low_benign}/review?sort=risk&label=benign", data={"state": "follow_up", "then": "next", "csrf_token": token})
    assert r.headers["location"] == f"/results/{e.live_late}?label=benign&sort=risk"
    r = c.post(f"/results/{e.normal}/review", data={"state": "reviewed", "csrf_token": token})
    assert r.headers["location"] == f"/results/{e.normal}"
    assert app.state.services.reviews.review(e.suspicious).state == "reviewed"
