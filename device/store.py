"""The durable result store: one SQLite file, the device's source of truth.

* WAL journal, ``synchronous=FULL``: when :meth:`ResultStore.add` returns, the result is on disk.
* ``seq`` is an ``AUTOINCREMENT`` key: per device, strictly increasing, never reused.
* The same file is the uplink's outbox: ``delivery`` goes ``stored`` -> ``sent`` -> ``acked``,
  and only the hub's ack moves a result to ``acked``.
* A result the hub rejected for good (its nack) is *parked*: a row in ``rejected`` with the hub's reason;
  it reads as ``delivery = "rejected: <reason>"``, leaves the backlog and is never sent again.
* Disk full / read-only filesystem / corruption raise :class:`StoreError`; earlier results stay intact.
* Every result of an exam is a view of one lesion (``lesion_views``: a lesion number per result within its exam,
  device/lesions.py): a new lesion when stored; the clinician may make it the second view of an earlier frame's
  lesion (:meth:`ResultStore.same_lesion`), which is refused across exams or sides and beyond two views.
* A stored result is never overwritten (a trigger refuses it): a clinician's void or move is a row in the append-only
  ``corrections`` table (device/link/corrections.py), delivered to the hub like results (its own outbox columns); the
  result's effective placement is derived from them (:meth:`ResultStore.placements`).

One connection per ``ResultStore``, guarded by a lock, so UI, pipeline and worker threads can share it.
Other processes (the uplink) open their own ``ResultStore`` on the same file.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from device.clock import to_iso, utc_now_iso
from device.close_up import CloseUpCheck, CloseUpCheckError
from device.errors import StoreError
from device.lesion_record import LesionRecord, LesionRecordError
from device.lesions import Lesion, LesionError, LesionView, check_same_lesion, group_lesions
from device.link.corrections import (
    Correction,
    CorrectionError,
    CorrectionKind,
    CorrectionReason,
    Place,
    Placement,
    check_correction,
    effective_placement,
)
from device.link.delivery import Delivery
from device.results import Exam, ResultRecord

log = logging.getLogger(__name__)

SCHEMA_VERSION = 5  # 2: category, p_malignant, mode, clock, age; 3: lesion_views; 4: lesion; 5: close_up (added to an older file on open)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    result_id      TEXT NOT NULL UNIQUE,
    created_at     TEXT NOT NULL,
    device_id      TEXT NOT NULL,
    site           TEXT NOT NULL,
    exam_id        TEXT,
    patient_ref    TEXT,
    side           TEXT CHECK (side IN ('L', 'R') OR side IS NULL),
    clock          INTEGER CHECK (clock BETWEEN 1 AND 12 OR clock IS NULL),
    age            INTEGER CHECK (age BETWEEN 0 AND 130 OR age IS NULL),
    model_name     TEXT NOT NULL,
    model_version  TEXT NOT NULL,
    model_sha256   TEXT NOT NULL,
    label          TEXT,
    category       TEXT,
    p_malignant    REAL,
    mode           TEXT,
    inconclusive   INTEGER NOT NULL CHECK (inconclusive IN (0, 1)),
    reasons        TEXT NOT NULL,
    probabilities  TEXT NOT NULL,
    thresholds     TEXT NOT NULL,
    crop           TEXT,
    roi            TEXT,
    source         TEXT,
    latency_ms     REAL,
    lesion         TEXT,
    close_up       TEXT,
    thumbnail      BLOB,
    delivery       TEXT NOT NULL DEFAULT 'stored' CHECK (delivery IN ('stored', 'sent', 'acked')),
    sent_at        TEXT,
    acked_at       TEXT,
    send_attempts  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS results_patient ON results (patient_ref, seq);
CREATE INDEX IF NOT EXISTS results_created ON results (created_at);
CREATE INDEX IF NOT EXISTS results_outbox ON results (delivery, seq) WHERE delivery != 'acked';
CREATE TABLE IF NOT EXISTS rejected (
    result_id   TEXT PRIMARY KEY REFERENCES results (result_id),
    reason      TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '',
    rejected_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS frames (
    result_id  TEXT PRIMARY KEY REFERENCES results (result_id),
    created_at TEXT NOT NULL,
    image      BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS exams (
    exam_id     TEXT PRIMARY KEY,
    patient_ref TEXT NOT NULL,
    side        TEXT CHECK (side IN ('L', 'R') OR side IS NULL),
    clock       INTEGER CHECK (clock BETWEEN 1 AND 12 OR clock IS NULL),
    age         INTEGER CHECK (age BETWEEN 0 AND 130 OR age IS NULL),
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS corrections (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    correction_id    TEXT NOT NULL UNIQUE,
    result_id        TEXT NOT NULL REFERENCES results (result_id),
    kind             TEXT NOT NULL CHECK (kind IN ('void', 'move')),
    reason           TEXT NOT NULL,
    note             TEXT NOT NULL DEFAULT '',
    corrected_by     TEXT,
    created_at       TEXT NOT NULL,
    device_id        TEXT NOT NULL,
    site             TEXT NOT NULL,
    from_exam_id     TEXT,
    from_patient_ref TEXT,
    from_side        TEXT,
    to_exam_id       TEXT,
    to_patient_ref   TEXT,
    to_side          TEXT CHECK (to_side IN ('L', 'R') OR to_side IS NULL),
    delivery         TEXT NOT NULL DEFAULT 'stored' CHECK (delivery IN ('stored', 'sent', 'acked')),
    sent_at          TEXT,
    acked_at         TEXT,
    send_attempts    INTEGER NOT NULL DEFAULT 0,
    rejected_reason  TEXT,
    rejected_detail  TEXT,
    rejected_at      TEXT
);
CREATE INDEX IF NOT EXISTS corrections_result ON corrections (result_id, seq);
CREATE TABLE IF NOT EXISTS lesion_views (
    result_id  TEXT PRIMARY KEY REFERENCES results (result_id),
    exam_id    TEXT NOT NULL,
    lesion     INTEGER NOT NULL CHECK (lesion >= 1),
    grouped_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS lesion_views_exam ON lesion_views (exam_id, lesion);
CREATE INDEX IF NOT EXISTS corrections_outbox ON corrections (delivery, seq) WHERE delivery != 'acked';
-- Never an overwrite (device/link/corrections.py): a result's attribution and findings, and a correction's content,
-- cannot be changed once stored, and a correction cannot be deleted; only the delivery columns move.
CREATE TRIGGER IF NOT EXISTS results_never_overwritten BEFORE UPDATE OF result_id, created_at, device_id, site,
    exam_id, patient_ref, side, clock, age, label, category, p_malignant, inconclusive, probabilities ON results
BEGIN SELECT RAISE(ABORT, 'a stored result is never overwritten: store a correction'); END;
CREATE TRIGGER IF NOT EXISTS corrections_append_only BEFORE UPDATE OF correction_id, result_id, kind, reason, note,
    corrected_by, created_at, device_id, site, from_exam_id, from_patient_ref, from_side, to_exam_id, to_patient_ref,
    to_side ON corrections
BEGIN SELECT RAISE(ABORT, 'corrections are append-only'); END;
CREATE TRIGGER IF NOT EXISTS corrections_never_deleted BEFORE DELETE ON corrections
BEGIN SELECT RAISE(ABORT, 'corrections are append-only'); END;
"""

