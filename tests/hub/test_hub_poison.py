"""Poison messages against the real processes (issue 17): a real Mosquitto on a free port, a real
`python -m hub serve` subprocess, real SQLite files and a real PostgreSQL server.

Each test sends one kind of message a device could send and proves that it ends as stored, duplicate
or rejected with a reason — the hub neither exits nor stalls, and a valid result sent afterwards is
stored and acked:

* a retained status with a 31-digit ``backlog`` and a result with a 31-digit ``latency_ms`` (these
  made ``hub serve`` exit with OverflowError on every start);
* a NUL character in ``patient_ref`` on PostgreSQL (it stalled ingestion for every device);
* non-finite and inconsistent numbers (they were stored, then broke the JSON exports);
* a duplicate ``result_id`` with different content (it was acked and dropped silently);
* patient references in rejection log lines and in ``hub rejections`` (on the hub and on the device).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from device.link.contract import ResultMessage, encode_result, topic
from hub.store import HubStore
from tests.device.link.test_contract import good_payload, with_literal
from tests.device.link.test_uplink import Device, make_record
from tests.hub.test_hub_service import RawDevice
from tests.mqtt_broker import (  # noqa: F401  (fixtures)
    REPO,
    MosquittoBroker,
    mosquitto_broker,
    postgres_server,
    start_process,
    stop_process,
    wait_for,
)

pytestmark = pytest.mark.timeout(180)

SECRET = "SECRET-PATIENT-4711"


class HubProcess:
    """``python -m hub serve`` on any database target (SQLite path or PostgreSQL DSN)."""

    def __init__(self, root: Path, broker: str, target: str, config_text: str = "") -> None:
        self.dir = root / "hub"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.target = target
        self.broker = broker
        self.config_path = self.dir / "hub.toml"
        self.config_path.write_text(config_text)
        self.log_path = self.dir / "hub.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.store = HubStore.open(target)

    def start(self) -> None:
        self.proc = start_process(
            [sys.executable, "-m", "hub", "serve", "--config", str(self.config_path), "--db", self.target, "--broker", self.broker], self.log_path
        )

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        code = stop_process(self.proc, sig)
        self.proc = None
        return code

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait(self, predicate: Callable[[], Any], what: str, timeout_s: float = 30) -> Any:
        """Like wait_for, but fails at once (with the hub's log) when the hub process has exited."""

        def check() -> Any:
            if not self.alive:
                pytest.fail(f"hub serve exited (code {self.proc.poll() if self.proc else None}) while waiting for {what}:\n{self.log()[-3000:]}")
            return predicate()

        return wait_for(check, timeout_s, f"{what}\n{self.log()[-3000:]}")

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "hub", *args, "--db", self.target], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
        )
        return done.stdout + done.stderr

    def rejected(self, reason: str | None = None) -> int:
        return sum(r.count for r in self.store.rejections() if reason is None or r.reason == reason)

    def close(self) -> None:
        if self.proc is not None:
            self.stop(signal.SIGKILL)
        self.store.close()


@pytest.fixture
def sqlite_hub(tmp_path: Path, mosquitto_broker: MosquittoBroker):
    hub = HubProcess(tmp_path, mosquitto_broker.address, str(tmp_path / "hub.sqlite"))
    yield hub
    hub.close()


@pytest.fixture
def device(mosquitto_broker: MosquittoBroker):
    raw = RawDevice(mosquitto_broker, "site-a", "dev-1")
    yield raw
    raw.close()


def deliver_valid(hub: HubProcess, raw: RawDevice, seq: int) -> ResultMessage:
    """A valid result, re-published until the hub acks it (the first may race the hub's subscription)."""
    message = raw.result(seq)
    for _ in range(15):
        raw.publish(encode_result(message))
        try:
            hub.wait(lambda: message.result_id in raw.acks(), "a valid result's ack", timeout_s=2)
            break
        except pytest.fail.Exception:
            if not hub.alive:
                raise
    hub.wait(lambda: message.result_id in raw.acks(), "a valid result's ack", timeout_s=5)
    assert hub.store.result(message.result_id) is not None
    return message


