"""The console's connection to the hub database and its own tables (users, sessions, reviews, audit).

Opened on the same target as :class:`hub.store.HubStore` (a SQLite path or a PostgreSQL DSN) with the
same conventions: ISO 8601 UTC text timestamps, ``?`` placeholders rewritten to ``%s`` for psycopg,
0/1 integers for booleans. The hub store creates the ``results``/``devices`` tables; this module only
adds ``web_*`` tables and indexes and never alters the hub's tables.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from device.errors import SonopiError
from hub.store import HubStore, HubStoreError, Reconnector, connection_lost, is_dsn

log = logging.getLogger(__name__)

WEB_SCHEMA_VERSION = 3  # 2: web_login_limits, web_trusted_clients; 3: web_assignments
MIGRATION_LOCK = 0x736F6E6F7069  # PostgreSQL advisory lock key held while the console migrates ("sonopi")


class WebDbError(SonopiError):
    code = "web_db_failed"


def _schema(pg: bool) -> list[str]:
    ident = "BIGSERIAL PRIMARY KEY" if pg else "INTEGER PRIMARY KEY AUTOINCREMENT"
    statements = [
        "CREATE TABLE IF NOT EXISTS web_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"""CREATE TABLE IF NOT EXISTS web_users (
            id            {ident},
            username      TEXT NOT NULL UNIQUE,
            password_hash TEXT NOT NULL,
            role          TEXT NOT NULL,
            disabled      INTEGER NOT NULL DEFAULT 0,
            created_at    TEXT NOT NULL,
            updated_at    TEXT NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS web_sessions (
            token_hash   TEXT PRIMARY KEY,
            user_id      BIGINT NOT NULL,
            csrf_token   TEXT NOT NULL,
            created_at   TEXT NOT NULL,
            last_seen_at TEXT NOT NULL,
            expires_at   TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS web_sessions_user ON web_sessions (user_id)",
        f"""CREATE TABLE IF NOT EXISTS web_login_attempts (
            id        {ident},
            username  TEXT NOT NULL,
            client_ip TEXT NOT NULL,
            at        TEXT NOT NULL,
            ok        INTEGER NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS web_login_attempts_user ON web_login_attempts (username, at)",
        "CREATE INDEX IF NOT EXISTS web_login_attempts_ip ON web_login_attempts (client_ip, at)",
        # Sign-in counters, reserved before a password is checked (hub/web/limits.py).
        """CREATE TABLE IF NOT EXISTS web_login_limits (
            scope        TEXT NOT NULL,
            username     TEXT NOT NULL,
            client_ip    TEXT NOT NULL,
            window_start TEXT NOT NULL,
            used         INTEGER NOT NULL,
            PRIMARY KEY (scope, username, client_ip)
        )""",
        """CREATE TABLE IF NOT EXISTS web_trusted_clients (
            token_hash   TEXT PRIMARY KEY,
            username     TEXT NOT NULL,
            failures     INTEGER NOT NULL DEFAULT 0,
            created_at   TEXT NOT NULL,
            last_used_at TEXT NOT NULL,
            expires_at   TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS web_trusted_clients_user ON web_trusted_clients (username)",
        """CREATE TABLE IF NOT EXISTS web_reviews (
            result_pk  BIGINT PRIMARY KEY,
            result_id  TEXT NOT NULL UNIQUE,
            state      TEXT NOT NULL,
            note       TEXT NOT NULL,
            username   TEXT NOT NULL,
            at         TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS web_reviews_state ON web_reviews (state, result_pk)",
        # Who works a result (hub/web/assignments.py): one operator per result; an exam assigns each frame.
        """CREATE TABLE IF NOT EXISTS web_assignments (
            result_pk   BIGINT PRIMARY KEY,
            result_id   TEXT NOT NULL UNIQUE,
            username    TEXT NOT NULL,
            assigned_by TEXT NOT NULL,
            at          TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS web_assignments_user ON web_assignments (username, result_pk)",
        f"""CREATE TABLE IF NOT EXISTS web_audit (
            id        {ident},
            at        TEXT NOT NULL,
            username  TEXT NOT NULL,
            action    TEXT NOT NULL,
            result_id TEXT,
            detail    TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS web_audit_result ON web_audit (result_id, id)",
        # Inbox filters are "newest first within a site / device"; the hub's own indexes cover label.
        "CREATE INDEX IF NOT EXISTS web_results_site_id ON results (site, id)",
        "CREATE INDEX IF NOT EXISTS web_results_device_id ON results (device_id, id)",
        "CREATE INDEX IF NOT EXISTS web_results_inconclusive_id ON results (inconclusive, id)",
        "CREATE INDEX IF NOT EXISTS web_results_exam ON results (exam_id, id)",  # the exam page
    ]
    # The audit log is append-only in the database itself, not just in the UI.
    if pg:
        statements += [
            """CREATE OR REPLACE FUNCTION web_audit_append_only() RETURNS trigger AS $$
               BEGIN RAISE EXCEPTION 'web_audit is append-only'; END $$ LANGUAGE plpgsql""",
            "DROP TRIGGER IF EXISTS web_audit_no_change ON web_audit",
            """CREATE TRIGGER web_audit_no_change BEFORE UPDATE OR DELETE ON web_audit
               FOR EACH ROW EXECUTE FUNCTION web_audit_append_only()""",
        ]
    else:
        statements += [
            """CREATE TRIGGER IF NOT EXISTS web_audit_no_update BEFORE UPDATE ON web_audit
               BEGIN SELECT RAISE(ABORT, 'web_audit is append-only'); END""",
            """CREATE TRIGGER IF NOT EXISTS web_audit_no_delete BEFORE DELETE ON web_audit
               BEGIN SELECT RAISE(ABORT, 'web_audit is append-only'); END""",
        ]
    return statements


class WebDb:
    """One connection behind a lock (like the hub store). Use :meth:`open`.

    A lost connection (PostgreSQL restarted, SQLite I/O error) is re-opened on a later use with a doubling
    wait (:class:`hub.store.Reconnector`); meanwhile every call raises WebDbError, which the console answers
    with 503."""

    def __init__(self, connection: Any, *, pg: bool, target: str, reconnector: Reconnector | None = None) -> None:
        self._db = connection
        self.pg = pg
        self.target = target
        self._lock = threading.RLock()
        self._reconnector = reconnector

    def _usable(self) -> None:
        if self._reconnector is None or not self._reconnector.lost:
            return
        try:
            connection, _ = self._reconnector.reopen()
        except HubStoreError as exc:
            raise WebDbError(f"web console database: {exc}") from exc
        try:
            self._db.close()
        except self._errors():
            pass
        self._db = connection

    def _failed(self, exc: BaseException) -> None:
        if self._reconnector is not None and connection_lost(self._db, self.pg, exc):
            self._reconnector.mark_lost(exc)

    @classmethod
    def open(cls, target: str) -> WebDb:
        """Open (and create the hub's and the console's tables in) the hub database."""
        HubStore.open(target).close()  # the hub's own tables and migrations come first
        if is_dsn(target):
            import psycopg

            try:
                pg_conn = psycopg.connect(target, autocommit=True)
            except psycopg.Error as exc:
                raise WebDbError(f"web console: cannot connect to PostgreSQL ({exc})") from exc
            db = cls(pg_conn, pg=True, target="postgresql", reconnector=Reconnector(target, "postgresql"))
        else:
            try:
                conn = sqlite3.connect(Path(target), timeout=30, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
            except sqlite3.Error as exc:
                raise WebDbError(f"web console database {target}: cannot open ({exc})") from exc
            db = cls(conn, pg=False, target=target, reconnector=Reconnector(target, target))
        db.migrate()
        return db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _errors(self) -> tuple[type[BaseException], ...]:
        if self.pg:
            import psycopg

            return (psycopg.Error,)
        return (sqlite3.Error,)

    def sql(self, text: str) -> str:
        return text.replace("?", "%s") if self.pg else text

    def query(self, text: str, params: Iterable[Any] = ()) -> list[tuple]:
        with self._lock:
            self._usable()
            try:
                return list(self._db.execute(self.sql(text), tuple(params)).fetchall())
            except self._errors() as exc:
                self._failed(exc)
                raise WebDbError(f"web console database: read failed ({exc})") from exc

    def one(self, text: str, params: Iterable[Any] = ()) -> tuple | None:
        rows = self.query(text, params)
        return rows[0] if rows else None

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._lock:
            self._usable()
            try:
                if self.pg:
                    with self._db.transaction():
                        yield Tx(self, self._db.cursor())
                else:
                    self._db.execute("BEGIN IMMEDIATE")
                    try:
                        yield Tx(self, self._db)
                    except BaseException:
                        self._db.execute("ROLLBACK")
                        raise
                    self._db.execute("COMMIT")
            except self._errors() as exc:
                self._failed(exc)
                try:
                    if not self.pg and self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the connection is broken as well: re-opened on the next use
                raise WebDbError(f"web console database: write failed ({exc})") from exc

    def migrate(self) -> None:
        with self.transaction() as tx:
            if self.pg:  # consoles starting together would deadlock on the DDL (SQLite: BEGIN IMMEDIATE)
                tx.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
            for statement in _schema(self.pg):
                tx.execute(statement)
            row = tx.execute("SELECT value FROM web_meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                tx.execute("INSERT INTO web_meta (key, value) VALUES ('schema_version', ?)", (str(WEB_SCHEMA_VERSION),))
            elif int(row[0]) > WEB_SCHEMA_VERSION:
                raise WebDbError(f"web console schema {row[0]} is newer than this software ({WEB_SCHEMA_VERSION})")
            elif int(row[0]) < WEB_SCHEMA_VERSION:  # the new tables were created above
                tx.execute("UPDATE web_meta SET value = ? WHERE key = 'schema_version'", (str(WEB_SCHEMA_VERSION),))
        if not self.pg:
            with self._lock:
                self._db.execute("PRAGMA optimize")

    def ensure_index(self, statement: str) -> None:
        """``CREATE INDEX IF NOT EXISTS`` under the migration lock (consoles starting together)."""
        with self.transaction() as tx:
            if self.pg:
                tx.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
            tx.execute(statement)

    def columns(self, table: str) -> set[str]:
        """The table's column names as the database has them now (the hub may add columns over time)."""
        if not table.isidentifier():
            raise ValueError(f"not a table name: {table!r}")
        if self.pg:
            rows = self.query("SELECT column_name FROM information_schema.columns WHERE table_name = ? AND table_schema = current_schema()", (table,))
        else:
            rows = [(r[1],) for r in self.query(f"PRAGMA table_info({table})")]
        return {str(r[0]) for r in rows}

    def meta(self, key: str) -> str | None:
        row = self.one("SELECT value FROM web_meta WHERE key = ?", (key,))
        return row[0] if row else None

    def set_meta_once(self, key: str, value: str) -> str:
        """Store ``value`` unless the key exists; return the stored value (shared by every process)."""
        with self.transaction() as tx:
            tx.execute("INSERT INTO web_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", (key, value))
            return str(tx.execute("SELECT value FROM web_meta WHERE key = ?", (key,)).fetchone()[0])


class Tx:
    """A cursor inside :meth:`WebDb.transaction` that rewrites placeholders."""

    def __init__(self, db: WebDb, cursor: Any) -> None:
        self._db = db
        self._cursor = cursor

    def execute(self, text: str, params: Sequence[Any] = ()) -> Any:
        return self._cursor.execute(self._db.sql(text), tuple(params))