# Added to an older file on open (NULL for the results already stored): schema 2's category columns, then the
# exam's clock position and the patient's age (added to schema 2 before its release; a file written by the first
# schema-2 code has the category columns and gains these two); schema 4's lesion outline; schema 5's close-up check.
_ADDED_COLUMNS = (
    ("category", "TEXT"),
    ("p_malignant", "REAL"),
    ("mode", "TEXT"),
    ("clock", "INTEGER CHECK (clock BETWEEN 1 AND 12 OR clock IS NULL)"),
    ("age", "INTEGER CHECK (age BETWEEN 0 AND 130 OR age IS NULL)"),
    ("lesion", "TEXT"),  # schema 4: the lesion outline as one JSON object (device/lesion_record.py), NULL before
    ("close_up", "TEXT"),  # schema 5: a clinician's ROI checked against the scan region (device/close_up.py), NULL before
)
# schema 4: the outline is a finding too (its own trigger: an older file's results_never_overwritten predates it)
_LESION_TRIGGER = (
    "CREATE TRIGGER IF NOT EXISTS results_lesion_never_overwritten BEFORE UPDATE OF lesion ON results "
    "BEGIN SELECT RAISE(ABORT, 'a stored result is never overwritten: store a correction'); END"
)
# schema 5: so is the close-up check
_CLOSE_UP_TRIGGER = (
    "CREATE TRIGGER IF NOT EXISTS results_close_up_never_overwritten BEFORE UPDATE OF close_up ON results "
    "BEGIN SELECT RAISE(ABORT, 'a stored result is never overwritten: store a correction'); END"
)

_NOT_PARKED = "result_id NOT IN (SELECT result_id FROM rejected)"

