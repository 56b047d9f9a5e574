"""The reorder buffer (``waiting_results``) is capped per device, against the real processes: a real Mosquitto on a
free port and a real ``python -m hub serve`` on SQLite.

A device sends results whose predecessor never arrives. Before the cap every one of them was parked, so such a
device could grow the hub's database without bound. Now, with ``[ingest] max_waiting_per_device = 5``, exactly the
five lowest-seq results wait; the others are deferred (PUBACKed, not acked, counted ``deferred.buffer_full``, logged),
another device's results are stored and acked meanwhile, and nothing is lost: once the missing predecessor arrives the
five waiting results are stored after it, and the device's re-sends of the deferred ones are stored too, each once
and in seq order. A cap outside its bounds stops ``hub serve`` at start-up with a message naming the key.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from device.link.contract import encode_result
from tests.hub.test_hub_poison import HubProcess, deliver_valid
from tests.hub.test_hub_service import RawDevice
from tests.mqtt_broker import REPO, MosquittoBroker, mosquitto_broker  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(180)

CAP = 5


def counters_at_exit(hub: HubProcess) -> dict[str, int]:
    lines = [line for line in hub.log().splitlines() if "hub: counters " in line]
    return json.loads(lines[-1].split("hub: counters ", 1)[1])


def test_a_device_whose_predecessor_never_comes_fills_only_its_own_capped_buffer(tmp_path: Path, mosquitto_broker: MosquittoBroker) -> None:
    hub = HubProcess(tmp_path, mosquitto_broker.address, str(tmp_path / "hub.sqlite"), f"[ingest]\nmax_waiting_per_device = {CAP}\n")
    gappy, other = RawDevice(mosquitto_broker, "site-a", "gappy"), RawDevice(mosquitto_broker, "site-a", "other")
    try:
        hub.start()
        first = deliver_valid(hub, gappy, 1)
        chain = [first]
        for seq in range(2, 23):  # seq 2 is the predecessor that does not arrive (yet)
            chain.append(gappy.result(seq, prev=chain[-1].result_id))
        missing, early = chain[1], chain[2:]
        for message in early:
            gappy.publish(encode_result(message))
        deliver_valid(hub, other, 1)  # published after the 20: the hub has taken them all when this is acked

        assert hub.store.waiting_count("site-a", "gappy") == CAP  # before the cap: 20
        assert {w.seq for w in hub.store.waiting([("site-a", "gappy")])} == {3, 4, 5, 6, 7}  # the lowest seqs wait
        assert not set(gappy.acks()) & {m.result_id for m in early}
        assert hub.store.count_results(device_id="gappy") == 1
        assert hub.store.count_results(device_id="other") == 1
        assert "gappy has 5 results waiting for a predecessor (the cap); " in hub.log()

        gappy.publish(encode_result(missing))  # the gap closes: it and the five waiting results are stored
        hub.wait(lambda: {m.result_id for m in chain[1:7]} <= set(gappy.acks()), "acks for seq 2-7")
        assert hub.store.waiting_count("site-a", "gappy") == 0
        for message in early[CAP:]:  # the device re-sends what was never acked (its ack timeout)
            gappy.publish(encode_result(message))
        hub.wait(lambda: {m.result_id for m in chain} <= set(gappy.acks()), "acks for every result")

        stored = hub.store.results(device_id="gappy", newest_first=False, limit=None)  # in the hub's insert order
        assert [r.seq for r in stored] == list(range(1, 23))  # nothing lost, nothing twice, in order
        assert hub.stop(signal.SIGTERM) == 0
        counters = counters_at_exit(hub)
        assert counters["deferred.buffer_full"] == len(early) - CAP
        assert hub.rejected() == 0
    finally:
        gappy.close()
        other.close()
        hub.close()


@pytest.mark.parametrize("value", ["0", "-1", "1000001", '"many"'])
def test_a_cap_out_of_bounds_stops_the_hub_at_start_up(tmp_path: Path, value: str) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(f"[ingest]\nmax_waiting_per_device = {value}\n")
    done = subprocess.run(
        [sys.executable, "-m", "hub", "serve", "--config", str(config), "--db", str(tmp_path / "h.sqlite"), "--broker", "127.0.0.1:1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "max_waiting_per_device" in done.stdout + done.stderr
