"""Review state per result and the append-only audit log (who, when, what).

A review sets the result's current state (``reviewed`` or ``follow_up``) and appends an audit entry in
the same transaction. The audit table has database triggers that refuse UPDATE and DELETE, and no page
edits it. Audit details never contain patient references.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from device.clock import utc_now_iso
from device.errors import SonopiError
from hub.web.db import WebDb

log = logging.getLogger(__name__)


class ReviewState(StrEnum):
    """A result's review state; the two set by a reviewer are stored in ``web_reviews.state`` and the audit action."""

    UNREVIEWED = "unreviewed"  # no review row
    REVIEWED = "reviewed"
    FOLLOW_UP = "follow_up"


REVIEW_STATES = (ReviewState.REVIEWED, ReviewState.FOLLOW_UP)  # what a reviewer sets
STATE_LABELS = {ReviewState.UNREVIEWED: "Unreviewed", ReviewState.REVIEWED: "Reviewed", ReviewState.FOLLOW_UP: "Needs follow-up"}
MAX_NOTE = 2000


class ReviewError(SonopiError):
    code = "review_error"


@dataclass(frozen=True)
class Review:
    result_id: str
    state: str
    note: str
    username: str
    at: str


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: str
    username: str
    action: str
    result_id: str | None
    detail: str


class Reviews:
    def __init__(self, db: WebDb) -> None:
        self._db = db

    def review(self, result_id: str) -> Review | None:
        row = self._db.one("SELECT result_id, state, note, username, at FROM web_reviews WHERE result_id = ?", (result_id,))
        return Review(*row) if row else None

    def set_review(self, *, result_pk: int, result_id: str, state: str, note: str, username: str) -> Review:
        return self.set_reviews([(result_pk, result_id)], state=state, note=note, username=username)[0]

    def set_reviews(self, results: list[tuple[int, str]], *, state: str, note: str, username: str, scope: str = "") -> list[Review]:
        """One review (state and note) for several results (an exam, a selection), in one transaction; each
        result gets its own audit entry (``scope`` says how it was reviewed: "exam", "bulk of 4")."""
        if state not in REVIEW_STATES:
            raise ReviewError(f"unknown review state {state!r}")
        if not results:
            raise ReviewError("no result selected")
        text = note.strip()
        if len(text) > MAX_NOTE:
            raise ReviewError(f"note too long ({len(text)} > {MAX_NOTE} characters)")
        now = utc_now_iso()
        detail = f"({scope}) {text}".strip() if scope else text
        with self._db.transaction() as tx:
            for result_pk, result_id in results:
                tx.execute(
                    "INSERT INTO web_reviews (result_pk, result_id, state, note, username, at) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (result_pk) DO UPDATE SET state = excluded.state, "
                    "note = excluded.note, username = excluded.username, at = excluded.at",
                    (result_pk, result_id, state, text, username, now),
                )
                self.append(tx, now, username, f"review:{state}", result_id, detail)
        log.info("%d result(s) marked %s by %s%s", len(results), state, username, f" ({scope})" if scope else "")
        return [Review(result_id, state, text, username, now) for _, result_id in results]

    def audit(self, action: str, username: str, detail: str = "", result_id: str | None = None) -> None:
        with self._db.transaction() as tx:
            self.append(tx, utc_now_iso(), username, action, result_id, detail)

    @staticmethod
    def append(tx, at: str, username: str, action: str, result_id: str | None, detail: str) -> None:
        tx.execute(
            "INSERT INTO web_audit (at, username, action, result_id, detail) VALUES (?, ?, ?, ?, ?)",
            (at, username, action, result_id, detail[:MAX_NOTE]),
        )

    def entries(self, *, result_id: str | None = None, before_id: int | None = None, limit: int = 100) -> list[AuditEntry]:
        clauses: list[str] = []
        params: list[str | int] = []
        if result_id is not None:
            clauses.append("result_id = ?")
            params.append(result_id)
        if before_id is not None:
            clauses.append("id < ?")
            params.append(before_id)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self._db.query(
            f"SELECT id, at, username, action, result_id, detail FROM web_audit{where} ORDER BY id DESC LIMIT ?",
            [*params, int(limit)],
        )
        return [AuditEntry(int(r[0]), r[1], r[2], r[3], r[4], r[5]) for r in rows]
