"""`/api/v1/webhooks`: an account's webhook endpoints over the REST API.

    POST   /api/v1/webhooks        {"url": "...", "events": ["accepted", ...]}  -> 201, secret once
    GET    /api/v1/webhooks        -> {"webhooks": [...]} with each endpoint's delivery state
    GET    /api/v1/webhooks/{id}
    DELETE /api/v1/webhooks/{id}   -> 204

Every route acts for the caller's account (`api_principal`: an API token of an owner or
admin); another account's endpoint is 404. Errors are problem details (RFC 9457) with the
client's `code` and `field`.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from admin.principal import Principal
from admin.problems import ProblemRoute
from admin.tokens import api_principal
from invitations.errors import InvitationError, NotAnAdmin, UnknownAccount
from webhooks import endpoints
from webhooks.errors import (
    DuplicateWebhook,
    InvalidWebhookUrl,
    TooManyWebhooks,
    UnknownWebhookEvent,
    WebhookNotFound,
)
from webhooks.starting import ensure_delivery_or_later, wake

router = APIRouter(tags=["webhooks"], route_class=ProblemRoute)

# Our codes' HTTP status (admin/problems.py's table does not know them).
STATUS: dict[type[InvitationError], int] = {
    InvalidWebhookUrl: 422, UnknownWebhookEvent: 422, DuplicateWebhook: 409,
    TooManyWebhooks: 409, WebhookNotFound: 404, NotAnAdmin: 403, UnknownAccount: 404,
}
Caller = Annotated[Principal, Depends(api_principal)]


class WebhookCreate(BaseModel):
    url: str = Field(max_length=2000)
    events: list[str] = []  # empty: every event


def problem(exc: InvitationError) -> JSONResponse:
    """RFC 9457 problem details, in admin/problems.py's shape (errors name the field)."""
    status = STATUS.get(type(exc), 409)
    errors = [{"field": exc.field, "code": exc.code, "detail": exc.message}] if exc.field \
        else []
    body: dict[str, Any] = {"type": f"/api/v1/problems/{exc.code}",
                            "title": exc.code.replace("_", " ").capitalize(),
                            "status": status, "detail": exc.message, "code": exc.code,
                            "errors": errors}
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


@router.post("/webhooks", status_code=201, response_model=endpoints.NewEndpoint)
async def create_webhook(body: WebhookCreate, caller: Caller, request: Request) -> Any:
    state = request.app.state
    try:
        new = await asyncio.to_thread(
            endpoints.add_endpoint, state.engine, state.settings,
            account_id=caller.account_id, by=caller.email, url=body.url, events=body.events)
    except InvitationError as exc:
        return problem(exc)
    await ensure_delivery_or_later(state.temporal, state.settings, new.id)
    return new


@router.get("/webhooks")
async def list_webhooks(caller: Caller, request: Request) -> dict[str, Any]:
    rows = await asyncio.to_thread(endpoints.list_endpoints, request.app.state.engine,
                                   caller.account_id)
    return {"webhooks": [r.model_dump(mode="json") for r in rows]}


@router.get("/webhooks/{webhook_id}", response_model=endpoints.EndpointView)
async def get_webhook(webhook_id: int, caller: Caller, request: Request) -> Any:
    try:
        return await asyncio.to_thread(endpoints.get_endpoint, request.app.state.engine,
                                       caller.account_id, webhook_id)
    except InvitationError as exc:
        return problem(exc)


@router.delete("/webhooks/{webhook_id}", status_code=204)
async def delete_webhook(webhook_id: int, caller: Caller, request: Request) -> Response:
    state = request.app.state
    try:
        await asyncio.to_thread(endpoints.remove_endpoint, state.engine, caller.account_id,
                                webhook_id)
    except InvitationError as exc:
        return problem(exc)
    await wake(state.temporal, state.settings, webhook_id)
    return Response(status_code=204)
