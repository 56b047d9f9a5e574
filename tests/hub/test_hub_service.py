"""`python -m hub serve` against a real broker, fed by a raw MQTT client: ordering, acks, duplicates,
malformed messages (rejected, counted, never fatal), and the operator CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.link.contract import (
    NackMessage,
    Refusal,
    ResultMessage,
    StatusMessage,
    decode_ack_topic,
    encode_result,
    encode_status,
    topic,
)
from device.link.uplink.outbox import message_from_record
from tests.device.link.test_contract import good_payload, json_values
from tests.device.link.test_uplink import Hub, make_record
from tests.mqtt_broker import REPO, MosquittoBroker, wait_for

pytestmark = pytest.mark.timeout(120)


class RawDevice:
    """A hand-driven MQTT client: publishes whatever it is given and records the acks it receives."""

    def __init__(self, broker: MosquittoBroker, site: str = "site-a", device_id: str = "dev-1") -> None:
        self.site, self.device_id = site, device_id
        self.acked: list[str] = []
        self.nacked: list[Refusal] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=f"raw-{device_id}")
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe(topic(site, device_id, "ack"), qos=1)[0]

    def _on_message(self, client, userdata, message) -> None:  # type: ignore[no-untyped-def]
        answer = decode_ack_topic(message.payload)
        with self._lock:
            if isinstance(answer, NackMessage):
                self.nacked.extend(answer.rejected)
            else:
                self.acked.extend(answer.result_ids)

    def nacks(self) -> list[Refusal]:
        with self._lock:
            return list(self.nacked)

    def acks(self) -> list[str]:
        with self._lock:
            return list(self.acked)

    def publish(self, payload: bytes, kind: str = "result", topic_name: str | None = None) -> None:
        name = topic_name or topic(self.site, self.device_id, kind)
        self.client.publish(name, payload, qos=1).wait_for_publish(10)

    @classmethod
    def offline(cls, site: str = "site-a", device_id: str = "dev-1") -> RawDevice:
        """One that only makes results (:meth:`result`): no broker connection."""
        raw = cls.__new__(cls)
        raw.site, raw.device_id = site, device_id
        return raw

    def result(self, seq: int, prev: str | None = None) -> ResultMessage:
        record = replace(make_record(self.site, self.device_id, seq), seq=seq)
        return message_from_record(record, historical=False, prev_result_id=prev)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("hubsvc")
    broker = MosquittoBroker(root / "broker")
    broker.start()
    hub = Hub(root, broker.address)
    hub.start()
    raw = RawDevice(broker)
    wait_for(lambda: "connected" in hub.log(), 20, "the hub to connect")
    yield broker, hub, raw
    raw.close()
    if hub.proc is not None:
        hub.stop()
    broker.kill()


def test_results_are_stored_in_order_and_acked_once_stored(served) -> None:
    broker, hub, raw = served
    sentinel = RawDevice(broker, "site-z", "dev-z")
    a = raw.result(1)
    b = raw.result(2, prev=a.result_id)
    raw.publish(encode_result(b))  # b's predecessor a is not stored yet: b must wait
    s1 = sentinel.result(1)
    raw.publish(encode_result(s1), topic_name=topic("site-z", "dev-z", "result"))
    wait_for(lambda: s1.result_id in sentinel.acks(), 20, "the sentinel's ack")
    assert hub.store.result(b.result_id) is None and b.result_id not in raw.acks()
    raw.publish(encode_result(a))
    raw.publish(encode_result(b))  # the device's re-send, after its ack timeout
    wait_for(lambda: b.result_id in raw.acks(), 20, "b's ack")
    rows = hub.store.results(device_id="dev-1", limit=None, newest_first=False)
    assert [r.result_id for r in rows] == [a.result_id, b.result_id]
    raw.publish(encode_result(a))  # a duplicate is acked again (its first ack may have been lost), not stored
    wait_for(lambda: raw.acks().count(a.result_id) == 2, 20, "the duplicate's ack")
    assert hub.store.count_results(device_id="dev-1") == 2
    sentinel.close()


garbage = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
    st.sampled_from(sorted(good_payload()))
    .flatmap(lambda key: json_values.map(lambda v, key=key: json.dumps(good_payload(**{key: v})).encode()))
    .filter(lambda data: b'"result_id"' in data),
    st.just(b"\xff\xfe" * 40),
    st.just(json.dumps(good_payload(patient_ref="x" * 200_000)).encode()),
    st.just(json.dumps(good_payload(device_id="dev-2")).encode()),
)


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(garbage, min_size=20, max_size=40))
def test_malformed_messages_are_rejected_counted_and_the_hub_keeps_serving(served, batch: list[bytes]) -> None:
    broker, hub, raw = served
    from device.link.contract import ContractError, decode_result

    def is_bad(data: bytes) -> bool:
        try:
            decode_result(topic(raw.site, raw.device_id, "result"), data)
            return False
        except ContractError:
            return True

    bad = [data for data in batch if is_bad(data)]  # a mutation can leave a valid message: those are not garbage
    before_rejected, before_stored = hub.store.rejected_total(), hub.store.count_results()
    valid_ids = {json.loads(d)["result_id"] for d in batch if not is_bad(d)}
    for data in batch:
        raw.publish(data)
    raw.publish(b"{}", kind="heartbeat")
    raw.publish(b"\x00", kind="status")
    good = raw.result(1)
    raw.publish(encode_result(good))
    wait_for(lambda: good.result_id in raw.acks(), 30, f"the hub to keep serving\n{hub.log()}")
    assert hub.proc is not None and hub.proc.poll() is None
    assert hub.store.rejected_total() - before_rejected == len(bad) + 2
    new_rows = hub.store.count_results() - before_stored
    assert new_rows <= 1 + len(valid_ids)
    assert hub.store.result(good.result_id) is not None


def test_status_and_operator_cli(served, tmp_path: Path) -> None:
    broker, hub, raw = served
    status = StatusMessage(
        "online", raw.device_id, raw.site, "2026-01-01T00:00:00Z", "9.9.9", {"name": "sonopi-lite0", "version": "1.2.0", "sha256": "ab" * 32}, 4
    )
    raw.publish(encode_status(status), kind="status")
    wait_for(lambda: (d := hub.store.device(raw.site, raw.device_id)) and d.software_version == "9.9.9", 20, "status")
    m = raw.result(99)  # malignant
    raw.publish(encode_result(m))
    wait_for(lambda: m.result_id in raw.acks(), 20, "ack")

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "hub", *args, "--db", str(hub.db)], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
        )
        return done.stdout

    lines = [json.loads(line) for line in cli("results", "--json", "--limit", "1000").splitlines()]
    assert m.result_id in {r["result_id"] for r in lines}
    assert len(lines) == hub.store.count_results()
    malignant = [json.loads(line) for line in cli("results", "--json", "--label", "malignant", "--limit", "1000").splitlines()]
    assert malignant and all(r["label"] == "malignant" for r in malignant)
    assert "site-a/dev-1" in cli("devices") and "9.9.9" in cli("devices", "--json")
    out = tmp_path / "export.csv"
    cli("export", "--csv", "--out", str(out), "--device", "dev-1")
    exported = out.read_text().splitlines()
    assert exported[0].startswith("id,result_id,seq") and len(exported) - 1 == hub.store.count_results(device_id="dev-1")
    jsonl = cli("export", "--json").splitlines()
    assert len(jsonl) == hub.store.count_results()
    before = hub.store.rejected_total()
    raw.publish(json.dumps(good_payload(device_id="dev-2")).encode())  # attributed to another device
    wait_for(lambda: hub.store.rejected_total() == before + 1, 20, "the rejection to be recorded")
    listed = cli("rejections")
    for r in hub.store.rejections():
        assert f"{r.count:>8} {r.reason:16} {r.site or '?'}/{r.device_id or '?'}" in listed
    assert "topic_mismatch" in listed


class RecordingClient:
    """Stands in for paho in HubService.process: records the device acks and PUBACKs it is asked for."""

    def __init__(self) -> None:
        self.acks: list[str] = []
        self.nacks: list[Refusal] = []
        self.pubacks: list[int] = []

    def publish(self, name: str, payload: bytes, qos: int, retain: bool) -> None:
        answer = decode_ack_topic(payload)
        if isinstance(answer, NackMessage):
            self.nacks.extend(answer.rejected)
        else:
            self.acks.extend(answer.result_ids)

    def ack(self, mid: int, qos: int) -> None:
        self.pubacks.append(mid)


def offline_service(store):  # type: ignore[no-untyped-def]
    """A HubService whose client is a :class:`RecordingClient`: ``process`` runs without a broker."""
    from hub.config import HubConfig
    from hub.service import HubService

    svc = HubService(HubConfig(), store, broker="127.0.0.1:1")
    svc._client = RecordingClient()  # type: ignore[assignment]
    return svc


def test_a_result_the_database_refuses_is_rejected_and_the_rest_of_its_batch_stored(tmp_path: Path, monkeypatch) -> None:
    """Defence in depth behind the contract: if a decoded result still cannot be stored (here a seq beyond
    64 bits, made to slip past validation), only that message is rejected."""
    from device.link import contract
    from hub import service as hub_service
    from hub.service import Incoming
    from hub.store import HubStore

    real = contract.decode_result
    monkeypatch.setattr(
        hub_service, "decode_result", lambda name, data: replace(real(name, data), seq=2**70) if b'"seq":9999' in data else real(name, data)
    )
    store = HubStore.open(tmp_path / "hub.sqlite")
    svc = offline_service(store)
    raw = RawDevice.offline()
    messages = [raw.result(1), raw.result(9999), raw.result(2)]
    name = topic("site-a", "dev-1", "result")
    svc.process([Incoming(name, encode_result(m), mid, 1) for mid, m in enumerate(messages, 1)])
    assert svc._client.acks == [messages[0].result_id, messages[2].result_id]
    assert [(n.result_id, n.reason) for n in svc._client.nacks] == [(messages[1].result_id, "unstorable")]
    assert svc._client.pubacks == [1, 2, 3], "every message is PUBACKed: the refused one must not come back"
    assert store.count_results() == 2 and store.result(messages[1].result_id) is None
    [rejection] = store.rejections()
    assert rejection.reason == "unstorable" and "OverflowError" in rejection.last_detail
    assert (svc.counters["received"], svc.counters["stored"], svc.counters["rejected"]) == (3, 2, 1)
    store.close()


def test_exports_of_non_finite_numbers_stored_by_an_older_hub_are_still_json(tmp_path: Path) -> None:
    from hub.store import HubStore

    db = tmp_path / "hub.sqlite"
    raw = RawDevice.offline()
    with HubStore.open(db) as store:  # written directly, as the old hub let a 1e999 through
        store.add_results([replace(raw.result(1), latency_ms=float("inf"), thresholds={"malignant": float("nan")})])
    for args in (["export", "--json"], ["results", "--json"]):
        done = subprocess.run([sys.executable, "-m", "hub", *args, "--db", str(db)], cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
        [line] = done.stdout.splitlines()
        row = json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in {args}"))
        assert row["latency_ms"] is None and row["thresholds"] == {"malignant": None}
        assert "non-finite" in done.stderr


def test_copies_of_one_result_in_one_batch_count_once_as_stored(tmp_path: Path) -> None:
    """The re-send of a result can land in the same batch as the first copy: one stored, one duplicate
    (both acked), and the counters add up to what was received."""
    from hub.service import OUTCOMES, Incoming
    from hub.store import HubStore

    store = HubStore.open(tmp_path / "hub.sqlite")
    svc = offline_service(store)
    raw = RawDevice.offline()
    m = raw.result(1)
    name = topic("site-a", "dev-1", "result")
    resend = replace(m, historical=not m.historical)
    svc.process([Incoming(name, encode_result(m), 1, 1), Incoming(name, encode_result(resend), 2, 1)])
    assert (svc.counters["stored"], svc.counters["duplicates"]) == (1, 1)
    assert svc._client.acks == [m.result_id, m.result_id] and store.count_results() == 1
    assert sum(svc.counters[o] for o in OUTCOMES) == svc.counters["received"] == 2
    store.close()


def test_a_nack_carries_a_multi_line_database_error_on_one_line(tmp_path: Path, monkeypatch) -> None:
    """A PostgreSQL error can span lines; the nack's detail may not contain control characters, so it
    must still be sendable (otherwise the device would re-send the result forever)."""
    from hub.service import Incoming
    from hub.store import Added, HubStore

    store = HubStore.open(tmp_path / "hub.sqlite")
    monkeypatch.setattr(
        store,
        "add_results_each",
        lambda messages, now: [Added(m.result_id, False, "refused the data (DataError: line one\nDETAIL: line two\t)") for m in messages],
    )
    svc = offline_service(store)
    raw = RawDevice.offline()
    m = raw.result(1)
    svc.process([Incoming(topic("site-a", "dev-1", "result"), encode_result(m), 1, 1)])
    [nack] = svc._client.nacks
    assert nack.result_id == m.result_id and nack.reason == "unstorable" and "line one DETAIL: line two" in nack.detail
    store.close()
