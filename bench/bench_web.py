"""Web console response times with 100,000 stored results, on SQLite and (when installed) PostgreSQL.

    python -m bench.bench_web [--results 100000] [--requests 40] [--backend sqlite|postgresql|both]

Seeds a hub database with synthetic results (:mod:`hub.web.demo`, ~2 % reviewed), starts the real
console (``python -m hub web``) as its own process on a loopback port, signs in over HTTP and times
full page requests (server render included, measured at the client): the inbox (needs attention first, by
risk, newest first), each filter, filter combinations (assigned to me included: ~1,000 results are assigned to the
bench operator), deep keyset pages, the result page (with its previous/next in the queue and the assignment form),
an exam page, the escalation list and a patient search (a POST); the devices page, an exam's FHIR report and the
CSV export of every malignant result are timed without a goal. Prints
p50/p95/max per case and checks the goal p95 <= 200 ms for those. Exits 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import httpx

from hub.store import HubStore
from hub.web.accounts import Accounts
from hub.web.assignments import Assignments
from hub.web.db import WebDb
from hub.web.demo import DemoSpec, device_ids, seed_device_states, seed_results
from hub.web.inbox import Filters, Inbox
from hub.web.reviews import Reviews

log = logging.getLogger("bench_web")

REPO = Path(__file__).resolve().parents[1]
GOAL_P95_MS = 200.0
USER, PASSWORD = "bench-operator", "bench-password-1"


@dataclass(frozen=True)
class Timing:
    name: str
    p50_ms: float
    p95_ms: float
    max_ms: float
    goal: bool  # counts towards the p95 goal

    @property
    def ok(self) -> bool:
        return not self.goal or self.p95_ms <= GOAL_P95_MS


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def seed(target: str, count: int) -> dict[str, str]:
    """100k results over 120 days, device states, ~2 % reviews; returns ids for the cases."""
    started = time.perf_counter()
    end = datetime.now(UTC)
    with HubStore.open(target) as store:
        seeded = seed_results(store, count, spec=DemoSpec(thumbnail_every=20), end=end)
        seed_device_states(store)
    log.info("seeded %d results in %.1f s", seeded, time.perf_counter() - started)
    db = WebDb.open(target)
    try:
        accounts = Accounts(db)
        accounts.add_user(USER, PASSWORD, "operator")
        reviews, inbox = Reviews(db), Inbox(db)
        every = max(1, count // 2000)
        rows = list(inbox.all(Filters()))
        for n, row in enumerate(rows[::every]):
            reviews.set_review(
                result_pk=row.id, result_id=row.result_id, state="follow_up" if n % 4 == 0 else "reviewed", note="bench", username=USER
            )
        mine = rows[every // 2 :: max(1, count // 1000)]  # ~1,000 assigned to the bench operator
        Assignments(db, accounts).assign([(r.id, r.result_id) for r in mine], to=USER, by=USER, scope="bench")
        with db.transaction() as tx:  # planner statistics, as autovacuum / PRAGMA optimize keep them in service
            tx.execute("ANALYZE")
        middle = rows[len(rows) // 2]
        return {
            "result_id": middle.result_id,
            "deep_before": str(rows[-200].id),
            "exam_id": middle.exam_id or "",
            "patient": middle.patient_ref or "",
            "week_from": (end - timedelta(days=60)).date().isoformat(),
            "week_to": (end - timedelta(days=54)).date().isoformat(),
        }
    finally:
        db.close()


@contextmanager
def console(target: str, workdir: Path) -> Iterator[str]:
    port = _free_port()
    log_path = workdir / "web.log"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hub", "--log-level", "WARNING", "web", "--db", target, "--port", str(port), "--insecure-cookies"],
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=log_file,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"web console exited: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("web console did not start within 60 s")
            time.sleep(0.1)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def sign_in(client: httpx.Client) -> None:
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    response = client.post("/login", data={"username": USER, "password": PASSWORD, "csrf_token": token})
    if response.status_code != 303:
        raise RuntimeError(f"sign-in failed: {response.status_code}")


def cases(ids: dict[str, str]) -> list[tuple[str, str, bool]]:
    site, device = device_ids(DemoSpec())[2]
    week = {"from": ids["week_from"], "to": ids["week_to"]}

    def inbox(**query: str) -> str:
        return "/inbox" + ("?" + urlencode(query) if query else "")

    return [
        ("inbox (needs attention, 50)", inbox(), True),
        ("inbox newest first", inbox(sort="newest"), True),
        ("inbox by risk", inbox(sort="risk"), True),
        ("attention, page 2", "", True),  # filled in from the first page's "Next" link
        ("risk + site + unreviewed", inbox(sort="risk", site=site, review="unreviewed"), True),
        ("filter site", inbox(site=site), True),
        ("filter device", inbox(device=device), True),
        ("filter label=malignant", inbox(label="malignant"), True),
        ("filter inconclusive", inbox(label="inconclusive"), True),
        ("filter review=unreviewed", inbox(review="unreviewed"), True),
        ("filter review=follow_up", inbox(review="follow_up"), True),
        ("filter 1 week", inbox(**week), True),
        ("site + malignant", inbox(site=site, label="malignant"), True),
        ("week + malignant + unreviewed", inbox(label="malignant", review="unreviewed", **week), True),
        ("site + device + follow_up", inbox(site=site, device=device, review="follow_up"), True),
        ("assigned to me", inbox(assigned="me"), True),
        ("assigned to me + unreviewed, risk", inbox(assigned="me", review="unreviewed", sort="risk"), True),
        ("assigned to nobody + malignant", inbox(assigned="nobody", label="malignant"), True),
        ("deep page (before oldest 200)", inbox(sort="newest", before=ids["deep_before"]), True),
        ("deep attention page", inbox(before=ids["deep_before"]), True),
        ("malignant, page 2", "", True),  # filled in from the first malignant page's "Older" link
        ("result page (+ previous/next)", f"/results/{ids['result_id']}", True),
        ("result page, risk queue", f"/results/{ids['result_id']}?sort=risk&label=benign", True),
        ("exam page", f"/exams/{ids['exam_id']}", True),
        ("escalations", "/escalations", True),
        ("devices page", "/devices", False),
    ]


def measure(client: httpx.Client, name: str, url: str, n: int, goal: bool, data: dict[str, str] | None = None) -> Timing:
    def fetch() -> httpx.Response:
        return client.post(url, data=data) if data is not None else client.get(url)

    for _ in range(3):
        fetch().raise_for_status()
    times = []
    for _ in range(n):
        started = time.perf_counter()
        response = fetch()
        times.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    times.sort()
    p95 = times[max(0, math.ceil(0.95 * len(times)) - 1)]  # nearest rank
    return Timing(name, statistics.median(times), p95, times[-1], goal)


def run_backend(backend: str, target: str, workdir: Path, count: int, n: int) -> list[Timing]:
    ids = seed(target, count)
    results: list[Timing] = []
    with console(target, workdir) as base, httpx.Client(base_url=base, follow_redirects=False, timeout=30) as client:
        sign_in(client)
        for name, url, goal in cases(ids):
            if name in ("malignant, page 2", "attention, page 2"):
                first = client.get("/inbox?label=malignant" if name.startswith("malignant") else "/inbox").text
                url = re.search(r'href="(/inbox\?[^"]*before=\d+)"', first).group(1).replace("&amp;", "&")
            results.append(measure(client, name, url, n, goal))
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/inbox").text).group(1)
        results.append(measure(client, "patient search (POST)", "/patients", n, True, data={"patient_ref": ids["patient"], "csrf_token": token}))
        results.append(measure(client, "exam FHIR report (POST)", f"/exams/{ids['exam_id']}/fhir.json", n, False, data={"csrf_token": token}))
        started = time.perf_counter()
        export = client.post("/inbox/export.csv", data={"label": "malignant", "csrf_token": token})
        export.raise_for_status()  # exports are POSTs with the session's CSRF token (docs/web.md)
        size = len(export.content)
        rows = export.text.count("\n") - 1
        print(
            f"{backend}: CSV export of every malignant result ({rows:,} rows, {size / 1e6:.1f} MB): "
            f"{(time.perf_counter() - started) * 1000:.0f} ms at the client; load average {os.getloadavg()[0]:.1f}"
        )
    return results


def report(backend: str, count: int, timings: list[Timing]) -> bool:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n{backend}: {count:,} results, times per request at the client (ms); load average {load} (1/5/15 min) on {os.cpu_count()} CPU(s)")
    print(f"{'case':34} {'p50':>8} {'p95':>8} {'max':>8}  goal p95<={GOAL_P95_MS:.0f}")
    for t in timings:
        verdict = ("ok" if t.ok else "MISSED") if t.goal else "-"
        print(f"{t.name:34} {t.p50_ms:8.1f} {t.p95_ms:8.1f} {t.max_ms:8.1f}  {verdict}")
    return all(t.ok for t in timings)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_web")
    parser.add_argument("--results", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=40, help="timed requests per case")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("httpx", "hub.web.reviews", "hub.web.accounts"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    ok = True
    with tempfile.TemporaryDirectory(prefix="sonopi-bench-web-") as tmp:
        workdir = Path(tmp)
        if args.backend in ("sqlite", "both"):
            timings = run_backend("sqlite", str(workdir / "hub.sqlite"), workdir, args.results, args.requests)
            ok &= report("SQLite", args.results, timings)
        if args.backend in ("postgresql", "both"):
            ok &= _postgresql(workdir, args.results, args.requests)
    print(f"\nbench_web: {'all goals met' if ok else 'GOAL MISSED'}")
    return 0 if ok else 1


def _postgresql(workdir: Path, count: int, n: int) -> bool:
    import pytest  # the throwaway server helper skips through pytest when binaries are missing

    from tests.mqtt_broker import PostgresServer

    try:
        server = PostgresServer().start()
    except pytest.skip.Exception as exc:
        print(f"\nPostgreSQL: skipped ({exc})")
        return True
    try:
        target = server.create_database("bench_web")
        return report("PostgreSQL", count, run_backend("postgresql", target, workdir, count, n))
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
