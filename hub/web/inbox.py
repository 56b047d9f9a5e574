"""The inbox query: results newest first, filtered, keyset-paged by the hub's ``id``, with review state.

``hub/store.py``'s ``results()`` pages with OFFSET and has no review state; the console needs
``id < cursor`` paging (constant time at any depth) and a join with ``web_reviews``, so the SQL lives here.
The thumbnail column is never read by the inbox.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlencode

from hub.web.db import WebDb

PAGE_SIZE = 50
COUNT_CAP = 10_000
REVIEW_FILTERS = ("unreviewed", "reviewed", "follow_up")
SUSPICIOUS_LABELS = ("malignant",)
KNOWN_LABELS = ("benign", "malignant", "normal")  # the shipped model's classes, offered before any result

_COLUMNS = (
    "r.id, r.result_id, r.site, r.device_id, r.created_at, r.received_at, r.historical, r.exam_id, r.patient_ref, "
    "r.side, r.model_version, r.label, r.inconclusive, r.probabilities, w.state"
)


class FilterError(ValueError):
    """A query string value the inbox cannot use."""


@dataclass(frozen=True)
class Filters:
    site: str | None = None
    device_id: str | None = None
    label: str | None = None  # a class name, or "inconclusive"
    review: str | None = None  # unreviewed | reviewed | follow_up
    date_from: date | None = None  # on the device's created_at (UTC), inclusive
    date_to: date | None = None  # inclusive

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Filters:
        def text(name: str) -> str | None:
            value = (query.get(name) or "").strip()
            if len(value) > 64:
                raise FilterError(f"{name} is too long")
            return value or None

        review = text("review")
        if review is not None and review not in REVIEW_FILTERS:
            raise FilterError(f"unknown review state {review!r}")
        return cls(site=text("site"), device_id=text("device"), label=text("label"), review=review,
                   date_from=_date(text("from"), "from"), date_to=_date(text("to"), "to"))

    def query(self) -> dict[str, str]:
        """The filter as query parameters (never a patient reference)."""
        pairs = {"site": self.site, "device": self.device_id, "label": self.label, "review": self.review,
                 "from": self.date_from.isoformat() if self.date_from else None,
                 "to": self.date_to.isoformat() if self.date_to else None}
        return {k: v for k, v in pairs.items() if v}

    def urlencode(self, **extra: Any) -> str:
        return urlencode({**self.query(), **{k: v for k, v in extra.items() if v is not None}})

    @property
    def active(self) -> bool:
        return bool(self.query())

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for clause, value in (("r.site = ?", self.site), ("r.device_id = ?", self.device_id)):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        if self.label == "inconclusive":
            clauses.append("r.inconclusive = 1")
        elif self.label is not None:
            clauses.append("r.label = ?")
            params.append(self.label)
        if self.date_from is not None:
            clauses.append("r.created_at >= ?")
            params.append(self.date_from.isoformat())
        if self.date_to is not None:
            clauses.append("r.created_at < ?")
            params.append((self.date_to + timedelta(days=1)).isoformat())
        if self.review == "unreviewed":
            clauses.append("w.result_pk IS NULL")  # on the join key: PostgreSQL plans it as an anti-join
        elif self.review is not None:
            clauses.append("w.state = ?")
            params.append(self.review)
        return " AND ".join(clauses), params


def _date(value: str | None, name: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise FilterError(f"{name} is not a date (YYYY-MM-DD)") from exc


@dataclass(frozen=True)
class InboxRow:
    id: int
    result_id: str
    site: str
    device_id: str
    created_at: str
    received_at: str
    historical: bool
    exam_id: str | None
    patient_ref: str | None
    side: str | None
    model_version: str
    label: str | None
    inconclusive: bool
    probabilities: dict[str, float]
    review: str  # unreviewed | reviewed | follow_up

    @property
    def outcome(self) -> str:
        return "inconclusive" if self.inconclusive else (self.label or "inconclusive")

    @property
    def suspicious(self) -> bool:
        return self.inconclusive or self.label in SUSPICIOUS_LABELS

    @property
    def top_probability(self) -> float:
        return max(self.probabilities.values(), default=0.0)

    @property
    def malignant_probability(self) -> float | None:
        return self.probabilities.get("malignant")


def _row(row: tuple) -> InboxRow:
    return InboxRow(
        id=int(row[0]), result_id=row[1], site=row[2], device_id=row[3], created_at=row[4], received_at=row[5],
        historical=bool(row[6]), exam_id=row[7], patient_ref=row[8], side=row[9], model_version=row[10],
        label=row[11], inconclusive=bool(row[12]), probabilities=json.loads(row[13]), review=row[14] or "unreviewed",
    )


@dataclass(frozen=True)
class Page:
    rows: list[InboxRow]
    older: int | None  # cursor for the next (older) page
    newer: int | None  # cursor for the previous (newer) page, None on the newest page
    total: int  # capped at COUNT_CAP + 1
    newest_id: int  # the highest id on this page or the cursor it started from (for live updates)

    @property
    def total_text(self) -> str:
        return f"more than {COUNT_CAP:,}" if self.total > COUNT_CAP else f"{self.total:,}"


class Inbox:
    def __init__(self, db: WebDb) -> None:
        self._db = db

    def _select(self, filters: Filters, extra: str, params: list[Any], order: str, limit: int | None) -> list[tuple]:
        where, where_params = filters.where()
        clauses = " AND ".join(c for c in (where, extra) if c)
        sql = (f"SELECT {_COLUMNS} FROM results r LEFT JOIN web_reviews w ON w.result_pk = r.id"
               f"{' WHERE ' + clauses if clauses else ''} ORDER BY r.id {order}")
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return self._db.query(sql, [*where_params, *params])

    def page(self, filters: Filters, *, before: int | None = None, after: int | None = None,
             size: int = PAGE_SIZE) -> Page:
        """One page, newest first. ``before``: rows older than that id; ``after``: rows newer (previous page)."""
        if after is not None:
            raw = self._select(filters, "r.id > ?", [after], "ASC", size + 1)
            has_newer = len(raw) > size
            rows = [_row(r) for r in reversed(raw[:size])]
            older = rows[-1].id if rows else None
            newer = rows[0].id if rows and has_newer else None
        else:
            extra, params = ("r.id < ?", [before]) if before is not None else ("", [])
            raw = self._select(filters, extra, params, "DESC", size + 1)
            rows = [_row(r) for r in raw[:size]]
            older = rows[-1].id if len(raw) > size else None
            newer = rows[0].id if before is not None and rows else None
        newest = rows[0].id if rows else (after or 0)
        if before is None and after is None and not rows:
            newest = self.max_id()
        return Page(rows=rows, older=older, newer=newer, total=self.count(filters), newest_id=newest)

    def since(self, filters: Filters, after_id: int, limit: int = PAGE_SIZE) -> list[InboxRow]:
        """Rows newer than ``after_id`` matching the filter, oldest first (live updates)."""
        return [_row(r) for r in self._select(filters, "r.id > ?", [after_id], "ASC", limit)]

    def max_id(self) -> int:
        row = self._db.one("SELECT MAX(id) FROM results")
        return int(row[0]) if row and row[0] is not None else 0

    def count(self, filters: Filters, cap: int = COUNT_CAP) -> int:
        where, params = filters.where()
        join = " LEFT JOIN web_reviews w ON w.result_pk = r.id" if filters.review else ""
        inner = f"SELECT 1 FROM results r{join}{' WHERE ' + where if where else ''} LIMIT {int(cap) + 1}"
        row = self._db.one(f"SELECT COUNT(*) FROM ({inner}) AS capped", params)
        return int(row[0]) if row else 0

    def all(self, filters: Filters, batch: int = 1000) -> Iterator[InboxRow]:
        """Every matching row, newest first, fetched in keyset batches (CSV export)."""
        before: int | None = None
        while True:
            extra, params = ("r.id < ?", [before]) if before is not None else ("", [])
            rows = [_row(r) for r in self._select(filters, extra, params, "DESC", batch)]
            yield from rows
            if len(rows) < batch:
                return
            before = rows[-1].id

    def choices(self) -> dict[str, list[str]]:
        """Values for the filter drop-downs: sites and devices known to the hub, labels seen."""
        sites = [r[0] for r in self._db.query("SELECT DISTINCT site FROM devices ORDER BY site")]
        devices = [r[0] for r in self._db.query("SELECT DISTINCT device_id FROM devices ORDER BY device_id")]
        return {"sites": sites, "devices": devices, "labels": self.labels()}

    def labels(self) -> list[str]:
        """Labels seen (index skip: one probe per label, not a scan) and the shipped model's classes."""
        labels: list[str] = []
        last = ""
        while len(labels) < 50:
            row = self._db.one("SELECT MIN(label) FROM results WHERE label > ?", (last,))
            if row is None or row[0] is None:
                break
            labels.append(row[0])
            last = row[0]
        return sorted(set(labels) | set(KNOWN_LABELS))


def with_cursor(filters: Filters, **cursor: int | None) -> str:
    return filters.urlencode(**cursor)


def clear(filters: Filters, name: str) -> Filters:
    return replace(filters, **{name: None})


CSV_FIELDS = ("result_id", "created_at", "received_at", "delivered_late", "site", "device_id", "exam_id",
              "patient_ref", "side", "outcome", "label", "inconclusive", "probabilities", "model_version",
              "review_state")


def csv_record(row: InboxRow) -> dict[str, Any]:
    return {
        "result_id": row.result_id, "created_at": row.created_at, "received_at": row.received_at,
        "delivered_late": int(row.historical), "site": row.site, "device_id": row.device_id,
        "exam_id": row.exam_id or "", "patient_ref": row.patient_ref or "", "side": row.side or "",
        "outcome": row.outcome, "label": row.label or "", "inconclusive": int(row.inconclusive),
        "probabilities": json.dumps(row.probabilities, sort_keys=True), "model_version": row.model_version,
        "review_state": row.review,
    }