# The CSV export's columns, in the order of its header (a file format: new fields go where a reader expects them);
# every stored field but the thumbnail (tests/device/test_store_columns.py).
EXPORT_FIELDS = (
    "seq",
    "result_id",
    "created_at",
    "device_id",
    "site",
    "exam_id",
    "patient_ref",
    "side",
    "clock",
    "age",
    "model_name",
    "model_version",
    "model_sha256",
    "label",
    "category",
    "p_malignant",
    "mode",
    "inconclusive",
    "reasons",
    "probabilities",
    "thresholds",
    "crop",
    "roi",
    "source",
    "latency_ms",
    "delivery",
    "lesion",
    "close_up",
)


@dataclass(frozen=True)
class ParkedResult:
    """A result the hub rejected for good: kept on the device, never sent again."""

    result_id: str
    seq: int
    reason: str  # the hub's rejection reason, e.g. topic_mismatch
    detail: str
    rejected_at: str


@dataclass(frozen=True)
class BacklogStats:
    pending: int  # results not yet acknowledged by the hub
    oldest_created_at: str | None


class ResultStore:
    def __init__(self, path: str | os.PathLike[str], *, timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"result store {self.path}: cannot open ({exc})") from exc

    # --- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        self._db.executescript(_SCHEMA)  # idempotent (IF NOT EXISTS); commits on its own
        row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is not None and int(row[0]) > SCHEMA_VERSION:
            raise StoreError(f"result store {self.path}: schema version {row[0]} is newer than this software ({SCHEMA_VERSION})")
        have = {r[1] for r in self._db.execute("PRAGMA table_info(results)")}
        missing = [(name, kind) for name, kind in _ADDED_COLUMNS if name not in have]
        if row is not None and int(row[0]) == SCHEMA_VERSION and not missing:  # (a schema-5 file has its triggers)
            return  # nothing to write: a read-only file still opens
        with self._transaction() as db:  # -> 2: the columns a file lacks (_ADDED_COLUMNS), NULL for the results already stored
            for name, kind in missing:
                db.execute(f"ALTER TABLE results ADD COLUMN {name} {kind}")
            db.execute(_LESION_TRIGGER)  # -> 4 (the column is among _ADDED_COLUMNS)
            db.execute(_CLOSE_UP_TRIGGER)  # -> 5 (likewise)
            # -> 3: every result of an exam stored before lesions were grouped is a lesion of its own, numbered in order
            db.execute(
                "INSERT INTO lesion_views (result_id, exam_id, lesion, grouped_at) "
                "SELECT result_id, exam_id, ROW_NUMBER() OVER (PARTITION BY exam_id ORDER BY seq), created_at "
                "FROM results WHERE exam_id IS NOT NULL AND result_id NOT IN (SELECT result_id FROM lesion_views)"
            )
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; any SQLite failure (full disk, read-only...) becomes a StoreError
        after rolling back, so the file keeps only complete transactions."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as exc:
                if self._db.in_transaction:  # SQLite may already have rolled back (e.g. SQLITE_FULL)
                    self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"result store {self.path}: write failed ({exc})") from exc
                raise

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                cursor = self._db.execute(sql, tuple(params))
                return cursor.fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"result store {self.path}: read failed ({exc})") from exc

    # --- results ---------------------------------------------------------------------------------

    def add(self, record: ResultRecord, frame_png: bytes | None = None) -> ResultRecord:
        """Durably store a result (and optionally its full frame); returns it with its ``seq``."""
        with self._transaction() as db:
            cursor = db.execute(_INSERT_RESULT, _record_to_row(record))
            seq = cursor.lastrowid
            if record.exam_id is not None:  # a new lesion of its exam until the clinician groups it (same_lesion)
                db.execute(
                    "INSERT INTO lesion_views (result_id, exam_id, lesion, grouped_at) VALUES (?, ?, ?, ?)",
                    (record.result_id, record.exam_id, _next_lesion(db, record.exam_id), record.created_at),
                )
            if frame_png is not None:
                db.execute(
                    "INSERT INTO frames (result_id, created_at, image) VALUES (?,?,?)",
                    (record.result_id, record.created_at, frame_png),
                )
        return replace(record, seq=seq, delivery=Delivery.STORED)

    def get(self, result_id: str) -> ResultRecord | None:
        rows = self._query(f"SELECT {_COLUMNS} FROM results WHERE result_id = ?", (result_id,))
        return _row_to_record(rows[0]) if rows else None

    def frame(self, result_id: str) -> bytes | None:
        rows = self._query("SELECT image FROM frames WHERE result_id = ?", (result_id,))
        return bytes(rows[0][0]) if rows else None

    def history(
        self,
        patient_ref: str | None = None,
        since: str | None = None,
        until: str | None = None,
        exam_id: str | None = None,
        limit: int | None = None,
        newest_first: bool = True,
    ) -> list[ResultRecord]:
        where: list[str] = []
        params: list[Any] = []
        if patient_ref is not None:  # its own patient, or one a correction moved it to (shown with its placement)
            where.append("(patient_ref = ? OR result_id IN (SELECT result_id FROM corrections WHERE kind = 'move' AND to_patient_ref = ?))")
            params += [patient_ref, patient_ref]
        for column, op, value in (
            ("created_at", ">=", since),
            ("created_at", "<", until),
            ("exam_id", "=", exam_id),
        ):
            if value is not None:
                where.append(f"{column} {op} ?")
                params.append(value)
        sql = f"SELECT {_COLUMNS} FROM results"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq " + ("DESC" if newest_first else "ASC")
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return [_row_to_record(row) for row in self._query(sql, params)]

    def exam_results(self, exam_id: str) -> list[ResultRecord]:
        """Every result stored under exam ``exam_id`` or moved into it by a correction, oldest first (their
        placements say which still count in it: :meth:`placements`)."""
        rows = self._query(
            f"SELECT {_COLUMNS} FROM results WHERE exam_id = ? OR result_id IN (SELECT result_id FROM "
            "corrections WHERE kind = 'move' AND to_exam_id = ?) ORDER BY seq",
            (exam_id, exam_id),
        )
        return [_row_to_record(row) for row in rows]

    def count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM results")[0][0])

    def last_seq(self) -> int:
        return int(self._query("SELECT COALESCE(MAX(seq), 0) FROM results")[0][0])

    # --- outbox (used by the uplink) -------------------------------------------------------------

    def pending(self, limit: int = 100, after_seq: int = 0) -> list[ResultRecord]:
        """Results the hub has not acknowledged yet (and not rejected for good), oldest first."""
        rows = self._query(
            f"SELECT {_COLUMNS} FROM results WHERE delivery != 'acked' AND {_NOT_PARKED} AND seq > ? ORDER BY seq LIMIT ?",
            (after_seq, int(limit)),
        )
        return [_row_to_record(row) for row in rows]

    def mark_sent(self, result_ids: Iterable[str]) -> None:
        ids = list(result_ids)
        if not ids:
            return
        now = utc_now_iso()
        with self._transaction() as db:
            db.executemany(
                "UPDATE results SET delivery = 'sent', sent_at = ?, send_attempts = send_attempts + 1 WHERE result_id = ? AND delivery != 'acked'",
                [(now, rid) for rid in ids],
            )

    def mark_acked(self, result_ids: Iterable[str]) -> int:
        """Record the hub's acknowledgement; returns how many results changed state."""
        ids = list(result_ids)
        if not ids:
            return 0
        now = utc_now_iso()
        with self._transaction() as db:
            changed = 0
            for rid in ids:
                changed += db.execute(
                    "UPDATE results SET delivery = 'acked', acked_at = ? WHERE result_id = ? AND delivery != 'acked'",
                    (now, rid),
                ).rowcount
                db.execute("DELETE FROM rejected WHERE result_id = ?", (rid,))  # acked after all: not parked
        return changed

    def mark_rejected(self, refusals: Iterable[tuple[str, str, str]]) -> int:
        """Park results the hub rejected for good, ``(result_id, reason, detail)`` each; durable on return.
        An acked or unknown result is left alone. Returns how many were newly parked."""
        items = list(refusals)
        if not items:
            return 0
        now = utc_now_iso()
        with self._transaction() as db:
            return sum(
                db.execute(
                    "INSERT INTO rejected (result_id, reason, detail, rejected_at) SELECT result_id, ?, ?, ? FROM results "
                    "WHERE result_id = ? AND delivery != 'acked' ON CONFLICT (result_id) DO NOTHING",
                    (reason, detail, now, rid),
                ).rowcount
                for rid, reason, detail in items
            )

    def parked(self) -> list[ParkedResult]:
        """Results the hub rejected for good, oldest first."""
        rows = self._query(
            "SELECT r.result_id, r.seq, p.reason, p.detail, p.rejected_at FROM rejected p JOIN results r USING (result_id) ORDER BY r.seq"
        )
        return [ParkedResult(*row) for row in rows]

    def backlog(self) -> BacklogStats:
        row = self._query(f"SELECT COUNT(*), MIN(created_at) FROM results WHERE delivery != 'acked' AND {_NOT_PARKED}")[0]
        return BacklogStats(pending=int(row[0]), oldest_created_at=row[1])

    # --- small key/value facts shared between processes (e.g. the uplink's connection state) ---------

    def set_meta(self, key: str, value: str) -> None:
        with self._transaction() as db:
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    def get_meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    # --- exams -----------------------------------------------------------------------------------

    def add_exam(self, exam: Exam) -> Exam:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO exams (exam_id, patient_ref, side, clock, age, created_at) VALUES (?,?,?,?,?,?)",
                (exam.exam_id, exam.patient_ref, exam.side, exam.clock, exam.age, exam.created_at),
            )
        return exam

    def get_exam(self, exam_id: str) -> Exam | None:
        rows = self._query("SELECT exam_id, patient_ref, side, clock, age, created_at FROM exams WHERE exam_id = ?", (exam_id,))
        return Exam(*rows[0]) if rows else None

    def exams(self, patient_ref: str | None = None, limit: int = 200) -> list[Exam]:
        sql = "SELECT exam_id, patient_ref, side, clock, age, created_at FROM exams"
        params: list[Any] = []
        if patient_ref is not None:
            sql += " WHERE patient_ref = ?"
            params.append(patient_ref)
        sql += " ORDER BY created_at DESC LIMIT ?"
        params.append(limit)
        return [Exam(*row) for row in self._query(sql, params)]

    # --- lesions (device/lesions.py): a lesion number per result within its exam ---------------------------

    def lesion_views(self, records: Iterable[ResultRecord]) -> dict[str, LesionView]:
        """The stored lesion grouping of each of ``records`` that has one."""
        ids = [r.result_id for r in records]
        found: dict[str, LesionView] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = self._query(f"SELECT result_id, exam_id, lesion FROM lesion_views WHERE result_id IN ({','.join('?' * len(chunk))})", chunk)
            found.update({row[0]: LesionView(row[0], row[1], int(row[2])) for row in rows})
        return found

    def lesions(self, exam_id: str) -> list[Lesion]:
        """The lesions of exam ``exam_id``: its frames that count (not voided, not moved out; moved in included),
        grouped and combined (:func:`device.lesions.group_lesions`)."""
        records = self.exam_results(exam_id)
        return group_lesions(records, self.placements(records), self.lesion_views(records), exam_id)

    def same_lesion(self, result_id: str, first_id: str) -> LesionView:
        """Make result ``result_id`` the second view of result ``first_id``'s lesion, in one transaction (durable on
        return). :class:`LesionError` when the two are not in one exam and on one side (as corrected), when the
        lesion has its two views already, or when either is voided."""
        with self._transaction() as db:
            frame, frame_place = self._placed(db, result_id)
            first, first_place = self._placed(db, first_id)
            exam_id = first_place.place.exam_id
            lesion = self._lesion_of(db, first, exam_id)
            members = [
                rid
                for (rid,) in db.execute(
                    "SELECT result_id FROM lesion_views WHERE exam_id = ? AND lesion = ? AND result_id != ?", (exam_id, lesion, result_id)
                ).fetchall()
            ]
            counting = sum(1 for rid in members if self._counts_in(db, rid, exam_id, first_place.place.side))
            check_same_lesion(frame, frame_place, first, first_place, counting)
            return self._put_view(db, result_id, str(exam_id), lesion)

    def new_lesion(self, result_id: str) -> LesionView:
        """Make result ``result_id`` a lesion of its own again, in the exam it counts in now."""
        with self._transaction() as db:
            record, placement = self._placed(db, result_id)
            if placement.voided or placement.place.exam_id is None:
                raise LesionError(f"result {result_id} counts in no exam: it is no view of a lesion")
            return self._put_view(db, result_id, placement.place.exam_id, _next_lesion(db, placement.place.exam_id))

    def _placed(self, db: sqlite3.Connection, result_id: str) -> tuple[ResultRecord, Placement]:
        row = db.execute(f"SELECT {_COLUMNS} FROM results WHERE result_id = ?", (result_id,)).fetchone()
        if row is None:
            raise LesionError(f"no result {result_id} on this device")
        record = _row_to_record(row)
        return record, effective_placement(
            Place(record.exam_id, record.patient_ref, record.side), self._corrections_where(db, "result_id = ?", (result_id,))
        )

    def _lesion_of(self, db: sqlite3.Connection, record: ResultRecord, exam_id: str | None) -> int:
        """``record``'s lesion number in ``exam_id``; a result moved in (grouped in its first exam) gets a new one."""
        row = db.execute("SELECT exam_id, lesion FROM lesion_views WHERE result_id = ?", (record.result_id,)).fetchone()
        if row is not None and row[0] == exam_id:
            return int(row[1])
        if exam_id is None:
            raise LesionError(f"result {record.result_id} counts in no exam")
        return self._put_view(db, record.result_id, exam_id, _next_lesion(db, exam_id)).lesion

    def _counts_in(self, db: sqlite3.Connection, result_id: str, exam_id: str | None, side: str | None) -> bool:
        _, placement = self._placed(db, result_id)
        return not placement.voided and placement.place.exam_id == exam_id and placement.place.side == side

    @staticmethod
    def _put_view(db: sqlite3.Connection, result_id: str, exam_id: str, lesion: int) -> LesionView:
        db.execute(
            "INSERT INTO lesion_views (result_id, exam_id, lesion, grouped_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (result_id) DO UPDATE SET exam_id = excluded.exam_id, lesion = excluded.lesion, "
            "grouped_at = excluded.grouped_at",
            (result_id, exam_id, lesion, utc_now_iso()),
        )
        return LesionView(result_id, exam_id, lesion)

    # --- corrections (device/link/corrections.py): append-only, delivered like results ---------------------

    def add_correction(self, correction: Correction) -> Correction:
        """Check a correction against its result's current placement and the target exam, and store it, in one
        transaction (durable on return; returned with its ``seq`` and checked origin/target). The result row is
        not touched. :class:`CorrectionError` names what is wrong: no such result, already voided, no such exam..."""
        c = correction
        with self._transaction() as db:
            row = db.execute("SELECT exam_id, patient_ref, side FROM results WHERE result_id = ?", (c.result_id,)).fetchone()
            if row is None:
                raise CorrectionError(f"no result {c.result_id} on this device: nothing to correct")
            placement = effective_placement(Place(*row), self._corrections_where(db, "result_id = ?", (c.result_id,)))
            exam_side: str | None = None
            if c.kind is CorrectionKind.MOVE and c.target is not None and c.target.exam_id is not None:
                exam = db.execute("SELECT patient_ref, side FROM exams WHERE exam_id = ?", (c.target.exam_id,)).fetchone()
                if exam is None:
                    raise CorrectionError(f"moving result {c.result_id}: there is no exam {c.target.exam_id} on this device")
                if c.target.patient_ref is not None and c.target.patient_ref != exam[0]:
                    raise CorrectionError(f"moving result {c.result_id}: exam {c.target.exam_id} is another patient's than the one named")
                c = replace(c, target=Place(c.target.exam_id, exam[0], c.target.side))
                exam_side = exam[1]
            c = check_correction(c, placement, exam_side)
            target = c.target or Place(None, None, None)
            cursor = db.execute(
                "INSERT INTO corrections (correction_id, result_id, kind, reason, note, corrected_by, created_at, device_id, "
                "site, from_exam_id, from_patient_ref, from_side, to_exam_id, to_patient_ref, to_side) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    c.correction_id,
                    c.result_id,
                    c.kind.value,
                    c.reason.value,
                    c.note,
                    c.by,
                    c.created_at,
                    c.device_id,
                    c.site,
                    c.origin.exam_id,
                    c.origin.patient_ref,
                    c.origin.side,
                    target.exam_id,
                    target.patient_ref,
                    target.side,
                ),
            )
        return replace(c, seq=cursor.lastrowid, delivery="stored")

    def corrections(self, result_id: str | None = None) -> list[Correction]:
        """Corrections, oldest first (of one result, or all)."""
        with self._lock:
            try:
                if result_id is None:
                    return self._corrections_where(self._db, "1 = 1", ())
                return self._corrections_where(self._db, "result_id = ?", (result_id,))
            except sqlite3.Error as exc:
                raise StoreError(f"result store {self.path}: read failed ({exc})") from exc

    def placements(self, records: Iterable[ResultRecord]) -> dict[str, Placement]:
        """Each result's effective placement (valid / voided / moved), derived from its corrections."""
        items = list(records)
        found: dict[str, list[Correction]] = {}
        ids = [r.result_id for r in items]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for c in self._corrections_query(f"result_id IN ({','.join('?' * len(chunk))})", chunk):
                found.setdefault(c.result_id, []).append(c)
        return {r.result_id: effective_placement(Place(r.exam_id, r.patient_ref, r.side), found.get(r.result_id, ())) for r in items}

    def placement(self, result_id: str) -> Placement | None:
        record = self.get(result_id)
        return None if record is None else self.placements([record])[result_id]

    def pending_corrections(self, limit: int = 100, after_seq: int = 0) -> list[Correction]:
        """Corrections the hub has not acknowledged (nor rejected) whose result the hub has acknowledged, oldest
        first: a correction never reaches the hub before its result."""
        return self._corrections_query(
            "delivery != 'acked' AND rejected_at IS NULL AND seq > ? AND result_id IN "
            "(SELECT result_id FROM results WHERE delivery = 'acked') ORDER BY seq LIMIT ?",
            (after_seq, int(limit)),
            order=False,
        )

    def mark_corrections_sent(self, correction_ids: Iterable[str]) -> None:
        now = utc_now_iso()
        with self._transaction() as db:
            db.executemany(
                "UPDATE corrections SET delivery = 'sent', sent_at = ?, send_attempts = send_attempts + 1 "
                "WHERE correction_id = ? AND delivery != 'acked'",
                [(now, cid) for cid in correction_ids],
            )

    def mark_corrections_acked(self, correction_ids: Iterable[str]) -> int:
        now = utc_now_iso()
        with self._transaction() as db:
            return sum(
                db.execute(
                    "UPDATE corrections SET delivery = 'acked', acked_at = ?, rejected_reason = NULL, "
                    "rejected_detail = NULL, rejected_at = NULL WHERE correction_id = ? AND delivery != 'acked'",
                    (now, cid),
                ).rowcount
                for cid in correction_ids
            )

    def mark_corrections_rejected(self, refusals: Iterable[tuple[str, str, str]]) -> int:
        """Park corrections the hub rejected for good, ``(correction_id, reason, detail)`` each."""
        now = utc_now_iso()
        with self._transaction() as db:
            return sum(
                db.execute(
                    "UPDATE corrections SET rejected_reason = ?, rejected_detail = ?, rejected_at = ? "
                    "WHERE correction_id = ? AND delivery != 'acked' AND rejected_at IS NULL",
                    (reason, detail, now, cid),
                ).rowcount
                for cid, reason, detail in refusals
            )

    def correction_backlog(self) -> int:
        """Corrections still to deliver (waiting for their result's ack, or for their own)."""
        return int(self._query("SELECT COUNT(*) FROM corrections WHERE delivery != 'acked' AND rejected_at IS NULL")[0][0])

    def _corrections_query(self, where: str, params: Sequence[Any], *, order: bool = True) -> list[Correction]:
        with self._lock:
            try:
                return self._corrections_where(self._db, where, params, order=order)
            except sqlite3.Error as exc:
                raise StoreError(f"result store {self.path}: read failed ({exc})") from exc

    @staticmethod
    def _corrections_where(db: sqlite3.Connection, where: str, params: Sequence[Any], *, order: bool = True) -> list[Correction]:
        sql = f"SELECT {_CORRECTION_COLUMNS} FROM corrections WHERE {where}" + (" ORDER BY seq" if order else "")
        return [_row_to_correction(row) for row in db.execute(sql, tuple(params)).fetchall()]

    # --- retention and export ----------------------------------------------------------------------

    def purge_frames(self, keep_days: int, now: datetime | None = None) -> int:
        """Delete full frames older than ``keep_days`` (results and thumbnails are kept)."""
        cutoff = (now or datetime.now(UTC)) - timedelta(days=keep_days)
        cutoff_iso = to_iso(cutoff)
        with self._transaction() as db:
            return db.execute("DELETE FROM frames WHERE created_at < ?", (cutoff_iso,)).rowcount

    def export_csv(self, out: IO[str], records: Iterable[ResultRecord] | None = None) -> int:
        writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS)
        writer.writeheader()
        count = 0
        for record in records if records is not None else self.history(newest_first=False):
            writer.writerow(_export_row(record))
            count += 1
        return count

    def export_json(self, out: IO[str], records: Iterable[ResultRecord] | None = None) -> int:
        count = 0
        for record in records if records is not None else self.history(newest_first=False):
            out.write(json.dumps(record.summary(), ensure_ascii=False) + "\n")
            count += 1
        return count

    def integrity_ok(self) -> bool:
        return bool(self._query("PRAGMA integrity_check")[0][0] == "ok")


