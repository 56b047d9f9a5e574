"""The contract's compiled schema check (fastjsonschema, device/link/contract.py ``_compiled``) accepts and refuses
exactly what ``jsonschema`` does, with the same error detail, for every message kind.

Oracle: ``jsonschema`` (Draft 2020-12) on each kind's **full** packaged schema, control-character rule included, i.e.
the schema as written, not the contract's code. Payloads are generated from the schemas themselves (every field
within its bounds and pattern: these must be accepted) and then mutated adversarially: fields dropped, unknown keys
added, values replaced by arbitrary JSON, by each bound and its neighbours (``max + 1``, ``max + 1e-9``, ``True`` for
``1``, ``1.0`` for an integer, ints past 2**63), by strings at and past their length limits, by pattern breakers and
by every class of control character (and the characters just outside those classes), result schema 1 <-> 2 <-> 3
(schema 3's ``lesion`` generated in each of its shapes: outlined in mm, outlined in pixels, none outlined). Each
payload must get the oracle's verdict from ``contract.validate`` and from ``contract.decode`` of its JSON, and a
refused one the same ``ContractError`` detail as the old path (``jsonschema``'s ``best_match``, re-implemented here
as it was before the compiled check) — the hub stores and logs those details, and they name the field.
"""

from __future__ import annotations

import copy
import json
import math
import re
from typing import Any

import fastjsonschema
import jsonschema
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from device.link import contract
from device.link.contract import SCHEMA_2_FIELDS, SCHEMA_3_FIELDS, ContractError

# Result schema 1, 2 and 3 are generated apart (the schema's if/then/else); every other kind as it is.
KINDS = ("result_v1", "result_v2", "result_v3", "status", "heartbeat", "ack", "nack", "correction", "correction_ack")
CONTROLS = "\x00\x09\x0a\x1f\x7f\x80\x85\x9f\u2028\u2029\u202a\u202e\u2066\u2069\ud800\udbff\udc00\udfff"
NEAR_CONTROLS = " ~\xa0\xa1\u2027\u202f\u2065\u206a\ue000\U0001f600é"  # just outside the control classes: allowed
SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
)


def message_type(kind: str) -> str:
    return "result" if kind.startswith("result") else kind


def oracle(kind: str, payload: Any) -> bool:
    document = contract.schema(message_type(kind))
    return jsonschema.validators.validator_for(document)(document).is_valid(payload)


def old_validate(kind: str, payload: dict[str, Any]) -> None:
    """The contract's check before the compiled schema: controls, the schema-1 rule, then jsonschema's best_match."""
    contract._check_controls(kind, payload)
    version = payload.get("schema") if kind == "result" else None
    if version in (1, 2):
        newer = [name for name in (*(SCHEMA_2_FIELDS if version == 1 else ()), *SCHEMA_3_FIELDS) if name in payload]
        if newer:
            raise ContractError("schema", f"result (root): {', '.join(newer)} not allowed in a schema-{version} result")
    error = jsonschema.exceptions.best_match(contract._validator(kind).iter_errors(payload))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise ContractError("schema", f"{kind} {where}: {contract.describe(error)}")


def compiled_accepts(kind: str, payload: dict[str, Any]) -> bool:
    try:
        contract._compiled(kind)(payload)
    except fastjsonschema.JsonSchemaValueException:
        return False
    return True


def verdict(check: Any, *args: Any) -> str | None:
    """None when accepted, else the ContractError's ``reason: detail``."""
    try:
        check(*args)
    except ContractError as exc:
        return f"{exc.reason}: {exc.detail}"
    return None


# --- payloads generated from the schemas ---------------------------------------------------------------------------


def generation_schema(kind: str) -> dict[str, Any]:
    """The kind's schema with result's if/then/else resolved for one schema version."""
    document = copy.deepcopy(contract.schema(message_type(kind)))
    if kind in ("result_v1", "result_v2"):
        for name in SCHEMA_3_FIELDS:
            del document["properties"][name]
    if kind == "result_v1":
        document["properties"]["schema"] = {"const": 1}
        for name in SCHEMA_2_FIELDS:
            del document["properties"][name]
    elif kind in ("result_v2", "result_v3"):
        document["properties"]["schema"] = {"const": int(kind[-1])}
        document["required"] += ["category", "p_malignant", "mode"]
    if kind == "result_v3":
        document["properties"]["lesion"] = {"anyOf": lesion_shapes(document["properties"]["lesion"])}
    return document


