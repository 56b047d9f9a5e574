"""The inbox query: results filtered, ordered as a queue, keyset-paged, with review state.

``hub/store.py``'s ``results()`` pages with OFFSET and has no review state; the console needs keyset
paging (constant time at any depth), a join with ``web_reviews`` and orderings the store does not offer,
so the SQL lives here. The thumbnail column is never read by the inbox.

Orderings (:class:`Sort`):

- ``attention`` (the inbox's default): unreviewed suspicious results first, then the other unreviewed
  ones, then "needs follow-up", then reviewed; within each, p(malignant) highest first, then the oldest
  first (it has waited longest), then hub id;
- ``risk``: p(malignant) highest first, then oldest first;
- ``newest``: hub arrival order, newest first.

Paging is keyset for every ordering: ``before=<id>`` means "the rows after that row in this ordering"
(older, for ``newest``), ``after=<id>`` the rows ahead of it. The row's current sort key is looked up,
so a cursor stays valid while reviews change what is ahead of it.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from functools import cached_property
from typing import Any
from urllib.parse import urlencode

from device.link.contract import LesionRecord, LesionRecordError
from hub.web.corrections_view import NOT_VOIDED_SQL
from hub.web.db import WebDb
from hub.web.reviews import ReviewState
from hub.web.risk import LATE_AFTER_S, Assessment, assess, delay_s, is_late

log = logging.getLogger(__name__)

PAGE_SIZE = 50
WALK_AFTER = 1000  # a filter leaving at least this many rows in an attention rank: walk the risk index
COUNT_CAP = 10_000
REVIEW_FILTERS = tuple(ReviewState)
PATIENT_FILTERS = ("missing",)
ASSIGNED_FILTERS = ("me", "nobody")  # "me": the signed-in user (resolved per request, never a name in the URL)
KNOWN_LABELS = ("benign", "malignant", "normal")  # the shipped model's classes, offered before any result


class FilterError(ValueError):
    """A query string value the inbox cannot use."""


class Sort(enum.Enum):
    ATTENTION = "attention"
    RISK = "risk"
    NEWEST = "newest"

    @property
    def wording(self) -> str:
        return {"attention": "needs attention first", "risk": "highest p(malignant) first", "newest": "newest first"}[self.value]

    @classmethod
    def parse(cls, value: str | None) -> Sort:
        if not value:
            return cls.ATTENTION
        try:
            return cls(value)
        except ValueError as exc:
            raise FilterError(f"unknown sort {value!r}") from exc


@dataclass(frozen=True)
class Filters:
    site: str | None = None
    device_id: str | None = None
    label: str | None = None  # a class name, or "inconclusive"
    review: str | None = None  # unreviewed | reviewed | follow_up
    date_from: date | None = None  # on the device's created_at (UTC), inclusive
    date_to: date | None = None  # inclusive
    patient: str | None = None  # "missing": only results sent without a patient reference
    assigned: str | None = None  # "me" | "nobody"
    me: str | None = None  # the signed-in user's name, for assigned=me (not part of the URL)
    voided: bool = False  # include results voided on the device (exam, patient, one result); the queue leaves them out

    @classmethod
    def from_query(cls, query: Mapping[str, str], me: str | None = None) -> Filters:
        def text(name: str) -> str | None:
            value = (query.get(name) or "").strip()
            if len(value) > 64:
                raise FilterError(f"{name} is too long")
            return value or None

        review, patient, assigned = text("review"), text("patient"), text("assigned")
        if assigned is not None and assigned not in ASSIGNED_FILTERS:
            raise FilterError(f"unknown assignment filter {assigned!r} (me or nobody)")
        if assigned == "me" and not me:
            raise FilterError("assigned=me needs a signed-in user")
        if review is not None and review not in REVIEW_FILTERS:
            raise FilterError(f"unknown review state {review!r}")
        if patient is not None and patient not in PATIENT_FILTERS:
            raise FilterError(f"unknown patient filter {patient!r}")
        return cls(
            site=text("site"),
            device_id=text("device"),
            label=text("label"),
            review=review,
            date_from=_date(text("from"), "from"),
            date_to=_date(text("to"), "to"),
            patient=patient,
            assigned=assigned,
            me=me if assigned == "me" else None,
        )

    def query(self) -> dict[str, str]:
        """The filter as query parameters (never a patient reference)."""
        pairs = {
            "site": self.site,
            "device": self.device_id,
            "label": self.label,
            "review": self.review,
            "from": self.date_from.isoformat() if self.date_from else None,
            "to": self.date_to.isoformat() if self.date_to else None,
            "patient": self.patient,
            "assigned": self.assigned,
        }
        return {k: v for k, v in pairs.items() if v}

    def urlencode(self, **extra: Any) -> str:
        return urlencode({**self.query(), **{k: v for k, v in extra.items() if v is not None}})

    @property
    def active(self) -> bool:
        return bool(self.query())

    @property
    def selective(self) -> bool:
        """Filters on a column of ``results`` (which an index of its own may serve), not only on review."""
        return bool(self.site or self.device_id or self.label or self.date_from or self.date_to or self.patient or self.assigned == "me")

    def where(self, walk: str = "", label_walk: str | None = None) -> tuple[str, list[Any]]:
        """The filter's SQL. ``walk="+"`` (SQLite) keeps the planner off the filter columns' indexes, so a risk
        ordering walks its own index in order and stops after a page instead of sorting every match
        (``label_walk``: the same for the label, when it differs)."""
        clauses: list[str] = []
        params: list[Any] = []
        w = walk
        for clause, value in ((f"{w}r.site = ?", self.site), (f"{w}r.device_id = ?", self.device_id)):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        if self.label == "inconclusive":
            clauses.append(f"{w}r.inconclusive = 1")
        elif self.label is not None:
            clauses.append(f"{w if label_walk is None else label_walk}r.label = ?")
            params.append(self.label)
        if self.date_from is not None:
            clauses.append(f"{w}r.created_at >= ?")
            params.append(self.date_from.isoformat())
        if self.date_to is not None:
            clauses.append(f"{w}r.created_at < ?")
            params.append((self.date_to + timedelta(days=1)).isoformat())
        if self.review == ReviewState.UNREVIEWED:
            clauses.append("w.result_pk IS NULL")  # on the join key: PostgreSQL plans it as an anti-join
        elif self.review is not None:
            clauses.append("w.state = ?")
            params.append(self.review)
        if self.patient == "missing":
            clauses.append("(r.patient_ref IS NULL OR r.patient_ref = '')")
        if self.assigned == "me":
            clauses.append("a.username = ?")
            params.append(self.me)
        elif self.assigned == "nobody":
            clauses.append("a.result_pk IS NULL")
        if not self.voided:
            clauses.append(NOT_VOIDED_SQL)  # hub/web/corrections_view.py
        return " AND ".join(clauses), params


@dataclass(frozen=True)
class Queue:
    """What the operator is working through: a filter and an ordering (both safe to put in a URL)."""

    filters: Filters = Filters()
    sort: Sort = Sort.ATTENTION

    @classmethod
    def from_query(cls, query: Mapping[str, str], me: str | None = None) -> Queue:
        return cls(Filters.from_query(query, me), Sort.parse(query.get("sort")))

    def query(self) -> dict[str, str]:
        extra = {} if self.sort is Sort.ATTENTION else {"sort": self.sort.value}
        return {**self.filters.query(), **extra}

    def urlencode(self, **extra: Any) -> str:
        return urlencode({**self.query(), **{k: v for k, v in extra.items() if v is not None}})


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
    thresholds: dict[str, float]
    review: str  # unreviewed | reviewed | follow_up
    reviewer: str | None = None
    review_note: str | None = None
    reviewed_at: str | None = None
    category: str | None = None  # contract v2, as stored
    p_malignant_sent: float | None = None  # contract v2, as stored
    mode: str | None = None  # contract v2, as stored
    clock: int | None = None  # contract v2, optional: the lesion's clock position
    age: int | None = None  # contract v2, optional: the patient's age
    assignee: str | None = None  # the operator it is assigned to (web_assignments)
    lesion: LesionRecord | None = None  # contract v3, optional: the lesion outline (its size is listed per frame)

    @property
    def outcome(self) -> str:
        return "inconclusive" if self.inconclusive else (self.label or "inconclusive")

    @cached_property
    def assessment(self) -> Assessment:
        return assess(
            probabilities=self.probabilities,
            thresholds=self.thresholds,
            label=self.label,
            inconclusive=self.inconclusive,
            category=self.category,
            p_malignant=self.p_malignant_sent,
            mode=self.mode,
        )

    @property
    def needs_attention(self) -> bool:
        """Highlighted in a list: suspicious, or inconclusive (a rescan). Not "suspicious": that is the category alone
        (``assessment.suspicious``), as the exam summary and the FHIR report count it."""
        return self.inconclusive or self.assessment.suspicious

    @property
    def top_probability(self) -> float:
        return max(self.probabilities.values(), default=0.0)

    @property
    def malignant_probability(self) -> float | None:
        return self.assessment.p_malignant

    @property
    def rank(self) -> int:
        """The attention ordering's first key (the same rule as :attr:`Dialect.rank` in SQL)."""
        if self.review == ReviewState.UNREVIEWED:
            return 0 if self.assessment.suspicious else 1
        return 2 if self.review == ReviewState.FOLLOW_UP else 3

    @property
    def late(self) -> bool:
        return is_late(self.created_at, self.received_at)

    @property
    def has_patient(self) -> bool:
        return bool(self.patient_ref)


