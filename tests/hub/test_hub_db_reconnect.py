"""Issue 17, defect 4 (second half), against the real processes: a PostgreSQL restart must not stop the hub.

A real PostgreSQL server of its own (it is stopped and started again), a real Mosquitto, ``python -m hub serve``,
``python -m hub web`` and a device's ``python -m device uplink``. While PostgreSQL is down the hub keeps the
results it received un-acknowledged (the device keeps them too) and the console answers 503 with a plain message;
once PostgreSQL is back both reconnect by themselves (no process restarted): the results sent meanwhile are stored
exactly once, in order, and the console serves pages again.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path

import pytest

pytest.importorskip("psycopg")
httpx = pytest.importorskip("httpx")

from hub.store import HubStore
from hub.web.accounts import Accounts
from hub.web.db import WebDb
from tests.device.link.test_uplink import Device, broker  # noqa: F401 (broker: the fixture)
from tests.hub.test_hub_poison import HubProcess
from tests.hub.test_web_process import PASSWORD, Browser, Console, _wait_healthy
from tests.mqtt_broker import MosquittoBroker, PostgresServer, free_port, start_process, stop_process, wait_for

pytestmark = pytest.mark.timeout(300)


class RestartablePostgres(PostgresServer):
    """The tests' throwaway PostgreSQL, with a stop and a start that keep its data directory."""

    def options(self) -> str:
        return f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=on"

    def halt(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", self.options(), "-l", str(self.dir / "log"), "-w", "-t", "60", "start")


@pytest.fixture
def postgres() -> Iterator[RestartablePostgres]:
    server = RestartablePostgres().start()
    try:
        yield server
    finally:
        server.stop()


def stored_ids(dsn: str) -> list[str]:
    """The hub's results in the order it stored them, read through a connection of its own."""
    with HubStore.open(dsn) as store:
        return [r.result_id for r in store.results(limit=None, newest_first=False)]


def test_hub_and_console_survive_a_postgresql_restart(tmp_path: Path, broker: MosquittoBroker, postgres: RestartablePostgres) -> None:
    dsn = postgres.create_database("hub")
    db = WebDb.open(dsn)
    Accounts(db).add_user("olga", PASSWORD, "operator")
    db.close()
    hub = HubProcess(tmp_path, broker.address, dsn)
    hub.store.close()
    device = Device(tmp_path, "site-a", "dev-1", broker.address, ack_timeout_s=1.0)
    port = free_port()
    console = Console(
        f"http://127.0.0.1:{port}",
        start_process(
            [sys.executable, "-m", "hub", "web", "--db", dsn, "--port", str(port), "--forwarded-allow-ips", "127.0.0.1"], tmp_path / "web.log"
        ),
        tmp_path / "web.log",
    )
    jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    http = httpx.Client(cookies=jar, timeout=60, follow_redirects=False)
    try:
        hub.start()
        _wait_healthy(console)
        browser = Browser(http, console, "10.0.0.7")
        assert browser.sign_in(PASSWORD).status_code == 303
        assert browser.request("GET", "/inbox").status_code == 200
        device.add(20)
        device.start_uplink()
        wait_for(lambda: len(stored_ids(dsn)) == 20, 60, f"the first 20 results\n{device.log()}\n{hub.log()}")

        postgres.halt()
        device.add(30)  # sent while the database is away: the hub cannot store them yet
        hub.wait(lambda: "retrying in" in hub.log(), "the hub to fail a write and retry", timeout_s=60)
        page = browser.request("GET", "/inbox")
        assert page.status_code == 503, (page.status_code, page.text[:300])
        assert "database is unavailable" in page.text and "<" not in page.text, page.text[:300]
        assert "Traceback" not in console.log.read_text(errors="replace")

        postgres.resume()  # no process is restarted from here on
        hub.wait(lambda: len(stored_ids(dsn)) == 50, "the 30 results sent during the outage", timeout_s=120)
        wait_for(lambda: device.store.backlog().pending == 0, 60, f"the device's backlog to drain\n{device.log()}")
        expected = [r.result_id for r in device.store.history(limit=None, newest_first=False)]
        assert stored_ids(dsn) == expected, "each result stored once, in the device's order"
        wait_for(
            lambda: browser.request("GET", "/inbox").status_code == 200, 60, f"the console to serve pages again\n{console.log.read_text()[-2000:]}"
        )
        assert hub.alive and console.proc.poll() is None
        assert "reconnected" in hub.log()
    finally:
        http.close()
        if device.proc is not None:
            device.stop_uplink()
        if hub.proc is not None:
            hub.stop(signal.SIGTERM)
        stop_process(console.proc, signal.SIGTERM)
