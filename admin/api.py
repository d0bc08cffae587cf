"""The REST API, `/api/v1` (issue #15): invitations for services written in any language.

Every route needs `Authorization: Bearer <API token>` (admin/tokens.py) and acts for the
token's account only: another account's invitation is 404, as if it did not exist. The
inviter recorded is the token's creator. Inviting goes through the same `InvitationsClient`
as `starter.py` (same validation, same error codes, as RFC 9457 problems: admin/problems.py).
POSTs take an `Idempotency-Key` (admin/idempotency.py). The OpenAPI document is
`/api/v1/openapi.json`, readable as `/api/v1/docs`.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Body, Header, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session

from admin import apidocs
from admin.idempotency import idempotent
from admin.listing import Filters, page
from admin.principal import Principal
from admin.problems import (
    MEDIA_TYPE,
    PROBLEM_RESPONSES,
    STATUS_OF_CODE,
    FieldError,
    Problem,
    ProblemDetails,
    ProblemRoute,
    problem_body,
    title,
)
from admin.tokens import ApiPrincipal
from invitations.client import InvitationsClient
from invitations.models import InviteRequest, InviteResult, Outcome, PendingInvitation
from messages.payloads import InvitationStatus, Progress
from records.db import as_utc
from records.tables import Invitation

router = APIRouter(route_class=ProblemRoute, responses=PROBLEM_RESPONSES)
MAX_BULK = 1000
IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", description="Retrying with the same key and body replays the "
    "first answer instead of acting twice; kept 24 h (INVITES_API_IDEMPOTENCY_HOURS)")]
InvitationId = Annotated[str, Path(description="e.g. invitation-1-alice@example.com")]


class InvitationIn(BaseModel):
    """One person to invite. Values are checked by the same rules as `starter.py invite`."""

    model_config = ConfigDict(extra="forbid")
    email: str = Field(max_length=320)
    first_name: str = Field(default="", max_length=100)
    last_name: str = Field(default="", max_length=100)
    user_type: str = Field(default="basic", description="basic or licensed")
    group: str | None = Field(default=None, max_length=100)
    message: str | None = Field(default=None, description="up to 2000 characters")
    expires_in_days: int | None = Field(default=None, description="1 to 365; default 30")


class BulkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    invitations: list[InvitationIn] = Field(min_length=1, max_length=MAX_BULK)


class BulkRow(BaseModel):
    index: int  # position in the request's `invitations`
    email: str
    status: int  # this row's HTTP status: 201 started, 200 already pending, else its problem's
    outcome: Outcome
    invitation_id: str | None = None
    invitation_status: str | None = None
    expires_at: datetime | None = None
    problem: ProblemDetails | None = None


class BulkOut(BaseModel):
    results: list[BulkRow]
    summary: dict[str, int]


class InvitationPage(BaseModel):
    invitations: list[PendingInvitation]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; "
                                    "null on the last page")


class ResendIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expires_in_days: int | None = Field(default=None, ge=1, le=365)


class RevokeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=500)


def _client(request: Request) -> InvitationsClient:
    return request.app.state.invitations  # type: ignore[no-any-return]


def _request(principal: Principal, body: InvitationIn) -> InviteRequest:
    return InviteRequest(account_id=principal.account_id, invited_by=principal.email,
                         **body.model_dump())


def _json(model: BaseModel, status: int, **headers: str) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json"), status_code=status, headers=headers)


def _location(invitation_id: str) -> str:
    # An email's local part may hold / ? # %: quoted, so the Location leads back to it.
    return f"/api/v1/invitations/{quote(invitation_id, safe='@')}"


async def _owned(request: Request, principal: Principal, invitation_id: str) -> None:
    """404 unless the invitation belongs to the principal's account (its row says so, or,
    before the row exists, its id: invitation-<account>-<email>)."""
    def account_of() -> int | None:
        with Session(request.app.state.engine) as session:
            row = session.get(Invitation, invitation_id)
            return None if row is None else row.account_id
    account = await asyncio.to_thread(account_of)
    mine = account == principal.account_id if account is not None \
        else invitation_id.startswith(f"invitation-{principal.account_id}-")
    if not mine:
        raise Problem(404, "not_found", f"no invitation {invitation_id!r} in this account",
                      errors=[FieldError(field="invitation_id", code="not_found",
                                         detail="no such invitation in this account")])


# --- inviting -------------------------------------------------------------------------
@router.post("/invitations", status_code=201, response_model=InviteResult,
             summary="Invite one person",
             responses={200: {"model": InviteResult,
                              "description": "Already pending: nothing new started"}})
async def create_invitation(request: Request, principal: ApiPrincipal, body: InvitationIn,
                            idempotency_key: IdempotencyKey = None) -> Response:
    async def run() -> Response:
        result = await _client(request).invite(**_invite_args(principal, body))
        status = 201 if result.outcome == Outcome.STARTED else 200
        return _json(result, status, Location=_location(result.invitation_id))
    return await idempotent(request, principal, idempotency_key, run)


def _invite_args(principal: Principal, body: InvitationIn) -> dict[str, Any]:
    return {"account_id": principal.account_id, "by": principal.email, **body.model_dump()}


@router.post("/invitations/bulk", status_code=207, response_model=BulkOut,
             summary="Invite many people: one result per row (207 Multi-Status)")
async def create_invitations(request: Request, principal: ApiPrincipal, body: BulkIn,
                             idempotency_key: IdempotencyKey = None) -> Response:
    async def run() -> Response:
        rows = await _client(request).invite_many([_request(principal, r)
                                                   for r in body.invitations])
        results = []
        for index, row in enumerate(rows):
            out = BulkRow(index=index, email=row.email, outcome=row.outcome,
                          status=201 if row.outcome == Outcome.STARTED else 200,
                          invitation_id=row.invitation_id, invitation_status=row.status,
                          expires_at=row.expires_at)
            if row.error is not None:
                status = STATUS_OF_CODE.get(row.error.code, 409)
                errors = [FieldError(field=row.error.field, code=row.error.code,
                                     detail=row.error.message)] if row.error.field else []
                out.status = status
                out.problem = ProblemDetails(**problem_body(status, row.error.code,
                                                            row.error.message, errors))
            results.append(out)
        summary = {o.value: sum(r.outcome == o for r in results) for o in Outcome}
        return _json(BulkOut(results=results, summary=summary), 207)
    return await idempotent(request, principal, idempotency_key, run)


# --- reading ----------------------------------------------------------------------------
@router.get("/invitations", response_model=InvitationPage, summary="List invitations",
            description="Newest first. Filters combine; `status` may repeat.")
async def list_invitations(
    request: Request, principal: ApiPrincipal,
    status: Annotated[list[str] | None, Query(description="e.g. pending, blocked")] = None,
    email: Annotated[str | None, Query(description="the invitee's email (any case)")] = None,
    created_after: Annotated[datetime | None, Query(description="inclusive, ISO 8601")] = None,
    created_before: Annotated[datetime | None, Query(description="exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page")
                      ] = None,
) -> Response:
    known = {s.value for s in InvitationStatus}
    unknown = [s for s in status or () if s not in known]
    if unknown:
        raise Problem(422, "invalid_request", f"unknown status {unknown[0]!r}: one of "
                      f"{', '.join(sorted(known))}",
                      errors=[FieldError(field="status", code="enum",
                                         detail=f"{unknown[0]!r} is not a status")])
    filters = Filters(principal.account_id, tuple(sorted(set(status or ()))), email,
                      created_after and as_utc(created_after),
                      created_before and as_utc(created_before))
    items, next_cursor = await asyncio.to_thread(page, request.app.state.engine, filters,
                                                 limit, cursor)
    return _json(InvitationPage(invitations=items, next_cursor=next_cursor), 200)


@router.get("/invitations/{invitation_id:path}", response_model=Progress,
            summary="One invitation's progress: status, blocking reasons, data categories")
async def get_invitation(request: Request, principal: ApiPrincipal,
                         invitation_id: InvitationId) -> Response:
    await _owned(request, principal, invitation_id)
    return _json(await _client(request).status(invitation_id), 200)


# --- changing one ---------------------------------------------------------------------
@router.post("/invitations/{invitation_id:path}/resend", response_model=Progress,
             summary="Email the invitation again; the expiry moves")
async def resend_invitation(request: Request, principal: ApiPrincipal,
                            invitation_id: InvitationId,
                            body: Annotated[ResendIn | None, Body()] = None,
                            idempotency_key: IdempotencyKey = None) -> Response:
    async def run() -> Response:
        await _owned(request, principal, invitation_id)
        days = body.expires_in_days if body else None
        return _json(await _client(request).resend(invitation_id, expires_in_days=days), 200)
    return await idempotent(request, principal, idempotency_key, run)


@router.post("/invitations/{invitation_id:path}/revoke", response_model=Progress,
             summary="End an invitation whose data has not started moving")
async def revoke_invitation(request: Request, principal: ApiPrincipal,
                            invitation_id: InvitationId,
                            body: Annotated[RevokeIn | None, Body()] = None,
                            idempotency_key: IdempotencyKey = None) -> Response:
    async def run() -> Response:
        await _owned(request, principal, invitation_id)
        reason = body.reason if body else None
        return _json(await _client(request).revoke(invitation_id, by=principal.email,
                                                   reason=reason), 200)
    return await idempotent(request, principal, idempotency_key, run)


# --- documentation ----------------------------------------------------------------------
@router.get("/docs", include_in_schema=False)
async def docs(request: Request) -> Response:
    """The OpenAPI document as HTML (admin/apidocs.py); no token needed, like the JSON."""
    return HTMLResponse(apidocs.render(request.app.openapi()))


# --- problem types ----------------------------------------------------------------------
@router.get("/problems/{code}", response_model=ProblemDetails, include_in_schema=False)
async def problem_type(code: str) -> Response:
    """What a problem `type` URI names (RFC 9457 suggests it be dereferenceable)."""
    if code not in STATUS_OF_CODE:
        raise Problem(404, "not_found", f"no problem type {code!r}")
    status = STATUS_OF_CODE[code]
    return JSONResponse({"type": f"/api/v1/problems/{code}", "title": title(code),
                         "status": status, "code": code}, media_type=MEDIA_TYPE)


@router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                  include_in_schema=False)
async def no_such_route(path: str) -> Response:
    raise Problem(404, "not_found", f"no API route /api/v1/{path}")
