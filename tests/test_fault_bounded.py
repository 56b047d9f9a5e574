"""The bounded fault test (issue 17's bar, run by ``make test``): every part dies while results flow, nothing is lost.

Real processes throughout: a device's ``python -m device uplink`` delivers 2,000 results through a real Mosquitto
(persistence on) to two ``python -m hub serve`` processes that share one real PostgreSQL with ``[mqtt] shared_group``.
While the results flow, at fixed counts of results stored at the hub (not at random times, so every run meets the
faults at the same points of the stream), this test

* SIGKILLs the broker twice (restarted on the same port and persistence directory),
* SIGKILLs the uplink twice (restarted),
* SIGKILLs one of the two hubs three times (hub A, then hub B, then hub A again; each restarted),
* restarts PostgreSQL once (stopped for a second and started again; no hub is restarted for it).

It ends with every result of the device's store in the hub's database: the same count, the same set of result ids,
none twice, stored in the device's ``seq`` order (the hub's insertion order is the device's order, and every
stored ``prev_result_id`` was stored before the result naming it), none rejected, every result acked on the device,
and both hubs still running. Each fault is checked to have hit the stream mid-way (results still to deliver), so the
test cannot pass by faulting an idle system. The run's wall time is logged (and recorded as the ``wall_s`` property
in the test report); it is designed to take well under 3 minutes on a 2-core machine, but no timing is asserted.

The first test here is the defect this test found: the broker hands a device's consecutive results to the two hubs
in turn, so nearly every result reached the hub that did not hold its predecessor and was dropped un-acked
("deferred"); the device then waited a whole ack timeout for almost every result (10,000 results: 196 stored in 14
min). With a 30 s ack timeout, two hubs must deliver 400 results without the device ever timing out.

The second defect it found: a hub started (here: restarted after its SIGKILL) while PostgreSQL was restarting exited
at once (``cannot connect to PostgreSQL``, exit 2) instead of waiting for the database as a running hub does.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("psycopg")

from hub.store import HubStore, HubStoreError
from tests.device.link.test_uplink import Device
from tests.hub.test_hub_db_reconnect import RestartablePostgres
from tests.hub.test_hub_poison import HubProcess
from tests.mqtt_broker import MosquittoBroker

log = logging.getLogger(__name__)

pytestmark = pytest.mark.timeout(400)

TOTAL = 2000
PRELOADED = 600  # in the device's store before the uplink starts; the rest are added while it runs
STALL_S = 90.0  # no milestone may take longer than this (a stall fails the test, naming the step)


@dataclass
class Rig:
    """The processes of one run, and what each fault does to them."""

    broker: MosquittoBroker
    postgres: RestartablePostgres
    dsn: str
    hubs: list[HubProcess]
    device: Device
    reader: HubStore  # the test's own connection (it reconnects by itself after the PostgreSQL restart)

    def stored_count(self) -> int:
        """How many are stored; -1 while the database cannot be reached (it is being restarted)."""
        try:
            return self.reader.count_results(site=self.device.site, device_id=self.device.device_id)
        except HubStoreError:
            return -1

    def check_alive(self) -> None:
        """Fail at once, with the logs, when a process that should be running has exited."""
        for hub in self.hubs:
            if hub.proc is not None and not hub.alive:
                pytest.fail(f"{hub.dir.parent.name}: hub serve exited with {hub.proc.poll()}:\n{hub.log()[-3000:]}")
        if self.device.proc is not None and self.device.proc.poll() is not None:
            pytest.fail(f"the uplink exited with {self.device.proc.poll()}:\n{self.device.log()}")

    def logs(self) -> str:
        hubs = "\n".join(f"--- {h.dir.parent.name}\n{h.log()[-2500:]}" for h in self.hubs)
        return f"--- uplink\n{self.device.log()}\n{hubs}\n--- broker\n{self.broker.log()[-1500:]}"

    def wait_stored(self, at_least: int, what: str) -> int:
        deadline = time.monotonic() + STALL_S
        while (count := self.stored_count()) < at_least:
            self.check_alive()
            if time.monotonic() > deadline:
                pytest.fail(f"stalled: {count} of {TOTAL} stored after {STALL_S:.0f}s waiting for {at_least} ({what})\n{self.logs()}")
            time.sleep(0.05)
        return count


def kill_broker(rig: Rig) -> None:
    rig.broker.kill()
    rig.broker.start()


def kill_uplink(rig: Rig) -> None:
    rig.device.stop_uplink(signal.SIGKILL)
    rig.device.start_uplink()


def kill_hub(index: int) -> Callable[[Rig], None]:
    def fault(rig: Rig) -> None:
        hub = rig.hubs[index]
        hub.stop(signal.SIGKILL)
        hub.start()

    fault.__name__ = f"kill_hub_{'ab'[index]}"
    return fault


def restart_postgres(rig: Rig) -> None:
    rig.postgres.halt()
    time.sleep(1.0)  # both hubs meet the outage (a write fails, they retry with back-off)
    rig.postgres.resume()


# (stored results at which the fault strikes, the fault): two of each process kind, PostgreSQL once.
SCHEDULE: tuple[tuple[int, Callable[[Rig], None]], ...] = (
    (150, kill_broker),
    (350, kill_uplink),
    (550, kill_hub(0)),
    (750, restart_postgres),
    (950, kill_broker),
    (1150, kill_hub(1)),
    (1350, kill_uplink),
    (1550, kill_hub(0)),
)


def test_two_hubs_store_alternating_results_without_ack_timeouts(tmp_path: Path) -> None:
    postgres = RestartablePostgres().start()
    broker = MosquittoBroker(tmp_path / "broker").start()
    hubs: list[HubProcess] = []
    device = Device(tmp_path, "site-a", "dev-1", broker.address, ack_timeout_s=30.0, window=64)
    try:
        dsn = postgres.create_database("hub")
        hubs = [
            HubProcess(tmp_path / name, broker.address, dsn, f'[mqtt]\nclient_id = "{name}"\nshared_group = "hubs"\n') for name in ("hub-a", "hub-b")
        ]
        for hub in hubs:
            hub.start()
        for hub in hubs:
            hub.wait(lambda h=hub: "connected to" in h.log(), "the hub to connect")
        device.add(400)
        device.start_uplink()
        deadline = time.monotonic() + 120
        while device.store.backlog().pending and "no ack from the hub" not in device.full_log():
            assert time.monotonic() < deadline, f"the backlog did not drain\n{device.log()}"
            time.sleep(0.1)
        assert "no ack from the hub" not in device.full_log(), f"a result waited a whole ack timeout:\n{device.log()}"
        with HubStore.open(dsn) as store:
            ids = [r.result_id for r in store.results(limit=None, newest_first=False)]
        assert ids == [r.result_id for r in device.store.history(limit=None, newest_first=False)]
        assert all(hub.alive for hub in hubs)
    finally:
        if device.proc is not None:
            device.stop_uplink()
        for hub in hubs:
            hub.close()
        broker.kill()
        postgres.stop()


def test_a_hub_started_while_postgresql_is_down_waits_for_it(tmp_path: Path) -> None:
    postgres = RestartablePostgres().start()
    broker = MosquittoBroker(tmp_path / "broker").start()
    device = Device(tmp_path, "site-a", "dev-1", broker.address, ack_timeout_s=1.0)
    hub: HubProcess | None = None
    try:
        dsn = postgres.create_database("hub")
        hub = HubProcess(tmp_path, broker.address, dsn)
        hub.store.close()
        postgres.halt()
        hub.start()
        hub.wait(lambda: "waiting for the database" in hub.log(), "the hub to wait for PostgreSQL")
        time.sleep(1.5)  # a retry or two
        assert hub.alive, hub.log()
        postgres.resume()
        device.add(20)
        device.start_uplink()
        hub.wait(lambda: device.store.backlog().pending == 0, "the results to be stored once PostgreSQL is up", 60)
        with HubStore.open(dsn) as store:
            assert [r.result_id for r in store.results(limit=None, newest_first=False)] == [
                r.result_id for r in device.store.history(limit=None, newest_first=False)
            ]
        assert hub.stop() == 0
    finally:
        if device.proc is not None:
            device.stop_uplink()
        if hub is not None:
            hub.close()
        broker.kill()
        postgres.stop()


def assert_delivered_once_in_order(rig: Rig) -> None:
    expected = rig.device.store.history(limit=None, newest_first=False)  # the device's seq order
    assert [r.seq for r in expected] == sorted(r.seq for r in expected)
    rows = rig.reader.results(site=rig.device.site, device_id=rig.device.device_id, limit=None, newest_first=False)
    ids = [r.result_id for r in rows]
    want = [r.result_id for r in expected]
    assert len(want) == TOTAL, f"the device holds {len(want)} results, not {TOTAL}"
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} results stored twice"
    lost = set(want) - set(ids)
    extra = set(ids) - set(want)
    assert not lost and not extra, f"{len(lost)} lost, {len(extra)} not the device's"
    assert ids == want, "stored in another order than the device's seq order"
    rejected = rig.reader.rejected_total()
    position = {r.result_id: i for i, r in enumerate(rows)}
    for i, row in enumerate(rows):
        assert row.prev_result_id is None or position[row.prev_result_id] < i, f"seq {row.seq} stored before its predecessor"
    assert [r.seq for r in rows] == [r.seq for r in expected]
    assert rejected == 0, "a result of a healthy device was rejected"
    assert rig.device.store.backlog().pending == 0
    assert {r.delivery for r in expected} == {"acked"}


def test_two_thousand_results_survive_every_part_dying(tmp_path: Path, record_property) -> None:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    postgres = RestartablePostgres().start()
    broker = MosquittoBroker(tmp_path / "broker").start()
    rig: Rig | None = None
    try:
        dsn = postgres.create_database("hub")
        hubs = [
            HubProcess(tmp_path / name, broker.address, dsn, f'[mqtt]\nclient_id = "{name}"\nshared_group = "hubs"\n') for name in ("hub-a", "hub-b")
        ]
        device = Device(tmp_path, "site-a", "dev-1", broker.address, ack_timeout_s=1.0)
        rig = Rig(broker, postgres, dsn, hubs, device, HubStore.open(dsn))
        for hub in hubs:
            hub.store.close()  # the test reads through connections of its own (they must survive the restart)
            hub.start()
        for hub in hubs:
            hub.wait(lambda h=hub: "connected to" in h.log(), "the hub to connect")
        device.add(PRELOADED)
        device.start_uplink()
        feeder = device.add_in_background(TOTAL - PRELOADED)
        for milestone, fault in SCHEDULE:
            at = rig.wait_stored(milestone, f"the milestone before {fault.__name__}")
            assert at < TOTAL, f"{fault.__name__} struck after the last result: it proved nothing"
            log.info("fault test: %s at %d stored (%.1fs)", fault.__name__, at, time.monotonic() - started)
            fault(rig)
        feeder.join(60)
        assert not feeder.is_alive(), "the device did not finish storing its results"
        rig.wait_stored(TOTAL, "every result after the last fault")
        deadline = time.monotonic() + STALL_S
        while device.store.backlog().pending:  # the last acks reach the device
            rig.check_alive()
            assert time.monotonic() < deadline, f"the device's outbox did not drain\n{rig.logs()}"
            time.sleep(0.05)
        assert_delivered_once_in_order(rig)
        rig.check_alive()
        assert all(hub.alive for hub in hubs)
        wall_s = time.monotonic() - started
        record_property("wall_s", round(wall_s, 1))
        log.warning("fault test: %d results, 8 faults, 0 lost, 0 duplicated, in order, in %.1f s wall", TOTAL, wall_s)
    finally:
        if rig is not None:
            if rig.device.proc is not None:
                rig.device.stop_uplink()
            for hub in rig.hubs:
                hub.close()
            rig.reader.close()
        broker.kill()
        postgres.stop()
