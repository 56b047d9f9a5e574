"""The correction chain end to end, with the broker SIGKILLed and restarted in the middle: the device store (a
clinician's voids and moves, made at a steady pace by another connection, as the touchscreen would) -> the real
``python -m device uplink`` -> a real Mosquitto -> the real ``python -m hub serve`` on SQLite and on PostgreSQL.

At the end every correction the device made is in the hub's database exactly once, each result's corrections in
the order they were made, every result's effective state (valid / voided / moved, and where to) is the same at the
hub as on the device, the result rows themselves are as first sent, and the device's correction outbox is empty.
Corrections of results that were not yet acked when they were made (stored while the broker was down) wait for their
result and arrive after it."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from device.link.corrections import CorrectionKind, Place, State, make_correction
from device.results import Exam
from device.store import ResultStore
from tests.device.link.test_uplink import Device, make_record
from tests.hub.test_hub_poison import HubProcess
from tests.mqtt_broker import MosquittoBroker, postgres_server, wait_for  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(240)

RESULTS = 40


@pytest.fixture(params=["sqlite", "postgresql"])
def hub_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "hub.sqlite")
    return request.getfixturevalue("postgres_server").create_database(f"corr_{uuid.uuid4().hex[:10]}")


class Clinician:
    """Corrections made through the device store's own connection, one every ``pace_s``; keeps going whatever the
    network does (the store never waits for it)."""

    def __init__(self, store_path: Path, site: str, device_id: str, pace_s: float = 0.03) -> None:
        self.store_path, self.site, self.device_id, self.pace_s = store_path, site, device_id, pace_s
        self.made: list[str] = []
        self.errors: list[BaseException] = []
        self._thread: threading.Thread | None = None

    def correct(self, store: ResultStore, result_id: str, kind: str, reason: str, target: Place | None = None) -> None:
        c = store.add_correction(
            make_correction(
                result_id=result_id,
                kind=kind,
                reason=reason,
                device_id=self.device_id,
                site=self.site,
                origin=Place(None, None, None),
                target=target,
                note=f"chain {len(self.made)}",
            )
        )
        self.made.append(c.correction_id)
        time.sleep(self.pace_s)

    def run_in_background(self, plan) -> None:  # type: ignore[no-untyped-def]
        def work() -> None:
            try:
                with ResultStore(self.store_path) as store:
                    plan(self, store)
            except BaseException as exc:  # reported by join()
                self.errors.append(exc)

        self._thread = threading.Thread(target=work, daemon=True)
        self._thread.start()

    def join(self, timeout_s: float) -> None:
        assert self._thread is not None
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the clinician's corrections did not finish"
        assert not self.errors, self.errors


def _plan(ids: list[str], late: list[str]):  # type: ignore[no-untyped-def]
    def plan(clinician: Clinician, store: ResultStore) -> None:
        for i, rid in enumerate(ids):
            if i % 2 == 0:
                clinician.correct(store, rid, "void", "poor_image" if i % 4 == 0 else "test_scan")
            else:
                clinician.correct(store, rid, "move", "wrong_patient", Place("E2", None, "R"))
        for rid in ids[1:12:2]:  # moved, then voided after all: two corrections of one result, in order
            clinician.correct(store, rid, "void", "duplicate")
        for rid in late:  # results stored while the broker may be down: their corrections wait for their ack
            clinician.correct(store, rid, "move", "wrong_side", Place("E1", None, "R"))

    return plan


def test_corrections_reach_the_hub_exactly_once_across_a_broker_restart(tmp_path: Path, hub_target: str) -> None:
    broker = MosquittoBroker(tmp_path / "broker")
    broker.start()
    hub = HubProcess(tmp_path, broker.address, hub_target)
    device = Device(tmp_path, "site-a", "dev-1", broker.address, window=4, ack_timeout_s=1.0)
    try:
        device.store.add_exam(Exam("E1", "P-001", side=None))
        device.store.add_exam(Exam("E2", "P-002", side="R"))
        records = [device.store.add(make_record("site-a", "dev-1", i)) for i in range(RESULTS)]
        hub.start()
        device.start_uplink()
        wait_for(lambda: device.store.backlog().pending == 0, 60, f"the results acked\n{device.log()}")

        late = [device.store.add(make_record("site-a", "dev-1", RESULTS + i)).result_id for i in range(4)]
        clinician = Clinician(device.store_path, "site-a", "dev-1")
        clinician.run_in_background(_plan([r.result_id for r in records], late))
        total = RESULTS + 6 + len(late)
        wait_for(lambda: len(hub.store.corrections()) >= 8, 60, f"corrections to arrive\n{device.log()}\n{hub.log()}")
        broker.kill()
        arrived = len(hub.store.corrections())
        time.sleep(1.0)  # the clinician goes on correcting while the broker is away
        broker.start()
        clinician.join(60)
        assert arrived < total, "the broker was killed after the last correction: the test proved nothing"

        wait_for(
            lambda: device.store.correction_backlog() == 0 and device.store.backlog().pending == 0,
            120,
            f"every correction acked\n{device.log()}\n{hub.log()}",
        )
        made = device.store.corrections()
        assert len(made) == total and {c.delivery for c in made} == {"acked"}
        stored = hub.store.corrections()
        assert sorted(c.correction.correction_id for c in stored) == sorted(clinician.made)  # exactly once
        by_result: dict[str, list[str]] = {}
        for c in stored:
            by_result.setdefault(c.correction.result_id, []).append(c.correction.correction_id)
        for rid, ids in by_result.items():
            assert ids == [c.correction_id for c in device.store.corrections(rid)], "a result's corrections out of order"

        hub_results = hub.store.results(limit=None)
        at_hub = hub.store.placements(hub_results)
        on_device = device.store.placements(device.store.history())
        assert set(at_hub) == set(on_device)
        for rid, placement in on_device.items():
            assert (at_hub[rid].state, at_hub[rid].place) == (placement.state, placement.place), rid
        states = [p.state for p in at_hub.values()]
        assert states.count(State.VOIDED) == RESULTS // 2 + 6 and states.count(State.MOVED) == RESULTS // 2 - 6 + len(late)
        moved_twice = at_hub[records[1].result_id]
        assert [c.kind for c in moved_twice.corrections] == [CorrectionKind.MOVE, CorrectionKind.VOID]
        assert moved_twice.place == Place("E2", "P-002", "R")
        assert at_hub[late[0]].place == Place("E1", "P-001", "R")
        for row, record in zip(sorted(hub_results, key=lambda r: r.seq), records):  # the rows: as first sent
            assert (row.result_id, row.exam_id, row.patient_ref, row.side) == (record.result_id, record.exam_id, record.patient_ref, record.side)
        assert "internal error" not in hub.log() and hub.alive
    finally:
        if device.proc is not None:
            device.stop_uplink()
        if hub.proc is not None:
            hub.stop()
        hub.store.close()
        broker.kill()
