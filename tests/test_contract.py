"""Contract v1: topics, schemas, encode/decode, and that nothing but ContractError escapes a parse."""

from __future__ import annotations

import json
from dataclasses import replace

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device import contract
from device.contract import (
    MAX_BYTES,
    ContractError,
    ResultMessage,
    decode_ack,
    decode_result,
    decode_status,
    encode_result,
    parse_topic,
    topic,
)
from tests.test_uplink import JPEG, make_record

TOPIC = "sonopi/v1/site-a/dev-1/result"


def good_payload(**changes: object) -> dict:
    record = replace(make_record("site-a", "dev-1", 5), seq=7)
    payload = ResultMessage.from_record(record, historical=True, prev_result_id=None).to_payload()
    payload.update(changes)
    return payload


def raw(payload: object) -> bytes:
    return json.dumps(payload).encode()


def test_schemas_are_valid_and_packaged() -> None:
    for kind in contract.KINDS:
        document = contract.schema(kind)
        jsonschema.validators.validator_for(document).check_schema(document)
        assert document["properties"]["schema"] == {"const": 1}


def test_result_round_trip_keeps_attribution_and_thumbnail() -> None:
    record = replace(make_record("site-a", "dev-1", 5), seq=7)
    message = ResultMessage.from_record(record, historical=True, prev_result_id=None)
    assert message.thumbnail == JPEG
    back = decode_result(TOPIC, encode_result(message))
    assert back == message
    assert (back.patient_ref, back.exam_id, back.side, back.device_id, back.site) == (
        record.patient_ref, record.exam_id, record.side, "dev-1", "site-a")


def test_thumbnail_off_or_too_big_is_left_out() -> None:
    record = replace(make_record("site-a", "dev-1", 5), seq=7)
    assert ResultMessage.from_record(record, historical=False, prev_result_id=None, send_thumbnail=False).thumbnail is None
    assert ResultMessage.from_record(record, historical=False, prev_result_id=None, thumbnail_max_bytes=10).thumbnail is None
    big = replace(record, thumbnail=b"\xff\xd8" + bytes(contract.MAX_THUMBNAIL_BYTES))
    assert ResultMessage.from_record(big, historical=False, prev_result_id=None).thumbnail is None
    largest = replace(record, thumbnail=b"\xff\xd8" + bytes(contract.MAX_THUMBNAIL_BYTES - 2))
    data = encode_result(ResultMessage.from_record(largest, historical=False, prev_result_id=None))
    assert len(data) <= MAX_BYTES["result"]


def test_topics() -> None:
    assert topic("site-a", "dev-1", "ack") == "sonopi/v1/site-a/dev-1/ack"
    assert parse_topic(TOPIC) == contract.Topic("site-a", "dev-1", "result")
    for bad in ("sonopi/v1/site-a/result", "sonopi/v2/a/b/result", "sonopi/v1/a/b/command", "sonopi/v1/+/b/result",
                "sonopi/v1/a/b c/result", "", "sonopi/v1/a/b/result/x"):
        with pytest.raises(ContractError) as err:
            parse_topic(bad)
        assert err.value.reason == "bad_topic"
    with pytest.raises(ContractError):
        topic("site/a", "dev-1", "result")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\xfe\x00garbage", "bad_utf8"),
        (b"{not json", "bad_json"),
        (b'{"seq": NaN}', "bad_json"),
        (b"[1, 2, 3]", "schema"),
        (raw(good_payload(seq="7")), "schema"),
        (raw(good_payload(seq=0)), "schema"),
        (raw(good_payload(schema=2)), "schema"),
        (raw(good_payload(result_id="not-a-uuid")), "schema"),
        (raw(good_payload(probabilities={"malignant": 1.5})), "schema"),
        (raw(good_payload(side="X")), "schema"),
        (raw(good_payload(patient_ref="x" * 10_000)), "schema"),
        (raw(good_payload(extra_field=1)), "schema"),
        (raw(good_payload(model={"name": "m", "version": "1", "sha256": "short"})), "schema"),
        (raw(good_payload(label=None, inconclusive=False)), "schema"),
        (raw(good_payload(thumbnail_jpeg_b64="QUJD")), "schema"),  # base64, but not a JPEG
        (raw(good_payload(device_id="dev-2")), "topic_mismatch"),
        (raw(good_payload(site="site-b")), "topic_mismatch"),
        (b"{" + b" " * (MAX_BYTES["result"] + 1) + b"}", "oversized"),
        (raw(good_payload(reasons=["x" * 100] * 2000)), "oversized"),
    ],
)
def test_decode_rejects_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ContractError) as err:
        decode_result(TOPIC, data)
    assert err.value.reason == reason


def test_status_and_ack() -> None:
    status = contract.StatusMessage("online", "dev-1", "site-a", "2026-01-01T00:00:00Z", "0.1.0", None, 3)
    assert decode_status("sonopi/v1/site-a/dev-1/status", contract.encode_status(status)) == status
    ack = contract.AckMessage(("a", "b"), None)
    assert decode_ack(contract.encode_ack(ack)) == ack
    with pytest.raises(ContractError):
        decode_ack(raw({"schema": 1, "result_ids": ["x"] * 1001}))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=20), children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_arbitrary_json_is_rejected_only_with_contract_error(value: object) -> None:
    with pytest.raises(ContractError):
        decode_result(TOPIC, json.dumps(value).encode())


field_mutations = st.sampled_from(sorted(good_payload().keys())).flatmap(
    lambda key: st.tuples(st.just(key), json_values)
)


@settings(max_examples=300, deadline=None)
@given(field_mutations)
def test_mutated_fields_never_crash_the_parser(mutation: tuple[str, object]) -> None:
    key, value = mutation
    try:
        message = decode_result(TOPIC, raw(good_payload(**{key: value})))
    except ContractError:
        return
    assert message.device_id == "dev-1" and message.site == "site-a"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_rejected_only_with_contract_error(data: bytes) -> None:
    with pytest.raises(ContractError):
        decode_result(TOPIC, data)
