"""MQTT contract v1 between a sonopi device and the hospital hub — defined once, used by both ends.

The result payload is at schema 3 (schema 2 plus the optional lesion outline and the crop box the thumbnail shows); schema 2
added category, p_malignant, mode and the optional clock and age. The hub also accepts schema 1 and 2 from devices that
predate them, and a device sends each result at the lowest schema that holds it: one stored without an outline as 2, one
stored before the category rule as 1.

Topics (``<site>`` and ``<device_id>`` are single topic levels, see :func:`check_name`)::

    sonopi/v1/<site>/<device_id>/result     device -> hub, QoS 1, not retained
    sonopi/v1/<site>/<device_id>/status     device -> hub, QoS 1, retained (birth / Last Will / clean stop)
    sonopi/v1/<site>/<device_id>/heartbeat  device -> hub, QoS 0, not retained
    sonopi/v1/<site>/<device_id>/correction device -> hub, QoS 1, not retained: a result voided or moved
    sonopi/v1/<site>/<device_id>/ack        hub -> device, QoS 1, not retained: acks, and nacks (results
                                            rejected for good, ``"kind": "nack"``), and correction acks
                                            (``"kind": "correction_ack"``), see :func:`decode_ack_topic`

Every payload is one UTF-8 JSON object validated against a JSON Schema in ``device/link/schemas/``
(documented in docs/mqtt.md). Parsing never trusts the payload: size first, then UTF-8, then JSON
(finite numbers only: NaN, Infinity and numbers that overflow a double are refused), then nesting
depth, then the schema (every number bounded, no control characters in any string), then the
topic/payload attribution and the result's own consistency; any failure raises :class:`ContractError`
with a stable ``reason`` the hub counts and a ``detail`` that names the field and the rule broken but
never repeats the value (a value may be a patient reference, and details are logged and stored).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any

import fastjsonschema
import jsonschema

from device.errors import SonopiError
from device.lesion_record import LesionRecord as LesionRecord  # re-exported: the hub reads outlines through the contract
from device.lesion_record import LesionRecordError as LesionRecordError
from device.lesion_record import parse_box as parse_box
from device.link.corrections import REASONS, Correction, CorrectionKind, CorrectionReason, Place

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1  # status, heartbeat, ack, nack, correction, correction_ack
RESULT_SCHEMA_VERSION = 3  # 3: optional lesion and crop (a result stored without an outline is sent as 2)
# 2: category, p_malignant, mode, optional clock/age (a result stored before them is sent as 1)
RESULT_SCHEMA_VERSIONS = (1, 2, 3)  # what the hub accepts
CATEGORIES = ("no_lesion", "low_suspicion", "suspicious", "inconclusive")  # device.decision.Category
CATEGORY_LABELS = {"no_lesion": "normal", "low_suspicion": "benign", "suspicious": "malignant", "inconclusive": None}
TOPIC_ROOT = "sonopi/v1"
KINDS = ("result", "status", "heartbeat", "ack", "correction")  # topic kinds
MESSAGE_TYPES = KINDS + ("nack", "correction_ack")  # one JSON Schema each; nack and correction_ack travel on the ack topic
QOS = {"result": 1, "status": 1, "heartbeat": 0, "ack": 1, "correction": 1}
RESULT_SUBSCRIPTION = f"{TOPIC_ROOT}/+/+/result"
DEVICE_SUBSCRIPTIONS = tuple(f"{TOPIC_ROOT}/+/+/{kind}" for kind in ("result", "status", "heartbeat", "correction"))

# Size limits, checked before any parsing. A result carries at most a 64 KiB thumbnail (base64: 4/3).
MAX_THUMBNAIL_BYTES = 65536
MAX_BYTES = {"result": 131072, "status": 4096, "heartbeat": 4096, "ack": 65536, "nack": 65536, "correction": 4096, "correction_ack": 65536}
MAX_ACK_IDS = 1000
MAX_NACK_RESULTS = 100
MAX_NACK_DETAIL = 300


class DeviceStatus(StrEnum):
    """A device's retained status (``…/status``): its uplink's birth message, its last will, or a clean stop."""

    ONLINE = "online"
    OFFLINE = "offline"  # the broker's last will: the uplink vanished
    STOPPED = "stopped"  # the uplink stopped cleanly


STATES = tuple(DeviceStatus)
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # fullmatch: "$" would let a trailing newline in

MAX_DEPTH = 4  # nesting of objects/arrays in any message (a result needs 2); checked before the schema
PROBABILITY_SUM_TOLERANCE = 0.01  # a result's probabilities sum to 1 within this


class ContractError(SonopiError):
    """A message that does not satisfy contract v1; ``reason`` is a short stable label for counters."""

    code = "contract_violation"

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# --- topics ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Topic:
    site: str
    device_id: str
    kind: str

    def __str__(self) -> str:
        return f"{TOPIC_ROOT}/{self.site}/{self.device_id}/{self.kind}"


def check_name(value: str) -> str:
    if not _NAME_RE.fullmatch(value):
        raise ContractError("bad_topic", f"{value!r} is not a valid site/device name")
    return value


def topic(site: str, device_id: str, kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown topic kind {kind!r}")
    return str(Topic(check_name(site), check_name(device_id), kind))


def parse_topic(text: str) -> Topic:
    parts = text.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != TOPIC_ROOT or parts[4] not in KINDS:
        raise ContractError("bad_topic", f"{text[:200]!r} is not a sonopi/v1/<site>/<device_id>/<kind> topic")
    return Topic(check_name(parts[2]), check_name(parts[3]), parts[4])


# --- schemas -----------------------------------------------------------------------------------


@cache
def schema(kind: str) -> dict[str, Any]:
    """The JSON Schema for one message kind (packaged as ``device/link/schemas/<kind>.schema.json``)."""
    text = resources.files("device.link").joinpath("schemas", f"{kind}.schema.json").read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


CONTROL_RULE = {"$ref": "#/$defs/control"}  # every string field says "not": CONTROL_RULE


@cache
def _validator(kind: str) -> jsonschema.protocols.Validator:
    """The schema's validator, minus the per-field control-character rule, which :func:`_check_controls`
    applies to every string of the payload in one pass with the schema's own pattern (jsonschema's
    ``not`` + ``$ref`` per field cost ~60 % of a result's validation: 2,500 -> 900 decodes/s).
    Only used to explain a payload :func:`_compiled` refused (``best_match`` names the field and the rule)."""
    document = schema(kind)
    cls = jsonschema.validators.validator_for(document)
    cls.check_schema(document)
    return cls(_without_control_rule(document))


@cache
def _compiled(kind: str) -> Any:
    """The same schema (minus the control rule, as :func:`_validator`) compiled once to Python code by
    ``fastjsonschema``: the accept/refuse verdict on every message, ~20x cheaper than ``jsonschema``'s
    interpretation of it (docs/performance.md, "Uplink and hub"). Its verdict must be jsonschema's:
    tests/device/link/test_contract_fast_validation.py checks that on generated and mutated payloads of every kind.
    (fastjsonschema anchors ``$`` as ``\\Z``, jsonschema as Python's ``$``, which also matches before a
    trailing newline; that case never reaches it: :func:`_check_controls` refuses a newline first.)"""
    _validator(kind)  # the schema itself is checked against its metaschema once, by jsonschema
    return fastjsonschema.compile(_without_control_rule(schema(kind)))


def _without_control_rule(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_control_rule(v) for k, v in node.items() if not (k == "not" and v == CONTROL_RULE)}
    if isinstance(node, list):
        return [_without_control_rule(v) for v in node]
    return node


@cache
def _control_pattern(kind: str) -> re.Pattern[str]:
    return re.compile(schema(kind)["$defs"]["control"]["pattern"])


# In the payload's compact JSON (ensure_ascii=False) every string and key appears, each control character either raw
# (DEL, C1, separators, bidi controls, surrogates: json.dumps leaves them as they are) or, for C0, as an escape
# (\n, \t, \u0000...: a backslash escape not itself preceded by an escaped backslash). No match: no control
# character anywhere. A match (or a false one, such as a literal backslash before "n") sends the payload to the walk
# below, which decides and names the field: one C-speed dump and two searches instead of a search per string.
_RAW_CONTROL = re.compile("[\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_C0_ESCAPE = re.compile(r"\\[bfnrtu]")


def _compact_json(payload: dict[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def _may_have_controls(text: str) -> bool:
    """``text``: the payload as JSON, the compact dump or the text it was parsed from (in either, each control
    character of a string or key is raw or a backslash escape: JSON allows no raw C0 in a string)."""
    return _RAW_CONTROL.search(text) is not None or _C0_ESCAPE.search(text.replace("\\\\", "")) is not None


def _check_controls(kind: str, payload: dict[str, Any], text: str | None = None) -> None:
    """``$defs/control`` on every string in the payload, keys included (which the schema only guards
    where it names them); the detail names where, never the string. ``text``: the payload's JSON when the caller
    has it already (encode's dump, decode's input), so it is not dumped a second time."""
    try:
        if not _may_have_controls(_compact_json(payload) if text is None else text):
            return
    except (TypeError, ValueError):  # not JSON-serialisable (a payload built in code): the walk decides
        pass
    pattern = _control_pattern(kind)
    stack: list[tuple[Any, str]] = [(payload, "")]
    while stack:
        node, where = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            if isinstance(key, str) and pattern.search(key):
                raise ContractError("schema", f"{kind} {where or '(root)'}: a key contains a control character")
            path = f"{where}/{key}" if where else str(key)
            if isinstance(value, str) and pattern.search(value):
                raise ContractError("schema", f"{kind} {path}: {describe_control()}")
            if isinstance(value, (dict, list)):
                stack.append((value, path))


def describe_control() -> str:
    return "contains a control character (C0/C1, DEL, a line separator, a bidi control or a lone surrogate)"


def validate(kind: str, payload: dict[str, Any], text: str | None = None) -> None:
    """The contract's checks on a payload (``text``: its JSON, when the caller has it; see :func:`_check_controls`)."""
    _check_controls(kind, payload, text)
    if kind == "result":
        _check_newer_fields(payload)
    try:
        _compiled(kind)(payload)
    except fastjsonschema.JsonSchemaValueException:
        _explain(kind, payload)


