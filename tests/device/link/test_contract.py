"""Contract v1: topics, schemas, encode/decode, and that nothing but ContractError escapes a parse."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.link import contract
from device.link.contract import (
    MAX_BYTES,
    ContractError,
    decode_ack,
    decode_result,
    decode_status,
    encode_result,
    parse_topic,
    topic,
)
from device.link.uplink.outbox import message_from_record
from tests.device.link.test_uplink import JPEG, make_record

TOPIC = "sonopi/v1/site-a/dev-1/result"


def good_payload(**changes: object) -> dict:
    record = replace(make_record("site-a", "dev-1", 5), seq=7)
    payload = message_from_record(record, historical=True, prev_result_id=None).to_payload()
    payload.update(changes)
    return payload


def raw(payload: object) -> bytes:
    return json.dumps(payload).encode()


MARKER = 314159.25  # a number json.dumps writes as its repr, replaced by with_literal


def put(payload: dict, path: tuple[str, ...], value: object) -> dict:
    """``payload`` with the value at ``path`` (keys into nested objects) set to ``value``."""
    target = payload
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return payload


def with_literal(payload: dict, path: tuple[str, ...], literal: str) -> bytes:
    """JSON with the value at ``path`` written verbatim (NaN, 1e999, a 5,000-deep list...: what json.dumps
    cannot produce)."""
    return json.dumps(put(payload, path, MARKER)).replace(repr(MARKER), literal, 1).encode()


def test_schemas_are_valid_and_packaged() -> None:
    for kind in contract.MESSAGE_TYPES:
        document = contract.schema(kind)
        jsonschema.validators.validator_for(document).check_schema(document)
        assert document["properties"]["schema"] == ({"enum": list(contract.RESULT_SCHEMA_VERSIONS)} if kind == "result" else {"const": 1})


def test_result_round_trip_keeps_attribution_and_thumbnail() -> None:
    record = replace(make_record("site-a", "dev-1", 5), seq=7)
    message = message_from_record(record, historical=True, prev_result_id=None)
    assert message.thumbnail == JPEG
    back = decode_result(TOPIC, encode_result(message))
    assert back == message
    assert (back.patient_ref, back.exam_id, back.side, back.device_id, back.site) == (
        record.patient_ref,
        record.exam_id,
        record.side,
        "dev-1",
        "site-a",
    )


def test_thumbnail_off_or_too_big_is_left_out() -> None:
    record = replace(make_record("site-a", "dev-1", 5), seq=7)
    assert message_from_record(record, historical=False, prev_result_id=None, send_thumbnail=False).thumbnail is None
    assert message_from_record(record, historical=False, prev_result_id=None, thumbnail_max_bytes=10).thumbnail is None
    big = replace(record, thumbnail=b"\xff\xd8" + bytes(contract.MAX_THUMBNAIL_BYTES))
    assert message_from_record(big, historical=False, prev_result_id=None).thumbnail is None
    largest = replace(record, thumbnail=b"\xff\xd8" + bytes(contract.MAX_THUMBNAIL_BYTES - 2))
    data = encode_result(message_from_record(largest, historical=False, prev_result_id=None))
    assert len(data) <= MAX_BYTES["result"]


def test_topics() -> None:
    assert topic("site-a", "dev-1", "ack") == "sonopi/v1/site-a/dev-1/ack"
    assert parse_topic(TOPIC) == contract.Topic("site-a", "dev-1", "result")
    for bad in (
        "sonopi/v1/site-a/result",
        "sonopi/v2/a/b/result",
        "sonopi/v1/a/b/command",
        "sonopi/v1/+/b/result",
        "sonopi/v1/a/b c/result",
        "",
        "sonopi/v1/a/b/result/x",
    ):
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
    ack = contract.AckMessage((str(uuid.uuid4()), str(uuid.uuid4())), None)
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


field_mutations = st.sampled_from(sorted(good_payload().keys())).flatmap(lambda key: st.tuples(st.just(key), json_values))


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


# --- issue 17: bounded, finite numbers; no control characters; details that never quote a value --------

STATUS_TOPIC = "sonopi/v1/site-a/dev-1/status"
HEARTBEAT_TOPIC = "sonopi/v1/site-a/dev-1/heartbeat"
SECRET = "SECRET-PATIENT-4711"


def good_status(**changes: object) -> dict:
    payload = contract.StatusMessage(
        "online", "dev-1", "site-a", "2026-01-01T00:00:00.123Z", "0.1.0", {"name": "m", "version": "1", "sha256": "ab" * 32}, 3
    ).to_payload()
    payload.update(changes)
    return payload


def good_heartbeat(**changes: object) -> dict:
    payload = contract.HeartbeatMessage("dev-1", "site-a", "2026-01-01T00:00:00.123Z", 60.0, 12.5, 3, 4.0, 10**9, 51.2, "0x0", 38.0).to_payload()
    payload.update(changes)
    return payload


GOOD = {"result": good_payload, "status": good_status, "heartbeat": good_heartbeat}
DECODE = {
    "result": lambda data: decode_result(TOPIC, data),
    "status": lambda data: decode_status(STATUS_TOPIC, data),
    "heartbeat": lambda data: contract.decode_heartbeat(HEARTBEAT_TOPIC, data),
}


def _leaves(node: dict, path: tuple = ()):  # (path, subschema) of every property, nested objects and items included
    for name, sub in node.get("properties", {}).items():
        yield path + (name,), sub
        yield from _leaves(sub, path + (name,))
        if isinstance(sub.get("items"), dict):
            yield from _leaves(sub["items"], path + (name, "[]"))


def _types(sub: dict) -> set[str]:
    kind = sub.get("type", [])
    return {kind} if isinstance(kind, str) else set(kind)


@pytest.mark.parametrize("kind", contract.MESSAGE_TYPES)
def test_every_number_in_every_schema_is_bounded_on_both_sides(kind: str) -> None:
    document = contract.schema(kind)
    numbers = [(p, s) for p, s in _leaves(document) if _types(s) & {"number", "integer"}]
    numbers += [
        (p + ("*",), s["additionalProperties"])
        for p, s in _leaves(document)
        if isinstance(s.get("additionalProperties"), dict) and _types(s["additionalProperties"]) & {"number"}
    ]
    for path, sub in numbers:
        assert {"minimum", "exclusiveMinimum"} & set(sub) and {"maximum", "exclusiveMaximum"} & set(sub), (kind, path)
        assert sub.get("maximum", 0) <= 2**53 - 1, (kind, path, "beyond what a double and a BIGINT hold exactly")


@pytest.mark.parametrize("kind", contract.MESSAGE_TYPES)
def test_every_string_in_every_schema_refuses_control_characters(kind: str) -> None:
    document = contract.schema(kind)
    strings = [(p, s) for p, s in _leaves(document) if "string" in _types(s)]
    strings += [(p + ("[]",), s["items"]) for p, s in _leaves(document) if "string" in _types(s.get("items", {}))]
    strings += [(p + ("<key>",), s["propertyNames"]) for p, s in _leaves(document) if "propertyNames" in s]
    assert strings
    for path, sub in strings:
        assert sub.get("not") == {"$ref": "#/$defs/control"}, (kind, path)


@pytest.mark.parametrize("kind", ["result", "status", "heartbeat"])
@pytest.mark.parametrize("char", ["\x00", "\x07", "\n", "\x1b", "\x7f", "\x85", "\u2028", "\u202e", "\ud800"])
def test_a_control_character_in_any_string_field_is_rejected(kind: str, char: str) -> None:
    document = contract.schema(kind)
    paths = [p for p, s in _leaves(document) if "string" in _types(s)]
    for path in paths:
        payload = GOOD[kind]()
        target = payload
        for key in path[:-1]:
            target = target[key]
        base = target.get(path[-1]) if isinstance(target.get(path[-1]), str) else "x"
        target[path[-1]] = base + char  # a valid value with the character appended: only the character is wrong
        with pytest.raises(ContractError) as err:
            DECODE[kind](json.dumps(payload).encode())
        assert err.value.reason in ("schema", "topic_mismatch"), (path, err.value)


@pytest.mark.parametrize(
    ("kind", "literal", "reason"),
    [
        ("result", b'"latency_ms": 1e999', "bad_json"),
        ("result", b'"latency_ms": -1E400', "bad_json"),
        ("result", b'"latency_ms": Infinity', "bad_json"),
        ("result", b'"latency_ms": NaN', "bad_json"),
        ("result", b'"latency_ms": 1000000000000000000000000000000', "schema"),
        ("result", b'"latency_ms": 3600000.5', "schema"),
        ("result", b'"seq": 9007199254740992', "schema"),
        ("status", b'"backlog": 1000000000000000000000000000000', "schema"),
        ("status", b'"backlog": 1e30', "schema"),
        ("heartbeat", b'"disk_free_bytes": 9007199254740992', "schema"),
        ("heartbeat", b'"soc_temp_c": -300', "schema"),
        ("heartbeat", b'"uptime_s": 1e999', "bad_json"),
        ("heartbeat", b'"oldest_pending_age_s": -1', "schema"),
        ("heartbeat", b'"interval_s": 0', "schema"),
    ],
)
def test_numbers_out_of_bounds_or_not_finite_are_rejected(kind: str, literal: bytes, reason: str) -> None:
    name = literal.split(b":")[0]
    data = json.dumps(GOOD[kind](**{name.strip(b'"').decode(): 12345.5})).encode().replace(name + b": 12345.5", literal)
    assert literal in data
    with pytest.raises(ContractError) as err:
        DECODE[kind](data)
    assert err.value.reason == reason


def test_the_largest_allowed_numbers_are_accepted() -> None:
    assert decode_result(TOPIC, raw(good_payload(seq=2**53 - 1, latency_ms=3_600_000))).seq == 2**53 - 1
    assert decode_status(STATUS_TOPIC, raw(good_status(backlog=2**53 - 1))).backlog == 2**53 - 1
    beat = contract.decode_heartbeat(HEARTBEAT_TOPIC, raw(good_heartbeat(disk_free_bytes=2**53 - 1, soc_temp_c=-40.0)))
    assert beat.disk_free_bytes == 2**53 - 1


@pytest.mark.parametrize(
    ("changes", "what"),
    [
        ({"probabilities": {"benign": 0.9, "malignant": 0.9}}, "sum to 1.8000"),
        ({"probabilities": {"benign": 0.2, "malignant": 0.1}}, "sum to 0.3000"),
        ({"label": "normal", "inconclusive": False}, "label is not one of"),
    ],
)
def test_inconsistent_numbers_are_rejected(changes: dict, what: str) -> None:
    with pytest.raises(ContractError) as err:
        decode_result(TOPIC, raw(good_payload(**changes)))
    assert err.value.reason == "inconsistent" and what in err.value.detail


def test_a_result_cannot_name_itself_as_its_predecessor() -> None:
    payload = good_payload()
    with pytest.raises(ContractError) as err:
        decode_result(TOPIC, raw(dict(payload, prev_result_id=payload["result_id"])))
    assert err.value.reason == "inconsistent"


def test_probabilities_rounded_as_a_device_stores_them_are_consistent() -> None:
    three = {"normal": 0.1234567, "benign": 0.3333333, "malignant": 0.5432101}  # sums to 1.0000001
    assert decode_result(TOPIC, raw(good_payload(probabilities=three, label="malignant"))).label == "malignant"


@pytest.mark.parametrize("depth", [5, 50, 900, 990, 5000])
def test_deep_nesting_is_rejected_without_recursion(depth: int) -> None:
    nested = "[" * depth + "]" * depth
    data = json.dumps(good_payload(model=271828.5)).replace("271828.5", nested).encode()
    with pytest.raises(ContractError) as err:
        decode_result(TOPIC, data)
    assert err.value.reason in ("schema", "bad_json", "oversized")


def test_a_trailing_newline_does_not_pass_a_name_or_an_id() -> None:
    with pytest.raises(ContractError):
        contract.check_name("dev-1\n")
    for field in ("result_id", "device_id", "created_at"):
        with pytest.raises(ContractError):
            decode_result(TOPIC, raw(good_payload(**{field: good_payload()[field] + "\n"})))


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["patient_ref", "exam_id"]),
    st.one_of(
        st.text(min_size=65, max_size=80).map(lambda t: SECRET + t),
        st.sampled_from(["\x00", "\n", "\u2028", "\ud800"]).map(lambda c: SECRET + c),
        st.just({"ref": SECRET}),
        st.just([SECRET]),
        st.just(7),
    ),
)
def test_a_rejection_detail_never_quotes_the_value(field: str, value: object) -> None:
    try:
        decode_result(TOPIC, raw(good_payload(**{field: value})))
    except ContractError as exc:
        assert field in exc.detail and SECRET not in str(exc) and "4711" not in str(exc)
    else:
        pytest.fail(f"{field} = {value!r} was accepted")


def test_a_nack_travels_on_the_ack_topic_and_a_device_that_predates_it_ignores_it() -> None:
    rid = str(uuid.uuid4())
    nack = contract.NackMessage((contract.Refusal(rid, "topic_mismatch", "topic says a/b, payload says a/c"),), "2026-01-01T00:00:00.000Z")
    data = contract.encode_nack(nack)
    assert contract.decode_ack_topic(data) == nack
    ack = contract.AckMessage((rid,), None)
    assert contract.decode_ack_topic(contract.encode_ack(ack)) == ack
    with pytest.raises(ContractError):
        decode_ack(data)  # what an older uplink calls: a malformed ack, logged and ignored
    with pytest.raises(ContractError):
        contract.decode_ack_topic(raw({"schema": 1, "kind": "nack", "rejected": [{"result_id": rid, "reason": "X\n"}]}))
    long = contract.NackMessage((contract.Refusal(rid, "schema", "d" * 1000),))
    assert contract.decode_ack_topic(contract.encode_nack(long)).rejected[0].detail == "d" * contract.MAX_NACK_DETAIL


def test_the_result_id_of_a_rejected_result_is_read_when_it_can_be() -> None:
    payload = good_payload(device_id="dev-2")
    assert contract.result_id_of(raw(payload)) == payload["result_id"]
    assert contract.result_id_of(raw(good_payload(result_id="not-a-uuid"))) is None
    assert contract.result_id_of(b"\xff{") is None and contract.result_id_of(b"[1]") is None
