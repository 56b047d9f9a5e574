"""The heartbeat says whether the device can work: its model bundle and its image source (issue 18).

Proves, on a real bundle (the tiny TFLite one) and a real device store:
- the uplink's model check says ok for a good bundle, missing for an absent one, rejected (with the reason) for a
  bundle whose model file no longer matches its manifest — and notices a bundle replaced in place;
- the application's source report (write_source_state) travels while fresh, and is left out when stale or absent;
  a bad state is refused naming it;
- the contract carries the four fields optionally: a heartbeat without them is exactly the old payload, and a
  value outside the enums is refused naming the field;
- the hub stores them per device on SQLite and PostgreSQL (columns added to a database that lacks them), and a
  later heartbeat without them makes them unknown again, not "ok".
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
import uuid
from pathlib import Path

import pytest

from device.link.contract import ContractError, HeartbeatMessage, decode_heartbeat, encode_heartbeat
from device.link.uplink import heartbeat
from device.link.uplink.heartbeat import SOURCE_META_KEY, build_heartbeat, model_state, read_source_state, write_source_state
from device.store import ResultStore
from hub.store import HubStore
from tests.mqtt_broker import postgres_server  # noqa: F401  (fixture)

TOPIC = "sonopi/v1/s/d/heartbeat"


def test_model_state_ok_missing_rejected(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_dir, bundle)
    assert model_state(bundle) == ("ok", None)
    assert model_state(tmp_path / "nowhere")[0] == "missing" and "nowhere" in model_state(tmp_path / "nowhere")[1]
    assert model_state(None) == ("missing", "no model bundle configured")
    model = next(p for p in bundle.iterdir() if p.suffix == ".tflite")
    model.write_bytes(model.read_bytes() + b"tampered")  # replaced in place: the check runs again
    state, detail = model_state(bundle)
    assert state == "rejected" and detail and "sha256" in detail.lower()


def test_source_state_fresh_stale_absent(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "results.sqlite") as store:
        assert read_source_state(store) == (None, None)
        write_source_state(store, "lost", "/dev/video0: no such device")
        assert read_source_state(store) == ("lost", "/dev/video0: no such device")
        beat = build_heartbeat(store, site="s", device_id="d", interval_s=30, started_monotonic=time.monotonic())
        assert (beat.source_state, beat.source_detail, beat.model_state) == ("lost", "/dev/video0: no such device", None)
        store.set_meta(SOURCE_META_KEY, json.dumps({"state": "ok", "detail": "", "at": "2020-01-01T00:00:00Z"}))
        assert read_source_state(store) == (None, None)  # stale: the application may be gone
        with pytest.raises(ValueError, match="'gone'"):
            write_source_state(store, "gone")


def test_heartbeat_with_model_check(tiny_bundle_dir: Path, tmp_path: Path) -> None:
    heartbeat._model_cache.clear()
    with ResultStore(tmp_path / "results.sqlite") as store:
        beat = build_heartbeat(
            store,
            site="s",
            device_id="d",
            interval_s=30,
            started_monotonic=time.monotonic(),
            model_path=tmp_path / "missing-bundle",
            check_model=True,
        )
        assert beat.model_state == "missing"
        decoded = decode_heartbeat(TOPIC, encode_heartbeat(beat))
        assert decoded.model_state == "missing" and decoded.source_state is None


def test_contract_fields_are_optional_and_checked() -> None:
    old = HeartbeatMessage(device_id="d", site="s", at="2026-01-01T00:00:00Z", interval_s=30, uptime_s=1, backlog=0)
    payload = json.loads(encode_heartbeat(old))
    assert not {"model_state", "model_detail", "source_state", "source_detail"} & set(payload)
    assert decode_heartbeat(TOPIC, encode_heartbeat(old)) == old
    bad = dict(payload, source_state="gone")
    with pytest.raises(ContractError, match="source_state"):
        decode_heartbeat(TOPIC, json.dumps(bad).encode())
    with pytest.raises(ContractError, match="model_state"):
        decode_heartbeat(TOPIC, json.dumps(dict(payload, model_state="broken")).encode())


@pytest.fixture(params=["sqlite", "postgresql"])
def hub_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "hub.sqlite")
    return request.getfixturevalue("postgres_server").create_database(f"hb_{uuid.uuid4().hex[:12]}")


def test_hub_stores_model_and_source_state(hub_target: str) -> None:
    with HubStore.open(hub_target):
        pass
    if "://" not in hub_target:  # an older database: the devices table without the four columns
        with sqlite3.connect(hub_target) as db:
            for name in ("model_state", "model_detail", "source_state", "source_detail"):
                db.execute(f"ALTER TABLE devices DROP COLUMN {name}")
    beat = HeartbeatMessage(
        device_id="d",
        site="s",
        at="2026-01-01T00:00:00Z",
        interval_s=30,
        uptime_s=1,
        backlog=0,
        model_state="rejected",
        model_detail="sha256 mismatch",
        source_state="lost",
        source_detail="/dev/video0 gone",
    )
    with HubStore.open(hub_target) as store:
        store.record_heartbeat(decode_heartbeat(TOPIC, encode_heartbeat(beat)))
        d = store.device("s", "d")
        assert d is not None
        assert (d.model_state, d.model_detail, d.source_state, d.source_detail) == ("rejected", "sha256 mismatch", "lost", "/dev/video0 gone")
        store.record_heartbeat(HeartbeatMessage(device_id="d", site="s", at="2026-01-01T00:00:30Z", interval_s=30, uptime_s=31, backlog=0))
        d = store.device("s", "d")
        assert d is not None and (d.model_state, d.source_state) == (None, None)
