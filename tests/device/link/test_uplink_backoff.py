"""Issue 17, defects 5 and 6, against the real processes (Mosquitto, `python -m device uplink`,
`python -m hub serve`, SQLite on both ends).

* Defect 5: while the hub is down the uplink must not re-send its whole window at every ack timeout (the broker
  queues every copy for the hub's persistent session). After a timeout it probes with the oldest
  un-acknowledged result only, waiting twice as long each time (capped); the first ack restores the full window.
  Measured here as what the broker actually queued for the hub: the hub, started afterwards, counts every copy.
* Defect 6: an ack the device cannot record (its store is locked by another writer past the busy timeout, as a
  full disk would fail it) must not leave those results ``sent`` for good: they are re-sent (and acked again)
  without waiting for a reconnect.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
from pathlib import Path

import pytest

from tests.device.link.test_uplink import Device, Hub, assert_delivered, backlog_empty, broker, drained_and_delivered  # noqa: F401  (broker: fixture)
from tests.mqtt_broker import MosquittoBroker, wait_for

pytestmark = pytest.mark.timeout(240)

TIMEOUT_LINE = "(ack timeout;"  # the uplink's log line for a rewind after an ack timeout (old and new code)


def full_log(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def hub_counters(hub: Hub) -> dict[str, int]:
    """The counters the hub logs when it stops (the last such line)."""
    lines = [line for line in full_log(hub.dir / "hub.log").splitlines() if "hub: counters " in line]
    assert lines, f"the hub logged no counters\n{hub.log()}"
    return json.loads(lines[-1].split("hub: counters ", 1)[1])


def test_no_full_window_resent_while_the_hub_is_down(tmp_path: Path, broker: MosquittoBroker) -> None:
    window, timeouts = 32, 6
    hub = Hub(tmp_path, broker.address)
    hub.start()  # registers the hub's persistent session: from now on the broker queues results for it
    wait_for(lambda: "hub: connected to" in hub.log(), 30, f"the hub to connect\n{hub.log()}")
    hub.stop()
    device = Device(tmp_path, "site-a", "dev-1", broker.address, window=window, ack_timeout_s=0.2)
    device.add(100)
    device.start_uplink()
    uplink_log = device.dir / "uplink.log"
    try:
        wait_for(lambda: full_log(uplink_log).count(TIMEOUT_LINE) >= timeouts, 90, f"{timeouts} ack timeouts with the hub down\n{device.log()}")
    finally:
        device.stop_uplink()
    expired = full_log(uplink_log).count(TIMEOUT_LINE)

    hub.start()  # receives every copy the broker kept for it, then is stopped to log its counters
    wait_for(lambda: hub.count() == window, 60, f"the first window at the hub\n{hub.log()}")
    hub.stop()
    counters = hub_counters(hub)
    copies = counters.get("stored", 0) + counters.get("duplicates", 0) + counters.get("deferred", 0)
    # The first window, then one probe per expired timeout (the old code re-sent all 32 each time).
    assert copies <= window + expired, (copies, expired, counters)
    # The waits the uplink chose: doubling from ack_timeout_s, capped at 32 x ack_timeout_s.
    waits = [float(w) for w in re.findall(r"next wait for an ack ([0-9.]+)s", full_log(uplink_log))]
    assert waits[:5] == [0.4, 0.8, 1.6, 3.2, 6.4] and max(waits) == 6.4, waits

    device.start_uplink()  # the hub still down: backing off again...
    try:
        wait_for(lambda: full_log(uplink_log).count(TIMEOUT_LINE) >= expired + 2, 60, f"new timeouts\n{device.log()}")
        hub.start()  # ...until the first ack restores the full window
        drained_and_delivered(hub, device, 100, 90, "the backlog to drain once the hub answers")
        assert "the hub answers again" in full_log(uplink_log)
    finally:
        device.stop_uplink()
        hub.stop()


def test_an_ack_that_cannot_be_recorded_is_resent_without_a_reconnect(tmp_path: Path, broker: MosquittoBroker) -> None:
    hub = Hub(tmp_path, broker.address)
    hub.start()
    wait_for(lambda: "hub: connected to" in hub.log(), 30, f"the hub to connect\n{hub.log()}")
    hub.stop()  # the device sends while the hub is down; its acks come when the hub is back
    # One copy each (no re-send before the hub's ack comes), and a keepalive that outlasts the lock (the store's
    # busy timeout is 10 s): neither a timely re-send nor a reconnect can hide the unrecorded ack.
    device = Device(tmp_path, "site-a", "dev-1", broker.address, window=64, ack_timeout_s=20.0, keepalive_s=120)
    device.add(40)
    device.start_uplink()
    uplink_log = device.dir / "uplink.log"
    try:
        wait_for(
            lambda: all(r.delivery == "sent" for r in device.store.history(limit=None)), 30, f"the device to send its 40 results\n{device.log()}"
        )
        # Another writer holds the device's store past the uplink's busy timeout: the hub's acks cannot be recorded.
        locker = sqlite3.connect(device.store_path, isolation_level=None, timeout=30)
        locker.execute("BEGIN IMMEDIATE")
        try:
            hub.start()
            wait_for(lambda: hub.count() == 40, 60, f"the hub to store the 40 results\n{hub.log()}")
            wait_for(lambda: "cannot record the hub's ack" in full_log(uplink_log), 60, f"the uplink to fail to record an ack\n{device.log()}")
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        reconnects = full_log(uplink_log).count("uplink: connected to")
        wait_for(lambda: backlog_empty(device, 40), 60, f"the unrecorded acks' results to be re-sent\n{device.log()}")
        assert full_log(uplink_log).count("uplink: connected to") == reconnects, "it took a reconnect"
        assert_delivered(hub, device)
    finally:
        device.stop_uplink(signal.SIGTERM)
        hub.stop()