class Dialect:
    """The SQL that differs between SQLite and PostgreSQL, and whether the v2 columns exist."""

    def __init__(self, pg: bool, columns: set[str]) -> None:
        self.pg = pg
        self.v2 = {name for name in V2_COLUMNS if name in columns}

    def json_number(self, column: str, key: str) -> str:
        if self.pg:
            return f"(({column})::jsonb ->> '{key}')::float8"
        return f"json_extract({column}, '$.{key}')"

    def v2_column(self, name: str) -> str:
        return f"r.{name}" if name in self.v2 else "NULL"

    def risk_key(self, prefix: str = "r.") -> str:
        """p(malignant), -1 when unknown: the risk orderings' first key (and the risk index's expression)."""
        derived = self.json_number(f"{prefix}probabilities", "malignant")
        pm = f"COALESCE({prefix}p_malignant, {derived})" if "p_malignant" in self.v2 else derived
        return f"COALESCE({pm}, -1.0)"

    def risk_indexes(self) -> list[str]:
        """Walked in order by the attention and risk orderings: every result, the suspicious ones and the others
        (partial indexes, so finding the unreviewed suspicious ones never walks the others), also by label.
        The names
        differ per schema because the expressions do."""
        v2 = "_v2" if self.v2 else ""
        key = f"{self.risk_key('')} DESC, created_at, id"
        return [
            f"CREATE INDEX IF NOT EXISTS web_results_risk{v2} ON results ({key})",
            (f"CREATE INDEX IF NOT EXISTS web_results_suspicious{v2} ON results ({key}) WHERE {self.suspicious_at('')}"),
            (
                f"CREATE INDEX IF NOT EXISTS web_results_suspicious_label{v2} ON results (label, {key}) WHERE {self.suspicious_at('')}"
            ),  # the label filter
            (
                f"CREATE INDEX IF NOT EXISTS web_results_suspicious_age{v2} ON results (created_at, id) WHERE {self.suspicious_at('')}"
            ),  # the escalation list: oldest first
            f"CREATE INDEX IF NOT EXISTS web_results_calm{v2} ON results ({key}) WHERE {self.calm_at('')}",
            (f"CREATE INDEX IF NOT EXISTS web_results_calm_label{v2} ON results (label, {key}) WHERE {self.calm_at('')}"),
        ]

    def calm_at(self, prefix: str) -> str:
        """Not suspicious (NULL, when neither label nor threshold says, counts as not suspicious)."""
        return f"NOT COALESCE({self.suspicious_at(prefix)}, {self.false})"

    @property
    def false(self) -> str:
        return "FALSE" if self.pg else "0"

    def segment(self, rank: int | None) -> str:
        """The rows of one attention rank (the CASE in :meth:`columns`), written so an index can serve it."""
        return {
            None: "",
            0: f"w.result_pk IS NULL AND {self.suspicious}",  # as the partial indexes' WHERE
            1: f"w.result_pk IS NULL AND {self.calm_at('r.')}",
            2: "w.state = 'follow_up'",
            3: "w.state <> 'follow_up'",
        }[rank]

    @property
    def suspicious(self) -> str:
        return self.suspicious_at("r.")

    def suspicious_at(self, prefix: str) -> str:
        p = prefix
        v1 = (
            f"({p}inconclusive = 0 AND ({p}label = 'malignant' OR {self.json_number(f'{p}probabilities', 'malignant')}"
            f" >= {self.json_number(f'{p}thresholds', 'malignant')}))"
        )
        if "category" in self.v2:
            return f"({p}category = 'suspicious' OR ({p}category IS NULL AND {v1}))"
        return v1

    @property
    def rank(self) -> str:
        return (
            f"CASE WHEN w.result_pk IS NULL AND {self.suspicious} THEN 0 WHEN w.result_pk IS NULL THEN 1 WHEN w.state = 'follow_up' THEN 2 ELSE 3 END"
        )

    def columns(self) -> str:
        """The InboxRow's columns (_ROW_COLUMNS, a v2 column NULL when the database lacks it), then the sort keys."""
        sql = [f"{self.v2_column(name)} AS v2_{name}" if expression is None else expression for expression, name, _, _ in _ROW_COLUMNS]
        return ", ".join([*sql, f"{self.rank} AS k_rank", f"{self.risk_key()} AS k_pm"])


