"""The exam's clock position and the patient's age reach the hub (issue 14, defect 4).

Proves: a result analysed under an exam (real Analyzer, tiny real model, real SQLite store) carries the exam's clock
and age; they round-trip result schema 2 as optional fields and a schema-2 result without them is the message it
was; an out-of-range, non-integer or exam-less value, or one in a schema-1 payload, is refused naming the field; an
existing device store file (the first schema-2 layout, and a version-1 file) gains the columns on open and keeps its
results; the real uplink delivers them; a real ``hub serve`` on a real Mosquitto, on SQLite and on PostgreSQL, stores them, acks them, refuses a
re-send with another age, and ``hub export`` / ``hub results`` show them, while a schema-1 message and a schema-2
message without them are still stored (null); an existing hub database gains the columns; the web console shows
them on the result and exam pages."""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from device.analysis import Analyzer
from device.config import parse_config
from device.engine import Classifier
from device.link.contract import ContractError, decode_result, encode_result
from device.link.uplink.outbox import message_from_record
from device.results import Exam, ExamDesk, new_result_id
from device.sources.base import Frame
from device.store import ResultStore
from hub.store import HubStore
from hub.web.accounts import Accounts
from hub.web.app import create_app
from hub.web.config import WebConfig
from hub.web.db import WebDb
from tests.device.link.test_contract_v2 import v2_message, v2_record
from tests.device.link.test_uplink import Device, Hub, make_record, shut_down
from tests.hub.test_hub_poison import HubProcess
from tests.hub.test_hub_service import RawDevice
from tests.mqtt_broker import REPO, MosquittoBroker, postgres_server, wait_for  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(180)

TOPIC = "sonopi/v1/site-a/dev-1/result"


def _raw(payload: dict) -> bytes:
    return json.dumps(payload).encode()


# --- the device: from the exam to the record and the store --------------------------------------------------


def test_a_result_analysed_under_an_exam_carries_its_clock_and_age(tmp_path: Path, tiny_bundle) -> None:
    config = parse_config(
        {
            "device": {"id": "clock-test", "site": "s", "data_dir": str(tmp_path)},
            "model": {"path": str(tiny_bundle.path), "threads": 1},
            "store": {"keep_images_days": 0},
        }
    )
    analyzer = Analyzer(config, Classifier(tiny_bundle, threads=1), ResultStore(config.store_path), ExamDesk())
    try:
        image = np.clip(np.random.default_rng(3).normal(90, 20, (96, 128)), 0, 255).astype(np.uint8)
        exam = analyzer.exams.open(Exam(new_result_id(), "10452", "L", clock=10, age=54))
        record, _ = analyzer.analyse(analyzer.exams.capture(Frame(image, "frame.png", 0)))
        assert (record.exam_id, record.clock, record.age) == (exam.exam_id, 10, 54)
        stored = analyzer.store.get(record.result_id)
        assert stored is not None and (stored.clock, stored.age) == (10, 54)
        assert stored.summary()["clock"] == 10 and stored.summary()["age"] == 54
        analyzer.exams.close()
        analyzer.exams.open(Exam(new_result_id(), "20001", "R"))  # clock and age not entered
        bare, _ = analyzer.analyse(analyzer.exams.capture(Frame(image, "frame.png", 1)))
        assert (analyzer.store.get(bare.result_id).clock, analyzer.store.get(bare.result_id).age) == (None, None)
        assert stored.category is not None  # so the uplink sends it as schema 2, with them
        payload = json.loads(encode_result(message_from_record(stored, historical=False, prev_result_id=None)))
        assert (payload["schema"], payload["clock"], payload["age"]) == (2, 10, 54)
    finally:
        analyzer.store.close()


