"""The correction message and its ack in the MQTT contract: a stored correction round-trips through encode/decode on
its own topic; every bad input is refused with a reason and a detail naming the key (never the value); a correction
ack is told apart from an ack and a nack on the ack topic, and a correction ack is malformed to an ack-only reader
(what a device that predates corrections would see)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from device.link import contract
from device.link.contract import (
    ContractError,
    CorrectionAckMessage,
    CorrectionMessage,
    CorrectionRefusal,
    decode_ack,
    decode_ack_topic,
    decode_correction,
    encode_correction,
    encode_correction_ack,
)
from device.link.corrections import CorrectionKind, CorrectionReason, Place, make_correction

TOPIC = "sonopi/v1/site-a/dev-1/correction"
RID = "11111111-2222-4333-8444-555555555555"
PREV = "99999999-2222-4333-8444-555555555555"


def _move(**changes) -> CorrectionMessage:
    c = make_correction(
        result_id=RID,
        kind="move",
        reason="wrong_patient",
        device_id="dev-1",
        site="site-a",
        origin=Place("E1", "P-001", "L"),
        target=Place("E2", "P-002", "R"),
        note="",
        by="dr-k",
    )
    message = CorrectionMessage.from_correction(replace(c, seq=3), prev_correction_id=PREV)
    return replace(message, **changes)


def _payload(message: CorrectionMessage | None = None) -> dict:
    return (message or _move()).to_payload()


def _refused(payload: dict, topic: str = TOPIC) -> ContractError:
    with pytest.raises(ContractError) as info:
        decode_correction(topic, json.dumps(payload).encode())
    return info.value


def test_topic_and_round_trip() -> None:
    assert contract.topic("site-a", "dev-1", "correction") == TOPIC and contract.QOS["correction"] == 1
    message = _move()
    assert decode_correction(TOPIC, encode_correction(message)) == message
    void = replace(message, kind=CorrectionKind.VOID, reason=CorrectionReason.POOR_IMAGE, target=None, by=None, prev_correction_id=None)
    assert decode_correction(TOPIC, encode_correction(void)) == void


@pytest.mark.parametrize(
    ("change", "reason", "detail"),
    [
        (lambda p: p.pop("reason"), "schema", "correction (root): missing required reason"),
        (lambda p: p.update(kind="erase"), "schema", "correction kind: must be one of"),
        (lambda p: p.update(reason="bored"), "schema", "correction reason: must be one of"),
        (lambda p: p.update(note="n" * 201), "schema", "correction note: longer than 200 characters"),
        (lambda p: p.update(note="a\nb"), "schema", "correction note: contains a control character"),
        (lambda p: p["to"].update(patient_ref="P\u202e1"), "schema", "correction to/patient_ref: contains a control"),
        (lambda p: p["from"].update(exam_id="E" * 65), "schema", "correction from/exam_id: longer than 64"),
        (lambda p: p.update(by="x" * 65), "schema", "correction by: longer than 64"),
        (lambda p: p.update(seq=2**53), "schema", "correction seq: above the maximum"),
        (lambda p: p.update(result_id="not-a-uuid"), "schema", "correction result_id: not in the required format"),
        (lambda p: p.update(extra=1), "schema", "1 unexpected property (extra)"),
        (lambda p: p.update(device_id="dev-2"), "topic_mismatch", "payload says site-a/dev-2"),
        (lambda p: p.update(reason="poor_image"), "inconsistent", "poor_image is not a reason to move"),
        (lambda p: p.update(to=None), "inconsistent", "a move needs a target exam_id and side"),
        (lambda p: p.update(to=dict(p["from"])), "inconsistent", "a move to where the result already is"),
        (lambda p: p.update(kind="void", reason="poor_image"), "inconsistent", "a void has no target"),
        (lambda p: p.update(reason="other"), "inconsistent", "reason other needs a note"),
        (lambda p: p.update(prev_correction_id=p["correction_id"]), "inconsistent", "names the correction itself"),
    ],
)
def test_bad_corrections_are_refused_naming_the_key(change, reason: str, detail: str) -> None:
    payload = _payload()
    change(payload)
    error = _refused(payload)
    assert error.reason == reason and detail in error.detail, error
    assert "P-002" not in error.detail and "P\u202e1" not in error.detail  # never the value


def test_size_json_and_topic_checks_come_first() -> None:
    with pytest.raises(ContractError, match="oversized"):
        decode_correction(TOPIC, b"{" + b" " * 5000 + b"}")
    with pytest.raises(ContractError, match="bad_json"):
        decode_correction(TOPIC, b'{"seq": NaN}')
    with pytest.raises(ContractError, match="not a correction topic"):
        decode_correction("sonopi/v1/site-a/dev-1/result", encode_correction(_move()))
    payload = _payload()
    assert contract.correction_id_of(json.dumps({**payload, "kind": "x"}).encode()) == payload["correction_id"]
    assert contract.correction_id_of(b"[]") is None


def test_correction_ack_on_the_ack_topic() -> None:
    ack = CorrectionAckMessage(
        ("aaaaaaaa-2222-4333-8444-555555555555",),
        (CorrectionRefusal(PREV, "unknown_result", "the hub has no result " + RID),),
        at="2026-12-01T10:00:00.000Z",
    )
    data = encode_correction_ack(ack)
    assert decode_ack_topic(data) == ack
    with pytest.raises(ContractError, match="schema"):  # what a device that predates corrections sees: ignored
        decode_ack(data)
    bad = json.loads(data)
    bad["rejected"][0]["reason"] = "Bad Reason"
    with pytest.raises(ContractError, match="correction_ack rejected/0/reason: not in the required format"):
        decode_ack_topic(json.dumps(bad).encode())