def _check_newer_fields(payload: dict[str, Any]) -> None:
    """A field newer than the result's schema version, named (the schema's own error for this names no field)."""
    version = payload.get("schema")
    if version == 1:
        newer = [name for name in (*SCHEMA_2_FIELDS, *SCHEMA_3_FIELDS) if name in payload]
    elif version == 2:
        newer = [name for name in SCHEMA_3_FIELDS if name in payload]
    else:
        return
    if newer:
        raise ContractError("schema", f"result (root): {', '.join(newer)} not allowed in a schema-{version} result")


def _explain(kind: str, payload: dict[str, Any]) -> None:
    """Raise the :class:`ContractError` for a payload the compiled schema refused, in jsonschema's words (the same
    detail as ever: its ``best_match`` names the field and the rule). Refusals are rare, so their cost is not."""
    error = jsonschema.exceptions.best_match(_validator(kind).iter_errors(payload))
    if error is None:  # the two disagree: jsonschema is the reference (tests/device/link/test_contract_fast_validation.py)
        log.error("contract: the compiled %s schema refused a payload jsonschema accepts; accepted (please report)", kind)
        return
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    raise ContractError("schema", f"{kind} {where}: {describe(error)}")


_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number", type(None): "null"}


def describe(error: jsonschema.exceptions.ValidationError) -> str:
    """The rule a value broke, without the value itself (it may be a patient reference)."""
    rule, bound, value = error.validator, error.validator_value, error.instance
    if rule == "type":
        return f"must be {' or '.join(bound) if isinstance(bound, list) else bound}, not {_JSON_TYPES.get(type(value), 'unknown')}"
    if rule in ("maxLength", "minLength"):
        return f"{'longer' if rule == 'maxLength' else 'shorter'} than {bound} characters"
    if rule in ("maxItems", "minItems", "maxProperties", "minProperties"):
        return f"{'more' if rule.startswith('max') else 'fewer'} than {bound} {'items' if rule.endswith('Items') else 'properties'}"
    if rule in ("maximum", "exclusiveMaximum"):
        return f"above the maximum {bound}" + (" (exclusive)" if rule.startswith("exclusive") else "")
    if rule in ("minimum", "exclusiveMinimum"):
        return f"below the minimum {bound}" + (" (exclusive)" if rule.startswith("exclusive") else "")
    if rule == "not":
        return describe_control()
    if rule == "pattern":
        return "not in the required format"
    if rule in ("enum", "const"):
        return f"must be {'one of ' + json.dumps(bound) if rule == 'enum' else json.dumps(bound)}"
    if rule == "required":
        missing = [name for name in bound if isinstance(value, dict) and name not in value]
        return f"missing required {', '.join(missing) or 'property'}"
    if rule == "additionalProperties" and isinstance(value, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = sorted(k for k in value if k not in allowed)
        named = [k for k in extra if _NAME_RE.fullmatch(k) and len(k) <= 40][:3]
        return f"{len(extra)} unexpected propert{'y' if len(extra) == 1 else 'ies'}" + (f" ({', '.join(named)})" if named else "")
    return f"breaks the {rule} rule"


def encode(kind: str, payload: dict[str, Any]) -> bytes:
    """Validate and serialise; raises :class:`ContractError` if the payload breaks the contract."""
    try:
        text: str | None = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):  # NaN or not serialisable: validate names what the contract refuses first
        text = None
    validate(kind, payload, text)
    if text is None:  # the contract allowed it, JSON cannot carry it: as ever, json's own error
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    data = text.encode("utf-8")
    if len(data) > MAX_BYTES[kind]:
        raise ContractError("oversized", f"{kind} payload is {len(data)} bytes (limit {MAX_BYTES[kind]})")
    return data


