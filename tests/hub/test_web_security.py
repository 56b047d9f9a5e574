"""The web console over HTTP (in-process ASGI client, real SQLite): security rules and the data it shows.

Browser behaviour (live updates, real processes) is in tests/hub/test_web_browser.py; login limits under
concurrency and exports against real `hub web` processes on SQLite and PostgreSQL in tests/hub/test_web_process.py.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import shutil
import sqlite3
from datetime import date
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("argon2")

from fastapi.testclient import TestClient

from device.link.contract import ResultMessage
from hub.store import HubStore
from hub.web import DISCLAIMER
from hub.web.accounts import Accounts, LoginOutcome
from hub.web.app import create_app
from hub.web.config import WebConfig
from hub.web.db import WebDb
from hub.web.demo import DemoSpec, demo_thumbnail, seed_device_states, seed_results
from hub.web.inbox import Filters, Inbox
from hub.web.limits import LoginLimits
from tests.mqtt_broker import postgres_server  # noqa: F401  (fixture)

PASSWORD = "correct horse battery"
BASE = "https://console.test"


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seeded once per module (argon2 hashing is deliberately slow); each test gets a copy."""
    path = tmp_path_factory.mktemp("web") / "hub.sqlite"
    with HubStore.open(path) as store:
        seed_results(store, 300, spec=DemoSpec(thumbnail_every=10))
        seed_device_states(store)
    db = WebDb.open(str(path))
    accounts = Accounts(db)
    for name, role in (("ada", "admin"), ("olga", "operator"), ("vic", "viewer")):
        accounts.add_user(name, PASSWORD, role)
    db.close()
    return path


@pytest.fixture
def db_path(template_db: Path, tmp_path: Path) -> Path:
    path = tmp_path / "hub.sqlite"
    shutil.copyfile(template_db, path)
    return path


@pytest.fixture
def app(db_path: Path):
    application = create_app(WebConfig(db=str(db_path)))
    yield application
    application.state.services.close()


def client(app) -> TestClient:
    return TestClient(app, base_url=BASE, follow_redirects=False)


def login_token(c: TestClient) -> str:
    page = c.get("/login")
    assert page.status_code == 200
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def login(c: TestClient, username: str, password: str = PASSWORD) -> str:
    """Log in; returns the session's CSRF token (from a page form)."""
    response = c.post("/login", data={"username": username, "password": password, "csrf_token": login_token(c)})
    assert response.status_code == 303, response.text
    inbox = c.get("/inbox")
    assert inbox.status_code == 200
    return re.search(r'name="csrf_token" value="([^"]+)"', inbox.text).group(1)


def first_result_id(app) -> str:
    return app.state.services.inbox.page(Filters()).rows[0].result_id


# --- authentication ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/", "/inbox", "/devices", "/audit", "/admin/users", "/inbox/export.csv", "/devices/table", "/results/x", "/results/x/fhir.json"]
)
def test_unauthenticated_pages_redirect_to_login(app, path: str) -> None:
    response = client(app).get(path)
    assert response.status_code == 303 and response.headers["location"] == "/login"


def test_unauthenticated_event_stream_is_refused(app) -> None:
    assert client(app).get("/inbox/events").status_code == 401


def test_login_sets_a_hardened_session_cookie_and_logout_ends_it(app) -> None:
    c = client(app)
    response = c.post("/login", data={"username": "olga", "password": PASSWORD, "csrf_token": login_token(c)})
    assert response.status_code == 303 and response.headers["location"] == "/inbox"
    cookie = next(v for v in response.headers.get_list("set-cookie") if v.startswith("__Host-sonopi_session="))
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"secure", "httponly", "path=/", "samesite=lax"} <= flags
    assert not any(f.startswith("domain=") for f in flags)
    inbox = c.get("/inbox")
    assert inbox.status_code == 200 and "olga" in inbox.text
    token = re.search(r'name="csrf_token" value="([^"]+)"', inbox.text).group(1)
    assert c.post("/logout", data={"csrf_token": token}).status_code == 303
    assert c.get("/inbox").status_code == 303


def test_wrong_password_and_unknown_user_are_refused_alike(app) -> None:
    c = client(app)
    wrong = c.post("/login", data={"username": "olga", "password": "nope-nope-nope", "csrf_token": login_token(c)})
    unknown = c.post("/login", data={"username": "nobody", "password": "nope-nope-nope", "csrf_token": login_token(c)})
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong username or password" in wrong.text and "Wrong username or password" in unknown.text
    assert c.get("/inbox").status_code == 303


