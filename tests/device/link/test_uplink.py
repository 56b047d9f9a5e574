"""End to end: device store -> `python -m device uplink` -> real Mosquitto -> `python -m hub serve` -> hub DB.

Every test checks the same invariant: for each device, the hub's rows, in the order the hub stored them,
are exactly the device's results in seq order (nothing lost, nothing twice, order kept), with their
attribution intact, and the device's outbox is empty (everything acked by the hub).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from device.link.uplink.state import read_state
from device.results import ResultRecord, new_result_id, utc_now_iso
from device.store import ResultStore
from hub.store import HubStore
from tests.mqtt_broker import MosquittoBroker, device_uplink_command, start_process, stop_process, wait_for

pytestmark = pytest.mark.timeout(180)

SHA = "ab" * 32
JPEG = b"\xff\xd8\xff\xe0" + bytes(range(200)) + b"\xff\xd9"


def make_record(site: str, device_id: str, i: int) -> ResultRecord:
    malignant = i % 3 == 0
    inconclusive = i % 7 == 0
    return ResultRecord(
        result_id=new_result_id(),
        created_at=utc_now_iso(),
        device_id=device_id,
        site=site,
        model_name="sonopi-lite0",
        model_version="1.2.0",
        model_sha256=SHA,
        probabilities={"benign": 0.2, "malignant": 0.8} if malignant else {"benign": 0.9, "malignant": 0.1},
        label=None if inconclusive else ("malignant" if malignant else "benign"),
        inconclusive=inconclusive,
        reasons=("low_confidence",) if inconclusive else (),
        thresholds={"min_confidence": 0.6},
        exam_id=f"E{i // 4}",
        patient_ref=f"P-{i % 37:03d}",
        side="L" if i % 2 else "R",
        latency_ms=30.0 + i % 10,
        thumbnail=JPEG if i % 5 == 0 else None,
    )


class Device:
    """A device's store and config; its uplink runs as a subprocess."""

    def __init__(self, root: Path, site: str, device_id: str, broker: str, **uplink: object) -> None:
        self.site, self.device_id = site, device_id
        self.dir = root / f"{site}-{device_id}"
        self.dir.mkdir(parents=True)
        self.store_path = self.dir / "results.sqlite"
        self.store = ResultStore(self.store_path)
        settings = {
            "broker": broker,
            "ack_timeout_s": 2.0,
            "window": 64,
            "heartbeat_s": 1.0,
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 1.0,
            "poll_s": 0.05,
            "keepalive_s": 5,
        }
        settings.update(uplink)
        self.config_path = self.dir / "device.toml"
        self.config_path.write_text(
            f'[device]\nid = "{device_id}"\nsite = "{site}"\ndata_dir = "{self.dir}"\n'
            f'[model]\npath = "{self.dir / "no-model"}"\n'
            f'[store]\npath = "{self.store_path}"\n[uplink]\n' + "".join(f"{k} = {_toml(v)}\n" for k, v in settings.items())
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def add(self, n: int) -> None:
        start = self.store.count()
        for i in range(start, start + n):
            self.store.add(make_record(self.site, self.device_id, i))

    def add_in_background(self, n: int, batch: int = 50) -> threading.Thread:
        def produce() -> None:
            store = ResultStore(self.store_path)  # the pipeline's own connection, as on a device
            start = store.count()
            for i in range(start, start + n):
                store.add(make_record(self.site, self.device_id, i))
            store.close()

        thread = threading.Thread(target=produce, daemon=True)
        thread.start()
        return thread

    def start_uplink(self, broker: str | None = None) -> None:
        args = device_uplink_command() + ["--config", str(self.config_path)]
        if broker:
            args += ["--broker", broker]
        self.proc = start_process(args, self.dir / "uplink.log")

    def stop_uplink(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        code = stop_process(self.proc, sig)
        self.proc = None
        return code

    def log(self) -> str:
        """The log's tail, for failure messages."""
        return self.full_log()[-3000:]

    def full_log(self) -> str:
        """The whole log, for asserting that something never happened."""
        path = self.dir / "uplink.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return f'"{value}"'


class Hub:
    def __init__(self, root: Path, broker: str, config_text: str = "") -> None:
        self.dir = root / "hub"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.db = self.dir / "hub.sqlite"
        self.broker = broker
        self.config_path = self.dir / "hub.toml"
        self.config_path.write_text(config_text)
        self.proc: subprocess.Popen[bytes] | None = None
        self.store = HubStore.open(self.db)

    def start(self) -> None:
        args = [sys.executable, "-m", "hub", "serve", "--config", str(self.config_path), "--db", str(self.db), "--broker", self.broker]
        self.proc = start_process(args, self.dir / "hub.log")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        code = stop_process(self.proc, sig)
        self.proc = None
        return code

    def count(self, device: Device | None = None) -> int:
        if device is None:
            return self.store.count_results()
        return self.store.count_results(site=device.site, device_id=device.device_id)

    def log(self) -> str:
        """The log's tail, for failure messages."""
        return self.full_log()[-3000:]

    def full_log(self) -> str:
        """The whole log, for asserting that something never happened."""
        path = self.dir / "hub.log"
        return path.read_text(errors="replace") if path.exists() else ""


def assert_delivered(hub: Hub, device: Device) -> None:
    """Exactly once, in seq order, attribution intact, all acked on the device."""
    expected = device.store.history(newest_first=False)
    rows = hub.store.results(site=device.site, device_id=device.device_id, limit=None, newest_first=False)
    assert [r.result_id for r in rows] == [e.result_id for e in expected], "hub rows differ from the device's results"
    for row, rec in zip(rows, expected):
        assert (row.seq, row.patient_ref, row.exam_id, row.side, row.label, row.inconclusive) == (
            rec.seq,
            rec.patient_ref,
            rec.exam_id,
            rec.side,
            rec.label,
            rec.inconclusive,
        )
        assert row.probabilities == rec.probabilities and row.thumbnail == rec.thumbnail
        assert (row.model_name, row.model_version, row.model_sha256) == (rec.model_name, rec.model_version, rec.model_sha256)
    assert device.store.backlog().pending == 0
    assert {r.delivery for r in device.store.history()} == {"acked"}


def backlog_empty(device: Device, total: int) -> bool:
    return device.store.count() == total and device.store.backlog().pending == 0


def drained_and_delivered(hub: Hub, device: Device, total: int, timeout_s: float, what: str) -> None:
    """Wait for the device's outbox to drain and the hub to hold all ``total`` results, then
    :func:`assert_delivered`."""
    wait_for(lambda: backlog_empty(device, total), timeout_s, f"{what}\n{device.log()}\n{hub.log()}")
    wait_for(lambda: hub.count(device) == total, 10, f"the hub to hold {total} results")
    assert_delivered(hub, device)


def shut_down(broker, hub, devices) -> None:
    """Test teardown: stop every device uplink and the hub that are still running, then kill the broker."""
    for device in devices:
        if device.proc is not None:
            device.stop_uplink()
    if hub.proc is not None:
        hub.stop()
    broker.kill()


@pytest.fixture
def broker(tmp_path: Path):
    b = MosquittoBroker(tmp_path / "broker")
    b.start()
    yield b
    b.kill()


@pytest.fixture
def rig(tmp_path: Path, broker: MosquittoBroker):
    devices: list[Device] = []
    hub = Hub(tmp_path, broker.address)

    def new_device(device_id: str = "dev-1", site: str = "site-a", **uplink: object) -> Device:
        device = Device(tmp_path, site, device_id, broker.address, **uplink)
        devices.append(device)
        return device

    yield hub, new_device
    for device in devices:
        if device.proc is not None:
            device.stop_uplink(signal.SIGKILL)
    if hub.proc is not None:
        hub.stop(signal.SIGKILL)


def test_1000_results_reach_the_hub_exactly_once(rig, broker) -> None:
    hub, new_device = rig
    device = new_device()
    device.add(1000)
    hub.start()
    device.start_uplink()
    drained_and_delivered(hub, device, 1000, 60, "the backlog to drain")
    rows = hub.store.results(device_id=device.device_id, limit=None)
    assert all(r.historical for r in rows), "results stored before the uplink connected are historical"
    # Birth and heartbeat were recorded; a clean stop leaves "stopped" as the retained status.
    wait_for(lambda: (d := hub.store.device(device.site, device.device_id)) and d.last_heartbeat_at, 10, "a heartbeat")
    state = hub.store.device(device.site, device.device_id)
    assert state.status == "online" and state.model_sha256 == SHA and state.software_version
    assert device.stop_uplink() == 0
    wait_for(lambda: hub.store.device(device.site, device.device_id).status == "stopped", 10, "status stopped")
    assert hub.stop() == 0


def test_live_results_are_not_historical_and_will_says_offline(rig, broker) -> None:
    hub, new_device = rig
    device = new_device()
    hub.start()
    device.start_uplink()
    wait_for(lambda: (d := hub.store.device(device.site, device.device_id)) and d.status == "online", 20, "birth")
    wait_for(lambda: (s := read_state(device.store)) and s.state == "connected", 20, "uplink state shared with the UI")
    device.add(20)
    wait_for(lambda: backlog_empty(device, 20), 30, "delivery")
    assert_delivered(hub, device)
    assert not any(r.historical for r in hub.store.results(limit=None))
    device.stop_uplink(signal.SIGKILL)  # no clean stop: the broker publishes the Last Will
    wait_for(lambda: hub.store.device(device.site, device.device_id).status == "offline", 20, "Last Will 'offline'")


def test_broker_killed_mid_burst(rig, broker) -> None:
    hub, new_device = rig
    device = new_device()
    hub.start()
    device.start_uplink()
    producer = device.add_in_background(3000)
    wait_for(lambda: hub.count(device) >= 500, 60, f"the burst to start arriving\n{device.log()}")
    broker.kill()
    arrived = hub.count(device)
    broker.start()
    producer.join(60)
    assert arrived < 3000, "the broker was killed after the burst: the test proved nothing"
    drained_and_delivered(hub, device, 3000, 90, "the backlog to drain after the broker restart")


def test_uplink_sigkilled_mid_burst(rig, broker) -> None:
    hub, new_device = rig
    device = new_device()
    hub.start()
    device.add(3000)
    device.start_uplink()
    wait_for(lambda: hub.count(device) >= 700, 60, f"the burst to start arriving\n{device.log()}")
    device.stop_uplink(signal.SIGKILL)
    arrived = hub.count(device)
    assert arrived < 3000, "the uplink was killed after the burst: the test proved nothing"
    device.start_uplink()
    drained_and_delivered(hub, device, 3000, 90, "the backlog to drain after the restart")


def test_hub_down_while_devices_publish(rig, broker) -> None:
    hub, new_device = rig
    device = new_device()
    hub.start()  # registers the hub's persistent session with the broker...
    wait_for(lambda: "connected" in hub.log(), 20, "the hub to connect")
    hub.stop(signal.SIGKILL)  # ...then the hub dies
    device.start_uplink()
    device.add(1500)
    wait_for(
        lambda: any(r.delivery == "sent" for r in device.store.history(limit=5, newest_first=False)), 30, "the device to send while the hub is down"
    )
    assert hub.count() == 0
    hub.start()
    drained_and_delivered(hub, device, 1500, 90, "the backlog to drain")


def test_hub_sigkilled_mid_burst_and_two_devices(rig, broker) -> None:
    hub, new_device = rig
    first, second = new_device("dev-1", "site-a"), new_device("dev-2", "site-b")
    first.add(1500)
    second.add(1500)
    hub.start()
    first.start_uplink()
    second.start_uplink()
    wait_for(lambda: hub.count() >= 600, 60, "results to arrive")
    hub.stop(signal.SIGKILL)
    assert hub.count() < 3000
    hub.start()
    for device in (first, second):
        drained_and_delivered(hub, device, 1500, 90, f"{device.device_id} to drain")
    assert {(d.site, d.device_id) for d in hub.store.devices()} == {("site-a", "dev-1"), ("site-b", "dev-2")}


def test_device_store_stays_writable_while_uplink_cannot_connect(tmp_path: Path) -> None:
    """No broker at all: the uplink keeps retrying and the device keeps storing results."""
    device = Device(tmp_path, "site-a", "dev-1", "127.0.0.1:1")
    device.start_uplink()
    try:
        device.add(50)  # would raise StoreError if the uplink held the database
        assert device.store.backlog().pending == 50
        wait_for(lambda: "next connection attempt" in device.log(), 20, "a reconnect attempt to be logged")
        assert device.proc is not None and device.proc.poll() is None, "the uplink must keep running"
        state = read_state(device.store)
        assert state.state == "disconnected" and "cannot connect" in state.detail and state.broker == "127.0.0.1:1"
    finally:
        assert device.stop_uplink() == 0
    assert read_state(device.store).state == "stopped"