def _int_or_none(value: Any) -> int | None:
    return int(value) if value is not None else None


def _float_or_none(value: Any) -> float | None:
    return float(value) if value is not None else None


def _lesion_or_none(value: Any) -> LesionRecord | None:
    """The stored outline, validated as hub/store.py reads it (LesionRecordError names the field; :func:`_row` catches
    it: a damaged row must not take the whole queue down)."""
    return LesionRecord.from_text(value, "stored lesion") if value is not None else None


# The columns of Dialect.columns() that make an InboxRow, in select order: (SQL, column name, InboxRow field,
# conversion of the value read); the reader (_row) and V2_COLUMNS are derived from this one list. SQL None: a contract
# v2 or v3 result column (nullable, and absent from an older database: then read as NULL).
_ROW_COLUMNS: tuple[tuple[str | None, str, str, Callable[[Any], Any] | None], ...] = (
    ("r.id", "id", "id", int),
    ("r.result_id", "result_id", "result_id", None),
    ("r.site", "site", "site", None),
    ("r.device_id", "device_id", "device_id", None),
    ("r.created_at", "created_at", "created_at", None),
    ("r.received_at", "received_at", "received_at", None),
    ("r.historical", "historical", "historical", bool),
    ("r.exam_id", "exam_id", "exam_id", None),
    ("r.patient_ref", "patient_ref", "patient_ref", None),
    ("r.side", "side", "side", None),
    ("r.model_version", "model_version", "model_version", None),
    ("r.label", "label", "label", None),
    ("r.inconclusive", "inconclusive", "inconclusive", bool),
    ("r.probabilities", "probabilities", "probabilities", json.loads),
    ("r.thresholds", "thresholds", "thresholds", json.loads),
    ("w.state AS review_state", "review_state", "review", lambda state: state or ReviewState.UNREVIEWED),
    ("w.username AS reviewer", "reviewer", "reviewer", None),
    ("w.note AS review_note", "review_note", "review_note", None),
    ("w.at AS reviewed_at", "reviewed_at", "reviewed_at", None),
    (None, "category", "category", None),
    (None, "p_malignant", "p_malignant_sent", _float_or_none),
    (None, "mode", "mode", None),
    (None, "clock", "clock", _int_or_none),
    (None, "age", "age", _int_or_none),
    ("a.username AS assignee", "assignee", "assignee", None),
    (None, "lesion", "lesion", _lesion_or_none),
)
V2_COLUMNS = tuple(name for expression, name, _, _ in _ROW_COLUMNS if expression is None)  # contract v2 (and v3) result columns
_ROW_FIELDS = len(_ROW_COLUMNS)  # the columns of Dialect.columns() that make an InboxRow (then k_rank, k_pm)

