"""The console's login limits and exports against real `python -m hub web` processes, on SQLite and on
PostgreSQL (issue 17, defect 7).

It proves that:
- 40 concurrent guesses at one account, spread over two console processes on one database, are
  evaluated at most up to the limit (5), and the right password sent as #30 does not sign in;
- a stranger's failures do not lock the owner out: not from another address, and not from the
  owner's own address (a shared NAT) when the owner's browser has signed in before; a new browser still
  faces the per-account limit;
- an export by GET exports nothing and writes no audit entry; an export by POST (with the session's
  CSRF token) works and is audited once, and without the token is refused and not audited.

Clients are plain HTTP on loopback with their own cookie handling (the console's cookies are
``Secure``/``__Host-``, as in production); client addresses come from ``X-Forwarded-For``, which the
console trusts from 127.0.0.1 only (``--forwarded-allow-ips``), as behind the TLS proxy.
"""

from __future__ import annotations

import csv
import io
import json
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from http.cookies import SimpleCookie
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from hub.store import HubStore
from hub.web.accounts import Accounts
from hub.web.db import WebDb
from hub.web.demo import DemoSpec, seed_device_states, seed_results
from hub.web.reviews import AuditEntry, Reviews
from tests.mqtt_broker import free_port, postgres_server, start_process, stop_process, wait_for  # noqa: F401  (postgres_server: fixture)

pytestmark = pytest.mark.timeout(300)

PASSWORD = "olga-correct-horse"
WRONG = "not-olgas-password"
LIMIT = 5  # failures for one account from one address (docs/web.md, "Login limits")
SESSION_COOKIE = "__Host-sonopi_session"


# --- the consoles --------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A hub database with 60 demo results and the operator ``olga``."""
    if request.param == "sqlite":
        db_target = str(tmp_path / "hub.sqlite")
    else:
        server = request.getfixturevalue("postgres_server")
        db_target = server.create_database(f"web_{uuid.uuid4().hex[:12]}")
    with HubStore.open(db_target) as store:
        seed_results(store, 60, spec=DemoSpec())
        seed_device_states(store)
    db = WebDb.open(db_target)
    try:
        Accounts(db).add_user("olga", PASSWORD, "operator")
    finally:
        db.close()
    return db_target


@dataclass
class Console:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path


