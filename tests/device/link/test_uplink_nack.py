"""Issue 17, defect 3, against the real processes (Mosquitto, `python -m device uplink`, `python -m hub serve`,
SQLite on both ends): a result the hub rejects for good must not block the device.

The hub answers a permanently rejected result with a negative ack (``nack``, on the device's ack topic);
the device parks that result — ``delivery`` becomes ``rejected: <reason>``, shown by ``device history``,
no longer in the backlog, never re-sent — and delivers every result after it, in order. The scenario is
the one from the issue: ``[device] id`` changed while results made under the old id were queued.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.device.link.test_uplink import Device, Hub, broker, make_record  # noqa: F401 (broker: the fixture)
from tests.mqtt_broker import REPO, MosquittoBroker, wait_for

pytestmark = pytest.mark.timeout(180)


def device_history(device: Device) -> list[dict]:
    done = subprocess.run(
        [sys.executable, "-m", "device", "history", "--json", "--limit", "1000", "--config", str(device.config_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_results_queued_under_an_old_device_id_are_parked_and_everything_after_them_is_delivered(tmp_path: Path, broker: MosquittoBroker) -> None:
    device = Device(tmp_path, "site-a", "dev-new", broker.address, ack_timeout_s=1.0)
    old = [device.store.add(make_record("site-a", "dev-old", i)) for i in range(5)]  # made before the id changed
    device.add(20)  # made under the new id (make_record with dev-new)
    new = [r for r in device.store.history(newest_first=False) if r.device_id == "dev-new"]
    assert len(new) == 20 and all(r.seq > old[-1].seq for r in new)
    hub = Hub(tmp_path, broker.address)
    hub.start()
    device.start_uplink()
    try:
        wait_for(lambda: hub.count() == 20, 60, f"the 20 later results at the hub\n{device.log()}\n{hub.log()}")
        rows = hub.store.results(limit=None, newest_first=False)
        assert [r.result_id for r in rows] == [r.result_id for r in new], "delivered once each, in seq order"
        wait_for(lambda: device.store.backlog().pending == 0, 30, f"the backlog to drain\n{device.log()}")
        parked = {r.result_id: r.delivery for r in device.store.history(limit=None) if r.device_id == "dev-old"}
        assert set(parked.values()) == {"rejected: topic_mismatch"}, parked
        assert {r.delivery for r in device.store.history(limit=None) if r.device_id == "dev-new"} == {"acked"}
        history = {h["result_id"]: h["delivery"] for h in device_history(device)}
        assert all(history[r.result_id] == "rejected: topic_mismatch" for r in old)
        assert "rejected by the hub" in device.log() and "topic_mismatch" in device.log()
        assert hub.store.rejected_total() >= 5
    finally:
        device.stop_uplink(signal.SIGTERM)
        hub.stop()
    sends = {r.result_id: r for r in device.store.history(limit=None)}
    assert all(sends[r.result_id].delivery.startswith("rejected") for r in old), "parked results stay parked"


def test_the_store_parks_a_rejected_result_out_of_the_backlog_and_shows_why(tmp_path: Path) -> None:
    from device.store import ResultStore

    store = ResultStore(tmp_path / "results.sqlite")
    records = [store.add(make_record("site-a", "dev-1", i)) for i in range(4)]
    store.mark_acked([records[3].result_id])
    parked = store.mark_rejected(
        [
            (records[1].result_id, "schema", "result latency_ms: above the maximum 3600000"),
            (records[3].result_id, "schema", "acked already: left alone"),
            ("00000000-0000-4000-8000-000000000000", "schema", "unknown: left alone"),
        ]
    )
    assert parked == 1
    assert store.mark_rejected([(records[1].result_id, "schema", "again")]) == 0, "idempotent"
    assert [r.result_id for r in store.pending()] == [records[0].result_id, records[2].result_id]
    assert store.backlog().pending == 2
    assert store.get(records[1].result_id).delivery == "rejected: schema"
    [p] = store.parked()
    assert (p.result_id, p.seq, p.reason) == (records[1].result_id, records[1].seq, "schema") and "latency_ms" in p.detail
    store.mark_acked([records[1].result_id])  # the hub acked it after all: no longer parked
    assert store.get(records[1].result_id).delivery == "acked" and store.parked() == []
    store.close()


def test_a_nack_for_an_in_flight_result_rewinds_so_its_successors_leave_it_out(tmp_path: Path) -> None:
    from device.link.contract import Refusal
    from device.link.uplink.outbox import Outbox
    from device.store import ResultStore

    store = ResultStore(tmp_path / "results.sqlite")
    records = [store.add(make_record("site-a", "dev-1", i)) for i in range(3)]
    outbox = Outbox(store, window=8, ack_timeout_s=60, send_thumbnail=False, thumbnail_max_bytes=0)
    first = outbox.next_messages(historical_before="9999")
    assert [m.prev_result_id for m, _ in first] == [None, records[0].result_id, records[1].result_id]
    assert outbox.rejected([Refusal(records[0].result_id, "topic_mismatch", "")]) == 1
    again = outbox.next_messages(historical_before="9999")
    assert [(m.result_id, m.prev_result_id) for m, _ in again] == [(records[1].result_id, None), (records[2].result_id, records[1].result_id)]
    store.close()