# Per ordering: (column of the inner select, ascending?) from most to least significant.
_KEYS: dict[Sort, tuple[tuple[str, bool], ...]] = {
    Sort.NEWEST: (("id", False),),
    Sort.RISK: (("k_pm", False), ("created_at", True), ("id", True)),
    Sort.ATTENTION: (("k_rank", True), ("k_pm", False), ("created_at", True), ("id", True)),
}


def _row(row: Sequence[Any]) -> InboxRow:
    values: dict[str, Any] = {}
    for (_, _, name, convert), value in zip(_ROW_COLUMNS, row, strict=True):
        try:
            values[name] = convert(value) if convert is not None else value
        except LesionRecordError as exc:  # listed without its outline; its own page refuses it (hub/store.py)
            log.error("inbox: result %s: the stored lesion outline is damaged (%s); listed without it", values.get("result_id"), exc)
            values[name] = None
    return InboxRow(**values)


def _order(sort: Sort, reverse: bool) -> str:
    return ", ".join(f"q.{col} {'ASC' if asc != reverse else 'DESC'}" for col, asc in _KEYS[sort])


# Within one attention rank (or the whole risk ordering): p(malignant) highest first, then oldest, then id.
_TAIL: tuple[tuple[str, bool], ...] = (("k_pm", False), ("created_at", True), ("id", True))
_RANKS: dict[Sort, tuple[int | None, ...]] = {Sort.ATTENTION: (0, 1, 2, 3), Sort.RISK: (None,)}


