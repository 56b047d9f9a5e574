"""`python -m hub serve` (real Mosquitto, SQLite) fed corrections by a hand-driven MQTT client: a correction is
stored once and acked with ``kind: correction_ack``; a redelivery is acked again, a conflicting one rejected and
counted; one for an unknown result, another device's result, an already voided result or from the wrong place is
rejected for good and answered in ``rejected``; one whose predecessor is missing waits (deferred, no answer); a
malformed one with a readable id is answered; the hub keeps serving results throughout, and derives each result's
effective state (voided / moved) from what it stored."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from device.link.contract import (
    CorrectionAckMessage,
    CorrectionMessage,
    CorrectionRefusal,
    ResultMessage,
    decode_ack_topic,
    encode_correction,
    encode_result,
    topic,
)
from device.link.corrections import CorrectionKind, CorrectionReason, Place, State, new_correction_id
from hub.store import NOT_VOIDED
from tests.device.link.test_uplink import Hub
from tests.hub.test_hub_service import RawDevice
from tests.mqtt_broker import MosquittoBroker, wait_for

pytestmark = pytest.mark.timeout(120)


class CorrectingDevice(RawDevice):
    """A raw client that also records the hub's correction acks and refusals."""

    def __init__(self, broker: MosquittoBroker, site: str = "site-a", device_id: str = "dev-1") -> None:
        self.corrected: list[str] = []
        self.refused: list[CorrectionRefusal] = []
        super().__init__(broker, site, device_id)

    def _on_message(self, client, userdata, message) -> None:  # type: ignore[no-untyped-def]
        answer = decode_ack_topic(message.payload)
        with self._lock:
            if isinstance(answer, CorrectionAckMessage):
                self.corrected.extend(answer.correction_ids)
                self.refused.extend(answer.rejected)
            elif hasattr(answer, "result_ids"):
                self.acked.extend(answer.result_ids)

    def answers(self) -> tuple[list[str], dict[str, str]]:
        with self._lock:
            return list(self.corrected), {r.correction_id: r.reason for r in self.refused}

    def send_result(self, seq: int) -> ResultMessage:
        message = self.result(seq)
        self.publish(encode_result(message))
        wait_for(lambda: message.result_id in self.acks(), 20, f"result {seq}'s ack")
        return message

    def correction(
        self,
        result: ResultMessage,
        kind: str = "void",
        *,
        origin: Place | None = None,
        target: Place | None = None,
        prev: str | None = None,
        seq: int = 1,
    ) -> CorrectionMessage:
        kind_ = CorrectionKind(kind)
        return CorrectionMessage(
            correction_id=new_correction_id(),
            seq=seq,
            result_id=result.result_id,
            device_id=self.device_id,
            site=self.site,
            created_at="2026-12-01T10:00:00.000Z",
            kind=kind_,
            reason=CorrectionReason.POOR_IMAGE if kind_ is CorrectionKind.VOID else CorrectionReason.WRONG_PATIENT,
            origin=origin or Place(result.exam_id, result.patient_ref, result.side),
            target=target,
            prev_correction_id=prev,
        )

    def send(self, message: CorrectionMessage) -> None:
        self.publish(encode_correction(message), kind="correction")


@pytest.fixture
def served(tmp_path):
    broker = MosquittoBroker(tmp_path / "broker")
    broker.start()
    hub = Hub(tmp_path, broker.address)
    hub.start()
    wait_for(lambda: "connected" in hub.log(), 20, "the hub to connect")
    devices = [CorrectingDevice(broker), CorrectingDevice(broker, "site-b", "dev-2")]
    yield hub, devices
    for d in devices:
        d.close()
    hub.stop()
    broker.kill()


def _answered(device: CorrectingDevice, cid: str, times: int = 1) -> bool:
    acked, refused = device.answers()
    return acked.count(cid) >= times or cid in refused