def strict_json(line: str) -> Any:
    """Parse as RFC 8259 JSON: NaN, Infinity and -Infinity are not JSON."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(line, parse_constant=refuse)


# --- defect 1: integers too large for the database ---------------------------------------------------


def test_a_retained_status_with_a_huge_backlog_is_rejected_on_every_start(sqlite_hub: HubProcess, device: RawDevice) -> None:
    status = {
        "schema": 1,
        "state": "online",
        "device_id": device.device_id,
        "site": device.site,
        "at": "2026-01-01T00:00:00Z",
        "software_version": "0.1.0",
        "model": None,
        "backlog": 1000000000000000000000000000000,
    }
    device.client.publish(topic(device.site, device.device_id, "status"), json.dumps(status).encode(), qos=1, retain=True).wait_for_publish(10)
    for start in (1, 2):  # the retained message comes back on every start
        sqlite_hub.start()
        deliver_valid(sqlite_hub, device, seq=start)
        sqlite_hub.wait(lambda: sqlite_hub.rejected("schema") == start, "the status to be rejected")
        assert sqlite_hub.alive
        assert sqlite_hub.stop() == 0


def test_a_result_with_a_31_digit_latency_is_rejected_and_the_next_is_stored(sqlite_hub: HubProcess, device: RawDevice) -> None:
    sqlite_hub.start()
    deliver_valid(sqlite_hub, device, seq=1)
    poison = good_payload(latency_ms=1000000000000000000000000000000)
    device.publish(json.dumps(poison).encode())
    after = deliver_valid(sqlite_hub, device, seq=2)
    sqlite_hub.wait(lambda: sqlite_hub.rejected("schema") == 1, "the result to be rejected")
    assert sqlite_hub.store.result(poison["result_id"]) is None
    assert poison["result_id"] not in device.acks()
    assert sqlite_hub.store.result(after.result_id) is not None and sqlite_hub.alive


# --- defect 4 (first half): NUL in a text field on PostgreSQL -------------------------------------------


def test_postgresql_a_nul_in_patient_ref_is_rejected_and_other_devices_go_on(
    tmp_path: Path, mosquitto_broker: MosquittoBroker, postgres_server
) -> None:
    dsn = postgres_server.create_database(f"poison_{uuid.uuid4().hex[:8]}")
    hub = HubProcess(tmp_path, mosquitto_broker.address, dsn)
    bad_device = RawDevice(mosquitto_broker, "site-a", "dev-nul")
    other = RawDevice(mosquitto_broker, "site-b", "dev-ok")
    try:
        hub.start()
        deliver_valid(hub, other, seq=1)
        poisoned = good_payload(device_id="dev-nul", patient_ref="P\u0000123")
        bad_device.publish(json.dumps(poisoned).encode())  # json.dumps escapes it: \u0000
        queued = [other.result(seq) for seq in range(2, 12)]
        for message in queued:  # published right behind it: they share its batch or the next ones
            other.publish(encode_result(message))
        hub.wait(lambda: all(m.result_id in other.acks() for m in queued), "the other device's results", timeout_s=30)
        hub.wait(lambda: hub.rejected() == 1, "the NUL result to be rejected with a reason")
        assert hub.store.result(poisoned["result_id"]) is None
        assert poisoned["result_id"] not in bad_device.acks()
        assert hub.store.count_results(device_id="dev-ok") == 11
    finally:
        bad_device.close()
        other.close()
        hub.close()


# --- defect 9: non-finite and inconsistent numbers ------------------------------------------------------


def test_non_finite_and_inconsistent_numbers_are_rejected_and_exports_stay_json(sqlite_hub: HubProcess, device: RawDevice) -> None:
    sqlite_hub.start()
    deliver_valid(sqlite_hub, device, seq=1)
    results = [
        with_literal(good_payload(), ("latency_ms",), "1e999"),
        with_literal(good_payload(thresholds={"malignant": 0.5}), ("thresholds", "malignant"), "1e999"),
        with_literal(good_payload(thresholds={"malignant": 0.5}), ("thresholds", "malignant"), "-1e999"),
        json.dumps(good_payload(probabilities={"benign": 0.9, "malignant": 0.9}, label="benign")).encode(),
        json.dumps(good_payload(probabilities={"benign": 0.5, "malignant": 0.5}, label="normal", inconclusive=False)).encode(),
    ]
    for data in results:
        device.publish(data)
    heartbeat = {
        "schema": 1,
        "device_id": device.device_id,
        "site": device.site,
        "at": "2026-01-01T00:00:00Z",
        "interval_s": 60.0,
        "uptime_s": 10.0,
        "backlog": 0,
        "soc_temp_c": 40.0,
    }
    device.publish(with_literal(dict(heartbeat), ("soc_temp_c",), "1e999"), kind="heartbeat")
    device.publish(with_literal(dict(heartbeat), ("uptime_s",), "1e999"), kind="heartbeat")
    deliver_valid(sqlite_hub, device, seq=2)
    sqlite_hub.wait(lambda: sqlite_hub.rejected() == len(results) + 2, "every bad number to be rejected")
    assert sqlite_hub.store.count_results() == 2
    exported = [strict_json(line) for line in sqlite_hub.cli("export", "--json").splitlines() if line.startswith("{")]
    devices = [strict_json(line) for line in sqlite_hub.cli("devices", "--json").splitlines() if line.startswith("{")]
    assert len(exported) == 2 and len(devices) == 1, "strict JSON was checked on every exported row and device, not on none"
    assert sqlite_hub.alive


# --- defect 9: a duplicate result_id with different content ---------------------------------------------


def test_a_conflicting_duplicate_is_rejected_and_counted_an_identical_one_acked(sqlite_hub: HubProcess, device: RawDevice) -> None:
    sqlite_hub.start()
    first = deliver_valid(sqlite_hub, device, seq=1)
    forged = json.dumps(
        dict(
            first.to_payload(),
            label="malignant" if first.label != "malignant" else "benign",
            probabilities={"benign": 0.2, "malignant": 0.8} if first.label != "malignant" else {"benign": 0.9, "malignant": 0.1},
        )
    ).encode()
    device.publish(forged)
    deliver_valid(sqlite_hub, device, seq=2)  # processed after the forged one
    sqlite_hub.wait(lambda: sqlite_hub.rejected("duplicate_conflict") == 1, "the conflicting duplicate to be rejected")
    assert device.acks().count(first.result_id) == 1, "a conflicting duplicate must not be acked"
    assert sqlite_hub.store.result(first.result_id).label == first.label, "the first stored content stays"
    # The device's own re-send (after an ack timeout or a reconnect) differs only in transport fields.
    resend = ResultMessage(**{**first.__dict__, "historical": not first.historical, "prev_result_id": None})
    device.publish(encode_result(resend))
    sqlite_hub.wait(lambda: device.acks().count(first.result_id) == 2, "the identical duplicate's ack")
    assert sqlite_hub.rejected("duplicate_conflict") == 1 and sqlite_hub.store.count_results() == 2


# --- defect 9: patient references in rejection log lines --------------------------------------------------


def test_patient_references_never_reach_hub_logs_or_rejections(sqlite_hub: HubProcess, device: RawDevice) -> None:
    sqlite_hub.start()
    deliver_valid(sqlite_hub, device, seq=1)
    bad = [
        good_payload(exam_id=SECRET * 5),
        good_payload(patient_ref=SECRET * 5),  # too long
        good_payload(patient_ref=SECRET + "\u0007"),  # a control character
        good_payload(patient_ref={"ref": SECRET}),  # wrong type
        good_payload(patient_ref=[SECRET]),
    ]
    for payload in bad:
        device.publish(json.dumps(payload).encode())
    deliver_valid(sqlite_hub, device, seq=2)
    sqlite_hub.wait(lambda: sqlite_hub.rejected() == len(bad), "the rejections")
    listed = sqlite_hub.cli("rejections") + sqlite_hub.cli("rejections", "--json")
    assert "schema" in listed and "patient_ref" in listed, "the reason and the field are named"
    assert SECRET not in listed
    assert sqlite_hub.stop() == 0
    assert "rejected" in sqlite_hub.log() and SECRET not in sqlite_hub.log()


def test_a_result_the_contract_refuses_is_logged_on_the_device_without_its_patient_ref(tmp_path: Path, mosquitto_broker: MosquittoBroker) -> None:
    device = Device(tmp_path, "site-a", "dev-1", mosquitto_broker.address)
    record = make_record("site-a", "dev-1", 1)
    device.store.add(record.__class__(**{**record.__dict__, "patient_ref": SECRET * 5}))
    device.start_uplink()
    try:
        wait_for(lambda: "breaks the contract" in device.log(), 30, f"the uplink to refuse it\n{device.log()}")
    finally:
        device.stop_uplink()
    log_text = (device.dir / "uplink.log").read_text(errors="replace")
    assert "patient_ref" in log_text and SECRET not in log_text