def _next_lesion(db: sqlite3.Connection, exam_id: str) -> int:
    return int(db.execute("SELECT COALESCE(MAX(lesion), 0) + 1 FROM lesion_views WHERE exam_id = ?", (exam_id,)).fetchone()[0])


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(list(value))


def _box_or_none(text: str | None) -> tuple[int, int, int, int] | None:
    if text is None:
        return None
    x, y, w, h = (int(v) for v in json.loads(text))
    return x, y, w, h


# The results table's columns are ResultRecord's fields, same names: the lists below are derived from the dataclass
# (the DDL above is the one other spelling). A field kept in another form in its column is converted here.
_TO_COLUMN: dict[str, Callable[[Any], Any]] = {
    "inconclusive": int,
    "reasons": lambda v: json.dumps(list(v)),
    "probabilities": json.dumps,
    "thresholds": json.dumps,
    "crop": lambda v: _json_or_none(v),
    "roi": lambda v: _json_or_none(v),
    "lesion": lambda v: _lesion_text(v),
    "close_up": lambda v: v.to_text() if v is not None else None,
}
_FROM_COLUMN: dict[str, Callable[[Any], Any]] = {
    "inconclusive": bool,
    "reasons": lambda t: tuple(json.loads(t)),
    "probabilities": json.loads,
    "thresholds": json.loads,
    "crop": lambda t: _box_or_none(t),
    "roi": lambda t: _box_or_none(t),
    "thumbnail": lambda b: bytes(b) if b is not None else None,
    "lesion": lambda t: LesionRecord.from_text(t, "stored lesion") if t is not None else None,
    "close_up": lambda t: CloseUpCheck.from_text(t, "stored close_up") if t is not None else None,
}
_ASSIGNED_BY_STORE = ("seq", "delivery")  # never inserted: the row's rowid and the outbox state
RESULT_FIELDS = tuple(f.name for f in fields(ResultRecord))
_INSERTED = tuple(name for name in RESULT_FIELDS if name not in _ASSIGNED_BY_STORE)
_INSERT_RESULT = f"INSERT INTO results ({', '.join(_INSERTED)}) VALUES ({', '.join('?' * len(_INSERTED))})"
# a result the hub rejected for good reads as "rejected: <reason>"
_DELIVERY = "COALESCE((SELECT 'rejected: ' || reason FROM rejected WHERE rejected.result_id = results.result_id), delivery)"
_COLUMNS = ", ".join(_DELIVERY if name == "delivery" else name for name in RESULT_FIELDS)


