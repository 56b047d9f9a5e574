"""Assignment of results to an operator: who works a result (or every frame of an exam).

One assignee per result in ``web_assignments``; assigning again replaces it, unassigning deletes the row.
Every change appends a ``assign`` / ``unassign`` entry to the audit log in the same transaction (who did
it, to whom, and who had it before). Only an enabled operator or admin can be assigned: a viewer cannot
review, so a result assigned to one would wait for nobody.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from device.clock import utc_now_iso
from device.errors import SonopiError
from hub.web.accounts import Accounts
from hub.web.db import WebDb
from hub.web.reviews import Reviews

log = logging.getLogger(__name__)


class AssignmentError(SonopiError):
    code = "assignment_error"


@dataclass(frozen=True)
class Assignment:
    result_id: str
    username: str
    assigned_by: str
    at: str


class Assignments:
    def __init__(self, db: WebDb, accounts: Accounts) -> None:
        self._db = db
        self._accounts = accounts

    def assignment(self, result_id: str) -> Assignment | None:
        row = self._db.one("SELECT result_id, username, assigned_by, at FROM web_assignments WHERE result_id = ?", (result_id,))
        return Assignment(*row) if row else None

    def assignable(self) -> list[str]:
        """Usernames a result can be assigned to: enabled operators and admins."""
        return [u.username for u in self._accounts.users() if not u.disabled and u.can("operator")]

    def assign(self, results: Sequence[tuple[int, str]], *, to: str, by: str, scope: str = "") -> None:
        """Assign each result to ``to`` (replacing any assignee); one audit entry per result."""
        target = self._accounts.user(to) if to else None
        if target is None:
            raise AssignmentError(f"cannot assign to {to!r}: no such user")
        if target.disabled or not target.can("operator"):
            raise AssignmentError(f"cannot assign to {to!r}: only an enabled operator or admin can review")
        if not results:
            raise AssignmentError("no result selected")
        now = utc_now_iso()
        with self._db.transaction() as tx:
            for pk, result_id in results:
                before = self._current(tx, pk)
                tx.execute(
                    "INSERT INTO web_assignments (result_pk, result_id, username, assigned_by, at) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (result_pk) DO UPDATE SET username = excluded.username, "
                    "assigned_by = excluded.assigned_by, at = excluded.at",
                    (pk, result_id, target.username, by, now),
                )
                detail = f"to {target.username}" + (f" (was {before})" if before else "") + (f" ({scope})" if scope else "")
                Reviews.append(tx, now, by, "assign", result_id, detail)
        log.info("%d result(s) assigned to %s by %s%s", len(results), target.username, by, f" ({scope})" if scope else "")

    def unassign(self, results: Sequence[tuple[int, str]], *, by: str, scope: str = "") -> int:
        """Remove the assignee of each result that has one; returns how many had one."""
        now = utc_now_iso()
        done = 0
        with self._db.transaction() as tx:
            for pk, result_id in results:
                before = self._current(tx, pk)
                if before is None:
                    continue
                tx.execute("DELETE FROM web_assignments WHERE result_pk = ?", (pk,))
                Reviews.append(tx, now, by, "unassign", result_id, f"was {before}" + (f" ({scope})" if scope else ""))
                done += 1
        log.info("%d result(s) unassigned by %s", done, by)
        return done

    @staticmethod
    def _current(tx, pk: int) -> str | None:
        row = tx.execute("SELECT username FROM web_assignments WHERE result_pk = ?", (pk,)).fetchone()
        return str(row[0]) if row else None
