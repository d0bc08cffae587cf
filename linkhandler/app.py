"""The link handler: where the link in the invitation email lands.

    uvicorn --factory linkhandler.app:create_app --no-server-header

GET /i/{token} shows what joining means (preview); POST .../accept, .../refund and
.../decline run the workflow's updates; GET .../status follows the transfer; GET
.../reports.csv hands over the reports that stay behind while the invitation is open.
Every route answers JSON to `Accept: application/json`, in one shape (linkhandler/contract,
/openapi.json). One Temporal client per process, made in the lifespan. With payload keys
and a codec token set, /codec/... decodes payloads for the Temporal Web UI (codec.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from temporalio.client import Client

from config import (
    Settings,
    connect_temporal,
    get_settings,
    require_production_secrets,
    secrets_to_mask,
)
from content.present import STATIC
from domains.sso_routes import router as sso_router
from linkhandler.codec import codec_app
from linkhandler.contract import LinkAnswer, answer, responses
from linkhandler.handler import Handler, HandlerDep
from linkhandler.hardening import BadLinkLimiter, SecurityHeaders
from linkhandler.invitee import OPEN_STATUSES, Gone, reports_csv
from linkhandler.pages import Pages
from messages.payloads import (
    AcceptOutcome,
    AcceptRequest,
    DeclineRequest,
    InvitationStatus,
    Progress,
    RefundChoice,
    RefundDestination,
)
from observability import configure_logging
from records.db import engine_from, init_db

# Never accepted, so there is nothing to follow: the status page is gone too.
UNACCEPTED_ENDINGS = {InvitationStatus.EXPIRED, InvitationStatus.REVOKED,
                      InvitationStatus.DECLINED, InvitationStatus.JOINED_ELSEWHERE,
                      InvitationStatus.CANCELLED}
router = APIRouter()


PAGE = responses(200, 400, 404, 410, 429, 503)
FORM = responses(200, 400, 403, 409, 410, 422, 429, 503)  # and 303 to /status (browsers)


@router.get("/healthz", response_model=LinkAnswer)
async def healthz() -> dict[str, Any]:
    return answer("ok", "The link handler is up.", ok=True)


@router.get("/i/{token}", responses=PAGE)
async def preview(token: str, request: Request, h: HandlerDep) -> Response:
    return await h.landing(request, await h.load(token))


@router.post("/i/{token}/accept", responses=FORM)
async def accept(token: str, request: Request, h: HandlerDep) -> Response:
    fields = await h.form(request, token)
    try:  # a script may say where the refund goes at once (the browser asks next)
        dest = fields.get("refund_destination")
        req = AcceptRequest(refund_destination=RefundDestination(dest) if dest else None)
    except ValueError:
        req = AcceptRequest()
    accepted = await h.accept_at_once(token, req, fields["nonce"])
    if accepted is None:  # the link or the state said no: show what the link shows now
        return await h.landing(request, await h.load(token))
    inv, outcome = accepted
    return h.pages.outcome(request, inv, outcome)


@router.post("/i/{token}/refund", responses=FORM)
async def choose_refund(token: str, request: Request, h: HandlerDep) -> Response:
    fields = await h.form(request, token)
    inv = await h.load(token)
    if inv.progress.status != InvitationStatus.AWAITING_REFUND_CHOICE:
        return await h.landing(request, inv)
    try:
        choice = RefundChoice(destination=RefundDestination(fields.get("destination", "")))
    except ValueError:
        return h.pages.refund(request, inv, inv.progress.quote, status_code=422,
                              error="Choose where the refund goes.")
    outcome = await h.run_update(inv, "choose_refund", choice, fields["nonce"],
                                 AcceptOutcome)
    if outcome is None:
        return await h.landing(request, await h.load(token))
    return h.pages.outcome(request, inv, outcome)


@router.post("/i/{token}/decline", responses=FORM)
async def decline(token: str, request: Request, h: HandlerDep) -> Response:
    fields = await h.form(request, token)
    inv = await h.load(token)
    p = inv.progress
    if not (p.status.awaiting_acceptance or p.status == InvitationStatus.AWAITING_REFUND_CHOICE):
        return await h.landing(request, inv)
    reason = (fields.get("reason") or "").strip()[:500] or None
    progress = await h.run_update(inv, "decline", DeclineRequest(reason=reason),
                                  fields["nonce"], Progress)
    if progress is None:
        return await h.landing(request, await h.load(token))
    return h.pages.declined(request, inv, progress)


@router.get("/i/{token}/status", responses=PAGE)
async def status(token: str, request: Request, h: HandlerDep) -> Response:
    inv = await h.load(token)
    if inv.progress.status in UNACCEPTED_ENDINGS:
        raise Gone(inv.progress.status.value, inv.progress)
    return h.pages.status(request, inv)


@router.get("/i/{token}/reports.csv", responses=PAGE)
async def reports(token: str, request: Request, h: HandlerDep) -> Response:
    """Only while the invitation is open: once it ends (or data moves) the link is no
    longer a way into the records of the account the invitee came from."""
    inv = await h.load(token)
    p = inv.progress
    if p.status not in OPEN_STATUSES:
        raise Gone(p.status.value, p)  # accepted, transferring or final: see gone.html
    body = await run_in_threadpool(reports_csv, h.engine, p.email, p.account_id)
    if h.pages.wants_json(request):
        rows = body.splitlines()
        return JSONResponse(answer("reports", f"{len(rows) - 1} reports stay behind.",
                                   p.status, columns=rows[0].split(","), rows=len(rows) - 1,
                                   csv=body))
    return Response(body, media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": 'attachment; filename="reports.csv"'})


def create_app(
    settings: Settings | None = None, client: Client | None = None, engine: Engine | None = None,
) -> FastAPI:
    """The app factory (`uvicorn --factory`). Tests inject their client and engine; otherwise
    the lifespan connects once with `config.connect_temporal`."""
    if settings is None:  # served for real (`uvicorn --factory`): our log format, tokens masked
        settings = get_settings()
        require_production_secrets(settings, "the link handler")
        configure_logging(json_output=settings.log_json, secrets=secrets_to_mask(settings))
    pages = Pages(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_engine = engine is None
        eng = engine if engine is not None else engine_from(settings)
        if own_engine:
            init_db(eng)  # a fresh database is a valid one: every invitation is unknown
        temporal = client if client is not None else await connect_temporal(settings)
        app.state.handler = Handler(settings, eng, temporal, pages)
        yield
        if own_engine:
            eng.dispose()

    # The OpenAPI document (the JSON contract) is served; the Swagger page is not: it needs
    # inline script, which the pages' CSP forbids.
    app = FastAPI(title="Invitation links", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json")
    app.add_middleware(SecurityHeaders,
                       https=settings.public_base_url.lower().startswith("https://"))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    codec = codec_app(settings)
    if codec is not None:
        app.mount("/codec", codec)
    app.include_router(router)
    app.include_router(sso_router)  # POST /sso/{account}/start|login (domains/sso_routes.py)
    pages.install_error_pages(app, BadLinkLimiter())
    return app
