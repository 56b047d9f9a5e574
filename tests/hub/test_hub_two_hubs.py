"""A second hub (issue 17): two ``hub serve`` processes on one PostgreSQL share the device topics.

Real Mosquitto, a real PostgreSQL, two real ``python -m hub serve`` with ``[mqtt] shared_group`` (``$share/...``
subscriptions, so the broker gives each message to one of them) and a device's real uplink. One hub is SIGKILLed
while results flow: the other carries on alone, and every result ends stored exactly once, in the device's order.
Without the shared group both hubs would receive every message; with it neither is needed for the other to work.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

pytest.importorskip("psycopg")

from hub.service import subscriptions
from hub.store import HubStore
from tests.device.link.test_uplink import Device, broker  # noqa: F401 (broker: the fixture)
from tests.hub.test_hub_poison import HubProcess
from tests.mqtt_broker import MosquittoBroker, PostgresServer, wait_for

pytestmark = pytest.mark.timeout(300)
TOTAL = 300


def test_shared_subscriptions_are_prefixed_only_when_asked() -> None:
    assert subscriptions(None)[0] == ("sonopi/v1/+/+/result", 1)
    assert subscriptions("hubs")[0] == ("$share/hubs/sonopi/v1/+/+/result", 1)


def test_either_hub_can_die_and_the_other_carries_on(tmp_path: Path, broker: MosquittoBroker) -> None:
    postgres = PostgresServer().start()
    hubs: list[HubProcess] = []
    device: Device | None = None
    try:
        dsn = postgres.create_database("hub")
        hubs = [
            HubProcess(tmp_path / name, broker.address, dsn, f'[mqtt]\nclient_id = "{name}"\nshared_group = "hubs"\n') for name in ("hub-a", "hub-b")
        ]
        for hub in hubs:
            hub.store.close()
            hub.start()
        for hub in hubs:
            hub.wait(lambda h=hub: "connected to" in h.log(), "the hub to connect")
        device = Device(tmp_path, "site-a", "dev-1", broker.address, ack_timeout_s=1.0)
        device.add(TOTAL // 3)
        device.start_uplink()
        feeder = device.add_in_background(TOTAL - TOTAL // 3)

        def stored() -> list[str]:
            with HubStore.open(dsn) as store:
                return [r.result_id for r in store.results(limit=None, newest_first=False)]

        wait_for(lambda: len(stored()) >= TOTAL // 4, 60, f"a first share of results\n{hubs[0].log()[-2000:]}")
        hubs[0].stop(signal.SIGKILL)  # mid-stream: its in-flight messages are re-sent by the device
        feeder.join(60)
        wait_for(lambda: len(stored()) == TOTAL, 120, f"all {TOTAL} results with one hub left\n{device.log()[-2000:]}\n{hubs[1].log()[-3000:]}")
        ids = stored()
        expected = [r.result_id for r in sorted(device.store.history(limit=None), key=lambda r: r.seq or 0)]
        assert len(set(ids)) == TOTAL and ids == expected  # exactly once, in the device's order
        assert hubs[1].alive
        hubs[1].stop()
    finally:  # no process outlives the test (the uplink would retry a dead broker for ever)
        if device is not None and device.proc is not None:
            device.stop_uplink()
        for hub in hubs:
            if hub.proc is not None:
                hub.stop()
        postgres.stop()
