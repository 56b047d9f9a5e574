"""Corrections: a clinician voids a stored result, or moves it to the exam it belongs to — never an overwrite.

A result row is never changed once stored. A correction is its own append-only record naming the result, what
was done (:class:`CorrectionKind`), why (a :class:`CorrectionReason` from a short fixed list, made for gloved
taps, plus an optional note), when, and where the result was (``from``) and, for a move, where it goes (``to``).
The result's *effective* placement — valid, voided, or moved to exam X — is derived from its corrections in
order (:func:`effective_placement`), on the device (``device history``, the touchscreen's History) and at the
hub alike. The rules (:func:`check_correction`):

* the result must exist; a voided result cannot be corrected again (a second void is an error, so is a move
  after a void);
* a move names an exam that exists on the device, with a side (the exam's own side when it has one; an exam
  with no side takes either): the patient reference is that exam's, never typed; a move to where the result
  already is is an error;
* a reason must be one of the kind's reasons; ``other`` needs a note (else the audit trail says nothing).

Qt-free and database-free: the store (``device/store.py``) and the hub (``hub/store.py``) call these.
"""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum, StrEnum
from typing import TypeVar

from device.clock import utc_now_iso
from device.errors import SonopiError
from device.link.delivery import Delivery

SIDES = ("L", "R")  # the breast's sides, as results, exams and the contract spell them

E = TypeVar("E", bound=Enum)

MAX_NOTE = 200  # characters of free text
MAX_BY = 64  # characters naming who corrected (an operator name or id, when the device knows one)


class CorrectionError(SonopiError):
    """A correction that cannot be stored: its result is unknown, already voided, the target exam does not exist…"""

    code = "correction_invalid"


class CorrectionKind(StrEnum):
    VOID = "void"  # the result does not count (poor image, test scan, patient unknown…)
    MOVE = "move"  # the result belongs to another exam / patient / side


class CorrectionReason(StrEnum):
    WRONG_PATIENT = "wrong_patient"
    WRONG_SIDE = "wrong_side"
    WRONG_EXAM = "wrong_exam"
    POOR_IMAGE = "poor_image"
    TEST_SCAN = "test_scan"
    DUPLICATE = "duplicate"
    OTHER = "other"  # needs a note


REASON_WORDS = {  # what the touchscreen and the console show
    CorrectionReason.WRONG_PATIENT: "Wrong patient",
    CorrectionReason.WRONG_SIDE: "Wrong side",
    CorrectionReason.WRONG_EXAM: "Wrong exam",
    CorrectionReason.POOR_IMAGE: "Poor image",
    CorrectionReason.TEST_SCAN: "Test scan",
    CorrectionReason.DUPLICATE: "Duplicate",
    CorrectionReason.OTHER: "Other",
}

# The reasons each kind offers (the touchscreen shows these as buttons, in this order).
REASONS: dict[CorrectionKind, tuple[CorrectionReason, ...]] = {
    CorrectionKind.VOID: (
        CorrectionReason.POOR_IMAGE,
        CorrectionReason.TEST_SCAN,
        CorrectionReason.WRONG_PATIENT,
        CorrectionReason.DUPLICATE,
        CorrectionReason.OTHER,
    ),
    CorrectionKind.MOVE: (CorrectionReason.WRONG_PATIENT, CorrectionReason.WRONG_SIDE, CorrectionReason.WRONG_EXAM, CorrectionReason.OTHER),
}


class State(StrEnum):
    VALID = "valid"
    VOIDED = "voided"
    MOVED = "moved"


@dataclass(frozen=True)
class Place:
    """Where a result belongs: its exam, that exam's patient reference and the side."""

    exam_id: str | None
    patient_ref: str | None
    side: str | None

    def words(self) -> str:
        return f"{self.patient_ref or '-'} {self.side or '-'} (exam {self.exam_id or '-'})"


@dataclass(frozen=True)
class Correction:
    """One correction as stored on the device (``seq`` and ``delivery`` from the store) and sent to the hub."""

    correction_id: str
    result_id: str
    kind: CorrectionKind
    reason: CorrectionReason
    device_id: str
    site: str
    origin: Place  # where the result was when corrected (its effective place then)
    target: Place | None = None  # a move's destination; None for a void
    note: str = ""
    by: str | None = None  # who corrected, when known (the device has no per-user login: None from the touchscreen)
    created_at: str = field(default_factory=utc_now_iso)
    seq: int | None = None
    delivery: str = Delivery.STORED  # a Delivery value, or "rejected: <reason>" as read from the device's store

    def words(self) -> str:
        """One line for people (CLI, logs): what, why, from -> to."""
        why = REASON_WORDS[self.reason] + (f": {self.note}" if self.note else "")
        if self.kind is CorrectionKind.VOID:
            return f"voided ({why}) {self.created_at}"
        assert self.target is not None
        return f"moved {self.origin.words()} -> {self.target.words()} ({why}) {self.created_at}"