def _order_by(keys: tuple[tuple[str, bool], ...], reverse: bool) -> str:
    return ", ".join(f"q.{col} {'ASC' if asc != reverse else 'DESC'}" for col, asc in keys)


def _beyond_keys(keys: tuple[tuple[str, bool], ...], pivot: Sequence[Any], reverse: bool) -> tuple[str, list[Any]]:
    """Rows after ``pivot`` in the ordering ``keys`` (``reverse``: ahead of it). The leading bound on the first
    key lets the database seek in the index instead of filtering from its start."""
    ors: list[str] = []
    params: list[Any] = []
    for i, (col, asc) in enumerate(keys):
        equal = [f"q.{c} = ?" for c, _ in keys[:i]]
        op = ">" if asc != reverse else "<"
        ors.append("(" + " AND ".join([*equal, f"q.{col} {op} ?"]) + ")")
        params += [*pivot[:i], pivot[i]]
    first, asc = keys[0]
    bound = f"q.{first} {'>=' if asc != reverse else '<='} ?"
    return f"{bound} AND (" + " OR ".join(ors) + ")", [pivot[0], *params]


def _beyond(sort: Sort, pivot: Sequence[Any], reverse: bool) -> tuple[str, list[Any]]:
    return _beyond_keys(_KEYS[sort], pivot, reverse)


@dataclass(frozen=True)
class Page:
    rows: list[InboxRow]
    older: int | None  # cursor for the next page (the rows after it in the ordering)
    newer: int | None  # cursor for the previous page, None on the first page
    total: int  # capped at COUNT_CAP + 1
    newest_id: int  # the highest id seen (for live updates)
    full: bool = False  # there are more rows beyond this page

    @property
    def total_text(self) -> str:
        return f"more than {COUNT_CAP:,}" if self.total > COUNT_CAP else f"{self.total:,}"