def test_wrong_passwords_are_rate_limited_even_for_the_right_password_afterwards(app) -> None:
    c = client(app)
    limit = app.state.services.accounts.limits.per_client
    for _ in range(limit):
        r = c.post("/login", data={"username": "olga", "password": "guess-guess-guess", "csrf_token": login_token(c)})
        assert r.status_code == 401
    blocked = c.post("/login", data={"username": "olga", "password": PASSWORD, "csrf_token": login_token(c)})
    assert blocked.status_code == 429 and 0 < int(blocked.headers["Retry-After"]) <= 15 * 60
    assert "Too many failed sign-in attempts" in blocked.text
    assert c.get("/inbox").status_code == 303
    # Another account from elsewhere is not locked by olga's failures.
    other = client(app)
    login(other, "vic")


def test_rate_limit_per_address_across_usernames(db_path: Path) -> None:
    db = WebDb.open(str(db_path))
    accounts = Accounts(db, limits=LoginLimits(per_client=100, per_user=100, per_address=3))
    for name in ("a1", "a2", "a3"):
        assert accounts.login(name, "x" * 12, "10.9.9.9").outcome is LoginOutcome.WRONG
    assert accounts.login("olga", PASSWORD, "10.9.9.9").outcome is LoginOutcome.LIMITED
    assert accounts.login("olga", PASSWORD, "127.0.0.1").outcome is LoginOutcome.OK
    db.close()


def test_a_success_gives_its_slot_back_and_failures_keep_theirs(db_path: Path) -> None:
    db = WebDb.open(str(db_path))
    accounts = Accounts(db, limits=LoginLimits(per_client=2, per_user=100, per_address=100))
    for _ in range(5):  # signing in again and again never locks the owner out
        assert accounts.login("olga", PASSWORD, "10.1.1.1").outcome is LoginOutcome.OK
    assert accounts.login("olga", "wrong-wrong-wrong", "10.1.1.1").outcome is LoginOutcome.WRONG
    assert accounts.login("olga", PASSWORD, "10.1.1.1").outcome is LoginOutcome.OK
    assert accounts.login("olga", "wrong-wrong-wrong", "10.1.1.1").outcome is LoginOutcome.WRONG
    limited = accounts.login("olga", PASSWORD, "10.1.1.1")
    assert limited.outcome is LoginOutcome.LIMITED and limited.user is None and limited.retry_after_s > 0
    db.close()


def test_a_trusted_browser_token_is_worth_a_few_failures_then_no_more(app) -> None:
    """A stolen trusted-browser cookie is no unlimited pass: after ``per_trusted`` failures it is spent."""
    services = app.state.services
    owner = client(app)
    login(owner, "olga")
    cookie = owner.cookies.get("__Host-sonopi_trusted")
    assert cookie and len(cookie) >= 40
    thief = client(app)  # the same address as the owner (the test client's), with the owner's cookie
    thief.cookies.set("__Host-sonopi_trusted", cookie, domain="console.test")
    for _ in range(services.accounts.limits.per_trusted):
        r = thief.post("/login", data={"username": "olga", "password": "guess-guess-guess", "csrf_token": login_token(thief)})
        assert r.status_code == 401
    # The address's own budget for olga is untouched so far; spend it from a browser without the cookie.
    stranger = client(app)
    for _ in range(services.accounts.limits.per_client):
        assert (
            stranger.post("/login", data={"username": "olga", "password": "guess-guess-guess", "csrf_token": login_token(stranger)}).status_code
            == 401
        )
    # Now the spent cookie counts for nothing: the right password with it is refused like any new browser's.
    r = thief.post("/login", data={"username": "olga", "password": PASSWORD, "csrf_token": login_token(thief)})
    assert r.status_code == 429
    with sqlite3.connect(services.db.target) as conn:
        stored = [row[0] for row in conn.execute("SELECT token_hash FROM web_trusted_clients")]
    assert stored and cookie not in stored  # only the token's SHA-256 is kept