def _wait_healthy(console: Console) -> None:
    def up() -> bool:
        if console.proc.poll() is not None:
            raise RuntimeError(f"hub web exited with {console.proc.returncode}:\n{console.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{console.url}/healthz", timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    wait_for(up, 60, "hub web listening")


@pytest.fixture
def consoles(target: str, tmp_path: Path) -> Iterator[list[Console]]:
    """Two `hub web` processes on the same database (the limits live in the database, not a process)."""
    started: list[Console] = []
    try:
        for n in range(2):
            port = free_port()
            log = tmp_path / f"web-{n}.log"
            proc = start_process([sys.executable, "-m", "hub", "web", "--db", target, "--port", str(port), "--forwarded-allow-ips", "127.0.0.1"], log)
            started.append(Console(f"http://127.0.0.1:{port}", proc, log))
        for console in started:
            _wait_healthy(console)
        yield started
    finally:
        for console in started:
            stop_process(console.proc, signal.SIGTERM)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    # A jar that keeps nothing: each Browser keeps its own cookies (a jar would not send Secure cookies over http).
    jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    with httpx.Client(
        cookies=jar, timeout=120, follow_redirects=False, limits=httpx.Limits(max_connections=100, max_keepalive_connections=0)
    ) as client:
        yield client


@dataclass
class Browser:
    """One browser at one client address: its own cookies, sent by hand."""

    http: httpx.Client
    console: Console
    address: str
    cookies: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def request(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        with self._lock:
            cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        headers = {"X-Forwarded-For": self.address, **({"Cookie": cookie} if cookie else {})}
        response = self.http.request(method, self.console.url + path, headers=headers, **kwargs)  # type: ignore[arg-type]
        self._remember(response)
        return response

    def _remember(self, response: httpx.Response) -> None:
        for header in response.headers.get_list("set-cookie"):
            for name, morsel in SimpleCookie(header).items():
                with self._lock:
                    if morsel.value and morsel["max-age"] != "0":
                        self.cookies[name] = morsel.value
                    else:
                        self.cookies.pop(name, None)

    def login_token(self) -> str:
        page = self.request("GET", "/login")
        assert page.status_code == 200, page.text
        return _csrf(page.text)

    def sign_in(self, password: str, username: str = "olga", token: str | None = None) -> httpx.Response:
        return self.request("POST", "/login", data={"username": username, "password": password, "csrf_token": token or self.login_token()})

    def page_token(self, path: str = "/inbox") -> str:
        page = self.request("GET", path)
        assert page.status_code == 200, page.text
        return _csrf(page.text)

    def sign_out(self) -> None:
        assert self.request("POST", "/logout", data={"csrf_token": self.page_token()}).status_code == 303
        assert SESSION_COOKIE not in self.cookies


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def _sessions(target: str) -> int:
    db = WebDb.open(target)
    try:
        row = db.one("SELECT COUNT(*) FROM web_sessions")
        return int(row[0]) if row else 0
    finally:
        db.close()


def _audit(target: str) -> list[AuditEntry]:
    db = WebDb.open(target)
    try:
        return Reviews(db).entries(limit=10_000)
    finally:
        db.close()


# --- login limits --------------------------------------------------------------------------------


def test_forty_concurrent_guesses_are_evaluated_at_most_up_to_the_limit(consoles: list[Console], client: httpx.Client, target: str) -> None:
    attackers = [Browser(client, console, "10.20.0.1") for console in consoles]
    tokens = [a.login_token() for a in attackers]
    statuses: dict[int, int] = {}
    signed_in: dict[int, bool] = {}

    def attempt(n: int, password: str, barrier: threading.Barrier | None = None) -> int:
        browser = attackers[n % 2]
        if barrier is not None:
            barrier.wait(timeout=60)
        response = browser.http.request(
            "POST",
            browser.console.url + "/login",
            data={"username": "olga", "password": password, "csrf_token": tokens[n % 2]},
            headers={"X-Forwarded-For": browser.address, "Cookie": "; ".join(f"{k}={v}" for k, v in browser.cookies.items())},
        )
        statuses[n] = response.status_code
        signed_in[n] = any(h.startswith(SESSION_COOKIE + "=") for h in response.headers.get_list("set-cookie"))
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) > 0
        return response.status_code

    with ThreadPoolExecutor(max_workers=40) as pool:
        barrier = threading.Barrier(29)
        first: list[Future[int]] = [pool.submit(attempt, n, WRONG, barrier) for n in range(1, 30)]
        # #30 (the right password) and the rest go as soon as one guess is refused — from then on every
        # slot is held by a wrong guess — or once all 29 are answered, whichever comes first.
        for done in as_completed(first):
            if done.result() == 429:
                break
        second = [pool.submit(attempt, n, PASSWORD if n == 30 else WRONG) for n in range(30, 41)]
        for future in first + second:
            future.result()

    evaluated = sorted(n for n, status in statuses.items() if status != 429)
    assert set(statuses.values()) <= {401, 429}, statuses
    assert len(evaluated) <= LIMIT, f"{len(evaluated)} of 40 concurrent guesses were evaluated: {evaluated}"
    assert statuses[30] == 429 and not signed_in[30], "the right password at #30 was evaluated"
    assert _sessions(target) == 0
    # Two processes served them: the limit is held in the database, not in one process.
    logs = [c.log.read_text(errors="replace") for c in consoles]
    assert all("POST /login" in text for text in logs)


def test_a_strangers_failures_from_another_address_do_not_lock_the_owner_out(consoles: list[Console], client: httpx.Client) -> None:
    stranger = Browser(client, consoles[0], "10.66.0.6")
    answers = [stranger.sign_in(WRONG).status_code for _ in range(LIMIT + 3)]
    assert answers[:LIMIT] == [401] * LIMIT and set(answers[LIMIT:]) == {429}
    # The owner, on a browser that has never signed in, at her own address.
    owner = Browser(client, consoles[1], "10.1.1.20")
    assert owner.sign_in(PASSWORD).status_code == 303
    assert owner.request("GET", "/inbox").status_code == 200


def test_a_strangers_failures_do_not_lock_out_the_owners_browser_even_from_her_address(consoles: list[Console], client: httpx.Client) -> None:
    owner = Browser(client, consoles[0], "10.1.1.10")
    assert owner.sign_in(PASSWORD).status_code == 303  # this browser has signed in before ...
    owner.sign_out()
    # ... then a stranger guesses from six addresses, one of them the owner's (behind the same NAT).
    statuses = []
    for address in ("10.1.1.10", *(f"10.66.0.{n}" for n in range(1, 6))):
        stranger = Browser(client, consoles[1], address)
        token = stranger.login_token()
        statuses += [stranger.sign_in(WRONG, token=token).status_code for _ in range(LIMIT + 1)]
    assert set(statuses) == {401, 429} and statuses[-1] == 429
    # A new browser, even with the right password, is refused: the account's limit for new browsers holds.
    newcomer = Browser(client, consoles[1], "10.66.0.99")
    refused = newcomer.sign_in(PASSWORD)
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    # The owner's browser still signs in, from her address, on either console.
    assert owner.sign_in(PASSWORD).status_code == 303
    assert "olga" in owner.request("GET", "/inbox").text
    owner.sign_out()
    owner.console = consoles[1]
    assert owner.sign_in(PASSWORD).status_code == 303


# --- exports -------------------------------------------------------------------------------------


def _signed_in(client: httpx.Client, console: Console) -> Browser:
    browser = Browser(client, console, "10.1.1.30")
    assert browser.sign_in(PASSWORD).status_code == 303
    return browser


def _result_ids(target: str, **filters: str) -> list[str]:
    with HubStore.open(target) as store:
        return [r.result_id for r in store.results(limit=None, **filters)]  # type: ignore[arg-type]


def test_get_exports_export_nothing_and_write_no_audit_entry(consoles: list[Console], client: httpx.Client, target: str) -> None:
    browser = _signed_in(client, consoles[0])
    before = _audit(target)
    ids = _result_ids(target)
    csv_page = browser.request("GET", "/inbox/export.csv?label=malignant")
    fhir_page = browser.request("GET", f"/results/{ids[0]}/fhir.json")
    for response in (csv_page, fhir_page):
        assert response.status_code == 405, response.text[:300]
        assert response.headers["allow"] == "POST"
        assert response.headers["content-type"].startswith("text/html")
        assert "attachment" not in response.headers.get("content-disposition", "")
        assert 'method="post"' in response.text  # a button that exports by POST
    assert not any(rid in csv_page.text for rid in ids)
    with HubStore.open(target) as store:
        refs = {r.patient_ref for r in store.results(limit=None) if r.patient_ref}
    assert refs and not [ref for ref in refs if ref in csv_page.text or ref in fhir_page.text]
    assert '"resourceType"' not in fhir_page.text
    assert _audit(target) == before


def test_post_exports_work_and_are_audited_once_each(consoles: list[Console], client: httpx.Client, target: str) -> None:
    browser = _signed_in(client, consoles[1])
    token = browser.page_token()
    before = len(_audit(target))
    # Without the session's token (or with a forged one): refused, nothing exported, nothing audited.
    for form in ({"label": "malignant"}, {"label": "malignant", "csrf_token": "forged"}):
        refused = browser.request("POST", "/inbox/export.csv", data=form)
        assert refused.status_code == 403 and "text/csv" not in refused.headers["content-type"]
    assert len(_audit(target)) == before

    response = browser.request("POST", "/inbox/export.csv", data={"label": "malignant", "csrf_token": token})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    malignant = _result_ids(target, label="malignant")
    assert malignant and [r["result_id"] for r in rows] == malignant
    rid = malignant[0]
    fhir = browser.request("POST", f"/results/{rid}/fhir.json", data={"csrf_token": token})
    assert fhir.status_code == 200 and fhir.headers["content-type"].startswith("application/fhir+json")
    assert json.loads(fhir.text)["id"] == rid

    after = _audit(target)  # newest first
    new = after[: len(after) - before]
    assert [(e.action, e.username) for e in reversed(new)] == [("export:csv", "olga"), ("export:fhir", "olga")]
    assert "label=malignant" in new[-1].detail and new[0].result_id == rid
