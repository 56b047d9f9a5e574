"""The durable result store: round trip, outbox states, history, export, disk full, read-only, SIGKILL."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from device.errors import StoreError
from device.results import Exam, ResultRecord, new_result_id, utc_now_iso
from device.store import ResultStore
from tests.unprivileged import make_traversable, run_unprivileged


def make_record(i: int = 0, patient: str | None = "P-001", **changes) -> ResultRecord:
    base = dict(
        result_id=new_result_id(),
        created_at=utc_now_iso(),
        device_id="dev-1",
        site="site-a",
        model_name="m",
        model_version="1.0",
        model_sha256="a" * 64,
        probabilities={"normal": 0.1, "benign": 0.2, "malignant": 0.7},
        label="malignant",
        inconclusive=False,
        reasons=(),
        thresholds={"malignant": 0.3},
        exam_id="E1",
        patient_ref=patient,
        side="L",
        crop=(1, 2, 3, 4),
        roi=None,
        source=f"frame{i}.png",
        latency_ms=4.2,
        thumbnail=b"\xff\xd8jpeg",
    )
    base.update(changes)
    return ResultRecord(**base)


def test_round_trip_and_monotonic_seq(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "r.sqlite") as store:
        stored = [store.add(make_record(i), frame_png=b"png" if i == 0 else None) for i in range(5)]
        assert [r.seq for r in stored] == [1, 2, 3, 4, 5]
        again = store.get(stored[2].result_id)
        assert again == stored[2]
        assert store.frame(stored[0].result_id) == b"png" and store.frame(stored[1].result_id) is None
    with ResultStore(tmp_path / "r.sqlite") as reopened:
        assert reopened.add(make_record(9)).seq == 6


def test_result_id_is_never_reused(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "r.sqlite") as store:
        record = store.add(make_record())
        with pytest.raises(StoreError, match="UNIQUE"):
            store.add(record)
        assert store.count() == 1


def test_outbox_states(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "r.sqlite") as store:
        ids = [store.add(make_record(i)).result_id for i in range(4)]
        assert [r.result_id for r in store.pending(limit=10)] == ids
        store.mark_sent(ids[:2])
        assert store.get(ids[0]).delivery == "sent"
        assert store.mark_acked(ids[:1] + ["unknown-id"]) == 1
        assert store.mark_acked(ids[:1]) == 0  # a duplicate ack changes nothing
        store.mark_sent(ids[:1])  # a late re-send never downgrades an acked result
        assert store.get(ids[0]).delivery == "acked"
        assert [r.result_id for r in store.pending(limit=10)] == ids[1:]
        assert [r.result_id for r in store.pending(limit=10, after_seq=3)] == ids[3:]
        assert store.backlog().pending == 3


def test_history_filters_and_exams(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "r.sqlite") as store:
        store.add_exam(Exam("E1", "P-001", "L", clock=3, age=52))
        for i in range(3):
            store.add(make_record(i, patient="P-001"))
        store.add(make_record(9, patient="P-002", exam_id=None))
        assert len(store.history(patient_ref="P-001")) == 3
        assert [r.source for r in store.history(patient_ref="P-001", limit=2)] == ["frame2.png", "frame1.png"]
        assert len(store.history(exam_id="E1")) == 3
        assert store.get_exam("E1").clock == 3 and store.exams(patient_ref="P-001")[0].age == 52
        with pytest.raises(StoreError):
            store.add_exam(Exam("E2", "P-003", "X"))  # side must be L or R


def test_export_csv_and_json(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "r.sqlite") as store:
        store.add(make_record(0, patient="Ünïcode-7"))
        store.add(make_record(1, label=None, inconclusive=True, reasons=("blank: frame is black",)))
        csv_out, json_out = io.StringIO(), io.StringIO()
        assert store.export_csv(csv_out) == 2 and store.export_json(json_out) == 2
    lines = csv_out.getvalue().splitlines()
    assert lines[0].startswith("seq,result_id,created_at") and "Ünïcode-7" in lines[1]
    rows = [json.loads(line) for line in json_out.getvalue().splitlines()]
    assert rows[1]["inconclusive"] is True and rows[1]["reasons"] == ["blank: frame is black"]


def test_frame_retention(tmp_path: Path) -> None:
    with ResultStore(tmp_path / "r.sqlite") as store:
        old = store.add(make_record(0, created_at="2020-01-01T00:00:00.000Z"), frame_png=b"old")
        new = store.add(make_record(1), frame_png=b"new")
        assert store.purge_frames(keep_days=30, now=datetime.now(UTC) + timedelta(days=1)) == 1
        assert store.frame(old.result_id) is None and store.frame(new.result_id) == b"new"
        assert store.get(old.result_id).thumbnail is not None  # results and thumbnails are kept


def test_disk_full_is_a_clear_error_and_earlier_results_survive(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:
        kept = [store.add(make_record(i)).result_id for i in range(3)]
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count = {pages}")  # SQLite now reports SQLITE_FULL, as on a full disk
        with pytest.raises(StoreError, match="database or disk is full"):
            for i in range(200):
                store.add(make_record(i, thumbnail=os.urandom(8192)))
        assert [store.get(rid).result_id for rid in kept] == kept
        assert store.integrity_ok()
        store._db.execute("PRAGMA max_page_count = 1073741823")
        assert store.add(make_record(99)).seq is not None  # space freed: works again


def test_read_only_store_is_a_clear_error(tmp_path: Path) -> None:
    """Opened by a user that cannot write the file (root ignores modes, so a forked child drops to 'nobody')."""
    path = tmp_path / "r.sqlite"
    with ResultStore(path) as store:
        store.add(make_record())
    for file in tmp_path.iterdir():
        file.chmod(0o644)
    make_traversable(tmp_path)

    def write_one() -> str:
        try:
            with ResultStore(path) as store:
                store.add(make_record())
        except StoreError as exc:
            return f"StoreError: {exc}"
        return "no error"

    message = run_unprivileged(write_one)
    assert message.startswith("StoreError") and "readonly" in message and "r.sqlite" in message
    with ResultStore(path) as store:
        assert store.count() == 1 and store.integrity_ok()


_BURST = textwrap.dedent(
    """
    import sys
    from tests.device.test_store import make_record
    from device.store import ResultStore
    store = ResultStore(sys.argv[1])
    for i in range(100000):
        record = store.add(make_record(i, thumbnail=bytes(2000)))
        print(record.result_id, flush=True)  # printed only after the commit returned
    """
)


def test_sigkill_mid_burst_keeps_every_committed_result(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([sys.executable, "-c", _BURST, str(path)], stdout=subprocess.PIPE, text=True, cwd=repo)
    committed = []
    for line in proc.stdout:
        committed.append(line.strip())
        if len(committed) == 300:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(10)
    committed += [line.strip() for line in proc.stdout if line.strip()]
    with ResultStore(path) as store:
        assert store.integrity_ok()
        for result_id in committed:
            assert store.get(result_id) is not None, result_id
        seqs = [r.seq for r in store.history(newest_first=False)]
        assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= len(committed)
        assert store.add(make_record()).seq == len(seqs) + 1