def lesion_shapes(node: dict[str, Any]) -> list[dict[str, Any]]:
    """Schema 3's ``lesion`` with its if/then/else resolved: outlined with mm sizes, outlined in pixels only, and none
    outlined (withheld or not): each property's type narrowed to the one its branch allows."""
    base = {k: v for k, v in node.items() if k not in ("if", "then", "else")}
    outlined, in_mm = node["then"], node["then"]["else"]["properties"]

    def narrowed(types: dict[str, Any]) -> dict[str, Any]:
        shape = copy.deepcopy(base)
        shape["properties"]["found"] = {"const": types["box"]["type"] != "null"}
        for name, rule in types.items():
            shape["properties"][name]["type"] = rule["type"]
            if rule["type"] == "null":  # an enum with null (withheld): only null
                shape["properties"][name].pop("enum", None)
        return shape

    mm = {**outlined["properties"], **in_mm, "spacing_mm": {"type": "array"}}
    pixels = {**outlined["properties"], **outlined["then"]["properties"], "spacing_mm": {"type": "null"}}
    return [narrowed(mm), narrowed(pixels), narrowed(node["else"]["properties"])]


_CONTROL_RE = re.compile(contract.schema("ack")["$defs"]["control"]["pattern"])
_free_char = st.characters(
    exclude_categories=("Cc", "Cs"), exclude_characters="\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)  # Cc = U+0000-001F, U+007F-009F: what $defs/control allows


def _string(node: dict[str, Any]) -> st.SearchStrategy[str]:
    low, high = node.get("minLength", 0), node.get("maxLength", 80)
    if "pattern" in node:
        return st.from_regex(node["pattern"].removeprefix("^").removesuffix("$"), fullmatch=True).filter(lambda s: low <= len(s) <= high)
    return st.text(_free_char, min_size=low, max_size=min(high, 80)) | st.text(_free_char, min_size=high, max_size=high)


def _number(node: dict[str, Any], integer: bool) -> st.SearchStrategy[Any]:
    low = node.get("minimum", node.get("exclusiveMinimum"))
    high = node.get("maximum", node.get("exclusiveMaximum"))
    if integer:
        ints = st.integers(low, high)
        return ints | ints.filter(lambda i: abs(i) < 2**53).map(float)  # 7.0 is an integer to JSON Schema
    floats = st.floats(low, high, allow_nan=False, allow_infinity=False, exclude_min="exclusiveMinimum" in node)
    return floats | st.integers(math.ceil(low) + (math.ceil(low) == low and "exclusiveMinimum" in node), math.floor(high))


def from_schema(node: Any, full: bool = False) -> st.SearchStrategy[Any]:
    """A strategy for values valid under ``node`` (the keywords the contract's schemas use); ``full``: every optional
    property present (a mutation then also reaches those)."""
    if "anyOf" in node:
        return st.one_of([from_schema(option, full) for option in node["anyOf"]])
    if "const" in node:
        return st.just(node["const"])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    types = node["type"] if isinstance(node["type"], list) else [node["type"]]
    options = []
    for name in types:
        if name == "null":
            options.append(st.none())
        elif name == "string":
            options.append(_string(node))
        elif name in ("integer", "number"):
            options.append(_number(node, name == "integer"))
        elif name == "boolean":
            options.append(st.booleans())
        elif name == "array":
            options.append(st.lists(from_schema(node["items"], full), min_size=node.get("minItems", 0), max_size=min(node.get("maxItems", 5), 5)))
        elif name == "object":
            options.append(_object(node, full))
    return st.one_of(options)


def _object(node: dict[str, Any], full: bool) -> st.SearchStrategy[dict[str, Any]]:
    properties = node.get("properties", {})
    if properties:
        required = set(properties) if full else set(node.get("required", ()))
        return st.fixed_dictionaries(
            {k: from_schema(v, full) for k, v in properties.items() if k in required},
            optional={k: from_schema(v) for k, v in properties.items() if k not in required},
        )
    names = _string(node["propertyNames"])
    return st.dictionaries(
        names, from_schema(node["additionalProperties"], full), min_size=node.get("minProperties", 0), max_size=min(node.get("maxProperties", 4), 4)
    )


VALID = {kind: from_schema(generation_schema(kind)) for kind in KINDS}
FULL = {kind: from_schema(generation_schema(kind), full=True) for kind in KINDS}


# --- mutations -------------------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(list(CONTROLS + NEAR_CONTROLS)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def subschema(document: dict[str, Any], path: list[Any]) -> dict[str, Any]:
    node: Any = document
    for key in path:
        if not isinstance(node, dict):
            return {}
        if isinstance(key, int):
            node = node.get("items", {})
        elif key in node.get("properties", {}):
            node = node["properties"][key]
        else:
            node = node.get("additionalProperties", {})
    return node if isinstance(node, dict) else {}


def near_values(node: dict[str, Any]) -> list[Any]:
    """Values at and just past the rules of ``node``: each bound and its neighbours, lengths, types, patterns."""
    out: list[Any] = []
    for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if key in node:
            b = node[key]
            out += [b, b + 1, b - 1, b + 1e-9, b - 1e-9, float(b), b + 0.5, b * 2]
    for key in ("minLength", "maxLength"):
        if key in node:
            n = node[key]
            out += ["a" * n, "a" * (n + 1), "a" * max(n - 1, 0), "é" * (n + 1), "\U0001f600" * n]
    for key in ("minItems", "maxItems", "minProperties", "maxProperties"):
        if key in node:
            n = node[key]
            out += [["x"] * (n + 1), {f"k{i}": 0.5 for i in range(n + 1)}]
    for value in node.get("enum", []) + ([node["const"]] if "const" in node else []):
        out += [value, str(value), [value]] + ([value + "\n", value.upper(), " " + value] if isinstance(value, str) else [])
    return out


ANY_FIELD = [None, True, False, 0, 1, 1.0, -1, 2, "", [], {}, 2**63, -(2**63) - 1, 10**30, 1e308, -0.0, "1"]


@st.composite
def mutated(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    payload = draw(FULL[kind] | VALID[kind])
    document = contract.schema(message_type(kind))
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):  # mostly one: a payload whose only fault is the mutation
        # hypothesis draws the first element of a list most often (its "simplest"): the subtle mutations come first,
        # and the paths deepest first, so that "drop the schema key" does not become most of the examples
        how = draw(st.sampled_from(["near", "control", "pattern", "near", "control", "json", "grow", "rekey", "extra", "schema", "drop"]))
        paths = [p for p in reversed(_paths(payload)) if _fits(how, p, _at(payload, p), subschema(document, p))]
        if not paths:  # nothing this mutation applies to (e.g. every key dropped)
            payload[draw(st.sampled_from(["schema", "x"]))] = draw(json_values)
            continue
        path = draw(st.sampled_from(paths))
        parent = _at(payload, path[:-1])
        key = path[-1]
        current = parent[key]
        node = subschema(document, path)
        event(f"{kind}: {how}")
        if how == "drop" and isinstance(parent, dict):
            del parent[key]
        elif how == "extra" and isinstance(parent, dict):
            names = ["thumbnail_jpeg_b64", "kind", *SCHEMA_2_FIELDS, *SCHEMA_3_FIELDS, "schema"]
            parent[draw(st.text(max_size=10) | st.sampled_from(names))] = draw(json_values)
        elif how == "json":
            parent[key] = draw(json_values)
        elif how == "near":
            specific = near_values(node)  # this field's own bounds first, most of the time
            parent[key] = draw(st.sampled_from(specific) if draw(st.integers(0, 3)) < 3 else st.sampled_from(ANY_FIELD))
        elif how == "control" and isinstance(current, str):
            at = draw(st.integers(0, len(current)))
            parent[key] = current[:at] + draw(st.sampled_from(list(CONTROLS + NEAR_CONTROLS))) + current[at:]
        elif how == "pattern" and isinstance(current, str):
            parent[key] = draw(
                st.sampled_from(
                    [
                        current + "\n",
                        current + "x",
                        current.upper(),
                        current[1:],
                        "\n" + current,
                        current.replace("-", "_"),
                        current + "\n\n",
                        current.rstrip("Z"),
                    ]
                )
            )
        elif how == "schema":
            payload["schema"] = draw(st.sampled_from([1, 2, 3, 1.0, 2.0, 3.0, True, 4, 0, "1", None]))
        elif how == "grow" and isinstance(current, list):
            parent[key] = current + [draw(st.sampled_from(current or [None]))] * draw(st.sampled_from([1, 1000, 1001, 101]))
        elif how == "grow" and isinstance(current, dict):
            current.update({f"class{i}": 0.0 for i in range(draw(st.sampled_from([1, 15, 16, 17])))})
        elif how == "rekey" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["a" * 33, "a\x00", "b\u2028", "", "é" * 32, str(key) + "\n"]))] = parent.pop(key)
    return payload


