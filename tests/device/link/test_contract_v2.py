"""Result schema 2 (category, p_malignant, mode): encoded from what the device stores, refused when its numbers
contradict each other; schema 1 still accepted. A real ``hub serve`` on a real Mosquitto stores a v1 message from an
old device (category null) and a v2 message (category kept), acks both, refuses a re-send whose category differs,
and ``hub export`` rows carry the new fields. An existing hub database (SQLite and PostgreSQL) gains the columns."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from device.decision import decide
from device.link.contract import ContractError, ResultMessage, decode_result, encode_result
from device.link.uplink.outbox import message_from_record
from device.model.bundle import DecisionSpec, ModeSpec
from device.results import ResultRecord
from hub.store import SCHEMA_VERSION as HUB_SCHEMA_VERSION
from hub.store import HubStore
from tests.device.link.test_uplink import Hub, make_record, shut_down
from tests.hub.test_hub_service import RawDevice
from tests.mqtt_broker import REPO, MosquittoBroker, postgres_server, wait_for  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(120)

TOPIC = "sonopi/v1/site-a/dev-1/result"
SPEC = DecisionSpec(modes={"balanced": ModeSpec(0.05)}, lesion_threshold=0.35)
PROBABILITIES = (
    {"normal": 0.9, "benign": 0.08, "malignant": 0.02},
    {"normal": 0.3, "benign": 0.66, "malignant": 0.04},
    {"normal": 0.3, "benign": 0.5, "malignant": 0.2},
)


def v2_record(site: str, device_id: str, seq: int, inconclusive: bool = False) -> ResultRecord:
    """A record as the device stores it now: the category from the real rule on its probabilities."""
    probabilities = PROBABILITIES[seq % 3]
    d = decide(probabilities, ("normal", "benign", "malignant"), SPEC, "balanced", None, inconclusive)
    base = replace(make_record(site, device_id, seq), seq=seq)
    return replace(
        base,
        probabilities=probabilities,
        label=None if inconclusive else d.label,
        inconclusive=inconclusive,
        reasons=("blank",) if inconclusive else (),
        thresholds={"malignant": d.malignant_threshold},
        category=d.category.value,
        p_malignant=d.p_malignant,
        mode=d.mode.value,
    )


def v2_message(seq: int = 3, prev: str | None = None, **changes: object) -> ResultMessage:
    return replace(message_from_record(v2_record("site-a", "dev-1", seq), historical=False, prev_result_id=prev), **changes)


def test_a_stored_result_with_a_category_travels_as_schema_2() -> None:
    for seq in range(1, 4):
        message = v2_message(seq)
        payload = json.loads(encode_result(message))
        assert payload["schema"] == 2 and payload["category"] == message.category and payload["mode"] == "balanced"
        assert payload["p_malignant"] == payload["probabilities"]["malignant"]
        back = decode_result(TOPIC, encode_result(message))
        assert (back.schema, back.category, back.p_malignant, back.mode) == (2, message.category, message.p_malignant, "balanced")
    categories = {v2_message(seq).category for seq in range(1, 4)}
    assert categories == {"no_lesion", "low_suspicion", "suspicious"}
    inconclusive = message_from_record(v2_record("site-a", "dev-1", 4, inconclusive=True), historical=False, prev_result_id=None)
    assert decode_result(TOPIC, encode_result(inconclusive)).category == "inconclusive"


def test_a_result_stored_before_the_category_rule_travels_as_schema_1() -> None:
    old = message_from_record(replace(make_record("site-a", "dev-1", 5), seq=5), historical=True, prev_result_id=None)
    payload = json.loads(encode_result(old))
    assert payload["schema"] == 1 and not {"category", "p_malignant", "mode"} & set(payload)
    assert decode_result(TOPIC, encode_result(old)).category is None


def _raw(payload: dict) -> bytes:
    return json.dumps(payload).encode()


@pytest.mark.parametrize(
    ("change", "reason", "detail"),
    [
        (lambda p: p.update(category="suspicious"), "inconsistent", "label is not the one the category gives"),
        (lambda p: p.update(category="suspicious", label="malignant"), "inconsistent", "contradicts p_malignant"),
        (lambda p: p.update(category="inconclusive"), "inconsistent", "inconclusive exactly when"),
        (lambda p: p.update(p_malignant=0.5), "inconsistent", "not the probability of malignant"),
        (lambda p: p.update(category="maybe"), "schema", "category"),
        (lambda p: p.update(mode="fast"), "schema", "mode"),
        (lambda p: p.update(p_malignant=1.5), "schema", "p_malignant"),
        (lambda p: p.pop("category"), "schema", "missing required category"),
        (lambda p: p.update(schema=1), "schema", "(root)"),  # a v1 payload may not carry the v2 fields
        (lambda p: p.update(schema=4), "schema", "schema"),  # no such schema (3 is a v2 payload plus the optional outline)
    ],
)
def test_a_schema_2_result_whose_numbers_disagree_is_refused(change, reason: str, detail: str) -> None:
    payload = json.loads(encode_result(v2_message(1)))  # low suspicion, label benign, p_malignant 0.04 < 0.05
    change(payload)
    with pytest.raises(ContractError) as err:
        decode_result(TOPIC, _raw(payload))
    assert err.value.reason == reason and detail in err.value.detail, err.value


def _export(db: Path, fmt: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "hub", "export", f"--{fmt}", "--db", str(db)], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_a_real_hub_stores_v1_and_v2_results_and_exports_the_new_fields(tmp_path: Path) -> None:
    broker = MosquittoBroker(tmp_path / "broker")
    broker.start()
    hub = Hub(tmp_path, broker.address)
    hub.start()
    raw = RawDevice(broker)
    try:
        wait_for(lambda: "connected" in hub.log(), 20, "the hub to connect")
        old = raw.result(1)  # an old device: schema 1, no category
        assert old.schema == 1
        new = v2_message(2, prev=None)  # suspicious
        raw.publish(encode_result(old))
        raw.publish(encode_result(new))
        wait_for(lambda: {old.result_id, new.result_id} <= set(raw.acks()), 20, "both acks")
        stored_old, stored_new = hub.store.result(old.result_id), hub.store.result(new.result_id)
        assert stored_old.schema_version == 1 and (stored_old.category, stored_old.p_malignant, stored_old.mode) == (None,) * 3
        assert stored_old.label == old.label and stored_old.probabilities == old.probabilities
        assert stored_new.schema_version == 2 and stored_new.category == "suspicious" and stored_new.mode == "balanced"
        assert stored_new.p_malignant == new.p_malignant and stored_new.label == "malignant"

        raw.publish(encode_result(replace(new, mode="high_sensitivity")))  # same id, other content
        wait_for(lambda: any(r.result_id == new.result_id for r in raw.nacks()), 20, "the conflict's nack")
        assert [r.reason for r in raw.nacks() if r.result_id == new.result_id] == ["duplicate_conflict"]
        assert hub.store.result(new.result_id).mode == "balanced"  # the first stored content stays

        rows = {r["result_id"]: r for r in map(json.loads, _export(hub.db, "json").splitlines())}
        assert (rows[new.result_id]["category"], rows[new.result_id]["p_malignant"], rows[new.result_id]["mode"]) == (
            "suspicious",
            new.p_malignant,
            "balanced",
        )
        assert rows[old.result_id]["category"] is None and rows[old.result_id]["schema"] == 1
        table = {r["result_id"]: r for r in csv.DictReader(io.StringIO(_export(hub.db, "csv")))}
        assert table[new.result_id]["category"] == "suspicious" and table[old.result_id]["category"] == ""
    finally:
        raw.close()
        hub.stop()
        broker.kill()


def _v1_message() -> ResultMessage:
    return message_from_record(replace(make_record("site-a", "dev-1", 2), seq=2), historical=False, prev_result_id=None)


def test_an_existing_sqlite_hub_database_gains_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "hub.sqlite"
    with HubStore.open(path) as store:
        store.add_result(_v1_message())
    db = sqlite3.connect(path)  # as a schema-1 hub left it
    for column in ("category", "p_malignant", "mode"):
        db.execute(f"ALTER TABLE results DROP COLUMN {column}")
    db.execute("UPDATE hub_meta SET value = '1' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with HubStore.open(path) as store:
        assert [r.category for r in store.results()] == [None]
        assert store.add_result(v2_message(2)) and store.results()[0].category == "suspicious"


def test_an_existing_postgresql_hub_database_gains_the_columns(postgres_server) -> None:
    import psycopg

    dsn = postgres_server.create_database("hub_v1_migration")
    with HubStore.open(dsn) as store:
        store.add_result(_v1_message())
    with psycopg.connect(dsn, autocommit=True) as conn:
        for column in ("category", "p_malignant", "mode"):
            conn.execute(f"ALTER TABLE results DROP COLUMN {column}")
        conn.execute("UPDATE hub_meta SET value = '1' WHERE key = 'schema_version'")
    with HubStore.open(dsn) as store:
        assert [r.category for r in store.results()] == [None]
        message = v2_message(2)
        assert store.add_result(message)
        assert store.result(message.result_id).p_malignant == message.p_malignant
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT value FROM hub_meta WHERE key = 'schema_version'").fetchone()[0] == str(HUB_SCHEMA_VERSION)


def test_the_device_classifies_stores_and_delivers_categories_to_the_hub(shipped_bundle_dir: Path, tmp_path: Path) -> None:
    """The whole chain, real everywhere: `device run --once` with the shipped model stores results with categories;
    the uplink delivers them (a result stored before the upgrade goes as schema 1; one with the outline as 3) to `hub serve`
    on a real broker."""
    from device.demo import write_demo_frames
    from tests.device.link.test_uplink import Device

    broker = MosquittoBroker(tmp_path / "broker")
    broker.start()
    hub = Hub(tmp_path, broker.address)
    device = Device(tmp_path, "site-a", "dev-1", broker.address)
    try:
        old = device.store.add(replace(make_record("site-a", "dev-1", 1), seq=None))  # before the category rule
        write_demo_frames(tmp_path / "frames", count=3)
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "device",
                "run",
                "--config",
                str(device.config_path),
                "--model",
                str(shipped_bundle_dir),
                "--source",
                f"folder:{tmp_path / 'frames'}",
                "--once",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
        )
        assert run.returncode == 0, run.stderr
        records = device.store.history(newest_first=False)
        assert len(records) == 4 and records[0].result_id == old.result_id
        assert all(r.category is not None and r.mode == "balanced" for r in records[1:])
        hub.start()
        device.start_uplink()
        wait_for(lambda: hub.count() == 4, 60, "four results at the hub")
        for record in records:
            row = hub.store.result(record.result_id)
            assert (row.category, row.p_malignant, row.mode, row.label) == (record.category, record.p_malignant, record.mode, record.label)
            # the lowest schema that holds it: 1 before categories, 3 with the shipped outline model's lesion, else 2
            assert row.schema_version == (1 if record is records[0] else 3 if record.lesion is not None else 2)
        wait_for(lambda: device.store.backlog().pending == 0, 30, "every ack")
    finally:
        shut_down(broker, hub, [device])