def test_corrections_at_the_hub(served) -> None:
    hub, (dev, other) = served
    r1, r2, r4 = dev.send_result(1), dev.send_result(2), dev.send_result(4)
    r3 = other.send_result(3)

    move = dev.correction(r1, "move", target=Place("E9", "P-900", "R"))
    dev.send(move)
    wait_for(lambda: _answered(dev, move.correction_id), 20, "the move's ack")
    dev.send(replace(move, prev_correction_id=None))  # a redelivery: acked again, stored once
    wait_for(lambda: _answered(dev, move.correction_id, 2), 20, "the duplicate's ack")
    conflict = replace(move, reason=CorrectionReason.WRONG_SIDE)
    dev.send(conflict)

    orphan = replace(dev.correction(r1), result_id="00000000-0000-4000-8000-000000000000")
    not_mine = dev.correction(r3)
    wrong_from = dev.correction(r4, origin=Place("E0", "P-000", "L"))
    for c in (orphan, not_mine, wrong_from):
        dev.send(c)

    first = dev.correction(r2, seq=2)
    after = dev.correction(r1, origin=Place("E9", "P-900", "R"), prev=first.correction_id, seq=3)
    dev.send(after)  # its predecessor is not stored yet: deferred, no answer
    malformed = {**encode_and_load(dev.correction(r4)), "note": "bad\u0000note"}
    dev.publish(json.dumps(malformed).encode(), kind="correction")
    wait_for(lambda: malformed["correction_id"] in dev.answers()[1], 20, "the malformed correction's answer")

    acked, refused = dev.answers()
    assert refused == {
        move.correction_id: "duplicate_conflict",
        orphan.correction_id: "unknown_result",
        not_mine.correction_id: "not_own_result",
        wrong_from.correction_id: "inconsistent",
        malformed["correction_id"]: "schema",
    }
    assert after.correction_id not in acked
    dev.send(first)
    dev.send(after)  # the device's re-send, in order
    wait_for(lambda: _answered(dev, after.correction_id), 20, "the re-sent correction's ack")
    again = dev.correction(r1, origin=Place("E9", "P-900", "R"), seq=4)
    dev.send(again)
    wait_for(lambda: _answered(dev, again.correction_id), 20, "the second void's answer")
    assert dev.answers()[1][again.correction_id] == "already_voided"
    assert other.answers() == ([], {})  # nothing about dev-1's corrections went to dev-2

    stored = hub.store.corrections()
    assert [c.correction.correction_id for c in stored] == [move.correction_id, first.correction_id, after.correction_id]
    r1_stored = hub.store.result(r1.result_id)
    assert (r1_stored.exam_id, r1_stored.patient_ref) == (r1.exam_id, r1.patient_ref)  # never overwritten
    placements = hub.store.placements(hub.store.results(limit=None))
    assert placements[r1.result_id].state is State.VOIDED and placements[r1.result_id].place == Place("E9", "P-900", "R")
    assert [c.kind for c in placements[r1.result_id].corrections] == [CorrectionKind.MOVE, CorrectionKind.VOID]
    assert placements[r2.result_id].state is State.VOIDED and placements[r4.result_id].state is State.VALID
    counted = {(r.reason, r.device_id): r.count for r in hub.store.rejections()}
    assert counted[("duplicate_conflict", "dev-1")] == 1 and counted[("unknown_result", "dev-1")] == 1
    live = {row[0] for row in hub.store._query(f"SELECT result_id FROM results WHERE {NOT_VOIDED}")}
    assert live == {r3.result_id, r4.result_id}
    r5 = dev.send_result(5)  # results still flow
    assert hub.store.result(r5.result_id) is not None and hub.proc.poll() is None


def encode_and_load(message: CorrectionMessage) -> dict:
    return json.loads(encode_correction(message))


def test_the_hub_subscribes_to_the_correction_topic() -> None:
    """The hub subscribes to the correction topic next to the result topic (a shared group too)."""
    from hub.service import subscriptions

    assert ("sonopi/v1/+/+/correction", 1) in subscriptions(None)
    assert ("$share/g/sonopi/v1/+/+/correction", 1) in subscriptions("g")
    assert topic("s", "d", "correction") == "sonopi/v1/s/d/correction"
