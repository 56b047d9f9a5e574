"""How the console shows corrections (device/link/corrections.py): a result voided or moved by the clinician on the device.

The result row is never changed; what a page shows is the result's *effective* state, derived from its corrections
(``HubStore.placements``), and the audit trail — each correction's when (on the device, and when it reached the
hub), who (the named person when the device knew one, else the device), what, why, and from → to.

* result page: a banner (``VOIDED`` / ``MOVED to …``) and the trail (``_corrections.html``);
* exam page: the same for every frame of the exam that was corrected, and the results moved *into* the exam from
  another one (they stay listed under their original exam id, with a link here);
* the needs-attention queue leaves voided results out (:data:`NOT_VOIDED_SQL`, in ``hub/web/inbox.py``);
* FHIR (:func:`fhir_report`, :func:`fhir_exam_report`): a result is reported where it belongs now (a move's patient,
  side and exam); a voided one has status ``entered-in-error``; an exam's report leaves out its voided and moved-out
  frames and takes in the results moved into it.

Installed by :func:`install` as template globals, so the pages' routes need no change: ``correction_trail(result_id)``
and ``exam_corrections(exam_id, result_ids)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from device.link.corrections import REASON_WORDS, CorrectionKind, Place, Placement, State, effective_placement
from hub.store import HubStore, StoredCorrection, StoredResult
from hub.web.fhir import SYSTEM, diagnostic_report, exam_report

if TYPE_CHECKING:
    from fastapi import FastAPI

    from hub.web.app import Services

# The result (alias ``r`` in the console's queries) has not been voided.
NOT_VOIDED_SQL = "NOT EXISTS (SELECT 1 FROM corrections c WHERE c.result_id = r.result_id AND c.kind = 'void')"


@dataclass(frozen=True)
class TrailEntry:
    """One line of a result's audit trail."""

    correction_id: str
    result_id: str
    kind: str  # void | move
    what: str  # "Voided" / "Moved"
    why: str  # the reason's words, and the note
    who: str
    when: str  # on the device (ISO)
    received: str  # at the hub (ISO)
    origin: str
    target: str | None


@dataclass(frozen=True)
class Trail:
    """A result's effective state and its corrections, oldest first."""

    result_id: str
    state: str  # valid | voided | moved
    headline: str  # "" for a valid result
    place: Place
    entries: tuple[TrailEntry, ...]

    @property
    def corrected(self) -> bool:
        return bool(self.entries)


def place_words(place: Place) -> str:
    side = {"L": "left", "R": "right"}.get(place.side or "", "side not given")
    return f"patient {place.patient_ref or '(none)'}, {side}, exam {place.exam_id or '(none)'}"


def _entry(stored: StoredCorrection) -> TrailEntry:
    c = stored.correction
    return TrailEntry(
        correction_id=c.correction_id,
        result_id=c.result_id,
        kind=c.kind.value,
        what="Voided" if c.kind is CorrectionKind.VOID else "Moved",
        why=REASON_WORDS[c.reason] + (f" — {c.note}" if c.note else ""),
        who=c.by or f"device {c.site}/{c.device_id}",
        when=c.created_at,
        received=stored.received_at,
        origin=place_words(c.origin),
        target=place_words(c.target) if c.target is not None else None,
    )


def _headline(placement: Placement) -> str:
    if placement.state is State.VOIDED:
        return "Voided on the device: this result does not count"
    if placement.state is State.MOVED:
        return f"Moved on the device: this result belongs to {place_words(placement.place)}"
    return ""


def trails(store: HubStore, result_ids: Iterable[str]) -> dict[str, Trail]:
    """The trail of each of these results that has corrections (a result without any is not in the map)."""
    found = store.corrections_for(result_ids)
    if not found:
        return {}
    results = store.results_by_id(found)
    out: dict[str, Trail] = {}
    for rid, stored in found.items():
        r = results.get(rid)
        if r is None:
            continue
        placement = effective_placement(Place(r.exam_id, r.patient_ref, r.side), [c.correction for c in stored])
        out[rid] = Trail(rid, placement.state.value, _headline(placement), placement.place, tuple(_entry(c) for c in stored))
    return out


@dataclass(frozen=True)
class ExamCorrections:
    """An exam page's corrections: its own frames' trails, and the results moved into it from elsewhere."""

    trails: dict[str, Trail]
    moved_in: tuple[Trail, ...]


def exam_corrections(store: HubStore, exam_id: str, result_ids: Iterable[str]) -> ExamCorrections:
    own = set(result_ids)
    incoming = {c.correction.result_id for c in store.corrections_into(exam_id)} - own
    found = trails(store, own | incoming)
    moved_in = tuple(
        found[rid]
        for rid in sorted(incoming, key=lambda r: found[r].entries[0].when if r in found else "")
        if rid in found and found[rid].place.exam_id == exam_id
    )
    return ExamCorrections({rid: t for rid, t in found.items() if rid in own}, moved_in)


def as_placed(result: StoredResult, placement: Placement) -> StoredResult:
    """The result under the exam, patient and side it belongs to now (the target of its last move)."""
    place = placement.place
    return replace(result, exam_id=place.exam_id, patient_ref=place.patient_ref, side=place.side)


def _trail_extension(placement: Placement) -> dict[str, Any]:
    return {"url": f"{SYSTEM}:corrections", "valueString": "; ".join(c.words() for c in placement.corrections)}


def fhir_report(store: HubStore, result: StoredResult) -> dict[str, Any]:
    """One result's DiagnosticReport, corrected: moved -> the new subject and exam; voided -> ``entered-in-error``."""
    placement = store.placements([result])[result.result_id]
    report = diagnostic_report(as_placed(result, placement))
    if placement.corrections:
        report["extension"].append(_trail_extension(placement))
    if placement.voided:
        report["status"] = "entered-in-error"
        report["conclusion"] = f"Voided on the device: this result does not count. {report['conclusion']}"
    return report


def fhir_exam_report(store: HubStore, exam_id: str, results: Iterable[StoredResult]) -> dict[str, Any]:
    """An exam's DiagnosticReport over the frames that belong to it now; 404 when none does."""
    own = list(results)
    moved_in = {c.correction.result_id for c in store.corrections_into(exam_id)} - {r.result_id for r in own}
    candidates = own + list(store.results_by_id(moved_in).values())
    placements = store.placements(candidates)
    frames = [
        as_placed(r, placements[r.result_id])
        for r in candidates
        if not placements[r.result_id].voided and placements[r.result_id].place.exam_id == exam_id
    ]
    if not frames:
        from starlette.exceptions import HTTPException

        raise HTTPException(404, "No frame belongs to this exam any more (voided or moved on the device).")
    return exam_report(exam_id, frames)


def install(app: FastAPI, s: Services) -> None:
    """Template globals for the result and exam pages (``_corrections.html`` renders them)."""
    s.templates.env.globals.update(
        correction_trail=lambda result_id: trails(s.store, [result_id]).get(result_id),
        exam_corrections=lambda exam_id, result_ids: exam_corrections(s.store, exam_id, list(result_ids)),
        place_words=place_words,
    )