def _lesion_text(lesion: LesionRecord | None) -> str | None:
    """The outline's one JSON column; an outline that would not read back (device.lesion_record) is refused."""
    if lesion is None:
        return None
    text = lesion.to_text()
    LesionRecord.from_text(text, "lesion to store")
    return text


def _record_to_row(record: ResultRecord) -> tuple[Any, ...]:
    if record.close_up is not None:  # CloseUpCheckError: a result that would say one thing and keep another
        record.close_up.check_agrees(record.category, record.p_malignant, f"result {record.result_id} close_up")
    return tuple(_TO_COLUMN[name](value) if name in _TO_COLUMN else value for name, value in ((name, getattr(record, name)) for name in _INSERTED))


def _row_to_record(row: Sequence[Any]) -> ResultRecord:
    try:
        return ResultRecord(
            **{name: _FROM_COLUMN[name](value) if name in _FROM_COLUMN else value for name, value in zip(RESULT_FIELDS, row, strict=True)}
        )
    except (LesionRecordError, CloseUpCheckError) as exc:  # the JSON columns validated when read: the file is damaged, name the result
        raise StoreError(f"result {row[RESULT_FIELDS.index('result_id')]}: {exc}") from exc


_CORRECTION_COLUMNS = (
    "seq, correction_id, result_id, kind, reason, note, corrected_by, created_at, device_id, site, from_exam_id, "
    "from_patient_ref, from_side, to_exam_id, to_patient_ref, to_side, "
    "CASE WHEN rejected_at IS NOT NULL THEN 'rejected: ' || rejected_reason ELSE delivery END"
)


def _row_to_correction(row: Sequence[Any]) -> Correction:
    (
        seq,
        correction_id,
        result_id,
        kind,
        reason,
        note,
        by,
        created_at,
        device_id,
        site,
        from_exam,
        from_patient,
        from_side,
        to_exam,
        to_patient,
        to_side,
        delivery,
    ) = row
    target = Place(to_exam, to_patient, to_side) if kind == CorrectionKind.MOVE.value else None
    return Correction(
        correction_id=correction_id,
        result_id=result_id,
        kind=CorrectionKind(kind),
        reason=CorrectionReason(reason),
        device_id=device_id,
        site=site,
        origin=Place(from_exam, from_patient, from_side),
        target=target,
        note=note,
        by=by,
        created_at=created_at,
        seq=seq,
        delivery=delivery,
    )


def _export_row(record: ResultRecord) -> dict[str, Any]:
    row = record.summary()
    model = row.pop("model")
    row.update(model_name=model["name"], model_version=model["version"], model_sha256=model["sha256"])
    for key in ("reasons", "probabilities", "thresholds", "crop", "roi", "lesion", "close_up"):
        row[key] = json.dumps(row[key], ensure_ascii=False)
    return {key: row[key] for key in EXPORT_FIELDS}