@dataclass(frozen=True)
class Placement:
    """A result's effective state, derived from its stored place and its corrections (oldest first)."""

    state: State
    place: Place
    corrections: tuple[Correction, ...] = ()

    @property
    def voided(self) -> bool:
        return self.state is State.VOIDED

    def words(self) -> str:
        if self.state is State.VOIDED:
            return "VOIDED"
        if self.state is State.MOVED:
            return f"MOVED to {self.place.words()}"
        return ""


def new_correction_id() -> str:
    return str(uuid.uuid4())


def effective_placement(stored: Place, corrections: Iterable[Correction]) -> Placement:
    """The result's state after its corrections, applied in order (each was checked against the state before it)."""
    state, place, applied = State.VALID, stored, tuple(corrections)
    for c in applied:
        if c.kind is CorrectionKind.VOID:
            state = State.VOIDED
        elif c.target is not None:
            state, place = State.MOVED, c.target
    return Placement(state, place, applied)


def make_correction(
    *,
    result_id: str,
    kind: CorrectionKind | str,
    reason: CorrectionReason | str,
    device_id: str,
    site: str,
    origin: Place,
    target: Place | None = None,
    note: str = "",
    by: str | None = None,
) -> Correction:
    """A new correction (fresh id, now), with kind and reason parsed from their names; not yet checked against the
    result (the store does that, in the same transaction as the insert)."""
    return Correction(
        correction_id=new_correction_id(),
        result_id=result_id,
        kind=parse_kind(kind),
        reason=parse_reason(reason),
        device_id=device_id,
        site=site,
        origin=origin,
        target=target,
        note=note.strip(),
        by=by,
    )


def _parse(enum: type[E], value: E | str, what: str) -> E:
    if isinstance(value, enum):
        return value
    try:
        return enum(value)
    except ValueError:
        raise CorrectionError(f"correction {what} {value!r}: must be one of {', '.join(m.value for m in enum)}") from None


def parse_kind(value: CorrectionKind | str) -> CorrectionKind:
    return _parse(CorrectionKind, value, "kind")


def parse_reason(value: CorrectionReason | str) -> CorrectionReason:
    return _parse(CorrectionReason, value, "reason")


def check_text(name: str, text: str | None, limit: int) -> None:
    """Free text: bounded, one line, no control characters (the contract's rule, docs/mqtt.md)."""
    if text is None:
        return
    if len(text) > limit:
        raise CorrectionError(f"correction {name}: longer than {limit} characters ({len(text)})")
    bad = [c for c in text if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")]
    if bad:
        raise CorrectionError(f"correction {name}: contains a control character (U+{ord(bad[0]):04X})")


def check_correction(correction: Correction, placement: Placement, target_exam_side: str | None = None) -> Correction:
    """Whether ``correction`` may follow the result's current ``placement``; returns it with ``origin`` set to that
    placement's place. For a move, ``target_exam_side`` is the target exam's own side (None: the exam takes either).
    Raises :class:`CorrectionError` naming the problem."""
    c = correction
    if c.reason not in REASONS[c.kind]:
        raise CorrectionError(
            f"correction reason {c.reason.value!r} is not a reason to {c.kind.value} (one of {', '.join(r.value for r in REASONS[c.kind])})"
        )
    if c.reason is CorrectionReason.OTHER and not c.note:
        raise CorrectionError("correction reason 'other' needs a note saying why")
    check_text("note", c.note, MAX_NOTE)
    check_text("by", c.by, MAX_BY)
    if placement.voided:
        void = next(x for x in reversed(placement.corrections) if x.kind is CorrectionKind.VOID)
        raise CorrectionError(
            f"result {c.result_id} was already voided at {void.created_at} "
            f"(correction {void.correction_id}); a voided result cannot be corrected again"
        )
    if c.kind is CorrectionKind.VOID:
        if c.target is not None:
            raise CorrectionError("a void names no target exam")
        return replace(c, origin=placement.place)
    t = c.target
    if t is None or t.exam_id is None:
        raise CorrectionError(f"moving result {c.result_id}: name the exam it belongs to")
    side = t.side or target_exam_side
    if side not in SIDES:
        raise CorrectionError(f"moving result {c.result_id} to exam {t.exam_id}: choose the side (L or R)")
    if target_exam_side is not None and side != target_exam_side:
        raise CorrectionError(f"moving result {c.result_id}: exam {t.exam_id} is side {target_exam_side}, not {side}")
    target = Place(t.exam_id, t.patient_ref, side)
    if target == placement.place:
        raise CorrectionError(f"result {c.result_id} is already in exam {t.exam_id} side {side}: nothing to move")
    return replace(c, origin=placement.place, target=target)


def by_result(corrections: Sequence[Correction]) -> dict[str, list[Correction]]:
    """Corrections grouped by result, each group in the order given (oldest first when given by seq)."""
    groups: dict[str, list[Correction]] = {}
    for c in corrections:
        groups.setdefault(c.result_id, []).append(c)
    return groups
