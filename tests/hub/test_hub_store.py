"""The hub database, on SQLite always and on a real PostgreSQL server when its binaries are installed.

Includes issue 17's per-message errors: a value the database refuses (an integer beyond 64 bits, a NUL
on PostgreSQL, a lone surrogate) is reported for that message alone, the rest of its batch is stored,
and no Python exception other than HubStoreError escapes."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from device.link.contract import HeartbeatMessage, ResultMessage, StatusMessage
from device.link.uplink.outbox import message_from_record
from device.results import utc_now_iso
from hub.store import HubStore, HubStoreError, StoredResult, UnstorableError, is_dsn
from tests.device.link.test_uplink import make_record
from tests.mqtt_broker import postgres_server  # noqa: F401  (fixture)

_names = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        target = str(tmp_path / "hub.sqlite")
    else:
        server = request.getfixturevalue("postgres_server")
        target = server.create_database(f"hub_{next(_names)}")
    s = HubStore.open(target)
    assert s.backend == request.param
    yield s
    s.close()


def message(site: str, device_id: str, seq: int, prev: str | None = None) -> ResultMessage:
    record = replace(make_record(site, device_id, seq), seq=seq)
    return message_from_record(record, historical=seq % 2 == 0, prev_result_id=prev)


def test_add_is_idempotent_and_round_trips_every_field(store: HubStore) -> None:
    m = message("site-a", "dev-1", 5)  # seq 5: has a thumbnail
    assert m.thumbnail is not None
    assert store.add_results([m]) == [True]
    assert store.add_results([m, m]) == [False, False]
    assert store.add_result(m) is False
    assert store.count_results() == 1
    got = store.result(m.result_id)
    assert isinstance(got, StoredResult)
    for name in (
        "result_id",
        "seq",
        "prev_result_id",
        "site",
        "device_id",
        "created_at",
        "historical",
        "exam_id",
        "patient_ref",
        "side",
        "model_name",
        "model_version",
        "model_sha256",
        "label",
        "inconclusive",
        "reasons",
        "probabilities",
        "thresholds",
        "latency_ms",
        "thumbnail",
    ):
        assert getattr(got, name) == getattr(m, name), name
    assert got.received_at and got.schema_version == 1
    assert store.stored_ids([m.result_id, "nope"]) == {m.result_id}
    assert "thumbnail" not in got.summary() and got.summary()["has_thumbnail"] is True


def test_filters_cursor_and_paging(store: HubStore) -> None:
    msgs = [message("site-a", "dev-1", i) for i in range(1, 31)] + [message("site-b", "dev-2", i) for i in range(1, 11)]
    store.add_results(msgs)
    assert store.count_results() == 40
    assert store.count_results(site="site-b") == 10
    assert store.count_results(device_id="dev-1", site="site-a") == 30
    malignant = store.results(label="malignant", limit=None)
    assert malignant and all(r.label == "malignant" for r in malignant)
    assert {r.result_id for r in malignant} == {m.result_id for m in msgs if m.label == "malignant"}
    inconclusive = store.results(label="inconclusive", limit=None)
    assert inconclusive and all(r.inconclusive for r in inconclusive)
    assert store.count_results(patient_ref="P-003") == sum(m.patient_ref == "P-003" for m in msgs)
    newest = store.results(limit=5)
    assert [r.id for r in newest] == sorted((r.id for r in newest), reverse=True)
    page1 = store.results(limit=10, newest_first=False)
    page2 = store.results(limit=10, offset=10, newest_first=False)
    assert [r.result_id for r in page1 + page2] == [m.result_id for m in msgs[:20]]
    after = store.results(after_id=page1[-1].id, limit=None, newest_first=False)
    assert [r.result_id for r in after] == [m.result_id for m in msgs[10:]]
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert store.count_results(since=future) == 0
    assert store.count_results(until=future) == 40


def test_devices_status_heartbeat_and_silence(store: HubStore) -> None:
    model = {"name": "sonopi-lite0", "version": "1.2.0", "sha256": "ab" * 32}
    store.record_status(StatusMessage("online", "dev-1", "site-a", utc_now_iso(), "0.1.0", model, 12))
    [d] = store.devices()
    assert (d.status, d.software_version, d.model_version, d.backlog) == ("online", "0.1.0", "1.2.0", 12)
    beat = HeartbeatMessage("dev-1", "site-a", utc_now_iso(), 60.0, 100.0, 3, 42.0, 10**9, 51.5, "0x0", 38.0)
    store.record_heartbeat(beat)
    d = store.device("site-a", "dev-1")
    assert (d.backlog, d.soc_temp_c, d.throttled, d.latency_p50_ms, d.heartbeat_interval_s) == (3, 51.5, "0x0", 38.0, 60.0)
    assert d.presence() == "online"
    later = datetime.now(UTC) + timedelta(seconds=200)
    assert d.is_silent(later) and d.presence(later) == "silent"
    store.record_status(StatusMessage("offline", "dev-1", "site-a"))
    d = store.device("site-a", "dev-1")
    assert d.status == "offline" and d.presence(later) == "offline"
    assert d.model_version == "1.2.0", "the Last Will carries no model: the last known one stays"
    assert store.prune_heartbeats((datetime.now(UTC) + timedelta(days=1)).isoformat()) == 1


def test_rejection_counters(store: HubStore) -> None:
    store.record_rejection("schema", "missing seq", "sonopi/v1/s/d/result", "s", "d")
    store.record_rejection("schema", "missing label", "sonopi/v1/s/d/result", "s", "d")
    store.record_rejection("bad_topic", "x" * 5000, "weird/topic")
    rows = {(r.reason, r.site, r.device_id): r for r in store.rejections()}
    assert rows[("schema", "s", "d")].count == 2 and rows[("schema", "s", "d")].last_detail == "missing label"
    assert rows[("bad_topic", "", "")].count == 1 and len(rows[("bad_topic", "", "")].last_detail) <= 500
    assert store.rejected_total() == 3


def test_reopen_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "hub.sqlite"
    m = message("site-a", "dev-1", 1)
    with HubStore.open(path) as s:
        s.add_result(m)
    with HubStore.open(path) as s:
        assert s.result(m.result_id) is not None


def test_dsn_detection() -> None:
    assert is_dsn("postgresql://u@h/db") and is_dsn("host=h dbname=x")
    assert not is_dsn("var/hub.sqlite") and not is_dsn("/data/hub=1.sqlite")


def test_a_value_the_database_refuses_fails_only_its_own_message(store: HubStore) -> None:
    good = [message("site-a", "dev-1", i) for i in (1, 2, 3)]
    refused = [
        replace(message("site-a", "dev-1", 4), seq=2**70),  # beyond BIGINT / SQLite INTEGER
        replace(message("site-a", "dev-1", 5), patient_ref="P\ud800"),  # a lone surrogate: not UTF-8
    ]
    if store.backend == "postgresql":
        refused.append(replace(message("site-a", "dev-1", 6), patient_ref="P\x00123"))  # PostgreSQL text has no NUL
    batch = [good[0], refused[0], good[1], *refused[1:], good[2]]
    with pytest.raises(UnstorableError):
        store.add_results(batch)  # one transaction: nothing stored
    assert store.count_results() == 0
    added = store.add_results_each(batch)
    assert [a.result_id for a in added] == [m.result_id for m in batch]
    by_id = {a.result_id: a for a in added}
    assert all(by_id[m.result_id].stored and by_id[m.result_id].error is None for m in good)
    assert all(not by_id[m.result_id].stored and by_id[m.result_id].error for m in refused)
    assert store.count_results() == 3 and store.stored_ids(m.result_id for m in batch) == {m.result_id for m in good}
    again = store.add_results_each(good)  # the fast path (one transaction) when every message can be stored
    assert [(a.stored, a.error) for a in again] == [(False, None)] * 3
    assert set(store.results_by_id([good[0].result_id, refused[0].result_id])) == {good[0].result_id}


def test_status_and_heartbeat_values_the_database_refuses_raise_unstorable(store: HubStore) -> None:
    with pytest.raises(UnstorableError):
        store.record_status(StatusMessage("online", "dev-1", "site-a", utc_now_iso(), "0.1.0", None, 10**30))
    with pytest.raises(UnstorableError):
        store.record_heartbeat(HeartbeatMessage("dev-1", "site-a", utc_now_iso(), 60.0, 1.0, 10**30))
    assert issubclass(UnstorableError, HubStoreError)
    store.record_status(StatusMessage("online", "dev-1", "site-a", utc_now_iso(), "0.1.0", None, 2**53 - 1))
    assert store.device("site-a", "dev-1").backlog == 2**53 - 1


def test_rejections_with_control_characters_are_stored_escaped(store: HubStore) -> None:
    store.record_rejection("schema", "detail \x00 with NUL \ud800", "sonopi/v1/s/d\x00/result", "s", "d")
    [row] = store.rejections()
    assert row.last_detail == "detail \\x00 with NUL \\ud800" and row.last_topic == "sonopi/v1/s/d\\x00/result"


def test_schema_rejection_details_from_an_older_hub_are_scrubbed_once(tmp_path: Path) -> None:
    path = tmp_path / "hub.sqlite"
    with HubStore.open(path) as s:
        s.record_rejection("schema", "result patient_ref: 'P-12345' is too long", "sonopi/v1/s/d/result", "s", "d")
        s._db.execute("DELETE FROM hub_meta WHERE key = 'rejection_details_scrubbed'")  # as an older hub left it
    with HubStore.open(path) as s:
        [row] = s.rejections()
        assert "P-12345" not in row.last_detail and row.count == 1
        s.record_rejection("schema", "result patient_ref: longer than 64 characters", "sonopi/v1/s/d/result", "s", "d")
    with HubStore.open(path) as s:  # only once: new details stay
        assert s.rejections()[0].last_detail == "result patient_ref: longer than 64 characters"