class Inbox:
    def __init__(self, db: WebDb) -> None:
        self._db = db
        self.dialect = Dialect(db.pg, db.columns("results"))
        for statement in self.dialect.risk_indexes():
            db.ensure_index(statement)

    # --- the query ---------------------------------------------------------------------------------

    def _inner(self, filters: Filters, extra: str = "", walk: bool = False, by_label: bool = False) -> tuple[str, list[Any]]:
        plus = "+" if walk and not self._db.pg else ""
        where, params = filters.where(plus, "" if by_label else None)
        clauses = " AND ".join(c for c in (where, extra) if c)
        sql = (
            f"SELECT {self.dialect.columns()} FROM results r LEFT JOIN web_reviews w ON w.result_pk = r.id"
            " LEFT JOIN web_assignments a ON a.result_pk = r.id"
            f"{' WHERE ' + clauses if clauses else ''}"
        )
        return sql, params

    def _pivot(self, sort: Sort, result_pk: int) -> list[Any] | None:
        inner, params = self._inner(Filters(voided=True), "r.id = ?")
        cols = ", ".join(f"q.{c}" for c, _ in _KEYS[sort])
        row = self._db.one(f"SELECT {cols} FROM ({inner}) q", [*params, result_pk])
        return list(row) if row else None

    def _query(
        self,
        filters: Filters,
        extra: str,
        params: Sequence[Any],
        outer: str,
        outer_params: Sequence[Any],
        order: str,
        limit: int | None,
        walk: bool = False,
        by_label: bool = False,
    ) -> list[InboxRow]:
        inner, inner_params = self._inner(filters, extra, walk, by_label)
        sql = f"SELECT * FROM ({inner}) q{' WHERE ' + outer if outer else ''} ORDER BY {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = self._db.query(sql, [*inner_params, *params, *outer_params])
        return [_row(r[:_ROW_FIELDS]) for r in rows]

    def _select(
        self,
        queue: Queue,
        *,
        beyond: int | None = None,
        reverse: bool = False,
        limit: int | None = None,
        extra: str = "",
        extra_params: Sequence[Any] = (),
    ) -> list[InboxRow]:
        pivot = self._pivot(queue.sort, beyond) if beyond is not None else None
        if beyond is not None and pivot is None:
            return []
        if queue.sort is Sort.NEWEST:
            outer, more = _beyond(queue.sort, pivot, reverse) if pivot else ("", [])
            return self._query(queue.filters, extra, extra_params, outer, more, _order(queue.sort, reverse), limit)
        return self._segments(queue, pivot, reverse, limit, extra, extra_params)

    def _segments(
        self, queue: Queue, pivot: list[Any] | None, reverse: bool, limit: int | None, extra: str, extra_params: Sequence[Any]
    ) -> list[InboxRow]:
        """The attention ordering one rank at a time (each an index walk by p(malignant)), so a page costs a
        few index steps rather than sorting every matching result."""
        ranks = _RANKS[queue.sort]
        pivot_rank = pivot[0] if pivot is not None and queue.sort is Sort.ATTENTION else None
        tail = pivot[-3:] if pivot is not None else None
        found: list[InboxRow] = []
        for rank in reversed(ranks) if reverse else ranks:
            if pivot_rank is not None and (rank < pivot_rank if not reverse else rank > pivot_rank):
                continue
            left = None if limit is None else limit - len(found)
            if left is not None and left <= 0:
                break
            at_pivot = pivot_rank is None or rank == pivot_rank
            outer, more = _beyond_keys(_TAIL, tail, reverse) if tail is not None and at_pivot else ("", [])
            if rank == 0 and queue.filters.label == "inconclusive":
                continue  # an inconclusive result is never suspicious (both rules): nothing to walk for
            segment = self.dialect.segment(rank)
            where = " AND ".join(c for c in (extra, segment) if c)
            walk = rank == 0 or self._worth_walking(queue.filters, where, extra_params)
            found += self._query(
                queue.filters, where, extra_params, outer, more, _order_by(_TAIL, reverse), left, walk=walk, by_label=rank in (0, 1)
            )  # by label: their own partial indexes
        return found

    def _worth_walking(self, filters: Filters, where: str, params: Sequence[Any]) -> bool:
        """Walk the risk index in order (and stop after a page) unless a filter leaves few rows in this rank:
        then the filter's own index and a sort of those few are cheaper than walking past everything else.
        (Unreviewed suspicious results are always walked: their partial index holds only them.) SQLite only;
        PostgreSQL's planner weighs this itself, from its statistics."""
        if self._db.pg or not filters.selective:
            return not self._db.pg
        inner, inner_params = self._inner(filters, where)
        probe = f"SELECT COUNT(*) FROM ({inner} LIMIT {WALK_AFTER}) AS probe"
        row = self._db.one(probe, [*inner_params, *params])
        if not row:
            return False
        return int(row[0]) >= WALK_AFTER

    # --- pages -------------------------------------------------------------------------------------

    def page(self, filters: Filters | Queue, *, before: int | None = None, after: int | None = None, size: int = PAGE_SIZE) -> Page:
        """One page. ``before``: the rows after that row in the ordering; ``after``: the rows ahead of it.
        A bare :class:`Filters` pages newest first."""
        queue = filters if isinstance(filters, Queue) else Queue(filters, Sort.NEWEST)
        if after is not None:
            raw = self._select(queue, beyond=after, reverse=True, limit=size + 1)
            rows = list(reversed(raw[:size]))
            older = rows[-1].id if rows else None
            newer = rows[0].id if rows and len(raw) > size else None
            full = True
        else:
            raw = self._select(queue, beyond=before, limit=size + 1)
            rows = raw[:size]
            full = len(raw) > size
            older = rows[-1].id if full else None
            newer = rows[0].id if before is not None and rows else None
        newest = max((r.id for r in rows), default=0)
        if before is None and after is None:
            newest = max(newest, self.max_id())
        return Page(rows=rows, older=older, newer=newer, total=self.count(queue.filters), newest_id=newest, full=full)

    def neighbours(self, queue: Queue, result_pk: int) -> tuple[InboxRow | None, InboxRow | None]:
        """The results just ahead of and just after this one in the queue (the result page's ‹ ›)."""
        ahead = self._select(queue, beyond=result_pk, reverse=True, limit=1)
        after = self._select(queue, beyond=result_pk, limit=1)
        return (ahead[0] if ahead else None), (after[0] if after else None)

    def since(self, filters: Filters, after_id: int, limit: int = PAGE_SIZE) -> list[InboxRow]:
        """Rows newer than ``after_id`` matching the filter, oldest first (live updates)."""
        return self._select(Queue(filters, Sort.NEWEST), reverse=True, limit=limit, extra="r.id > ?", extra_params=[after_id])

    def exam(self, exam_id: str) -> list[InboxRow]:
        """Every frame stored under this exam id, in the order they were created."""
        rows = self._select(Queue(Filters(voided=True), Sort.NEWEST), extra="r.exam_id = ?", extra_params=[exam_id], limit=1000)
        return sorted(rows, key=lambda r: (r.created_at, r.id))

    def patient(self, patient_ref: str, limit: int = 500) -> list[InboxRow]:
        """Results for one patient reference, newest first."""
        return self._select(Queue(Filters(voided=True), Sort.NEWEST), extra="r.patient_ref = ?", extra_params=[patient_ref], limit=limit)

    def by_pks(self, pks: Sequence[int]) -> list[InboxRow]:
        if not pks:
            return []
        marks = ",".join("?" * len(pks))
        return self._select(Queue(Filters(voided=True), Sort.NEWEST), extra=f"r.id IN ({marks})", extra_params=list(pks))

    def escalations(self, created_before: str, limit: int = 200) -> list[InboxRow]:
        """Unreviewed suspicious results created before ``created_before`` (ISO), oldest first."""
        return self._query(
            Filters(), f"r.created_at < ? AND {self.dialect.segment(0)}", [created_before], "", [], "q.created_at ASC, q.id ASC", limit
        )

    def count_escalations(self, created_before: str, cap: int = 100) -> int:
        inner, params = self._inner(Filters(), f"r.created_at < ? AND {self.dialect.segment(0)}")
        row = self._db.one(f"SELECT COUNT(*) FROM ({inner} LIMIT {int(cap)}) AS capped", [*params, created_before])
        return int(row[0]) if row else 0

    def exam_sizes(self, exam_ids: Sequence[str]) -> dict[str, int]:
        ids = sorted({e for e in exam_ids if e})
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._db.query(f"SELECT exam_id, COUNT(*) FROM results WHERE exam_id IN ({marks}) GROUP BY exam_id", ids)
        return {r[0]: int(r[1]) for r in rows}

    def with_thumbnail(self, pks: Sequence[int]) -> set[int]:
        """Which of these results came with a thumbnail (without reading the images)."""
        if not pks:
            return set()
        marks = ",".join("?" * len(pks))
        rows = self._db.query(f"SELECT id FROM results WHERE id IN ({marks}) AND thumbnail IS NOT NULL", list(pks))
        return {int(r[0]) for r in rows}

    def max_id(self) -> int:
        row = self._db.one("SELECT MAX(id) FROM results")
        return int(row[0]) if row and row[0] is not None else 0

    def count(self, filters: Filters, cap: int = COUNT_CAP) -> int:
        where, params = filters.where()
        join = " LEFT JOIN web_reviews w ON w.result_pk = r.id" if filters.review else ""
        if filters.assigned:
            join += " LEFT JOIN web_assignments a ON a.result_pk = r.id"
        inner = f"SELECT 1 FROM results r{join}{' WHERE ' + where if where else ''} LIMIT {int(cap) + 1}"
        row = self._db.one(f"SELECT COUNT(*) FROM ({inner}) AS capped", params)
        return int(row[0]) if row else 0

    def all(self, filters: Filters, batch: int = 1000) -> Iterator[InboxRow]:
        """Every matching row, newest first, fetched in keyset batches (CSV export)."""
        queue = Queue(filters, Sort.NEWEST)
        before: int | None = None
        while True:
            extra, params = ("r.id < ?", [before]) if before is not None else ("", [])
            rows = self._select(queue, extra=extra, extra_params=params, limit=batch)
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
    unset: dict[str, Any] = {name: None}  # ``name`` is one of the optional filter fields
    return replace(filters, **unset)


