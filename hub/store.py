"""The hub's database: results received from devices, device status/heartbeats, rejection counters.

SQLite by default (a file path), PostgreSQL when given a DSN (``postgresql://...`` or
``host=... dbname=...``). The same SQL runs on both: timestamps are ISO 8601 UTC strings
(sortable as text), JSON fields are text, booleans are 0/1 integers.

Stable API (used by ``hub serve``, the operator CLI and the web console ``hub/web``)::

    store = HubStore.open("hub.sqlite")            # or HubStore.open("postgresql://u@host/db")
    store.add_results([msg, ...]) -> list[bool]    # idempotent on result_id; True = newly stored
    store.add_results_each([msg, ...]) -> list[Added]  # the same, but a message the database refuses is
                                                   # reported (Added.error) and the others are stored
    store.results_by_id([result_id, ...]) -> dict[str, StoredResult]
    store.results(site=, device_id=, label=, since=, until=, patient_ref=, after_id=, limit=, offset=,
                  newest_first=) -> list[StoredResult]
    store.result(result_id) -> StoredResult | None
    store.count_results(...filters) -> int
    store.record_status(StatusMessage); store.record_heartbeat(HeartbeatMessage)
    store.devices() -> list[DeviceState]; store.device(site, device_id) -> DeviceState | None
    store.record_rejection(reason, detail, topic, site=, device_id=); store.rejections() -> list[Rejection]
    store.add_correction(CorrectionMessage) -> bool   # idempotent on correction_id; True = newly stored
    store.corrections_by_id([...]) -> dict[str, StoredCorrection]; store.corrections_for([result_id, ...])
    store.placements([StoredResult, ...]) -> dict[str, Placement]   # valid / voided / moved (device/link/corrections.py)
    store.corrections_into(exam_id) -> list[StoredCorrection]       # moves into an exam
    NOT_VOIDED  # an SQL condition on results.result_id: the result has no void (the needs-attention queue)
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from device.clock import parse_iso, utc_now_iso
from device.errors import SonopiError
from device.link.contract import CorrectionMessage, HeartbeatMessage, LesionRecord, LesionRecordError, ResultMessage, StatusMessage, parse_box
from device.link.corrections import Correction, CorrectionKind, CorrectionReason, Place, Placement, effective_placement

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3  # 3: results.lesion, crop; 2: results.category, p_malignant, mode, clock, age (nullable; added on open)
SILENT_AFTER_INTERVALS = 3.0  # a device whose heartbeat is this many intervals late is "silent"


class Presence(StrEnum):
    """A device as the operator sees it (the devices page, ``hub devices``): its status, or what the hub infers."""

    ONLINE = "online"
    SILENT = "silent"  # says online, but no heartbeat for SILENT_AFTER_INTERVALS intervals
    OFFLINE = "offline"
    STOPPED = "stopped"
    UNKNOWN = "unknown"  # no status received yet
    NEVER = "never"  # provisioned ([console] devices_file), never connected


class HubStoreError(SonopiError):
    """The database is unusable or failed (disk full, connection lost...): the same write may succeed later."""

    code = "hub_store_failed"


class UnstorableError(HubStoreError):
    """The database refused this record's data (an integer out of range, a NUL on PostgreSQL, a lone
    surrogate...). Retrying cannot help: the record is rejected, the rest of its batch goes on."""

    code = "hub_record_unstorable"


class DamagedRowError(HubStoreError):
    """A stored row that no longer validates (changed outside the hub): that row cannot be read, the others can."""

    code = "hub_row_damaged"


class DatabaseUnavailable(HubStoreError):
    """The PostgreSQL server cannot be reached (down, restarting, starting after the hub): worth waiting for."""

    code = "hub_store_unavailable"


@dataclass(frozen=True)
class Waiting:
    """A result in the reorder buffer (``waiting_results``): it waits until ``prev_result_id`` is stored."""

    result_id: str
    prev_result_id: str
    site: str
    device_id: str
    seq: int


@dataclass(frozen=True)
class Added:
    """What :meth:`HubStore.add_results_each` did with one result."""

    result_id: str
    stored: bool  # newly stored; False: already stored, or refused (see ``error``)
    error: str | None = None  # why the database refused this result's data (nothing stored)


def _schema(pg: bool) -> list[str]:
    ident = "BIGSERIAL PRIMARY KEY" if pg else "INTEGER PRIMARY KEY AUTOINCREMENT"
    blob = "BYTEA" if pg else "BLOB"
    real = "DOUBLE PRECISION" if pg else "REAL"
    return [
        "CREATE TABLE IF NOT EXISTS hub_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"""CREATE TABLE IF NOT EXISTS results (
            id             {ident},
            result_id      TEXT NOT NULL UNIQUE,
            seq            BIGINT NOT NULL,
            prev_result_id TEXT,
            site           TEXT NOT NULL,
            device_id      TEXT NOT NULL,
            created_at     TEXT NOT NULL,
            received_at    TEXT NOT NULL,
            historical     INTEGER NOT NULL,
            exam_id        TEXT,
            patient_ref    TEXT,
            side           TEXT,
            model_name     TEXT NOT NULL,
            model_version  TEXT NOT NULL,
            model_sha256   TEXT NOT NULL,
            label          TEXT,
            inconclusive   INTEGER NOT NULL,
            reasons        TEXT NOT NULL,
            probabilities  TEXT NOT NULL,
            thresholds     TEXT NOT NULL,
            latency_ms     {real},
            thumbnail      {blob},
            schema_version INTEGER NOT NULL,
            category       TEXT,
            p_malignant    {real},
            mode           TEXT,
            clock          INTEGER,
            age            INTEGER,
            lesion         TEXT,
            crop           TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS results_device_seq ON results (site, device_id, seq)",
        "CREATE INDEX IF NOT EXISTS results_created ON results (created_at)",
        "CREATE INDEX IF NOT EXISTS results_label ON results (label, id)",
        "CREATE INDEX IF NOT EXISTS results_patient ON results (patient_ref, id)",
        f"""CREATE TABLE IF NOT EXISTS devices (
            site                 TEXT NOT NULL,
            device_id            TEXT NOT NULL,
            first_seen           TEXT NOT NULL,
            last_seen            TEXT NOT NULL,
            status               TEXT,
            status_at            TEXT,
            software_version     TEXT,
            model_name           TEXT,
            model_version        TEXT,
            model_sha256         TEXT,
            backlog              BIGINT,
            last_heartbeat_at    TEXT,
            heartbeat_interval_s {real},
            uptime_s             {real},
            oldest_pending_age_s {real},
            disk_free_bytes      BIGINT,
            soc_temp_c           {real},
            throttled            TEXT,
            latency_p50_ms       {real},
            last_result_at       TEXT,
            model_state          TEXT,
            model_detail         TEXT,
            source_state         TEXT,
            source_detail        TEXT,
            PRIMARY KEY (site, device_id)
        )""",
        f"""CREATE TABLE IF NOT EXISTS heartbeats (
            id                   {ident},
            site                 TEXT NOT NULL,
            device_id            TEXT NOT NULL,
            at                   TEXT NOT NULL,
            received_at          TEXT NOT NULL,
            uptime_s             {real},
            backlog              BIGINT,
            oldest_pending_age_s {real},
            disk_free_bytes      BIGINT,
            soc_temp_c           {real},
            throttled            TEXT,
            latency_p50_ms       {real}
        )""",
        "CREATE INDEX IF NOT EXISTS heartbeats_device ON heartbeats (site, device_id, id)",
        """CREATE TABLE IF NOT EXISTS rejections (
            reason      TEXT NOT NULL,
            site        TEXT NOT NULL,
            device_id   TEXT NOT NULL,
            count       BIGINT NOT NULL,
            first_at    TEXT NOT NULL,
            last_at     TEXT NOT NULL,
            last_topic  TEXT,
            last_detail TEXT,
            PRIMARY KEY (reason, site, device_id)
        )""",
        # Results that arrived before their predecessor (prev_result_id) was stored: the reorder buffer every hub on
        # this database shares. Whichever hub stores the predecessor stores these after it (hub/service.py).
        f"""CREATE TABLE IF NOT EXISTS waiting_results (
            result_id      TEXT PRIMARY KEY,
            prev_result_id TEXT NOT NULL,
            site           TEXT NOT NULL,
            device_id      TEXT NOT NULL,
            seq            BIGINT NOT NULL,
            topic          TEXT NOT NULL,
            payload        {blob} NOT NULL,
            received_at    TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS waiting_results_device ON waiting_results (site, device_id, seq)",
        # A clinician's void or move of a result (device/link/corrections.py): append-only, never an update of results.
        f"""CREATE TABLE IF NOT EXISTS corrections (
            id                 {ident},
            correction_id      TEXT NOT NULL UNIQUE,
            seq                BIGINT NOT NULL,
            prev_correction_id TEXT,
            result_id          TEXT NOT NULL,
            site               TEXT NOT NULL,
            device_id          TEXT NOT NULL,
            created_at         TEXT NOT NULL,
            received_at        TEXT NOT NULL,
            kind               TEXT NOT NULL,
            reason             TEXT NOT NULL,
            note               TEXT NOT NULL,
            corrected_by       TEXT,
            from_exam_id       TEXT,
            from_patient_ref   TEXT,
            from_side          TEXT,
            to_exam_id         TEXT,
            to_patient_ref     TEXT,
            to_side            TEXT
        )""",
        "CREATE INDEX IF NOT EXISTS corrections_result ON corrections (result_id, id)",
        "CREATE INDEX IF NOT EXISTS corrections_target ON corrections (to_exam_id)",
    ]


# The result has not been voided (a condition on results.result_id; the console's needs-attention queue uses it).
NOT_VOIDED = "result_id NOT IN (SELECT result_id FROM corrections WHERE kind = 'void')"
_CORRECTION_COLUMNS = (
    "id, correction_id, seq, prev_correction_id, result_id, site, device_id, created_at, received_at, kind, reason, "
    "note, corrected_by, from_exam_id, from_patient_ref, from_side, to_exam_id, to_patient_ref, to_side"
)


@dataclass(frozen=True)
class StoredCorrection:
    """A correction as the hub stored it: the device's record, the hub's insertion counter and receive time."""

    id: int
    received_at: str
    prev_correction_id: str | None
    correction: Correction

    def summary(self) -> dict[str, Any]:
        c = self.correction
        return {
            "correction_id": c.correction_id,
            "result_id": c.result_id,
            "kind": c.kind.value,
            "reason": c.reason.value,
            "note": c.note,
            "by": c.by,
            "device": f"{c.site}/{c.device_id}",
            "created_at": c.created_at,
            "received_at": self.received_at,
            "from": vars(c.origin),
            "to": vars(c.target) if c.target is not None else None,
        }


_RESULT_COLUMNS = (
    "id, result_id, seq, prev_result_id, site, device_id, created_at, received_at, historical, exam_id, "
    "patient_ref, side, model_name, model_version, model_sha256, label, inconclusive, reasons, probabilities, "
    "thresholds, latency_ms, thumbnail, schema_version, category, p_malignant, mode, clock, age, lesion, crop"
)


def _added_result_columns(pg: bool) -> tuple[tuple[str, str], ...]:
    """Result columns newer than the first schema: added to an existing database by ``_migrate``.
    Null for results from schema-1 devices (contract v1 has no category, clock or age) and, for clock and age,
    for a schema-2 result that did not carry them (they are optional); lesion and crop (contract v3, compact JSON
    text) null for a result sent without an outline."""
    return (
        ("category", "TEXT"),
        ("p_malignant", "DOUBLE PRECISION" if pg else "REAL"),
        ("mode", "TEXT"),
        ("clock", "INTEGER"),
        ("age", "INTEGER"),
        ("lesion", "TEXT"),
        ("crop", "TEXT"),
    )


_DEVICE_COLUMNS = (
    "site, device_id, first_seen, last_seen, status, status_at, software_version, model_name, model_version, "
    "model_sha256, backlog, last_heartbeat_at, heartbeat_interval_s, uptime_s, oldest_pending_age_s, "
    "disk_free_bytes, soc_temp_c, throttled, latency_p50_ms, last_result_at, model_state, model_detail, "
    "source_state, source_detail"
)
# The heartbeat's optional model/source state (docs/mqtt.md): nullable, added to an older database on open.
_ADDED_DEVICE_COLUMNS = ("model_state", "model_detail", "source_state", "source_detail")


@dataclass(frozen=True)
class StoredResult:
    """One result as stored by the hub. ``id`` is the hub's own insertion counter (a cursor for --watch)."""

    id: int
    result_id: str
    seq: int
    prev_result_id: str | None
    site: str
    device_id: str
    created_at: str
    received_at: str
    historical: bool
    exam_id: str | None
    patient_ref: str | None
    side: str | None
    model_name: str
    model_version: str
    model_sha256: str
    label: str | None
    inconclusive: bool
    reasons: tuple[str, ...]
    probabilities: dict[str, float]
    thresholds: dict[str, float]
    latency_ms: float | None
    thumbnail: bytes | None
    schema_version: int
    category: str | None = None  # contract v2; None for a v1 result
    p_malignant: float | None = None
    mode: str | None = None
    clock: int | None = None  # contract v2, optional: the lesion's clock position 1..12
    age: int | None = None  # contract v2, optional: the patient's age
    lesion: LesionRecord | None = None  # contract v3, optional: the lesion outline, validated when read
    crop: tuple[int, int, int, int] | None = None  # contract v3, optional: x, y, w, h (image pixels) the thumbnail shows

    def summary(self) -> dict[str, Any]:
        """JSON-friendly, without the thumbnail (``has_thumbnail`` says whether there is one)."""
        return {
            "id": self.id,
            "result_id": self.result_id,
            "seq": self.seq,
            "site": self.site,
            "device_id": self.device_id,
            "created_at": self.created_at,
            "received_at": self.received_at,
            "historical": self.historical,
            "exam_id": self.exam_id,
            "patient_ref": self.patient_ref,
            "side": self.side,
            "clock": self.clock,
            "age": self.age,
            "model": {"name": self.model_name, "version": self.model_version, "sha256": self.model_sha256},
            "label": self.label,
            "inconclusive": self.inconclusive,
            "reasons": list(self.reasons),
            "probabilities": dict(self.probabilities),
            "thresholds": dict(self.thresholds),
            "latency_ms": self.latency_ms,
            "has_thumbnail": self.thumbnail is not None,
            "schema": self.schema_version,
            "category": self.category,
            "p_malignant": self.p_malignant,
            "mode": self.mode,
            "lesion": self.lesion.to_json() if self.lesion is not None else None,
            "crop": list(self.crop) if self.crop is not None else None,
        }


@dataclass(frozen=True)
class DeviceState:
    site: str
    device_id: str
    first_seen: str
    last_seen: str
    status: str | None  # last retained status: online | offline | stopped
    status_at: str | None
    software_version: str | None
    model_name: str | None
    model_version: str | None
    model_sha256: str | None
    backlog: int | None
    last_heartbeat_at: str | None  # hub receive time of the last heartbeat
    heartbeat_interval_s: float | None
    uptime_s: float | None
    oldest_pending_age_s: float | None
    disk_free_bytes: int | None
    soc_temp_c: float | None
    throttled: str | None
    latency_p50_ms: float | None
    last_result_at: str | None
    model_state: str | None = None  # last heartbeat's: ok | missing | rejected, None when not sent (unknown)
    model_detail: str | None = None
    source_state: str | None = None  # ok | lost, None when not sent (unknown)
    source_detail: str | None = None

    def is_silent(self, now: datetime | None = None, factor: float = SILENT_AFTER_INTERVALS) -> bool:
        """Says ``online`` but no heartbeat for ``factor`` heartbeat intervals."""
        if self.status != "online" or self.last_heartbeat_at is None or not self.heartbeat_interval_s:
            return self.status == "online" and self.last_heartbeat_at is None and _age_s(self.last_seen, now) > 600
        return _age_s(self.last_heartbeat_at, now) > factor * self.heartbeat_interval_s

    def presence(self, now: datetime | None = None, factor: float = SILENT_AFTER_INTERVALS) -> Presence:
        """What the operator sees: the device's last status, or silent when it says online but its heartbeats stopped."""
        if self.status == "online" and self.is_silent(now, factor):
            return Presence.SILENT
        return Presence(self.status) if self.status in set(Presence) else Presence.UNKNOWN

    def summary(self, now: datetime | None = None) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["presence"] = self.presence(now)
        return data


@dataclass(frozen=True)
class Rejection:
    reason: str
    site: str  # "" when the topic could not be attributed
    device_id: str
    count: int
    first_at: str
    last_at: str
    last_topic: str | None
    last_detail: str | None


def _age_s(iso: str, now: datetime | None) -> float:
    then = parse_iso(iso)
    return ((now or datetime.now(UTC)) - then).total_seconds()


def is_dsn(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://")) or ("dbname=" in target and "=" in target)


RECONNECT_MIN_S = 0.5  # first wait before reconnecting to a database that went away...
RECONNECT_MAX_S = 30.0  # ...doubling up to this


def connect_target(target: str) -> tuple[Any, bool]:
    """A new connection to a hub database target: ``(connection, is_postgresql)``; HubStoreError if it cannot."""
    if is_dsn(target):
        try:
            import psycopg  # optional: the hub extra
        except ImportError as exc:
            raise HubStoreError("PostgreSQL DSN given but psycopg is not installed (pip install 'sonopi[hub]')") from exc
        try:
            return psycopg.connect(target, autocommit=True, connect_timeout=10), True
        except psycopg.Error as exc:
            raise DatabaseUnavailable(f"hub database: cannot connect to PostgreSQL ({exc})") from exc
    path = Path(target)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
    except (sqlite3.Error, OSError) as exc:
        raise HubStoreError(f"hub database {path}: cannot open ({exc})") from exc
    return conn, False


def connection_lost(connection: Any, pg: bool, exc: BaseException) -> bool:
    """Whether ``exc`` (a driver error that is not about the data) means the connection is no longer usable:
    PostgreSQL restarted or unreachable (psycopg marks the connection closed or broken), or SQLite failed at
    the file level (an I/O error, the file unreadable, ...). A busy/locked SQLite database is not lost."""
    if pg:
        return bool(getattr(connection, "closed", False) or getattr(connection, "broken", False))
    if not isinstance(exc, sqlite3.OperationalError):
        return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.IntegrityError)
    message = str(exc).lower()
    return not ("locked" in message or "busy" in message)


@dataclass
class Reconnector:
    """When a database connection may be re-opened after it was lost: a doubling wait, reset on success.
    Between attempts every use fails at once with a HubStoreError ("reconnecting") instead of blocking."""

    target: str  # as given (a DSN may hold a password: never logged; see ``shown``)
    shown: str  # the target as it may appear in logs and errors
    min_s: float = RECONNECT_MIN_S
    max_s: float = RECONNECT_MAX_S
    lost: bool = False
    delay_s: float = 0.0
    next_attempt: float = 0.0

    def mark_lost(self, exc: BaseException) -> None:
        if not self.lost:
            log.error(
                "hub database %s: connection lost (%s); reconnecting with back-off",
                self.shown,
                str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__,
            )
        self.lost = True

    def reopen(self) -> tuple[Any, bool]:
        """A new connection, or HubStoreError (now, or because the next attempt is not due yet)."""
        now = time.monotonic()
        if now < self.next_attempt:
            raise HubStoreError(f"hub database {self.shown}: unavailable, reconnecting (next attempt in {self.next_attempt - now:.1f}s)")
        try:
            connection = connect_target(self.target)
        except HubStoreError:
            self.delay_s = min(self.max_s, max(self.min_s, self.delay_s * 2))
            self.next_attempt = time.monotonic() + self.delay_s
            raise
        log.info("hub database %s: reconnected", self.shown)
        self.lost, self.delay_s, self.next_attempt = False, 0.0, 0.0
        return connection


class HubStore:
    """Thread-safe (one connection behind a lock). Use :meth:`open`.

    A connection that is lost (PostgreSQL restarted, SQLite I/O error) is re-opened on a later use, with a
    doubling wait between attempts (:class:`Reconnector`); until then every call raises HubStoreError."""

    def __init__(self, connection: Any, *, pg: bool, target: str, reconnector: Reconnector | None = None) -> None:
        self._db = connection
        self._pg = pg
        self.target = target
        self._lock = threading.RLock()
        self._reconnector = reconnector
        self._migrate()

    @classmethod
    def open(cls, target: str | os.PathLike[str]) -> HubStore:
        text = str(target)
        conn, pg = connect_target(text)
        shown = _redact(text) if pg else str(Path(text))
        return cls(conn, pg=pg, target=shown, reconnector=Reconnector(text, shown))

    def _usable(self) -> None:
        """Re-open a lost connection (under the lock), or raise HubStoreError while that is not possible."""
        if self._reconnector is None or not self._reconnector.lost:
            return
        connection, _ = self._reconnector.reopen()
        try:
            self._db.close()
        except self._errors():
            pass
        self._db = connection
        self._migrate()

    def _failed(self, exc: BaseException) -> None:
        if self._reconnector is not None and connection_lost(self._db, self._pg, exc):
            self._reconnector.mark_lost(exc)

    # --- plumbing --------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> HubStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def backend(self) -> str:
        return "postgresql" if self._pg else "sqlite"

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self._pg else sql

    def _errors(self) -> tuple[type[BaseException], ...]:
        if self._pg:
            import psycopg

            return (psycopg.Error,)
        return (sqlite3.Error,)

    def _data_errors(self) -> tuple[type[BaseException], ...]:
        """Errors about the values written, not the database: OverflowError (an integer SQLite cannot hold),
        ValueError (UnicodeEncodeError: a lone surrogate), the drivers' data and integrity errors (PostgreSQL:
        a NUL in text, a number out of range)."""
        if self._pg:
            import psycopg

            return (OverflowError, ValueError, psycopg.DataError, psycopg.IntegrityError)
        return (OverflowError, ValueError, sqlite3.DataError, sqlite3.IntegrityError)

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self._lock:
            self._usable()
            try:
                if self._pg:
                    with self._db.transaction():
                        yield self._db.cursor()
                else:
                    self._db.execute("BEGIN IMMEDIATE")
                    try:
                        yield self._db
                    except BaseException:
                        self._db.execute("ROLLBACK")
                        raise
                    self._db.execute("COMMIT")
            except self._data_errors() as exc:
                self._rollback_if_open()
                raise UnstorableError(f"hub database {self.target}: refused the data ({type(exc).__name__}: {str(exc)[:200]})") from exc
            except self._errors() as exc:
                self._failed(exc)
                self._rollback_if_open()
                raise self._error_for(exc)(f"hub database {self.target}: write failed ({exc})") from exc

    def _rollback_if_open(self) -> None:
        try:
            if not self._pg and self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error as exc:  # the connection is broken as well: reopened on the next use
            self._failed(exc)

    def _exec(self, db: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        return db.execute(self._sql(sql), tuple(params))

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        with self._lock:
            self._usable()
            try:
                return list(self._db.execute(self._sql(sql), tuple(params)).fetchall())
            except self._errors() as exc:
                self._failed(exc)
                raise self._error_for(exc)(f"hub database {self.target}: read failed ({exc})") from exc

    def _error_for(self, exc: BaseException) -> type[HubStoreError]:
        """DatabaseUnavailable when the PostgreSQL connection is gone (the server stopped under it), else HubStoreError."""
        return DatabaseUnavailable if self._pg and connection_lost(self._db, self._pg, exc) else HubStoreError

    def _migrate(self) -> None:
        with self._transaction() as db:
            for statement in _schema(self._pg):
                self._exec(db, statement)
            row = self._exec(db, "SELECT value FROM hub_meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                self._exec(db, "INSERT INTO hub_meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise HubStoreError(f"hub database {self.target}: schema {row[0]} is newer than this software")
            self._add_result_columns(db)
            self._add_device_columns(db)
            self._scrub_old_rejection_details(db)

    def _add_result_columns(self, db: Any) -> None:
        """-> schema 3: the columns a database lacks (category, p_malignant, mode, clock, age; lesion, crop), on SQLite
        and PostgreSQL alike (results stored before stay null)."""
        if self._pg:
            have = {
                r[0]
                for r in self._exec(
                    db, "SELECT column_name FROM information_schema.columns WHERE table_name = 'results' AND table_schema = current_schema()"
                ).fetchall()
            }
        else:
            have = {r[1] for r in self._exec(db, "PRAGMA table_info(results)").fetchall()}
        for name, kind in _added_result_columns(self._pg):
            if name not in have:
                self._exec(db, f"ALTER TABLE results ADD COLUMN {name} {kind}")
        self._exec(db, "UPDATE hub_meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

    def _add_device_columns(self, db: Any) -> None:
        """The heartbeat's model/source state columns a database lacks (devices seen before stay null: unknown)."""
        if self._pg:
            have = {
                r[0]
                for r in self._exec(
                    db, "SELECT column_name FROM information_schema.columns WHERE table_name = 'devices' AND table_schema = current_schema()"
                ).fetchall()
            }
        else:
            have = {r[1] for r in self._exec(db, "PRAGMA table_info(devices)").fetchall()}
        for name in _ADDED_DEVICE_COLUMNS:
            if name not in have:
                self._exec(db, f"ALTER TABLE devices ADD COLUMN {name} TEXT")

    def _scrub_old_rejection_details(self, db: Any) -> None:
        """Once per database: schema-rejection details written before issue 17 could quote the refused value
        (a patient reference, say); they are replaced. Details written since never quote values."""
        if self._exec(db, "SELECT value FROM hub_meta WHERE key = 'rejection_details_scrubbed'").fetchone() is None:
            self._exec(
                db,
                "UPDATE rejections SET last_detail = ? WHERE reason = 'schema'",
                ("(detail removed: recorded by an older hub, it could quote the refused value)",),
            )
            self._exec(db, "INSERT INTO hub_meta (key, value) VALUES ('rejection_details_scrubbed', ?)", (utc_now_iso(),))

    # --- results ---------------------------------------------------------------------------------

    def add_result(self, message: ResultMessage, received_at: str | None = None) -> bool:
        return self.add_results([message], received_at)[0]

    def add_results(self, messages: Sequence[ResultMessage], received_at: str | None = None) -> list[bool]:
        """Store in one transaction; a result_id already stored is skipped (False). Durable on return."""
        now = received_at or utc_now_iso()
        with self._transaction() as db:
            rows = [_result_row(m, now) for m in messages]  # in the transaction: a value error is UnstorableError
            if self._pg and len(rows) > 1:
                # One statement per result, as below, but pipelined (psycopg executemany: one round trip for the
                # batch instead of one per result, which were a third of a hub's time on PostgreSQL).
                db.executemany(self._sql(_INSERT_RESULT + " RETURNING result_id"), rows, returning=True)
                stored = _returned_each(db, len(rows))
            else:
                stored = [self._exec(db, _INSERT_RESULT, row).rowcount == 1 for row in rows]
            # sorted: two hubs touching the same devices lock their rows in one order (no deadlock)
            for site, device_id in sorted({(m.site, m.device_id) for m, new in zip(messages, stored) if new}):
                self._touch_device(db, site, device_id, now, last_result_at=now)
        return stored

    def add_results_each(self, messages: Sequence[ResultMessage], received_at: str | None = None) -> list[Added]:
        """Like :meth:`add_results` (one transaction when every message can be stored), but a message whose
        data the database refuses does not fail the others: the batch is then stored one message per
        transaction and each refused one is reported with its error. Outages still raise HubStoreError."""
        try:
            return [Added(m.result_id, new) for m, new in zip(messages, self.add_results(messages, received_at))]
        except UnstorableError as exc:
            if len(messages) == 1:
                return [Added(messages[0].result_id, False, str(exc))]
        return [self._add_one(m, received_at) for m in messages]

    def _add_one(self, message: ResultMessage, received_at: str | None) -> Added:
        try:
            return Added(message.result_id, self.add_results([message], received_at)[0])
        except UnstorableError as exc:
            return Added(message.result_id, False, str(exc))

    def results_by_id(self, result_ids: Iterable[str]) -> dict[str, StoredResult]:
        """The stored results among these ids (for comparing a re-sent result with the stored one); a damaged row
        (:class:`DamagedRowError`) is logged and left out, so a re-send of it is stored as nothing new and acked."""
        ids = list(dict.fromkeys(result_ids))
        found: dict[str, StoredResult] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._query(f"SELECT {_RESULT_COLUMNS} FROM results WHERE result_id IN ({marks})", chunk):
                try:
                    result = _row_to_result(row)
                except DamagedRowError as exc:  # left out, not raised: a re-send of it must not stall ingestion
                    log.error("%s; left out", exc)
                    continue
                found[result.result_id] = result
        return found

    def stored_ids(self, result_ids: Iterable[str]) -> set[str]:
        """Which of these result_ids are already stored."""
        ids = list(dict.fromkeys(result_ids))
        found: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(row[0] for row in self._query(f"SELECT result_id FROM results WHERE result_id IN ({marks})", chunk))
        return found

    def result(self, result_id: str) -> StoredResult | None:
        rows = self._query(f"SELECT {_RESULT_COLUMNS} FROM results WHERE result_id = ?", (result_id,))
        return _row_to_result(rows[0]) if rows else None

    def results(
        self,
        *,
        site: str | None = None,
        device_id: str | None = None,
        label: str | None = None,
        since: str | None = None,
        until: str | None = None,
        patient_ref: str | None = None,
        after_id: int | None = None,
        limit: int | None = 100,
        offset: int = 0,
        newest_first: bool = True,
    ) -> list[StoredResult]:
        """Filter on the device's ``created_at`` (since inclusive, until exclusive); ordered by hub ``id``.
        ``label="inconclusive"`` selects inconclusive results. ``after_id`` is a cursor (``id > after_id``)."""
        where, params = self._where(site, device_id, label, since, until, patient_ref, after_id)
        sql = f"SELECT {_RESULT_COLUMNS} FROM results{where} ORDER BY id {'DESC' if newest_first else 'ASC'}"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [int(limit), int(offset)]
        return [_row_to_result(row) for row in self._query(sql, params)]

    def count_results(
        self,
        *,
        site: str | None = None,
        device_id: str | None = None,
        label: str | None = None,
        since: str | None = None,
        until: str | None = None,
        patient_ref: str | None = None,
    ) -> int:
        where, params = self._where(site, device_id, label, since, until, patient_ref, None)
        return int(self._query(f"SELECT COUNT(*) FROM results{where}", params)[0][0])

    @staticmethod
    def _where(site, device_id, label, since, until, patient_ref, after_id) -> tuple[str, list[Any]]:
        clauses, params = [], []
        for clause, value in (
            ("site = ?", site),
            ("device_id = ?", device_id),
            ("created_at >= ?", since),
            ("created_at < ?", until),
            ("patient_ref = ?", patient_ref),
            ("id > ?", after_id),
        ):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        if label == "inconclusive":
            clauses.append("inconclusive = 1")
        elif label is not None:
            clauses.append("label = ?")
            params.append(label)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    # --- devices ---------------------------------------------------------------------------------

    def _touch_device(self, db: Any, site: str, device_id: str, now: str, **columns: Any) -> None:
        self._exec(
            db,
            "INSERT INTO devices (site, device_id, first_seen, last_seen) VALUES (?,?,?,?) "
            "ON CONFLICT (site, device_id) DO UPDATE SET last_seen = excluded.last_seen",
            (site, device_id, now, now),
        )
        if columns:
            assignments = ", ".join(f"{name} = ?" for name in columns)
            self._exec(db, f"UPDATE devices SET {assignments} WHERE site = ? AND device_id = ?", (*columns.values(), site, device_id))

    def record_status(self, message: StatusMessage, received_at: str | None = None) -> None:
        now = received_at or utc_now_iso()
        model = message.model or {}
        columns: dict[str, Any] = {"status": message.state, "status_at": message.at or now}
        if message.state == "online":
            columns.update(
                software_version=message.software_version,
                model_name=model.get("name"),
                model_version=model.get("version"),
                model_sha256=model.get("sha256"),
            )
        if message.backlog is not None:
            columns["backlog"] = message.backlog
        with self._transaction() as db:
            self._touch_device(db, message.site, message.device_id, now, **columns)

    def record_heartbeat(self, message: HeartbeatMessage, received_at: str | None = None) -> None:
        now = received_at or utc_now_iso()
        m = message
        with self._transaction() as db:
            self._touch_device(
                db,
                m.site,
                m.device_id,
                now,
                last_heartbeat_at=now,
                heartbeat_interval_s=m.interval_s,
                uptime_s=m.uptime_s,
                backlog=m.backlog,
                oldest_pending_age_s=m.oldest_pending_age_s,
                disk_free_bytes=m.disk_free_bytes,
                soc_temp_c=m.soc_temp_c,
                throttled=m.throttled,
                latency_p50_ms=m.latency_p50_ms,
                model_state=m.model_state,
                model_detail=m.model_detail,
                source_state=m.source_state,
                source_detail=m.source_detail,
            )
            self._exec(
                db,
                "INSERT INTO heartbeats (site, device_id, at, received_at, uptime_s, backlog, oldest_pending_age_s, "
                "disk_free_bytes, soc_temp_c, throttled, latency_p50_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    m.site,
                    m.device_id,
                    m.at,
                    now,
                    m.uptime_s,
                    m.backlog,
                    m.oldest_pending_age_s,
                    m.disk_free_bytes,
                    m.soc_temp_c,
                    m.throttled,
                    m.latency_p50_ms,
                ),
            )

    # --- the reorder buffer: results waiting for their predecessor ---------------------------------------

    def park_waiting(
        self, waiting: Sequence[tuple[str, bytes, ResultMessage]], received_at: str | None = None, per_device: int | None = None
    ) -> list[ResultMessage]:
        """Keep these ``(topic, payload, message)`` until their predecessor is stored (durable on return). A copy
        of a result already waiting replaces it (a re-send names the device's current predecessor). With
        ``per_device``, a device never has more than that many results waiting: its new ones past the cap (the
        highest seq first) are not parked and are returned (docs/hub.md, "The reorder buffer's cap"). The count is
        exact with several hubs: SQLite's writers take turns (BEGIN IMMEDIATE), PostgreSQL's take a per-device lock."""
        now = received_at or utc_now_iso()
        sql = self._sql(
            "INSERT INTO waiting_results (result_id, prev_result_id, site, device_id, seq, topic, payload, "
            "received_at) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (result_id) DO UPDATE SET "
            "prev_result_id = excluded.prev_result_id, topic = excluded.topic, payload = excluded.payload, "
            "received_at = excluded.received_at"
        )
        ordered = sorted(waiting, key=lambda w: (w[2].site, w[2].device_id, w[2].seq))
        refused: list[ResultMessage] = []
        with self._transaction() as db:
            if per_device is not None:
                ordered, refused = self._within_cap(db, ordered, per_device)
            rows = [(m.result_id, m.prev_result_id, m.site, m.device_id, m.seq, topic_name, payload, now) for topic_name, payload, m in ordered]
            if rows:
                db.executemany(sql, rows)  # PostgreSQL: pipelined, one round trip
        return refused

    def _within_cap(
        self, db: Any, ordered: list[tuple[str, bytes, ResultMessage]], cap: int
    ) -> tuple[list[tuple[str, bytes, ResultMessage]], list[ResultMessage]]:
        """Split ``ordered`` (per device in seq order) into what fits under each device's cap and what does not; a
        result already waiting always fits (it only replaces its earlier copy)."""
        keep: list[tuple[str, bytes, ResultMessage]] = []
        refused: list[ResultMessage] = []
        for (site, device_id), group in itertools.groupby(ordered, key=lambda w: (w[2].site, w[2].device_id)):
            items = list(group)
            if self._pg:  # held to the commit: another hub's park for this device waits for this count
                self._exec(db, "SELECT pg_advisory_xact_lock(hashtext(?))", (f"sonopi-waiting/{site}/{device_id}",))
            # (a statement of its own after the lock: under READ COMMITTED it then sees what the other hub committed)
            count = int(self._exec(db, "SELECT COUNT(*) FROM waiting_results WHERE site = ? AND device_id = ?", (site, device_id)).fetchone()[0])
            if count + len(items) <= cap:  # the usual case: all fit, whether new or re-sent
                keep += items
                continue
            present: set[str] = set()
            for chunk in _chunks([m.result_id for _, _, m in items]):
                present.update(
                    row[0]
                    for row in self._exec(db, f"SELECT result_id FROM waiting_results WHERE result_id IN ({','.join('?' * len(chunk))})", chunk)
                )
            for item in items:
                if item[2].result_id in present:
                    keep.append(item)
                elif count < cap:
                    keep.append(item)
                    count += 1
                else:
                    refused.append(item[2])
        return keep, refused

    def waiting_count(self, site: str, device_id: str) -> int:
        """How many of this device's results are in the reorder buffer."""
        rows = self._query("SELECT COUNT(*) FROM waiting_results WHERE site = ? AND device_id = ?", (site, device_id))
        return int(rows[0][0])

    def waiting(self, devices: Iterable[tuple[str, str]]) -> list[Waiting]:
        """These devices' waiting results (ids and order only, no payload), per device in ``seq`` order."""
        found: list[Waiting] = []
        for site, device_id in sorted(set(devices)):
            rows = self._query(
                "SELECT result_id, prev_result_id, seq FROM waiting_results WHERE site = ? AND device_id = ? ORDER BY seq", (site, device_id)
            )
            found += [Waiting(result_id, prev, site, device_id, int(seq)) for result_id, prev, seq in rows]
        return found

    def waiting_payloads(self, result_ids: Sequence[str]) -> dict[str, tuple[str, bytes]]:
        """``result_id -> (topic, payload)`` of these waiting results."""
        found: dict[str, tuple[str, bytes]] = {}
        for start in range(0, len(result_ids), 500):
            chunk = list(result_ids[start : start + 500])
            rows = self._query(f"SELECT result_id, topic, payload FROM waiting_results WHERE result_id IN ({','.join('?' * len(chunk))})", chunk)
            found.update((result_id, (topic_name, bytes(payload))) for result_id, topic_name, payload in rows)
        return found

    def drop_waiting(self, result_ids: Iterable[str]) -> None:
        ids = sorted(set(result_ids))
        with self._transaction() as db:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                self._exec(db, f"DELETE FROM waiting_results WHERE result_id IN ({','.join('?' * len(chunk))})", chunk)

    def prune_waiting(self, before: str) -> int:
        """Forget results that have waited since before ``before`` (ISO): their device has re-sent them long since."""
        with self._transaction() as db:
            return self._exec(db, "DELETE FROM waiting_results WHERE received_at < ?", (before,)).rowcount

    def prune_heartbeats(self, before: str) -> int:
        """Delete heartbeat history received before ``before`` (ISO); device rows keep the latest values."""
        with self._transaction() as db:
            return self._exec(db, "DELETE FROM heartbeats WHERE received_at < ?", (before,)).rowcount

    def devices(self) -> list[DeviceState]:
        return [DeviceState(*row) for row in self._query(f"SELECT {_DEVICE_COLUMNS} FROM devices ORDER BY site, device_id")]

    def device(self, site: str, device_id: str) -> DeviceState | None:
        rows = self._query(f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE site = ? AND device_id = ?", (site, device_id))
        return DeviceState(*rows[0]) if rows else None

    # --- rejections ------------------------------------------------------------------------------

    def record_rejection(self, reason: str, detail: str, topic: str | None, site: str | None = None, device_id: str | None = None) -> None:
        now = utc_now_iso()
        with self._transaction() as db:
            self._exec(
                db,
                "INSERT INTO rejections (reason, site, device_id, count, first_at, last_at, last_topic, last_detail) "
                "VALUES (?,?,?,1,?,?,?,?) ON CONFLICT (reason, site, device_id) DO UPDATE SET "
                "count = rejections.count + 1, last_at = excluded.last_at, last_topic = excluded.last_topic, "
                "last_detail = excluded.last_detail",
                (
                    _printable(reason)[:64],
                    _printable(site or "")[:64],
                    _printable(device_id or "")[:64],
                    now,
                    now,
                    _printable((topic or "")[:300]),
                    _printable(detail[:500]),
                ),
            )

    def rejections(self) -> list[Rejection]:
        rows = self._query(
            "SELECT reason, site, device_id, count, first_at, last_at, last_topic, last_detail FROM rejections ORDER BY reason, site, device_id"
        )
        return [Rejection(*row) for row in rows]

    def rejected_total(self) -> int:
        return int(self._query("SELECT COALESCE(SUM(count), 0) FROM rejections")[0][0])

    # --- corrections (voids and moves of stored results; never an update of a result) ------------------

    def add_correction(self, m: CorrectionMessage, received_at: str | None = None) -> bool:
        """Store one correction (durable on return); a correction_id already stored is skipped (False)."""
        now = received_at or utc_now_iso()
        to = m.target or Place(None, None, None)
        with self._transaction() as db:
            cur = self._exec(
                db,
                "INSERT INTO corrections (correction_id, seq, prev_correction_id, result_id, site, device_id, created_at, "
                "received_at, kind, reason, note, corrected_by, from_exam_id, from_patient_ref, from_side, to_exam_id, "
                "to_patient_ref, to_side) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (correction_id) DO NOTHING",
                (
                    m.correction_id,
                    m.seq,
                    m.prev_correction_id,
                    m.result_id,
                    m.site,
                    m.device_id,
                    m.created_at,
                    now,
                    m.kind.value,
                    m.reason.value,
                    m.note,
                    m.by,
                    m.origin.exam_id,
                    m.origin.patient_ref,
                    m.origin.side,
                    to.exam_id,
                    to.patient_ref,
                    to.side,
                ),
            )
            stored = cur.rowcount == 1
            if stored:
                self._touch_device(db, m.site, m.device_id, now)
        return stored

    def corrections_by_id(self, correction_ids: Iterable[str]) -> dict[str, StoredCorrection]:
        found: dict[str, StoredCorrection] = {}
        for chunk in _chunks(list(dict.fromkeys(correction_ids))):
            sql = f"SELECT {_CORRECTION_COLUMNS} FROM corrections WHERE correction_id IN ({','.join('?' * len(chunk))})"
            for row in self._query(sql, chunk):
                c = _row_to_correction(row)
                found[c.correction.correction_id] = c
        return found

    def corrections_for(self, result_ids: Iterable[str]) -> dict[str, list[StoredCorrection]]:
        """Each result's corrections, in the order the hub stored them (the device's order: see prev_correction_id)."""
        found: dict[str, list[StoredCorrection]] = {}
        for chunk in _chunks(list(dict.fromkeys(result_ids))):
            sql = f"SELECT {_CORRECTION_COLUMNS} FROM corrections WHERE result_id IN ({','.join('?' * len(chunk))}) ORDER BY id"
            for row in self._query(sql, chunk):
                c = _row_to_correction(row)
                found.setdefault(c.correction.result_id, []).append(c)
        return found

    def corrections_into(self, exam_id: str) -> list[StoredCorrection]:
        """Moves whose target is this exam, oldest first (the exam page lists the results moved into it)."""
        sql = f"SELECT {_CORRECTION_COLUMNS} FROM corrections WHERE kind = 'move' AND to_exam_id = ? ORDER BY id"
        return [_row_to_correction(row) for row in self._query(sql, [exam_id])]

    def corrections(self, limit: int | None = None) -> list[StoredCorrection]:
        sql = f"SELECT {_CORRECTION_COLUMNS} FROM corrections ORDER BY id" + (" LIMIT ?" if limit is not None else "")
        return [_row_to_correction(row) for row in self._query(sql, [int(limit)] if limit is not None else [])]

    def placements(self, results: Iterable[StoredResult]) -> dict[str, Placement]:
        """Each result's effective state — valid, voided, or moved (and where to) — from its corrections."""
        items = list(results)
        found = self.corrections_for(r.result_id for r in items)
        return {
            r.result_id: effective_placement(Place(r.exam_id, r.patient_ref, r.side), [c.correction for c in found.get(r.result_id, [])])
            for r in items
        }


_INSERT_RESULT = (
    "INSERT INTO results (result_id, seq, prev_result_id, site, device_id, created_at, received_at, "
    "historical, exam_id, patient_ref, side, model_name, model_version, model_sha256, label, "
    "inconclusive, reasons, probabilities, thresholds, latency_ms, thumbnail, schema_version, category, "
    "p_malignant, mode, clock, age, lesion, crop) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT (result_id) DO NOTHING"
)


def _result_row(m: ResultMessage, now: str) -> tuple[Any, ...]:
    return (
        m.result_id,
        m.seq,
        m.prev_result_id,
        m.site,
        m.device_id,
        m.created_at,
        now,
        int(m.historical),
        m.exam_id,
        m.patient_ref,
        m.side,
        m.model_name,
        m.model_version,
        m.model_sha256,
        m.label,
        int(m.inconclusive),
        json.dumps(list(m.reasons)),
        json.dumps(m.probabilities),
        json.dumps(m.thresholds),
        m.latency_ms,
        m.thumbnail,
        m.schema,
        m.category,
        m.p_malignant,
        m.mode,
        m.clock,
        m.age,
        m.lesion.to_text() if m.lesion is not None else None,
        json.dumps(list(m.crop)) if m.crop is not None else None,
    )


def _returned_each(cursor: Any, count: int) -> list[bool]:
    """After ``executemany(..., returning=True)`` of ``count`` INSERT ... RETURNING statements: whether each
    inserted its row (a result set of one row) or skipped it (none)."""
    inserted: list[bool] = []
    while True:
        inserted.append(cursor.fetchone() is not None)
        if not cursor.nextset():
            break
    if len(inserted) != count:
        raise HubStoreError(f"hub database: {len(inserted)} results for {count} inserts (driver)")
    return inserted


def _row_to_result(row: tuple) -> StoredResult:
    (
        id_,
        result_id,
        seq,
        prev,
        site,
        device_id,
        created_at,
        received_at,
        historical,
        exam_id,
        patient_ref,
        side,
        model_name,
        model_version,
        model_sha256,
        label,
        inconclusive,
        reasons,
        probabilities,
        thresholds,
        latency_ms,
        thumbnail,
        schema_version,
        category,
        p_malignant,
        mode,
        clock,
        age,
        lesion,
        crop,
    ) = row
    return StoredResult(
        id=int(id_),
        result_id=result_id,
        seq=int(seq),
        prev_result_id=prev,
        site=site,
        device_id=device_id,
        created_at=created_at,
        received_at=received_at,
        historical=bool(historical),
        exam_id=exam_id,
        patient_ref=patient_ref,
        side=side,
        model_name=model_name,
        model_version=model_version,
        model_sha256=model_sha256,
        label=label,
        inconclusive=bool(inconclusive),
        reasons=tuple(json.loads(reasons)),
        probabilities=json.loads(probabilities),
        thresholds=json.loads(thresholds),
        latency_ms=latency_ms,
        thumbnail=bytes(thumbnail) if thumbnail is not None else None,
        schema_version=int(schema_version),
        category=category,
        p_malignant=p_malignant,
        mode=mode,
        clock=int(clock) if clock is not None else None,
        age=int(age) if age is not None else None,
        lesion=_stored_lesion(result_id, lesion),
        crop=_stored_crop(result_id, crop),
    )


def _stored_lesion(result_id: str, text: str | None) -> LesionRecord | None:
    """A result's stored outline, validated as the contract validated it on arrival (a damaged row is refused,
    naming the result)."""
    if text is None:
        return None
    try:
        return LesionRecord.from_text(text, "lesion")
    except LesionRecordError as exc:
        raise DamagedRowError(f"hub database: result {result_id}: the stored lesion outline is damaged ({exc})") from exc


def _stored_crop(result_id: str, text: str | None) -> tuple[int, int, int, int] | None:
    if text is None:
        return None
    try:
        return parse_box(json.loads(text), "crop")
    except (json.JSONDecodeError, LesionRecordError) as exc:
        raise DamagedRowError(f"hub database: result {result_id}: the stored crop box is damaged ({exc})") from exc


def _row_to_correction(row: tuple) -> StoredCorrection:
    (
        id_,
        correction_id,
        seq,
        prev,
        result_id,
        site,
        device_id,
        created_at,
        received_at,
        kind,
        reason,
        note,
        by,
        from_exam,
        from_patient,
        from_side,
        to_exam,
        to_patient,
        to_side,
    ) = row
    correction = Correction(
        correction_id=correction_id,
        result_id=result_id,
        kind=CorrectionKind(kind),
        reason=CorrectionReason(reason),
        device_id=device_id,
        site=site,
        origin=Place(from_exam, from_patient, from_side),
        target=Place(to_exam, to_patient, to_side) if kind == CorrectionKind.MOVE.value else None,
        note=note,
        by=by,
        created_at=created_at,
        seq=int(seq),
        delivery="acked",
    )
    return StoredCorrection(id=int(id_), received_at=received_at, prev_correction_id=prev, correction=correction)


def _chunks(items: list[str], size: int = 500) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _printable(text: str) -> str:
    """Control characters and lone surrogates escaped (``\\x00``, ``\\ud800``), so any text can be stored
    (PostgreSQL refuses NUL) and printed on one line."""
    return text if text.isprintable() else "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _redact(dsn: str) -> str:
    """A DSN for logs: the password removed."""
    if "://" in dsn and "@" in dsn:
        scheme, rest = dsn.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return " ".join("password=***" if part.startswith("password=") else part for part in dsn.split())
