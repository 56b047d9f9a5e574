"""Pages for working the queue: an exam with all its frames, review and assignment per result, per exam and in
bulk, patient search
(a POST: the reference is never in a URL or the access log; each search is audited without it), and the
escalation list (unreviewed suspicious results older than ``[console] escalate_after_min``).

Installed by :func:`hub.web.app.create_app`; the helpers it needs come from there.
"""

# No "from __future__ import annotations": the route signatures use names imported inside install().
import logging
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from hub.web.assignments import AssignmentError
from hub.web.corrections_view import fhir_exam_report
from hub.web.inbox import InboxRow
from hub.web.reviews import REVIEW_STATES, ReviewError

if TYPE_CHECKING:
    from hub.web.app import Services

log = logging.getLogger(__name__)

MAX_BULK = 500
MAX_PATIENT_REF = 64


def safe_back(value: str | None, default: str = "/inbox") -> str:
    """A redirect target from a form: a path on this console, never another site."""
    if value and value.startswith(("/inbox", "/exams/", "/escalations", "/results/")) and "//" not in value and "\\" not in value:
        return value
    return default


def exams_of(rows: list[InboxRow]) -> list[tuple[str | None, list[InboxRow]]]:
    """Rows grouped by exam id, in first-seen order (rows without an exam id each on their own)."""
    groups: dict[str, list[InboxRow]] = {}
    alone: list[tuple[str | None, list[InboxRow]]] = []
    order: list[str] = []
    for row in rows:
        if row.exam_id is None:
            alone.append((None, [row]))
            continue
        if row.exam_id not in groups:
            groups[row.exam_id] = []
            order.append(row.exam_id)
        groups[row.exam_id].append(row)
    return [(e, groups[e]) for e in order] + alone