# --- CSV -------------------------------------------------------------------------------------------

_CSV_HEAD = (
    "result_id",
    "created_at",
    "received_at",
    "delivered_late",
    "delay_s",
    "site",
    "device_id",
    "exam_id",
    "patient_ref",
    "side",
    "clock",
    "age",
    "outcome",
    "label",
    "inconclusive",
    "category",
    "category_source",
    "p_malignant",
    "threshold_malignant",
    "mode",
)
_CSV_TAIL = ("probabilities", "thresholds", "model_version", "review_state", "reviewer", "reviewed_at", "review_note", "assigned_to")


def csv_fields(classes: Sequence[str]) -> tuple[str, ...]:
    """One column per class probability (``p_<class>``) between the fixed ones."""
    return (*_CSV_HEAD, *(f"p_{c}" for c in classes), *_CSV_TAIL)


CSV_FIELDS = csv_fields(KNOWN_LABELS)


def csv_record(row: InboxRow, classes: Sequence[str] = KNOWN_LABELS) -> dict[str, Any]:
    a = row.assessment
    delay = delay_s(row.created_at, row.received_at)  # parsed once: "late" is the same delay over LATE_AFTER_S
    record: dict[str, Any] = {
        "result_id": row.result_id,
        "created_at": row.created_at,
        "received_at": row.received_at,
        "delivered_late": int(delay is not None and delay > LATE_AFTER_S),
        "delay_s": f"{delay:.0f}" if delay is not None else "",
        "site": row.site,
        "device_id": row.device_id,
        "exam_id": row.exam_id or "",
        "patient_ref": row.patient_ref or "",
        "side": row.side or "",
        "clock": "" if row.clock is None else row.clock,
        "age": "" if row.age is None else row.age,
        "outcome": row.outcome,
        "label": row.label or "",
        "inconclusive": int(row.inconclusive),
        "category": a.category.value,
        "category_source": "device" if a.from_device else "derived",
        "p_malignant": _num(a.p_malignant),
        "threshold_malignant": _num(a.threshold),
        "mode": a.mode or "",
        "probabilities": json.dumps(row.probabilities, sort_keys=True),
        "thresholds": json.dumps(row.thresholds, sort_keys=True),
        "model_version": row.model_version,
        "review_state": row.review,
        "reviewer": row.reviewer or "",
        "reviewed_at": row.reviewed_at or "",
        "review_note": row.review_note or "",
        "assigned_to": row.assignee or "",
    }
    record.update({f"p_{c}": _num(row.probabilities.get(c)) for c in classes})
    return record


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"