def _fits(how: str, path: list[Any], value: Any, node: dict[str, Any]) -> bool:
    """Whether mutation ``how`` applies to the value at ``path`` (so that each one is drawn where it means something)."""
    if how == "near":
        return bool(near_values(node))
    if how in ("control", "pattern"):
        return isinstance(value, str)
    if how == "grow":
        return isinstance(value, (list, dict))
    if how in ("drop", "extra", "rekey"):
        return not isinstance(path[-1], int)
    return True


def _paths(payload: Any, prefix: tuple[Any, ...] = ()) -> list[list[Any]]:
    """Every key/index path into ``payload`` (the mutations' targets)."""
    paths: list[list[Any]] = []
    items = payload.items() if isinstance(payload, dict) else enumerate(payload) if isinstance(payload, list) else ()
    for key, value in items:
        paths.append([*prefix, key])
        paths += _paths(value, (*prefix, key))
    return paths


def _at(payload: Any, path: list[Any]) -> Any:
    for key in path:
        payload = payload[key]
    return payload


def check_agrees(kind: str, payload: dict[str, Any]) -> None:
    kind_name = message_type(kind)
    expected = oracle(kind, payload)
    event(f"{kind}: {'accepted' if expected else 'refused'}")
    got = verdict(contract.validate, kind_name, payload)
    assert (got is None) == expected, f"validate says {got!r}, jsonschema says {'valid' if expected else 'invalid'}"
    assert got == verdict(old_validate, kind_name, payload), "the refusal's detail differs from the old path's"
    if verdict(contract._check_controls, kind_name, payload) is None:  # the compiled check alone, without the fallback
        assert compiled_accepts(kind_name, payload) == contract._validator(kind_name).is_valid(payload)
    data = json.dumps(payload).encode()  # ensure_ascii: a lone surrogate travels as \udxxx, as a device could send it
    decoded = verdict(contract.decode, kind_name, data)
    parsed = verdict(contract.parse, kind_name, data)
    assert (decoded is None) == (parsed is None and expected)


@pytest.mark.parametrize("kind", KINDS)
@SETTINGS
@given(data=st.data())
def test_generated_payloads_are_accepted_by_both(kind: str, data: st.DataObject) -> None:
    payload = data.draw(FULL[kind] | VALID[kind])
    assert oracle(kind, payload), "the generator made a payload the schema refuses"
    check_agrees(kind, payload)


@pytest.mark.parametrize("kind", KINDS)
@SETTINGS
@given(data=st.data())
def test_mutated_payloads_get_jsonschemas_verdict(kind: str, data: st.DataObject) -> None:
    check_agrees(kind, data.draw(mutated(kind)))


@pytest.mark.parametrize("kind", KINDS)
def test_mutations_reach_both_verdicts(kind: str) -> None:
    """The mutation strategy is not vacuous: over a fixed seed it yields payloads jsonschema accepts and refuses."""
    seen: set[bool] = set()

    @settings(
        max_examples=150, deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
    )
    @given(data=st.data())
    def collect(data: st.DataObject) -> None:
        seen.add(oracle(kind, data.draw(mutated(kind))))

    collect()
    assert seen == {True, False}