def test_a_trusted_browser_keeps_one_token_per_account(app) -> None:
    c = client(app)
    login(c, "olga")
    c.post("/logout", data={"csrf_token": re.search(r'name="csrf_token" value="([^"]+)"', c.get("/inbox").text).group(1)})
    login(c, "vic")  # a shared workstation
    tokens = c.cookies.get("__Host-sonopi_trusted").split(".")
    owners = app.state.services.accounts.trusted_owners(tokens)
    assert sorted(owners.values()) == ["olga", "vic"] and owners[tokens[0]] == "vic"


def test_passwords_are_stored_as_argon2id_hashes(db_path: Path) -> None:
    with sqlite3.connect(db_path) as conn:
        hashes = [row[0] for row in conn.execute("SELECT password_hash FROM web_users")]
    assert hashes and all(h.startswith("$argon2id$") for h in hashes)
    assert not any(PASSWORD in h for h in hashes)


def test_session_tokens_are_stored_hashed(app, db_path: Path) -> None:
    c = client(app)
    login(c, "olga")
    token = c.cookies.get("__Host-sonopi_session")
    with sqlite3.connect(db_path) as conn:
        stored = [row[0] for row in conn.execute("SELECT token_hash FROM web_sessions")]
    assert token and stored and token not in stored


def test_disabled_user_loses_session_and_cannot_log_in(app) -> None:
    c = client(app)
    login(c, "olga")
    app.state.services.accounts.set_disabled("olga", True)
    assert c.get("/inbox").status_code == 303
    again = client(app)
    r = again.post("/login", data={"username": "olga", "password": PASSWORD, "csrf_token": login_token(again)})
    assert r.status_code == 401


# --- CSRF ----------------------------------------------------------------------------------------


def test_login_without_csrf_token_is_refused(app) -> None:
    c = client(app)
    login_token(c)  # has the pre-session cookie, but does not send the token
    r = c.post("/login", data={"username": "olga", "password": PASSWORD})
    assert r.status_code == 403 and "CSRF" in r.text
    r = c.post("/login", data={"username": "olga", "password": PASSWORD, "csrf_token": "0" * 64})
    assert r.status_code == 403