def _old_device_file(path: Path, drop: tuple[str, ...], version: str) -> None:
    with ResultStore(path):
        pass
    db = sqlite3.connect(path)  # the file an older build wrote
    for column in drop:
        db.execute(f"ALTER TABLE results DROP COLUMN {column}")
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (version,))
    db.execute(
        "INSERT INTO results (result_id, created_at, device_id, site, exam_id, model_name, model_version, "
        "model_sha256, label, inconclusive, reasons, probabilities, thresholds) VALUES ('r1', "
        "'2026-01-01T00:00:00.000Z', 'd', 's', 'E1', 'm', '1', ?, 'benign', 0, '[]', '{\"benign\": 1.0}', '{}')",
        ("0" * 64,),
    )
    db.commit()
    db.close()


@pytest.mark.parametrize(("drop", "version"), [(("clock", "age"), "2"), (("category", "p_malignant", "mode", "clock", "age"), "1")])
def test_an_existing_device_store_gains_the_columns_and_keeps_its_results(tmp_path: Path, drop, version: str) -> None:
    path = tmp_path / "results.sqlite"
    _old_device_file(path, drop, version)
    with ResultStore(path) as store:
        old = store.get("r1")
        assert old is not None and old.label == "benign" and (old.clock, old.age) == (None, None)
        assert store.get_meta("schema_version") == "5"  # 3: lesion_views, 4: lesion, 5: close_up
        new = store.add(replace(make_record("s", "d", 2), clock=3, age=61))
        assert (store.get(new.result_id).clock, store.get(new.result_id).age) == (3, 61)
        out = io.StringIO()
        store.export_csv(out)
        rows = {r["result_id"]: r for r in csv.DictReader(io.StringIO(out.getvalue()))}
        assert (rows[new.result_id]["clock"], rows[new.result_id]["age"]) == ("3", "61") and rows["r1"]["clock"] == ""
    columns = {r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(results)")}
    assert {"clock", "age"} <= columns
    with ResultStore(path) as store, pytest.raises(Exception, match="CHECK"):  # the store refuses a 13 o'clock too
        store.add(replace(make_record("s", "d", 3), clock=13))


# --- the contract -------------------------------------------------------------------------------------------


def test_clock_and_age_round_trip_schema_2_and_stay_out_when_not_entered() -> None:
    message = v2_message(2, clock=10, age=54)
    payload = json.loads(encode_result(message))
    assert (payload["schema"], payload["clock"], payload["age"]) == (2, 10, 54)
    back = decode_result(TOPIC, encode_result(message))
    assert back == replace(message, historical=back.historical) and (back.clock, back.age) == (10, 54)
    without = v2_message(3)
    payload = json.loads(encode_result(without))
    assert payload["schema"] == 2 and not {"clock", "age"} & set(payload)  # the schema-2 message it always was
    assert (decode_result(TOPIC, encode_result(without)).clock, decode_result(TOPIC, encode_result(without)).age) == (None, None)
    edges = v2_message(1, clock=12, age=0)
    assert (decode_result(TOPIC, encode_result(edges)).clock, decode_result(TOPIC, encode_result(edges)).age) == (12, 0)
    payload = json.loads(encode_result(v2_message(1)))
    payload.update(clock=7.0, age=None)  # an integer as JSON Schema counts them, an explicit null
    back = decode_result(TOPIC, _raw(payload))
    assert back.clock == 7 and isinstance(back.clock, int) and back.age is None


@pytest.mark.parametrize(
    ("change", "reason", "field"),
    [
        ({"clock": 0}, "schema", "clock"),
        ({"clock": 13}, "schema", "clock"),
        ({"clock": 3.5}, "schema", "clock"),
        ({"clock": "3"}, "schema", "clock"),
        ({"clock": True}, "schema", "clock"),
        ({"clock": 1e30}, "schema", "clock"),
        ({"age": -1}, "schema", "age"),
        ({"age": 131}, "schema", "age"),
        ({"age": "54"}, "schema", "age"),
        ({"age": 54.5}, "schema", "age"),
        ({"clock": 3, "exam_id": None}, "inconsistent", "clock"),
        ({"age": 54, "exam_id": None}, "inconsistent", "age"),
    ],
)
def test_an_out_of_range_or_exam_less_value_is_refused_naming_the_field(change: dict, reason: str, field: str) -> None:
    payload = json.loads(encode_result(v2_message(1)))
    payload.update(change)
    with pytest.raises(ContractError) as err:
        decode_result(TOPIC, _raw(payload))
    assert err.value.reason == reason and field in err.value.detail, err.value
    built = {k: v for k, v in change.items() if k in ("clock", "age", "exam_id")}
    with pytest.raises(ContractError) as err:  # the device refuses to encode it too
        encode_result(replace(v2_message(1), **built))
    assert field in err.value.detail, err.value


def test_a_schema_1_payload_may_not_carry_them() -> None:
    old = message_from_record(replace(make_record("site-a", "dev-1", 5), seq=5), historical=True, prev_result_id=None)
    assert old.schema == 1
    payload = json.loads(encode_result(old))
    payload["clock"] = 4
    with pytest.raises(ContractError) as err:
        decode_result(TOPIC, _raw(payload))
    assert err.value.reason == "schema" and "clock" in err.value.detail
    with pytest.raises(ContractError, match="clock"):
        encode_result(replace(old, clock=4))


# --- the hub: a real broker and hub serve, SQLite and PostgreSQL --------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def hub_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "hub.sqlite")
    return request.getfixturevalue("postgres_server").create_database(f"clock_{uuid.uuid4().hex[:10]}")


def _hub_cli(target: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "hub", *args, "--db", target], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_real_hub_stores_clock_and_age_and_exports_them(tmp_path: Path, hub_target: str) -> None:
    broker = MosquittoBroker(tmp_path / "broker")
    broker.start()
    hub = HubProcess(tmp_path, broker.address, hub_target)
    raw = RawDevice(broker)
    try:
        hub.start()
        hub.wait(lambda: "connected" in hub.log(), "the hub to connect")
        old = raw.result(1)  # an old device: schema 1
        bare = v2_message(2)  # schema 2, clock and age not entered
        full = v2_message(3, clock=10, age=54)
        assert old.schema == 1 and "clock" not in json.loads(encode_result(bare))
        for message in (old, bare, full):
            raw.publish(encode_result(message))
        hub.wait(lambda: {old.result_id, bare.result_id, full.result_id} <= set(raw.acks()), "three acks")
        got = {m.result_id: hub.store.result(m.result_id) for m in (old, bare, full)}
        assert (got[full.result_id].clock, got[full.result_id].age, got[full.result_id].schema_version) == (10, 54, 2)
        assert (got[bare.result_id].clock, got[bare.result_id].age, got[bare.result_id].category) == (None, None, bare.category)
        assert (got[old.result_id].clock, got[old.result_id].age, got[old.result_id].schema_version) == (None, None, 1)

        raw.publish(encode_result(replace(full, age=55)))  # same id, another age: content differs
        hub.wait(lambda: any(r.result_id == full.result_id for r in raw.nacks()), "the conflict's nack")
        assert [r.reason for r in raw.nacks() if r.result_id == full.result_id] == ["duplicate_conflict"]
        assert hub.store.result(full.result_id).age == 54

        rows = {r["result_id"]: r for r in map(json.loads, _hub_cli(hub_target, "export", "--json").splitlines())}
        assert (rows[full.result_id]["clock"], rows[full.result_id]["age"]) == (10, 54)
        assert (rows[bare.result_id]["clock"], rows[old.result_id]["age"]) == (None, None)
        table = {r["result_id"]: r for r in csv.DictReader(io.StringIO(_hub_cli(hub_target, "export", "--csv")))}
        assert (table[full.result_id]["clock"], table[full.result_id]["age"]) == ("10", "54")
        assert table[old.result_id]["clock"] == "" and table[bare.result_id]["age"] == ""
        listed = {r["result_id"]: r for r in map(json.loads, _hub_cli(hub_target, "results", "--json").splitlines())}
        assert (listed[full.result_id]["clock"], listed[full.result_id]["age"]) == (10, 54)
        text = _hub_cli(hub_target, "results")
        assert re.search(r"\bclock\s+age\b", text.splitlines()[0])
    finally:
        raw.close()
        if hub.proc is not None:
            hub.stop()
        hub.store.close()
        broker.kill()


def test_an_existing_hub_database_gains_the_columns(hub_target: str) -> None:
    with HubStore.open(hub_target) as store:
        store.add_result(v2_message(2))
        pg = store.backend == "postgresql"
    if pg:
        import psycopg

        with psycopg.connect(hub_target, autocommit=True) as conn:  # as the first schema-2 hub left it
            for column in ("clock", "age"):
                conn.execute(f"ALTER TABLE results DROP COLUMN {column}")
    else:
        db = sqlite3.connect(hub_target)
        for column in ("clock", "age"):
            db.execute(f"ALTER TABLE results DROP COLUMN {column}")
        db.commit()
        db.close()
    with HubStore.open(hub_target) as store:
        assert [(r.clock, r.age) for r in store.results()] == [(None, None)]
        message = v2_message(3, clock=2, age=70)
        assert store.add_result(message)
        assert (store.result(message.result_id).clock, store.result(message.result_id).age) == (2, 70)


def test_the_uplink_delivers_clock_and_age_from_the_device_store(tmp_path: Path) -> None:
    broker = MosquittoBroker(tmp_path / "broker")
    broker.start()
    hub = Hub(tmp_path, broker.address)
    device = Device(tmp_path, "site-a", "dev-1", broker.address)
    try:
        full = device.store.add(replace(v2_record("site-a", "dev-1", 1), seq=None, clock=4, age=38))
        bare = device.store.add(replace(v2_record("site-a", "dev-1", 2), seq=None))
        hub.start()
        device.start_uplink()
        wait_for(lambda: device.store.backlog().pending == 0, 60, "both results acked")
        assert (hub.store.result(full.result_id).clock, hub.store.result(full.result_id).age) == (4, 38)
        assert (hub.store.result(bare.result_id).clock, hub.store.result(bare.result_id).age) == (None, None)
        assert hub.store.result(full.result_id).schema_version == 2
    finally:
        shut_down(broker, hub, [device])


# --- the web console ----------------------------------------------------------------------------------------


def test_the_console_shows_clock_and_age_on_the_result_and_exam_pages(tmp_path: Path) -> None:
    target = str(tmp_path / "hub.sqlite")
    exam_id = f"EX-{uuid.uuid4().hex[:8]}"
    with_them = replace(v2_message(1, clock=10, age=54), exam_id=exam_id)
    second = replace(v2_message(2, clock=11, age=54), exam_id=exam_id)
    without = replace(v2_message(3), exam_id="EX-other")
    with HubStore.open(target) as store:
        for message in (with_them, second, without):
            store.add_result(message)
    db = WebDb.open(target)
    try:
        Accounts(db).add_user("olga", "correct horse battery", "operator")
    finally:
        db.close()
    app = create_app(WebConfig(db=target))
    try:
        client = TestClient(app, base_url="https://console.test", follow_redirects=False)
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
        assert client.post("/login", data={"username": "olga", "password": "correct horse battery", "csrf_token": token}).status_code == 303
        page = client.get(f"/results/{with_them.result_id}").text
        assert re.search(r'id="clock">10 o&#39;clock<|id="clock">10 o\'clock<', page), page
        assert 'id="age">54 years<' in page
        page = client.get(f"/results/{without.result_id}").text
        assert 'id="clock">— (not sent)<' in page and 'id="age">— (not sent)<' in page
        page = client.get(f"/exams/{exam_id}").text
        assert re.search(r'id="exam-clock">10, 11 o(&#39;|\')clock<', page), page
        assert 'id="exam-age">54 years<' in page
    finally:
        app.state.services.close()
