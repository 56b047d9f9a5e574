"""The FastAPI application: login, inbox (with live updates), result page, review, devices, audit, users,
CSV and FHIR exports. Server-rendered Jinja2 pages; two small local scripts (live inbox, device refresh).

Every page needs a session except ``/login``, ``/healthz`` and ``/static``; every POST checks a CSRF
token. Exports are POSTs too (each is audited); their GET URLs only offer the button. URLs carry result
ids and filter values only, never patient references.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import math
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Form, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import StreamingResponse

from hub.store import DamagedRowError, DeviceState, HubStore, HubStoreError, Presence, StoredResult
from hub.web import DISCLAIMER, corrections_view, queue_views
from hub.web.accounts import ROLES, AccountError, Accounts, LoginOutcome, Session, User
from hub.web.assignments import Assignments
from hub.web.config import WebConfig
from hub.web.db import WebDb, WebDbError
from hub.web.health import Health, health
from hub.web.inbox import (
    FilterError,
    Filters,
    Inbox,
    Queue,
    Sort,
    csv_fields,
    csv_record,
)
from hub.web.limits import parse_tokens
from hub.web.provisioned import ProvisionError, ProvisionList
from hub.web.reviews import REVIEW_STATES, STATE_LABELS, ReviewError, Reviews
from hub.web.risk import LATE_AFTER_S, Category, assess, delay_s, is_late
from hub.web.security import (
    CookiePolicy,
    add_security_headers,
    login_token,
    new_nonce,
    same_origin,
    tokens_match,
)

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
PRESENCE_ORDER = {Presence.SILENT: 0, Presence.NEVER: 1, Presence.OFFLINE: 2, Presence.UNKNOWN: 3, Presence.STOPPED: 4, Presence.ONLINE: 5}
PRESENCE_WORDING = {Presence.NEVER: "provisioned, never connected"}


@dataclass(frozen=True)
class DeviceRow:
    device: DeviceState
    presence: Presence

    @property
    def health(self) -> Health:
        return health(self.device, never_connected=self.presence is Presence.NEVER)

    @property
    def wording(self) -> str:
        return PRESENCE_WORDING.get(self.presence, self.presence)


def never_connected(site: str, device_id: str) -> DeviceState:
    """A provisioned device the hub has never heard from: every value unknown."""
    blank: dict[str, Any] = {f.name: None for f in fields(DeviceState)}
    return DeviceState(**{**blank, "site": site, "device_id": device_id, "first_seen": "", "last_seen": ""})


class LoginRequired(Exception):
    """No valid session: pages redirect to /login, the event stream answers 401."""


class Forbidden(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Services:
    config: WebConfig
    db: WebDb
    store: HubStore
    accounts: Accounts
    reviews: Reviews
    inbox: Inbox
    assignments: Assignments
    cookies: CookiePolicy
    secret: str
    templates: Jinja2Templates
    provisioned: ProvisionList | None = None

    def close(self) -> None:
        self.store.close()
        self.db.close()


def open_services(config: WebConfig) -> Services:
    db = WebDb.open(config.db)
    store = HubStore.open(config.db)
    accounts = Accounts(db)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["when"] = _when
    templates.env.filters["age"] = _age
    templates.env.filters["pct"] = lambda p: "—" if p is None else f"{100 * float(p):.1f}%"
    templates.env.filters["duration"] = _duration
    templates.env.globals.update(DISCLAIMER=DISCLAIMER, STATE_LABELS=STATE_LABELS, Category=Category, LATE_AFTER_S=LATE_AFTER_S)
    return Services(
        config=config,
        db=db,
        store=store,
        accounts=accounts,
        reviews=Reviews(db),
        inbox=Inbox(db),
        assignments=Assignments(db, accounts),
        cookies=CookiePolicy(secure=config.secure_cookies),
        secret=db.set_meta_once("secret", secrets.token_urlsafe(32)),
        templates=templates,
        provisioned=_provision_list(config),
    )


def _provision_list(config: WebConfig) -> ProvisionList | None:
    """The provisioning list, read once now so a bad file stops the console with the error naming it."""
    if config.devices_file is None:
        return None
    provisioned = ProvisionList(config.devices_file)
    log.info("provisioned devices from %s: %d", config.devices_file, len(provisioned.devices()))
    return provisioned


# --- formatting ---------------------------------------------------------------------------------


def _parse_iso(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def _when(iso: str | None) -> str:
    if not iso:
        return "—"
    try:
        return _parse_iso(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return iso


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s // size} {unit}"
    return f"{s} s"


def _age(iso: str | None) -> str:
    if not iso:
        return "never"
    try:
        return _duration((datetime.now(UTC) - _parse_iso(iso)).total_seconds()) + " ago"
    except ValueError:
        return iso


def _csv_safe(value: Any) -> Any:
    """Neutralise spreadsheet formulas in free-text cells (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


# --- the app ------------------------------------------------------------------------------------


def create_app(config: WebConfig) -> FastAPI:
    services = open_services(config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        services.close()

    app = FastAPI(title="sonopi hub console", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.services = services
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    _install_handlers(app, services)
    _install_routes(app, services)
    queue_views.install(app, services)
    corrections_view.install(app, services)  # voided / moved results and their audit trail
    return app


def _install_handlers(app: FastAPI, s: Services) -> None:
    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        add_security_headers(response, hsts=s.config.hsts)
        return response

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, _: LoginRequired) -> Response:
        if request.url.path.startswith("/inbox/events") or request.method != "GET":
            return PlainTextResponse("login required", status_code=401)
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(DamagedRowError)
    async def damaged_row(request: Request, exc: DamagedRowError) -> Response:
        # One row changed outside the hub (hub/store.py refuses it): not an outage; the log names the row and field.
        log.error("console: %s %s: %s", request.method, request.url.path, exc)
        return PlainTextResponse("This result's stored data is damaged and cannot be shown; the console's log names the field.", status_code=500)

    @app.exception_handler(HubStoreError)
    @app.exception_handler(WebDbError)
    async def database_away(request: Request, exc: Exception) -> Response:
        # The database is restarting or unreachable: a plain 503 (no template: rendering may need the database);
        # the connection is re-opened with back-off, so the next request after it is back is served normally.
        log.error("console: %s %s: database unavailable (%s)", request.method, request.url.path, exc)
        return PlainTextResponse(
            "The hub database is unavailable at the moment. Try again in a minute.", status_code=503, headers={"Retry-After": "30"}
        )

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        return _error(s, request, 403, exc.message)

    @app.exception_handler(FilterError)
    async def bad_filter(request: Request, exc: FilterError) -> Response:
        return _error(s, request, 400, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error(s, request, exc.status_code, str(exc.detail))


def _error(s: Services, request: Request, status: int, message: str) -> Response:
    """An error page; with the navigation bar when the browser has a live session."""
    session = s.accounts.session(request.cookies.get(s.cookies.session_name))
    context = {"status": status, "message": message, "user": session.user if session else None, "csrf": session.csrf_token if session else ""}
    return s.templates.TemplateResponse(request, "error.html", context, status_code=status)


def services_of(request: Request) -> Services:
    return request.app.state.services


def session_of(request: Request) -> Session:
    """The request's live session, or :class:`LoginRequired`."""
    s = services_of(request)
    session = s.accounts.session(request.cookies.get(s.cookies.session_name))
    if session is None:
        raise LoginRequired()
    return session


async def csrf_session(request: Request) -> Session:
    """The session, after checking the request's CSRF token and origin (every POST but /login)."""
    session = await run_in_threadpool(session_of, request)
    form = await request.form()
    given = form.get("csrf_token") or request.headers.get("x-csrf-token")
    if not same_origin(request) or not tokens_match(session.csrf_token, str(given) if given else None):
        log.warning("CSRF check failed for %s %s by %s", request.method, request.url.path, session.user.username)
        raise Forbidden("Request refused: missing or invalid CSRF token. Reload the page and try again.")
    return session


SessionDep = Annotated[Session, Depends(session_of)]
CsrfDep = Annotated[Session, Depends(csrf_session)]


def require(session: Session, role: str) -> User:
    if not session.user.can(role):
        raise Forbidden(f"This needs the {role} role.")
    return session.user


def render_page(s: Services, request: Request, name: str, session: Session | None, **context: Any) -> HTMLResponse:
    context.update(user=session.user if session else None, csrf=session.csrf_token if session else "")
    return s.templates.TemplateResponse(request, name, context)


def export_page_response(s: Services, request: Request, session: Session, title: str, what: str, template: str, **context: Any) -> Response:
    """GET of an export URL: 405 with ``Allow: POST`` and a page with the button (nothing exported or audited)."""
    response = render_page(s, request, "export.html", session, title=title, what=what, template=template, **context)
    response.status_code = 405
    response.headers["Allow"] = "POST"
    return response


def escalation_cutoff(s: Services) -> str:
    """Suspicious results created before this (ISO) and still unreviewed are escalated."""
    moment = datetime.now(UTC) - timedelta(seconds=s.config.escalate_after_s)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _install_routes(app: FastAPI, s: Services) -> None:
    def page(request: Request, name: str, session: Session | None, **context: Any) -> HTMLResponse:
        return render_page(s, request, name, session, **context)

    # --- public --------------------------------------------------------------------------------

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request) -> Response:
        return _login_page(request, s, None, 200)

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = await request.form()
        nonce = request.cookies.get(s.cookies.login_name)
        given = form.get("csrf_token")
        if not same_origin(request) or not nonce or not tokens_match(login_token(s.secret, nonce), str(given) if given else None):
            return _error(s, request, 403, "Request refused: missing or invalid CSRF token. Reload the page.")
        username, password = str(form.get("username", ""))[:64], str(form.get("password", ""))[:1024]
        ip = request.client.host if request.client else "unknown"
        tokens = parse_tokens(request.cookies.get(s.cookies.trusted_name))
        result = await run_in_threadpool(s.accounts.login, username, password, ip, tokens)
        if result.outcome is LoginOutcome.LIMITED:
            return _limited_page(request, s, result.retry_after_s)
        if result.user is None:
            log.warning("failed login for %r from %s", username, ip)
            return _login_page(request, s, "Wrong username or password.", 401)
        return await run_in_threadpool(_signed_in, s, result.user, result.trusted_cookie, ip)

    @app.post("/logout")
    def logout(request: Request, session: CsrfDep) -> Response:
        s.accounts.end_session(request.cookies.get(s.cookies.session_name, ""))
        response = RedirectResponse("/login", status_code=303)
        s.cookies.clear(response, s.cookies.session_name)
        log.info("logout %s", session.user.username)
        return response

    # --- inbox ---------------------------------------------------------------------------------

    @app.get("/")
    def root(session: SessionDep) -> Response:
        return RedirectResponse("/inbox", status_code=303)

    @app.get("/inbox", response_class=HTMLResponse)
    def inbox(request: Request, session: SessionDep, before: int | None = None, after: int | None = None) -> Response:
        queue = Queue.from_query(request.query_params, session.user.username)
        result = s.inbox.page(queue, before=before, after=after)
        return page(
            request,
            "inbox.html",
            session,
            page=result,
            queue=queue,
            filters=queue.filters,
            choices=s.inbox.choices(),
            live=before is None and after is None,
            sorts=list(Sort),
            review_filters=("unreviewed", *REVIEW_STATES),
            back=f"/inbox?{request.url.query}",
            exam_sizes=s.inbox.exam_sizes([r.exam_id for r in result.rows if r.exam_id]),
            escalated=s.inbox.count_escalations(escalation_cutoff(s)),
            escalate_after_s=s.config.escalate_after_s,
        )

    @app.get("/inbox/events")
    async def inbox_events(request: Request, session: SessionDep, after: int = 0) -> Response:
        queue = Queue.from_query(request.query_params, session.user.username)
        filters = queue.filters
        last = request.headers.get("last-event-id", "")
        cursor = max(after, int(last)) if last.isdigit() else after
        row_template = s.templates.get_template("_row.html")
        token = request.cookies.get(s.cookies.session_name)

        async def stream() -> AsyncIterator[str]:
            nonlocal cursor
            yield "retry: 2000\n\n"
            checks = 0
            while not await request.is_disconnected():
                rows = await run_in_threadpool(s.inbox.since, filters, cursor)
                for row in rows:
                    cursor = row.id
                    html = row_template.render(
                        row=row, STATE_LABELS=STATE_LABELS, Category=Category, fresh=True, queue=queue, user=session.user, exam_sizes={}
                    )
                    yield f"id: {row.id}\nevent: result\ndata: {json.dumps({'id': row.id, 'html': html})}\n\n"
                checks += 1
                if checks % 15 == 0:
                    if await run_in_threadpool(s.accounts.session, token) is None:
                        yield "event: logout\ndata: {}\n\n"
                        return
                    yield ": keep-alive\n\n"
                await asyncio.sleep(s.config.live_poll_s)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.get("/inbox/export.csv", response_class=HTMLResponse)
    def export_csv_page(request: Request, session: SessionDep) -> Response:
        """An old link or bookmark: exports nothing, audits nothing; offers the POST button."""
        filters = Filters.from_query(request.query_params, session.user.username)
        what = f"Results matching: {filters.urlencode() or 'all'}."
        return export_page(request, session, "Export CSV", what, "_export_csv.html", filters=filters)

    @app.post("/inbox/export.csv")
    async def export_csv(request: Request, session: CsrfDep) -> Response:
        form = await request.form()
        filters = Filters.from_query({k: v for k, v in form.items() if isinstance(v, str) and k != "csrf_token"}, session.user.username)
        await run_in_threadpool(s.reviews.audit, "export:csv", session.user.username, f"filter: {filters.urlencode() or 'all'}")
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return StreamingResponse(
            _csv_rows(s.inbox, filters, s.inbox.labels()),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="sonopi-results-{stamp}.csv"'},
        )

    def export_page(request: Request, session: Session, title: str, what: str, template: str, **context: Any) -> Response:
        return export_page_response(s, request, session, title, what, template, **context)

    # --- one result ----------------------------------------------------------------------------

    def load(result_id: str) -> StoredResult:
        result = s.store.result(result_id) if len(result_id) <= 64 else None
        if result is None:
            raise StarletteHTTPException(404, "No such result.")
        return result

    @app.get("/results/{result_id}", response_class=HTMLResponse)
    def result_page(request: Request, result_id: str, session: SessionDep) -> Response:
        result = load(result_id)
        queue = Queue.from_query(request.query_params, session.user.username)
        rows = s.inbox.by_pks([result.id])
        assessment = (
            rows[0].assessment
            if rows
            else assess(probabilities=result.probabilities, thresholds=result.thresholds, label=result.label, inconclusive=result.inconclusive)
        )
        ahead, behind = s.inbox.neighbours(queue, result.id)
        frames = [r for r in s.inbox.exam(result.exam_id)] if result.exam_id else []
        return page(
            request,
            "result.html",
            session,
            result=result,
            review=s.reviews.review(result_id),
            assignment=s.assignments.assignment(result_id),
            assignable=s.assignments.assignable(),
            audit=s.reviews.entries(result_id=result_id, limit=50),
            states=REVIEW_STATES,
            classes=sorted(result.probabilities.items(), key=lambda kv: -kv[1]),
            assessment=assessment,
            queue=queue,
            ahead=ahead,
            behind=behind,
            frames=frames,
            late=is_late(result.created_at, result.received_at),
            delay=delay_s(result.created_at, result.received_at),
        )

    @app.get("/results/{result_id}/thumbnail.jpg")
    def thumbnail(result_id: str, session: SessionDep) -> Response:
        result = load(result_id)
        if result.thumbnail is None:
            raise StarletteHTTPException(404, "No thumbnail was sent with this result.")
        return Response(result.thumbnail, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/results/{result_id}/fhir.json", response_class=HTMLResponse)
    def fhir_page(request: Request, result_id: str, session: SessionDep) -> Response:
        """An old link or bookmark: exports nothing, audits nothing; offers the POST button."""
        load(result_id)
        return export_page(request, session, "FHIR DiagnosticReport", f"Result {result_id}.", "_export_fhir.html", result_id=result_id)

    @app.post("/results/{result_id}/fhir.json")
    def fhir(result_id: str, session: CsrfDep) -> Response:
        result = load(result_id)
        s.reviews.audit("export:fhir", session.user.username, "DiagnosticReport", result_id=result_id)
        return JSONResponse(
            corrections_view.fhir_report(s.store, result),
            media_type="application/fhir+json",
            headers={"Content-Disposition": f'attachment; filename="{result_id}.fhir.json"'},
        )

    @app.post("/results/{result_id}/review")
    def review(
        request: Request,
        result_id: str,
        session: CsrfDep,
        state: Annotated[str, Form()],
        note: Annotated[str, Form()] = "",
        then: Annotated[str, Form()] = "",
    ) -> Response:
        user = require(session, "operator")
        result = load(result_id)
        queue = Queue.from_query(request.query_params, session.user.username)
        # "and next": the result after this one in the queue as it stood (the review moves this one down)
        after = s.inbox.neighbours(queue, result.id)[1] if then == "next" else None
        try:
            s.reviews.set_review(result_pk=result.id, result_id=result_id, state=state, note=note, username=user.username)
        except ReviewError as exc:
            return _error(s, request, 400, str(exc))
        query = queue.urlencode()
        target = after.result_id if after else result_id
        return RedirectResponse(f"/results/{target}{'?' + query if query else ''}", status_code=303)

    # --- devices, audit ------------------------------------------------------------------------

    def device_rows() -> tuple[list[DeviceRow], str | None]:
        """Every device the hub knows, and the provisioned ones it never heard from; plus a problem with the
        provisioning list (shown on the page, the known devices still listed)."""
        now = datetime.now(UTC)
        known = s.store.devices()
        rows = [DeviceRow(d, d.presence(now, s.config.silent_after_intervals)) for d in known]
        problem = None
        if s.provisioned is not None:
            try:
                seen = {(d.site, d.device_id) for d in known}
                rows += [DeviceRow(never_connected(*pair), Presence.NEVER) for pair in s.provisioned.devices() - seen]
            except ProvisionError as exc:
                log.error("devices page: %s", exc)
                problem = str(exc)
        ordered = sorted(rows, key=lambda r: (PRESENCE_ORDER.get(r.presence, 9), -r.health.level, r.device.site, r.device.device_id))
        return ordered, problem

    @app.get("/devices", response_class=HTMLResponse)
    def devices(request: Request, session: SessionDep) -> Response:
        rows, problem = device_rows()
        return page(
            request,
            "devices.html",
            session,
            devices=rows,
            problem=problem,
            provisioned=s.provisioned is not None,
            refresh_ms=int(s.config.devices_refresh_s * 1000),
            duration=_duration,
        )

    @app.get("/devices/table", response_class=HTMLResponse)
    def devices_table(request: Request, session: SessionDep) -> Response:
        rows, problem = device_rows()
        return page(request, "_devices_table.html", session, devices=rows, problem=problem, duration=_duration)

    @app.get("/audit", response_class=HTMLResponse)
    def audit(request: Request, session: SessionDep, before: int | None = None) -> Response:
        entries = s.reviews.entries(before_id=before, limit=100)
        older = entries[-1].id if len(entries) == 100 else None
        return page(request, "audit.html", session, entries=entries, older=older)

    # --- users (admin) -------------------------------------------------------------------------

    @app.get("/admin/users", response_class=HTMLResponse)
    def users(request: Request, session: SessionDep) -> Response:
        require(session, "admin")
        return page(request, "users.html", session, users=s.accounts.users(), roles=ROLES, message=None)

    @app.post("/admin/users")
    def add_user(
        request: Request, session: CsrfDep, username: Annotated[str, Form()], password: Annotated[str, Form()], role: Annotated[str, Form()]
    ) -> Response:
        admin = require(session, "admin")
        try:
            user = s.accounts.add_user(username, password, role)
        except AccountError as exc:
            return page(request, "users.html", session, users=s.accounts.users(), roles=ROLES, message=str(exc))
        s.reviews.audit("user:add", admin.username, f"{user.username} ({user.role})")
        return RedirectResponse("/admin/users", status_code=303)

    @app.post("/admin/users/{username}/{action}")
    def set_disabled(request: Request, username: str, action: str, session: CsrfDep) -> Response:
        admin = require(session, "admin")
        if action not in ("disable", "enable"):
            raise StarletteHTTPException(404, "Unknown action.")
        if username == admin.username:
            return page(request, "users.html", session, users=s.accounts.users(), roles=ROLES, message="You cannot disable your own account.")
        try:
            user = s.accounts.set_disabled(username, action == "disable")
        except AccountError as exc:
            raise StarletteHTTPException(404, str(exc)) from exc
        s.reviews.audit(f"user:{action}", admin.username, user.username)
        return RedirectResponse("/admin/users", status_code=303)


# Cells whose text comes from a device or an operator (patient reference, note, ...) and may start with a formula
# character; the others are numbers, timestamps, 0/1 or validated names and stay as they are (a negative delay
# stays a number).
CSV_TEXT_FIELDS = frozenset(
    {
        "result_id",
        "exam_id",
        "patient_ref",
        "side",
        "outcome",
        "label",
        "category",
        "mode",
        "model_version",
        "reviewer",
        "review_note",
        "assigned_to",
        "site",
        "device_id",
    }
)


def _csv_rows(inbox: Inbox, filters: Filters, classes: list[str]) -> Iterator[str]:
    """The CSV export, streamed in chunks of 500 rows; one column per class probability."""
    buffer = io.StringIO()
    fields = csv_fields(classes)
    text = [name in CSV_TEXT_FIELDS for name in fields]
    writer = csv.writer(buffer)
    writer.writerow(fields)
    for n, row in enumerate(inbox.all(filters), start=1):
        record = csv_record(row, classes)
        writer.writerow([_csv_safe(record[f]) if t else record[f] for f, t in zip(fields, text, strict=True)])
        if n % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _signed_in(s: Services, user: User, trusted_cookie: str | None, ip: str) -> Response:
    """A new session (and the browser's new trusted-browser cookie) after a successful sign-in."""
    token, _session = s.accounts.create_session(user)
    s.reviews.audit("login", user.username, f"from {ip}")
    response = RedirectResponse("/inbox", status_code=303)
    s.cookies.set(response, s.cookies.session_name, token, max_age=int(s.accounts.policy.absolute.total_seconds()))
    s.cookies.clear(response, s.cookies.login_name)
    if trusted_cookie:
        s.cookies.set(response, s.cookies.trusted_name, trusted_cookie, max_age=int(s.accounts.limits.trusted_for.total_seconds()), samesite="strict")
    log.info("login %s from %s", user.username, ip)
    return response


def _limited_page(request: Request, s: Services, retry_after_s: int) -> Response:
    minutes = max(1, math.ceil(retry_after_s / 60))
    message = f"Too many failed sign-in attempts. Try again in {minutes} min; a browser that has signed in to this account before can sign in now."
    response = _login_page(request, s, message, 429)
    response.headers["Retry-After"] = str(retry_after_s)
    return response


def _login_page(request: Request, s: Services, message: str | None, status: int) -> Response:
    nonce = request.cookies.get(s.cookies.login_name) or new_nonce()
    response = s.templates.TemplateResponse(
        request, "login.html", {"user": None, "csrf": login_token(s.secret, nonce), "message": message}, status_code=status
    )
    s.cookies.set(response, s.cookies.login_name, nonce, max_age=3600)
    return response