def install(app: FastAPI, s: "Services") -> None:
    from hub.web.app import (
        CsrfDep,
        SessionDep,
        _error,
        escalation_cutoff,
        export_page_response,
        render_page,
        require,
    )

    def page(request: Request, name: str, session: Any, **context: Any) -> HTMLResponse:
        return render_page(s, request, name, session, **context)

    def exam_rows(exam_id: str) -> list[InboxRow]:
        rows = s.inbox.exam(exam_id) if len(exam_id) <= 64 else []
        if not rows:
            raise StarletteHTTPException(404, "No such exam.")
        return rows

    @app.get("/exams/{exam_id}", response_class=HTMLResponse)
    def exam(request: Request, exam_id: str, session: SessionDep) -> Response:
        found = s.inbox.exam(exam_id) if len(exam_id) <= 64 else []
        if not found and len(exam_id) <= 64 and s.store.corrections_into(exam_id):  # only results moved into it
            return page(request, "exam_moved_in.html", session, exam_id=exam_id, rows=[])  # (hub/web/corrections_view)
        rows = found or exam_rows(exam_id)
        scores = [r.assessment.p_malignant for r in rows if r.assessment.p_malignant is not None]
        by_id = s.store.results_by_id([r.result_id for r in rows])  # clock, age and crop box, as the device sent them
        stored = by_id.values()
        return page(
            request,
            "exam.html",
            session,
            exam_id=exam_id,
            rows=rows,
            states=REVIEW_STATES,
            assignable=s.assignments.assignable(),
            clocks=sorted({r.clock for r in stored if r.clock is not None}),
            ages=sorted({r.age for r in stored if r.age is not None}),
            worst=max(scores, default=None),
            thumbs=s.inbox.with_thumbnail([r.id for r in rows]),
            crops={rid: r.crop for rid, r in by_id.items() if r.crop is not None},  # to draw each frame's outline on its thumbnail
            patients=sorted({r.patient_ref for r in rows if r.patient_ref}),
            audit=[e for r in rows for e in s.reviews.entries(result_id=r.result_id, limit=20)],
        )

    @app.get("/exams/{exam_id}/fhir.json", response_class=HTMLResponse)
    def exam_fhir_page(request: Request, exam_id: str, session: SessionDep) -> Response:
        """An old link or bookmark: exports nothing, audits nothing; offers the POST button."""
        rows = exam_rows(exam_id)
        return export_page_response(
            s,
            request,
            session,
            "FHIR DiagnosticReport of an exam",
            f"Exam {exam_id}, {len(rows)} frame(s).",
            "_export_fhir_exam.html",
            exam_id=exam_id,
        )

    @app.post("/exams/{exam_id}/fhir.json")
    def exam_fhir(exam_id: str, session: CsrfDep) -> Response:
        rows = exam_rows(exam_id)
        stored = s.store.results_by_id([r.result_id for r in rows])
        s.reviews.audit("export:fhir", session.user.username, f"DiagnosticReport of exam {exam_id}, {len(rows)} frame(s)")
        name = "".join(c if c.isalnum() or c in "-._" else "_" for c in exam_id)
        return JSONResponse(
            fhir_exam_report(s.store, exam_id, list(stored.values())),
            media_type="application/fhir+json",
            headers={"Content-Disposition": f'attachment; filename="exam-{name}.fhir.json"'},
        )

    @app.post("/exams/{exam_id}/review")
    def review_exam(request: Request, exam_id: str, session: CsrfDep, state: Annotated[str, Form()], note: Annotated[str, Form()] = "") -> Response:
        user = require(session, "operator")
        rows = exam_rows(exam_id)
        try:
            s.reviews.set_reviews(
                [(r.id, r.result_id) for r in rows], state=state, note=note, username=user.username, scope=f"exam, {len(rows)} frame(s)"
            )
        except ReviewError as exc:
            return _error(s, request, 400, str(exc))
        return RedirectResponse(f"/exams/{exam_id}", status_code=303)

    @app.post("/reviews/bulk")
    async def review_bulk(request: Request, session: CsrfDep) -> Response:
        user = require(session, "operator")
        form = await request.form()
        ids = list(dict.fromkeys(str(v) for v in form.getlist("result") if len(str(v)) <= 64))[:MAX_BULK]
        found = s.store.results_by_id(ids)
        back = safe_back(str(form.get("back") or ""))
        try:
            s.reviews.set_reviews(
                [(found[i].id, i) for i in ids if i in found],
                state=str(form.get("state", "")),
                note=str(form.get("note", "")),
                username=user.username,
                scope=f"bulk of {len(found)}",
            )
        except ReviewError as exc:
            return _error(s, request, 400, str(exc))
        return RedirectResponse(back, status_code=303)

    def assign(request: Request, user: Any, results: list[tuple[int, str]], action: str, to: str, scope: str, back: str) -> Response:
        """Assign (``to``: a username, or "me") or unassign the results, then go back."""
        try:
            if action == "unassign":
                s.assignments.unassign(results, by=user.username, scope=scope)
            elif action == "assign":
                s.assignments.assign(results, to=user.username if to == "me" else to.strip()[:64], by=user.username, scope=scope)
            else:
                raise AssignmentError(f"unknown assignment action {action!r} (assign or unassign)")
        except AssignmentError as exc:
            return _error(s, request, 400, str(exc))
        return RedirectResponse(back, status_code=303)

    @app.post("/results/{result_id}/assign")
    def assign_result(
        request: Request,
        result_id: str,
        session: CsrfDep,
        action: Annotated[str, Form()],
        to: Annotated[str, Form()] = "",
        back: Annotated[str, Form()] = "",
    ) -> Response:
        user = require(session, "operator")
        result = s.store.result(result_id) if len(result_id) <= 64 else None
        if result is None:
            raise StarletteHTTPException(404, "No such result.")
        return assign(request, user, [(result.id, result_id)], action, to, "", safe_back(back, f"/results/{result_id}"))

    @app.post("/exams/{exam_id}/assign")
    def assign_exam(request: Request, exam_id: str, session: CsrfDep, action: Annotated[str, Form()], to: Annotated[str, Form()] = "") -> Response:
        user = require(session, "operator")
        rows = exam_rows(exam_id)
        return assign(request, user, [(r.id, r.result_id) for r in rows], action, to, f"exam, {len(rows)} frame(s)", f"/exams/{exam_id}")

    @app.post("/assignments/bulk")
    async def assign_bulk(request: Request, session: CsrfDep) -> Response:
        user = require(session, "operator")
        form = await request.form()
        ids = list(dict.fromkeys(str(v) for v in form.getlist("result") if len(str(v)) <= 64))[:MAX_BULK]
        found = s.store.results_by_id(ids)
        return assign(
            request,
            user,
            [(found[i].id, i) for i in ids if i in found],
            str(form.get("action", "")),
            str(form.get("to", "")),
            f"bulk of {len(found)}",
            safe_back(str(form.get("back") or "")),
        )

    @app.get("/patients", response_class=HTMLResponse)
    def patient_form(request: Request, session: SessionDep) -> Response:
        return page(request, "patients.html", session, searched=False, groups=[], query="")

    @app.post("/patients", response_class=HTMLResponse)
    def patient_search(request: Request, session: CsrfDep, patient_ref: Annotated[str, Form()] = "") -> Response:
        ref = patient_ref.strip()[:MAX_PATIENT_REF]
        if not ref:
            return page(request, "patients.html", session, searched=False, groups=[], query="")
        rows = s.inbox.patient(ref)
        # The audit entry and the log line say that a search happened and how much it found, never for whom.
        s.reviews.audit("search:patient", session.user.username, f"{len(rows)} result(s) found")
        log.info("patient search by %s: %d result(s)", session.user.username, len(rows))
        return page(request, "patients.html", session, searched=True, groups=exams_of(rows), query=ref, count=len(rows))

    @app.get("/escalations", response_class=HTMLResponse)
    def escalations(request: Request, session: SessionDep) -> Response:
        rows = s.inbox.escalations(escalation_cutoff(s))
        return page(request, "escalations.html", session, rows=rows, after_s=s.config.escalate_after_s, states=REVIEW_STATES)