def test_login_token_without_its_cookie_is_refused(app) -> None:
    token = login_token(client(app))
    fresh = client(app)  # another browser: no pre-session cookie
    r = fresh.post("/login", data={"username": "olga", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 403


def test_every_post_route_refuses_a_missing_or_foreign_csrf_token(app) -> None:
    c = client(app)
    token = login(c, "ada")
    rid = first_result_id(app)
    posts = sorted({route.path for route in app.routes if "POST" in getattr(route, "methods", set())} - {"/login"})
    exam = app.state.services.store.result(rid).exam_id
    concrete = {
        "/results/{result_id}/review": f"/results/{rid}/review",
        "/admin/users/{username}/{action}": "/admin/users/vic/disable",
        "/results/{result_id}/fhir.json": f"/results/{rid}/fhir.json",
        "/exams/{exam_id}/review": f"/exams/{exam}/review",
        "/results/{result_id}/assign": f"/results/{rid}/assign",
        "/exams/{exam_id}/assign": f"/exams/{exam}/assign",
        "/exams/{exam_id}/fhir.json": f"/exams/{exam}/fhir.json",
    }
    assert set(posts) == {
        "/logout",
        "/admin/users",
        "/results/{result_id}/review",
        "/admin/users/{username}/{action}",
        "/inbox/export.csv",
        "/results/{result_id}/fhir.json",
        "/exams/{exam_id}/review",
        "/reviews/bulk",
        "/patients",
        "/results/{result_id}/assign",
        "/exams/{exam_id}/assign",
        "/assignments/bulk",
        "/exams/{exam_id}/fhir.json",
    }
    services = app.state.services
    audited = len(services.reviews.entries())
    form = {
        "state": "reviewed",
        "note": "n",
        "username": "eve",
        "password": "p" * 12,
        "role": "viewer",
        "result": rid,
        "patient_ref": services.store.result(rid).patient_ref,
        "action": "assign",
        "to": "me",
    }
    for path in posts:
        url = concrete.get(path, path)
        assert c.post(url, data=form).status_code == 403, url
        assert c.post(url, data={**form, "csrf_token": "forged"}).status_code == 403, url
        assert c.post(url, data={**form, "csrf_token": token}, headers={"Origin": "https://evil.example"}).status_code == 403, url
    # Nothing changed: still logged in, no review, vic still enabled, no user eve, nothing exported or audited.
    assert c.get("/inbox").status_code == 200
    assert services.reviews.review(rid) is None and services.assignments.assignment(rid) is None
    assert not services.accounts.user("vic").disabled and services.accounts.user("eve") is None
    assert len(services.reviews.entries()) == audited


def test_review_with_token_is_recorded_in_the_audit_log(app) -> None:
    c = client(app)
    token = login(c, "olga")
    rid = first_result_id(app)
    r = c.post(f"/results/{rid}/review", data={"state": "follow_up", "note": "recall for biopsy", "csrf_token": token})
    assert r.status_code == 303
    review = app.state.services.reviews.review(rid)
    assert (review.state, review.note, review.username) == ("follow_up", "recall for biopsy", "olga")
    entries = app.state.services.reviews.entries(result_id=rid)
    assert [(e.username, e.action, e.detail) for e in entries] == [("olga", "review:follow_up", "recall for biopsy")]
    page = c.get(f"/results/{rid}")
    assert "Needs follow-up" in page.text and "recall for biopsy" in page.text
    audit = c.get("/audit")
    assert rid[:8] in audit.text and "review:follow_up" in audit.text


def test_audit_log_is_append_only_in_the_database(app, db_path: Path) -> None:
    app.state.services.reviews.audit("test", "olga", "x")
    with sqlite3.connect(db_path) as conn:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE web_audit SET detail = 'changed'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM web_audit")


# --- roles ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("username", ["vic", "olga"])
def test_viewer_and_operator_cannot_administer_users(app, username: str) -> None:
    c = client(app)
    token = login(c, username)
    assert c.get("/admin/users").status_code == 403
    assert c.post("/admin/users", data={"username": "mallory", "password": "p" * 12, "role": "admin", "csrf_token": token}).status_code == 403
    assert c.post("/admin/users/ada/disable", data={"csrf_token": token}).status_code == 403
    accounts = app.state.services.accounts
    assert accounts.user("mallory") is None and not accounts.user("ada").disabled
    assert "/admin/users" not in c.get("/inbox").text


def test_viewer_cannot_review(app) -> None:
    c = client(app)
    token = login(c, "vic")
    rid = first_result_id(app)
    assert "Mark reviewed" not in c.get(f"/results/{rid}").text
    r = c.post(f"/results/{rid}/review", data={"state": "reviewed", "note": "", "csrf_token": token})
    assert r.status_code == 403 and app.state.services.reviews.review(rid) is None


def test_admin_adds_and_disables_users(app) -> None:
    c = client(app)
    token = login(c, "ada")
    assert c.post("/admin/users", data={"username": "nina", "password": "n" * 12, "role": "viewer", "csrf_token": token}).status_code == 303
    assert c.post("/admin/users/nina/disable", data={"csrf_token": token}).status_code == 303
    assert app.state.services.accounts.user("nina").disabled
    page = c.get("/admin/users")
    assert "nina" in page.text
    short = c.post("/admin/users", data={"username": "tim", "password": "short", "role": "viewer", "csrf_token": token})
    assert "too short" in short.text and app.state.services.accounts.user("tim") is None
    actions = [e.action for e in app.state.services.reviews.entries()]
    assert "user:add" in actions and "user:disable" in actions


# --- privacy -------------------------------------------------------------------------------------


def test_no_patient_reference_in_urls_or_logs(app, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    c = client(app)
    token = login(c, "olga")
    services = app.state.services
    rows = services.inbox.page(Filters()).rows
    refs = {r.patient_ref for r in rows if r.patient_ref}
    inbox = c.get("/inbox")
    rid = rows[0].result_id
    page = c.get(f"/results/{rid}")
    c.post(f"/results/{rid}/review", data={"state": "reviewed", "note": "ok", "csrf_token": token})
    assert c.post("/inbox/export.csv", data={"csrf_token": token}).status_code == 200
    assert c.post(f"/results/{rid}/fhir.json", data={"csrf_token": token}).status_code == 200
    assert rows[0].patient_ref in page.text  # shown on the page ...
    urls = re.findall(r'(?:href|src|action|data-events)="([^"]*)"', inbox.text + page.text)
    assert urls and not [u for u in urls if any(ref in u for ref in refs)]  # ... never in a URL
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "login olga" in logged
    assert not [ref for ref in refs if ref in logged]
    audit = "\n".join(e.detail for e in services.reviews.entries())
    assert not [ref for ref in refs if ref in audit]


def test_security_headers(app) -> None:
    c = client(app)
    login(c, "vic")
    headers = c.get("/inbox").headers
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"


# --- what operators see --------------------------------------------------------------------------


def test_inbox_filters_and_keyset_paging_cover_every_result_once(app) -> None:
    c = client(app)
    login(c, "vic")
    seen: list[str] = []
    url = "/inbox?label=benign&sort=newest"  # the inbox defaults to needs-attention-first
    while url:
        page = c.get(url)
        assert page.status_code == 200
        seen += re.findall(r'href="/results/([0-9a-f-]{36})[?"]', page.text)
        older = re.search(r'href="(/inbox\?[^"]*before=\d+)"', page.text)
        url = older.group(1).replace("&amp;", "&") if older else None
    store = app.state.services.store
    expected = [r.result_id for r in store.results(label="benign", limit=None)]
    assert seen == expected and len(expected) > 50  # more than one page, newest first, none twice
    assert "badge malignant" in c.get("/inbox?label=malignant").text
    assert "badge benign" not in c.get("/inbox?label=malignant").text


def test_inbox_review_and_date_filters(app) -> None:
    services = app.state.services
    inbox = services.inbox
    rows = inbox.page(Filters()).rows
    services.reviews.set_review(result_pk=rows[3].id, result_id=rows[3].result_id, state="reviewed", note="", username="olga")
    assert [r.result_id for r in inbox.page(Filters(review="reviewed")).rows] == [rows[3].result_id]
    assert rows[3].result_id not in {r.result_id for r in inbox.all(Filters(review="unreviewed"))}
    day = date.fromisoformat(rows[0].created_at[:10])
    same_day = list(inbox.all(Filters(date_from=day, date_to=day)))
    assert same_day and all(r.created_at.startswith(day.isoformat()) for r in same_day)
    assert inbox.count(Filters(label="inconclusive")) == services.store.count_results(label="inconclusive")
    with pytest.raises(ValueError):
        Filters.from_query({"from": "yesterday"})
    c = client(app)
    login(c, "vic")
    bad = c.get("/inbox?from=yesterday")
    assert bad.status_code == 400 and "not a date" in bad.text


def test_live_updates_follow_the_filter(app) -> None:
    inbox = app.state.services.inbox
    newest = inbox.page(Filters()).rows[0].id
    start = newest - 40
    fresh = inbox.since(Filters(label="malignant"), start)
    everything = inbox.since(Filters(), start)
    assert [r.id for r in everything] == list(range(start + 1, newest + 1))  # oldest first, none missed
    assert [r.id for r in fresh] == [r.id for r in everything if r.label == "malignant"] and fresh
    assert inbox.since(Filters(), newest) == []


def test_count_is_capped(tmp_path: Path) -> None:
    path = tmp_path / "cap.sqlite"
    with HubStore.open(path) as store:
        seed_results(store, 120)
    db = WebDb.open(str(path))
    assert Inbox(db).count(Filters(), cap=100) == 101
    assert Inbox(db).count(Filters(), cap=1000) == 120
    db.close()


def test_result_page_shows_everything_with_the_disclaimer(app) -> None:
    c = client(app)
    login(c, "vic")
    store = app.state.services.store
    result = next(r for r in store.results(limit=None) if r.thumbnail is not None and r.historical is False)
    page = c.get(f"/results/{result.result_id}").text
    for text in (
        DISCLAIMER,
        result.patient_ref,
        result.exam_id,
        result.site,
        result.device_id,
        result.model_sha256,
        result.model_version,
        "Reached the hub",
        "Created on device",
        "Threshold",
    ):
        assert text in page, text
    thumb = c.get(f"/results/{result.result_id}/thumbnail.jpg")
    assert thumb.status_code == 200 and thumb.content == result.thumbnail
    late = next(r for r in store.results(limit=None) if r.historical)
    assert "delivered late" in c.get(f"/results/{late.result_id}").text
    assert c.get("/results/00000000-0000-4000-8000-000000000000").status_code == 404


def test_inconclusive_result_shows_reasons(app) -> None:
    c = client(app)
    login(c, "vic")
    result = app.state.services.store.results(label="inconclusive", limit=1)[0]
    page = c.get(f"/results/{result.result_id}").text
    assert "Inconclusive" in page and result.reasons[0] in page and DISCLAIMER in page


def test_markup_is_escaped_and_sql_is_never_spliced_in(app, db_path: Path) -> None:
    """XSS: markup in a result, a filter value or the export page is shown as text. SQL injection: a
    username or filter value is a bound parameter (it matches nothing and breaks nothing)."""
    script = '"><script>alert(1)</script>'
    with HubStore.open(db_path) as store:
        store.add_result(
            ResultMessage(
                result_id="22222222-2222-4222-8222-222222222222",
                seq=99998,
                device_id="pi-st-ma-1",
                site="st-marys",
                created_at="2026-02-01T10:00:00.000Z",
                model_name="m",
                model_version="1",
                model_sha256="ab" * 32,
                probabilities={"benign": 0.9, "malignant": 0.1},
                label="benign",
                inconclusive=False,
                patient_ref=script,
            )
        )
    c = client(app)
    token = login(c, "vic")
    pages = [
        c.get("/inbox?sort=newest"),
        c.get("/results/22222222-2222-4222-8222-222222222222"),
        c.get("/inbox/export.csv", params={"site": script}),
        c.get("/inbox", params={"device": script}),
    ]
    for page in pages:
        assert "<script>alert(1)" not in page.text and "&lt;script&gt;alert(1)" in page.text, page.url
    injection = "x' OR '1'='1"
    r = c.post("/inbox/export.csv", data={"site": injection, "csrf_token": token})
    assert r.status_code == 200 and len(list(csv.DictReader(io.StringIO(r.text)))) == 0
    stranger = client(app)
    r = stranger.post("/login", data={"username": injection, "password": injection, "csrf_token": login_token(stranger)})
    assert r.status_code == 401
    assert len(app.state.services.accounts.users()) == 3


def test_csv_export_follows_the_filter_and_defuses_formulas(app, db_path: Path) -> None:
    with HubStore.open(db_path) as store:
        store.add_result(
            ResultMessage(
                result_id="11111111-1111-4111-8111-111111111111",
                seq=99999,
                device_id="pi-st-ma-1",
                site="st-marys",
                created_at="2026-02-01T10:00:00.000Z",
                model_name="m",
                model_version="1",
                model_sha256="ab" * 32,
                probabilities={"benign": 0.1, "malignant": 0.9},
                label="malignant",
                inconclusive=False,
                patient_ref="=HYPERLINK(1)",
            )
        )
    c = client(app)
    token = login(c, "vic")
    response = c.post("/inbox/export.csv", data={"label": "malignant", "site": "st-marys", "csrf_token": token})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    store = app.state.services.store
    assert [r["result_id"] for r in rows] == [r.result_id for r in store.results(label="malignant", site="st-marys", limit=None)]
    assert {r["outcome"] for r in rows} == {"malignant"}
    formula = next(r for r in rows if r["result_id"].startswith("11111111"))
    assert formula["patient_ref"] == "'=HYPERLINK(1)"


def test_fhir_diagnostic_report(app) -> None:
    c = client(app)
    token = login(c, "vic")
    result = app.state.services.store.results(label="malignant", limit=1)[0]
    response = c.post(f"/results/{result.result_id}/fhir.json", data={"csrf_token": token})
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/fhir+json")
    report = json.loads(response.text)
    assert report["resourceType"] == "DiagnosticReport" and report["status"] == "preliminary"
    assert report["identifier"][0]["value"] == result.result_id
    assert report["subject"]["identifier"]["value"] == result.patient_ref
    assert report["effectiveDateTime"] == result.created_at and report["issued"] == result.received_at
    assert DISCLAIMER in report["conclusion"] and report["conclusionCode"][0]["coding"][0]["code"] == "malignant"
    contained = {obs["id"]: obs for obs in report["contained"]}
    assert {o["resourceType"] for o in contained.values()} == {"Observation"}
    assert [ref["reference"][1:] for ref in report["result"]] == sorted(contained)
    probabilities = {o["code"]["coding"][0]["code"].removeprefix("probability-"): o["valueQuantity"]["value"] for o in contained.values()}
    assert probabilities == pytest.approx(result.probabilities)
    assert "referenceRange" in contained["prob-malignant"]  # the malignant decision threshold


def test_fhir_report_validates_against_the_r4b_models(app) -> None:
    fhir_report = pytest.importorskip("fhir.resources.R4B.diagnosticreport", reason="fhir.resources not installed")
    c = client(app)
    token = login(c, "vic")
    for label in ("malignant", "inconclusive"):
        result = app.state.services.store.results(label=label, limit=1)[0]
        document = json.loads(c.post(f"/results/{result.result_id}/fhir.json", data={"csrf_token": token}).text)
        parsed = fhir_report.DiagnosticReport.model_validate(document)
        assert len(parsed.contained) == len(result.probabilities)


def test_devices_page_flags_silent_and_offline(app) -> None:
    c = client(app)
    login(c, "vic")
    text = c.get("/devices").text
    states = dict(re.findall(r'data-device="([^"]+)">\s*<td><span class="presence (\w+)"', text))
    expected = {f"{d.site}/{d.device_id}": d.presence() for d in app.state.services.store.devices()}
    assert states == expected and {"online", "silent", "offline"} <= set(states.values())
    assert next(iter(states.values())) == "silent"  # silent devices first


def test_demo_thumbnail_is_a_jpeg() -> None:
    assert demo_thumbnail(3).startswith(b"\xff\xd8")


# --- CLI -----------------------------------------------------------------------------------------


def test_cli_user_add_disable_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from hub.cli import main

    db = str(tmp_path / "cli.sqlite")
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-password\n"))
    assert main(["user", "--db", db, "add", "Zoe", "--role", "admin", "--password-stdin"]) == 0
    assert main(["user", "--db", db, "disable", "zoe"]) == 0
    assert main(["user", "--db", db, "list"]) == 0
    out = capsys.readouterr().out
    assert "added zoe (admin)" in out and re.search(r"zoe\s+admin\s+disabled", out)
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["user", "--db", db, "add", "yan", "--password-stdin"]) == 2
    assert main(["user", "--db", db, "disable", "nobody"]) == 2
    web = WebDb.open(db)
    accounts = Accounts(web)
    assert accounts.user("zoe").disabled and accounts.authenticate("zoe", "a-long-password", "127.0.0.1") is None
    web.close()


# --- PostgreSQL ----------------------------------------------------------------------------------


def test_the_console_on_postgresql(postgres_server) -> None:
    psycopg = pytest.importorskip("psycopg")
    dsn = postgres_server.create_database("web_console")
    with HubStore.open(dsn) as store:
        seed_results(store, 250, spec=DemoSpec(thumbnail_every=25))
        seed_device_states(store)
    db = WebDb.open(dsn)
    Accounts(db).add_user("olga", PASSWORD, "operator")
    db.close()
    app = create_app(WebConfig(db=dsn))
    try:
        assert app.state.services.db.pg
        c = client(app)
        token = login(c, "olga")
        store = app.state.services.store
        expected = [r.result_id for r in store.results(label="benign", limit=None)]
        seen: list[str] = []
        url = "/inbox?label=benign&sort=newest"  # the inbox defaults to needs-attention-first
        while url:
            page = c.get(url)
            seen += re.findall(r'href="/results/([0-9a-f-]{36})[?"]', page.text)
            older = re.search(r'href="(/inbox\?[^"]*before=\d+)"', page.text)
            url = older.group(1).replace("&amp;", "&") if older else None
        assert seen == expected and len(expected) > 50
        rid = expected[0]
        assert c.post(f"/results/{rid}/review", data={"state": "reviewed", "note": "pg", "csrf_token": token}).status_code == 303
        assert [r.result_id for r in app.state.services.inbox.page(Filters(review="reviewed")).rows] == [rid]
        rows = list(csv.DictReader(io.StringIO(c.post("/inbox/export.csv", data={"review": "reviewed", "csrf_token": token}).text)))
        assert [r["result_id"] for r in rows] == [rid] and rows[0]["review_state"] == "reviewed"
        assert json.loads(c.post(f"/results/{rid}/fhir.json", data={"csrf_token": token}).text)["id"] == rid
        assert "presence silent" in c.get("/devices").text
        with psycopg.connect(dsn, autocommit=True) as conn:
            with pytest.raises(psycopg.Error, match="append-only"):
                conn.execute("UPDATE web_audit SET detail = 'changed'")
            with pytest.raises(psycopg.Error, match="append-only"):
                conn.execute("DELETE FROM web_audit")
    finally:
        app.state.services.close()