def decode(kind: str, data: bytes) -> dict[str, Any]:
    """Size, UTF-8, JSON and schema checks, in that order."""
    payload, text = _parse(kind, data)
    validate(kind, payload, text)
    return payload


def parse(kind: str, data: bytes) -> dict[str, Any]:
    """Size, UTF-8, finite JSON, an object, nesting depth — everything before the schema."""
    return _parse(kind, data)[0]


def _parse(kind: str, data: bytes) -> tuple[dict[str, Any], str]:
    if len(data) > MAX_BYTES[kind]:
        raise ContractError("oversized", f"{kind} payload is {len(data)} bytes (limit {MAX_BYTES[kind]})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContractError("bad_utf8", str(exc)[:200]) from exc
    try:
        payload = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except (json.JSONDecodeError, ValueError, RecursionError) as exc:
        raise ContractError("bad_json", str(exc)[:200]) from exc
    if not isinstance(payload, dict):
        raise ContractError("schema", f"{kind} payload is a JSON {_JSON_TYPES.get(type(payload), 'value')}, not an object")
    if _deeper_than(payload, MAX_DEPTH):
        raise ContractError("schema", f"{kind} payload is nested deeper than {MAX_DEPTH} levels")
    return payload, text


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"a number ({len(text)} characters) is out of the range of a double")
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether objects/arrays nest more than ``limit`` levels, level by level without recursion (a hostile payload
    may be thousands deep; only ``limit`` + 1 levels are ever looked at)."""
    level = [value] if isinstance(value, (dict, list)) else []
    for _ in range(limit):
        level = [child for item in level for child in (item.values() if isinstance(item, dict) else item) if isinstance(child, (dict, list))]
        if not level:
            return False
    return True


def _check_attribution(where: Topic, payload: dict[str, Any]) -> None:
    if payload["site"] != where.site or payload["device_id"] != where.device_id:
        raise ContractError(
            "topic_mismatch",
            f"topic says {where.site}/{where.device_id}, payload says {payload['site']}/{payload['device_id']}",
        )


# --- result ------------------------------------------------------------------------------------

# What makes two copies of a result "the same result": everything but the transport fields (historical,
# prev_result_id and whether the thumbnail was sent change between a device's re-sends). The hub rejects a
# result_id it already stored when one of these differs (``duplicate_conflict``).
CONTENT_FIELDS = (
    "seq",
    "device_id",
    "site",
    "created_at",
    "exam_id",
    "patient_ref",
    "side",
    "model_name",
    "model_version",
    "model_sha256",
    "probabilities",
    "label",
    "inconclusive",
    "reasons",
    "thresholds",
    "latency_ms",
    "category",
    "p_malignant",
    "mode",
    "clock",
    "age",
    "lesion",
    "crop",
)
EXAM_FIELDS = ("clock", "age")  # schema 2, optional: from the exam, so only in a result with an exam_id
SCHEMA_2_FIELDS = ("category", "p_malignant", "mode", *EXAM_FIELDS)  # never in a schema-1 result
SCHEMA_3_FIELDS = ("lesion", "crop")  # schema 3, optional: never in a schema-1 or schema-2 result


@dataclass(frozen=True)
class ResultMessage:
    """A result as it travels device -> hub."""

    result_id: str
    seq: int
    device_id: str
    site: str
    created_at: str
    model_name: str
    model_version: str
    model_sha256: str
    probabilities: dict[str, float]
    label: str | None
    inconclusive: bool
    reasons: tuple[str, ...] = ()
    thresholds: dict[str, float] = field(default_factory=dict)
    exam_id: str | None = None
    patient_ref: str | None = None
    side: str | None = None
    latency_ms: float | None = None
    historical: bool = False
    prev_result_id: str | None = None  # the device's previous not-yet-acknowledged result (ordering)
    thumbnail: bytes | None = None  # JPEG
    category: str | None = None  # schema 2: no_lesion | low_suspicion | suspicious | inconclusive
    p_malignant: float | None = None  # schema 2: the calibrated softmax probability of 'malignant'
    mode: str | None = None  # schema 2: the operating mode it was judged in
    clock: int | None = None  # schema 2, optional: the lesion's clock position (1..12) from the exam
    age: int | None = None  # schema 2, optional: the patient's age (0..130) from the exam
    lesion: LesionRecord | None = None  # schema 3, optional: the lesion outline (device/lesion_record.py)
    crop: tuple[int, int, int, int] | None = None  # schema 3, optional: x, y, w, h (image pixels) the thumbnail shows
    schema: int = RESULT_SCHEMA_VERSION

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "schema": self.schema,
            "result_id": self.result_id,
            "seq": self.seq,
            "prev_result_id": self.prev_result_id,
            "device_id": self.device_id,
            "site": self.site,
            "created_at": self.created_at,
            "exam_id": self.exam_id,
            "patient_ref": self.patient_ref,
            "side": self.side,
            "model": {"name": self.model_name, "version": self.model_version, "sha256": self.model_sha256},
            "probabilities": self.probabilities,
            "label": self.label,
            "inconclusive": self.inconclusive,
            "reasons": list(self.reasons),
            "thresholds": self.thresholds,
            "latency_ms": self.latency_ms,
            "historical": self.historical,
        }
        if self.schema >= 2:
            payload.update(category=self.category, p_malignant=self.p_malignant, mode=self.mode)
            # optional: left out when not entered, so a result without them is the schema-2 message it always was
            payload.update({name: getattr(self, name) for name in EXAM_FIELDS if getattr(self, name) is not None})
        if self.schema >= 3:  # optional as well: left out when absent
            if self.lesion is not None:
                payload["lesion"] = self.lesion.to_json()
            if self.crop is not None:
                payload["crop"] = list(self.crop)
        if self.thumbnail is not None:
            payload["thumbnail_jpeg_b64"] = base64.b64encode(self.thumbnail).decode("ascii")
        return payload

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> ResultMessage:
        thumb = payload.get("thumbnail_jpeg_b64")
        thumbnail = None
        if thumb is not None:
            try:
                thumbnail = base64.b64decode(thumb, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ContractError("schema", f"thumbnail is not valid base64 ({exc})") from exc
            if not thumbnail.startswith(b"\xff\xd8"):
                raise ContractError("schema", "thumbnail is not a JPEG")
        model = payload["model"]
        return cls(
            result_id=payload["result_id"],
            seq=payload["seq"],
            device_id=payload["device_id"],
            site=payload["site"],
            created_at=payload["created_at"],
            model_name=model["name"],
            model_version=model["version"],
            model_sha256=model["sha256"],
            probabilities={k: float(v) for k, v in payload["probabilities"].items()},
            label=payload["label"],
            inconclusive=payload["inconclusive"],
            reasons=tuple(payload["reasons"]),
            thresholds={k: float(v) for k, v in payload["thresholds"].items()},
            exam_id=payload.get("exam_id"),
            patient_ref=payload.get("patient_ref"),
            side=payload.get("side"),
            latency_ms=payload.get("latency_ms"),
            historical=payload["historical"],
            prev_result_id=payload.get("prev_result_id"),
            thumbnail=thumbnail,
            category=payload.get("category"),
            p_malignant=payload.get("p_malignant"),
            mode=payload.get("mode"),
            clock=_int_or_none(payload.get("clock")),
            age=_int_or_none(payload.get("age")),
            lesion=_lesion_from(payload.get("lesion")),
            crop=_box_from(payload.get("crop"), "crop"),
            schema=payload["schema"],
        )


def _int_or_none(value: Any) -> int | None:
    """An integer the schema accepted (JSON Schema counts ``7.0`` as an integer) as a Python int."""
    return None if value is None else int(value)


def _box_from(value: Any, where: str) -> tuple[int, int, int, int] | None:
    """``[x, y, w, h]`` the schema accepted (four integers 0..65535) as a box: its width and height at least 1."""
    if value is None:
        return None
    x, y, w, h = (int(v) for v in value)
    if w < 1 or h < 1:
        raise ContractError("inconsistent", f"result {where}: a box needs a width and height of at least 1")
    return x, y, w, h


def _lesion_from(value: Any) -> LesionRecord | None:
    """The ``lesion`` object the schema accepted as a :class:`LesionRecord` (its own rules: device/lesion_record.py)."""
    if value is None:
        return None
    data = dict(value)
    if data.get("box") is not None:
        data["box"] = list(_box_from(data["box"], "lesion/box") or ())
    if data.get("contour") is not None:
        data["contour"] = [[int(v) for v in point] for point in data["contour"]]
    try:
        return LesionRecord.from_json(data, "lesion")
    except LesionRecordError as exc:  # the schema covers these rules: reached only if the two drift apart
        where = str(exc).split(":", 1)[0].replace(".", "/")
        raise ContractError("inconsistent", f"result {where}: not a lesion outline (device/lesion_record.py)") from exc


def encode_result(message: ResultMessage) -> bytes:
    check_consistency(message)
    return encode("result", message.to_payload())


def check_consistency(message: ResultMessage) -> None:
    """What a schema cannot say: the numbers of one result agree with each other."""
    if message.label is None and not message.inconclusive:
        raise ContractError("schema", "a result without a label must be inconclusive")
    if message.label is not None and message.label not in message.probabilities:
        raise ContractError("inconsistent", "the label is not one of the probabilities' classes")
    total = math.fsum(message.probabilities.values())
    if abs(total - 1.0) > PROBABILITY_SUM_TOLERANCE:
        raise ContractError("inconsistent", f"the probabilities sum to {total:.4f}, not 1 (±{PROBABILITY_SUM_TOLERANCE})")
    if message.prev_result_id == message.result_id:
        raise ContractError("inconsistent", "prev_result_id names the result itself")
    if message.schema >= 2:
        _check_category(message)
    _check_exam_fields(message)
    _check_lesion(message)


def _check_lesion(message: ResultMessage) -> None:
    """Schema 3's lesion and crop: only in a schema-3 result; every box (the crop, the lesion's) at least 1 x 1. Also
    checked here so a message built in code is refused before it is encoded."""
    for name in SCHEMA_3_FIELDS:
        if getattr(message, name) is not None and message.schema < 3:
            raise ContractError("schema", f"result {name}: a schema-{message.schema} result may not carry it")
    for where, box in (("crop", message.crop), ("lesion/box", message.lesion.box if message.lesion is not None else None)):
        if box is not None and (box[2] < 1 or box[3] < 1):
            raise ContractError("inconsistent", f"result {where}: a box needs a width and height of at least 1")


def _check_category(message: ResultMessage) -> None:
    """Schema 2: the category, the label, the inconclusive flag, p_malignant and the malignant threshold agree
    (device.decision's rule: suspicious exactly when p_malignant reaches the threshold)."""
    if message.category not in CATEGORY_LABELS or message.p_malignant is None or message.mode is None:
        raise ContractError("schema", "a schema-2 result needs a category, p_malignant and mode")
    if (message.category == "inconclusive") != message.inconclusive:
        raise ContractError("inconsistent", "the category is inconclusive exactly when the result is inconclusive")
    if message.category != "inconclusive" and message.label != CATEGORY_LABELS[message.category]:
        raise ContractError("inconsistent", "the label is not the one the category gives")
    p_class = message.probabilities.get("malignant")
    if p_class is not None and abs(p_class - message.p_malignant) > PROBABILITY_SUM_TOLERANCE:
        raise ContractError("inconsistent", "p_malignant is not the probability of malignant")
    threshold = message.thresholds.get("malignant")
    if threshold is not None and message.category != "inconclusive":
        if (message.category == "suspicious") != (message.p_malignant >= threshold):
            raise ContractError("inconsistent", "the category contradicts p_malignant and the malignant threshold")


def _check_exam_fields(message: ResultMessage) -> None:
    """Clock position and age come from the exam: only in a schema-2 result, and only with an exam_id. Also
    checked here (not only by the schema) so a message built in code is refused before it is encoded."""
    bounds = {"clock": (1, 12), "age": (0, 130)}
    for name in EXAM_FIELDS:
        value = getattr(message, name)
        if value is None:
            continue
        if message.schema < 2:
            raise ContractError("schema", f"result {name}: a schema-1 result may not carry it")
        low, high = bounds[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ContractError("schema", f"result {name}: must be an integer {low} … {high}")
        if message.exam_id is None:
            raise ContractError("inconsistent", f"result {name}: given without an exam_id (it comes from the exam)")


def _payload_on_topic(kind: str, topic_name: str, data: bytes) -> dict[str, Any]:
    """A ``kind`` message's payload, validated against its schema and against the topic it came on."""
    where = parse_topic(topic_name)
    if where.kind != kind:
        raise ContractError("bad_topic", f"{topic_name[:200]!r} is not a {kind} topic")
    payload = decode(kind, data)
    _check_attribution(where, payload)
    return payload


def decode_result(topic_name: str, data: bytes) -> ResultMessage:
    """Everything the hub checks before storing a result; raises :class:`ContractError`."""
    message = ResultMessage.from_payload(_payload_on_topic("result", topic_name, data))
    check_consistency(message)
    return message


# --- status ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusMessage:
    state: DeviceStatus
    device_id: str
    site: str
    at: str | None = None
    software_version: str | None = None
    model: dict[str, str] | None = None  # {name, version, sha256}
    backlog: int | None = None
    schema: int = SCHEMA_VERSION

    def to_payload(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "state": self.state,
            "device_id": self.device_id,
            "site": self.site,
            "at": self.at,
            "software_version": self.software_version,
            "model": self.model,
            "backlog": self.backlog,
        }


def encode_status(message: StatusMessage) -> bytes:
    return encode("status", message.to_payload())


def decode_status(topic_name: str, data: bytes) -> StatusMessage:
    where = parse_topic(topic_name)
    payload = decode("status", data)
    _check_attribution(where, payload)
    return StatusMessage(
        state=DeviceStatus(payload["state"]),
        device_id=payload["device_id"],
        site=payload["site"],
        at=payload.get("at"),
        software_version=payload.get("software_version"),
        model=payload.get("model"),
        backlog=payload.get("backlog"),
        schema=payload["schema"],
    )


# --- heartbeat ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeartbeatMessage:
    device_id: str
    site: str
    at: str
    interval_s: float
    uptime_s: float
    backlog: int
    oldest_pending_age_s: float | None = None
    disk_free_bytes: int | None = None
    soc_temp_c: float | None = None
    throttled: str | None = None  # vcgencmd get_throttled bit mask, e.g. "0x0"
    latency_p50_ms: float | None = None
    # Optional (docs/mqtt.md "Model and source state"): left out of the payload when None, so a heartbeat
    # without them is byte for byte the message an older device sends.
    model_state: str | None = None  # ok | missing | rejected
    model_detail: str | None = None
    source_state: str | None = None  # ok | lost
    source_detail: str | None = None
    schema: int = SCHEMA_VERSION

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "schema": self.schema,
            "device_id": self.device_id,
            "site": self.site,
            "at": self.at,
            "interval_s": self.interval_s,
            "uptime_s": self.uptime_s,
            "backlog": self.backlog,
            "oldest_pending_age_s": self.oldest_pending_age_s,
            "disk_free_bytes": self.disk_free_bytes,
            "soc_temp_c": self.soc_temp_c,
            "throttled": self.throttled,
            "latency_p50_ms": self.latency_p50_ms,
        }
        for name in HEARTBEAT_OPTIONAL:
            if getattr(self, name) is not None:
                payload[name] = getattr(self, name)
        return payload


HEARTBEAT_OPTIONAL = ("model_state", "model_detail", "source_state", "source_detail")


def encode_heartbeat(message: HeartbeatMessage) -> bytes:
    return encode("heartbeat", message.to_payload())


def decode_heartbeat(topic_name: str, data: bytes) -> HeartbeatMessage:
    where = parse_topic(topic_name)
    payload = decode("heartbeat", data)
    _check_attribution(where, payload)
    fields: dict[str, Any] = {k: payload.get(k) for k in HeartbeatMessage.__dataclass_fields__ if k in payload}
    return HeartbeatMessage(**fields)


# --- ack ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AckMessage:
    result_ids: tuple[str, ...]
    at: str | None = None
    schema: int = SCHEMA_VERSION

    def to_payload(self) -> dict[str, Any]:
        return {"schema": self.schema, "result_ids": list(self.result_ids), "at": self.at}


def encode_ack(message: AckMessage) -> bytes:
    return encode("ack", message.to_payload())


def decode_ack(data: bytes) -> AckMessage:
    return _ack_from(decode("ack", data))


def _ack_from(payload: dict[str, Any]) -> AckMessage:
    return AckMessage(result_ids=tuple(payload["result_ids"]), at=payload.get("at"), schema=payload["schema"])


# --- nack: results rejected for good (on the ack topic) ----------------------------------------


@dataclass(frozen=True)
class Refusal:
    """One result the hub rejected permanently: resending it cannot help."""

    result_id: str
    reason: str  # the hub's rejection reason, e.g. topic_mismatch, schema, duplicate_conflict
    detail: str = ""  # names the field and the rule, never a value (see ContractError)


@dataclass(frozen=True)
class NackMessage:
    """The hub's negative acknowledgement: the device parks these results and delivers what follows them.
    Published on the ack topic with ``"kind": "nack"``; a device that predates it ignores it as a
    malformed ack (and stays as blocked as it was), so no version change is needed."""

    rejected: tuple[Refusal, ...]
    at: str | None = None
    schema: int = SCHEMA_VERSION

    def to_payload(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "kind": "nack",
            "at": self.at,
            "rejected": [{"result_id": r.result_id, "reason": r.reason, "detail": r.detail[:MAX_NACK_DETAIL]} for r in self.rejected],
        }


def encode_nack(message: NackMessage) -> bytes:
    return encode("nack", message.to_payload())


def decode_ack_topic(data: bytes) -> AckMessage | NackMessage | CorrectionAckMessage:
    """What arrives on a device's ack topic: an ack, a nack (``"kind": "nack"``) or a correction ack
    (``"kind": "correction_ack"``)."""
    payload = parse("ack", data)
    if payload.get("kind") == "correction_ack":
        validate("correction_ack", payload)
        return CorrectionAckMessage(
            correction_ids=tuple(payload["correction_ids"]),
            at=payload.get("at"),
            schema=payload["schema"],
            rejected=tuple(CorrectionRefusal(r["correction_id"], r["reason"], r.get("detail", "")) for r in payload["rejected"]),
        )
    if payload.get("kind") != "nack":
        validate("ack", payload)
        return _ack_from(payload)
    validate("nack", payload)
    refusals = tuple(Refusal(r["result_id"], r["reason"], r.get("detail", "")) for r in payload["rejected"])
    return NackMessage(rejected=refusals, at=payload.get("at"), schema=payload["schema"])


_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def result_id_of(data: bytes) -> str | None:
    """The ``result_id`` of a result payload that failed validation, when one can be read (to nack it);
    None for anything that is not a JSON object with a well-formed result_id."""
    try:
        payload = parse("result", data)
    except ContractError:
        return None
    rid = payload.get("result_id")
    return rid if isinstance(rid, str) and _UUID_RE.fullmatch(rid) else None


# --- correction: a result voided or moved (device -> hub), and its ack (hub -> device, on the ack topic) ---------


@dataclass(frozen=True)
class CorrectionMessage:
    """A correction as it travels device -> hub (device/link/corrections.py): delivered like a result — exactly once,
    in order (``prev_correction_id``), and only after the hub acked the result it corrects."""

    correction_id: str
    seq: int
    result_id: str
    device_id: str
    site: str
    created_at: str
    kind: CorrectionKind
    reason: CorrectionReason
    origin: Place
    target: Place | None = None
    note: str = ""
    by: str | None = None
    prev_correction_id: str | None = None
    schema: int = SCHEMA_VERSION

    @classmethod
    def from_correction(cls, c: Correction, *, prev_correction_id: str | None) -> CorrectionMessage:
        if c.seq is None:
            raise ValueError("a correction must be stored (have a seq) before it is sent")
        return cls(
            correction_id=c.correction_id,
            seq=c.seq,
            result_id=c.result_id,
            device_id=c.device_id,
            site=c.site,
            created_at=c.created_at,
            kind=c.kind,
            reason=c.reason,
            origin=c.origin,
            target=c.target,
            note=c.note,
            by=c.by,
            prev_correction_id=prev_correction_id,
        )

    def to_payload(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "correction_id": self.correction_id,
            "seq": self.seq,
            "prev_correction_id": self.prev_correction_id,
            "result_id": self.result_id,
            "device_id": self.device_id,
            "site": self.site,
            "created_at": self.created_at,
            "kind": self.kind.value,
            "reason": self.reason.value,
            "note": self.note,
            "by": self.by,
            "from": _place_payload(self.origin),
            "to": _place_payload(self.target) if self.target is not None else None,
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> CorrectionMessage:
        to = payload["to"]
        return cls(
            correction_id=payload["correction_id"],
            seq=int(payload["seq"]),
            result_id=payload["result_id"],
            device_id=payload["device_id"],
            site=payload["site"],
            created_at=payload["created_at"],
            kind=CorrectionKind(payload["kind"]),
            reason=CorrectionReason(payload["reason"]),
            origin=_place_from(payload["from"]),
            target=_place_from(to) if to is not None else None,
            note=payload["note"],
            by=payload["by"],
            prev_correction_id=payload["prev_correction_id"],
            schema=payload["schema"],
        )


# What makes two copies of a correction the same correction (prev_correction_id is transport: it changes between
# re-sends); a correction_id already stored with another of these is a duplicate_conflict.
CORRECTION_CONTENT_FIELDS = ("seq", "result_id", "device_id", "site", "created_at", "kind", "reason", "origin", "target", "note", "by")


def _place_payload(place: Place) -> dict[str, Any]:
    return {"exam_id": place.exam_id, "patient_ref": place.patient_ref, "side": place.side}


def _place_from(payload: dict[str, Any]) -> Place:
    return Place(payload["exam_id"], payload["patient_ref"], payload["side"])


def check_correction_consistency(message: CorrectionMessage) -> None:
    """What the schema cannot say: the reason is one the kind allows, a void has no target, a move has one (an exam
    and a side) that differs from where the result was, ``other`` has a note."""
    m = message
    if m.reason not in REASONS[m.kind]:
        raise ContractError("inconsistent", f"correction reason: {m.reason.value} is not a reason to {m.kind.value}")
    if m.reason is CorrectionReason.OTHER and not m.note.strip():
        raise ContractError("inconsistent", "correction note: reason other needs a note")
    if m.kind is CorrectionKind.VOID and m.target is not None:
        raise ContractError("inconsistent", "correction to: a void has no target (to must be null)")
    if m.kind is CorrectionKind.MOVE:
        if m.target is None or m.target.exam_id is None or m.target.side is None:
            raise ContractError("inconsistent", "correction to: a move needs a target exam_id and side")
        if m.target == m.origin:
            raise ContractError("inconsistent", "correction to: a move to where the result already is")
    if m.prev_correction_id == m.correction_id:
        raise ContractError("inconsistent", "prev_correction_id names the correction itself")


def encode_correction(message: CorrectionMessage) -> bytes:
    check_correction_consistency(message)
    return encode("correction", message.to_payload())


def decode_correction(topic_name: str, data: bytes) -> CorrectionMessage:
    """Everything the hub checks before storing a correction; raises :class:`ContractError`."""
    message = CorrectionMessage.from_payload(_payload_on_topic("correction", topic_name, data))
    check_correction_consistency(message)
    return message


def correction_id_of(data: bytes) -> str | None:
    """The ``correction_id`` of a correction payload that failed validation, when one can be read (to nack it)."""
    try:
        payload = parse("correction", data)
    except ContractError:
        return None
    cid = payload.get("correction_id")
    return cid if isinstance(cid, str) and _UUID_RE.fullmatch(cid) else None


@dataclass(frozen=True)
class CorrectionRefusal:
    """One correction the hub rejected permanently (``unknown_result``, ``duplicate_conflict``, ``schema``...)."""

    correction_id: str
    reason: str
    detail: str = ""


@dataclass(frozen=True)
class CorrectionAckMessage:
    """The hub's answer to corrections, on the device's ack topic with ``"kind": "correction_ack"``: the ids it
    durably stored (or already had) and those it rejected for good (the device parks them)."""

    correction_ids: tuple[str, ...] = ()
    rejected: tuple[CorrectionRefusal, ...] = ()
    at: str | None = None
    schema: int = SCHEMA_VERSION

    def to_payload(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "kind": "correction_ack",
            "correction_ids": list(self.correction_ids),
            "rejected": [{"correction_id": r.correction_id, "reason": r.reason, "detail": r.detail[:MAX_NACK_DETAIL]} for r in self.rejected],
            "at": self.at,
        }


def encode_correction_ack(message: CorrectionAckMessage) -> bytes:
    return encode("correction_ack", message.to_payload())
