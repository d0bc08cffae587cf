"""The SSO endpoints, a router included in the link handler app (linkhandler/app.py), so
they share its Temporal client, database and security headers. Answers are JSON:

    POST /sso/{account_id}/start  -> 200 {"nonce", "expires_at"}: put the nonce in the
                                     IdP authorisation request
    POST /sso/{account_id}/login  id_token=...&nonce=... (form, e.g. the IdP's form_post,
                                  or JSON) -> 200 {"outcome": "provisioned" |
                                  "already_member" | "invitation", ...}
Errors: {"error": {"code", "field", "message"}} with 401 (the token or nonce), 403 (not a
verified domain of the account), 404, 409 (cannot join: the invitation's own refusals),
503 (SSO not configured).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from domains.idtoken import SsoRefused
from domains.sso import JustInTime, SsoLogins
from invitations.client import InvitationsClient
from linkhandler.handler import HandlerDep

router = APIRouter(prefix="/sso", tags=["sso"])


def just_in_time(h: HandlerDep) -> JustInTime:
    return JustInTime(h.settings, h.engine, InvitationsClient(h.client, h.settings, h.engine))


JustInTimeDep = Annotated[JustInTime, Depends(just_in_time)]
# A database id: a bigger number is a 422 here, not an OverflowError in the driver.
AccountId = Annotated[int, Path(ge=1, le=2**63 - 1)]


def refused(exc: SsoRefused) -> JSONResponse:
    headers = {"WWW-Authenticate": f'Bearer error="invalid_token", '
                                   f'error_description="{exc.code}"'} if exc.status == 401 else {}
    return JSONResponse({"error": exc.to_dict()}, status_code=exc.status, headers=headers)


async def fields_of(request: Request) -> dict[str, str]:
    if "application/json" in request.headers.get("content-type", ""):
        try:
            data: Any = await request.json()
        except ValueError:
            data = {}
    else:
        data = dict(await request.form())
    data = data if isinstance(data, dict) else {}
    return {k: v for k, v in data.items() if isinstance(v, str)}


@router.post("/{account_id}/start")
async def start(account_id: AccountId, h: HandlerDep) -> JSONResponse:
    try:
        login = await run_in_threadpool(SsoLogins(h.settings, h.engine).start, account_id)
    except SsoRefused as exc:
        return refused(exc)
    return JSONResponse({"account_id": account_id, "nonce": login.nonce,
                         "expires_at": login.expires_at.isoformat()})


@router.post("/{account_id}/login")
async def login(account_id: AccountId, request: Request, jit: JustInTimeDep) -> JSONResponse:
    fields = await fields_of(request)
    try:
        answer = await jit.login(account_id, fields.get("id_token", "").strip(),
                                 fields.get("nonce", "").strip())
    except SsoRefused as exc:
        return refused(exc)
    return JSONResponse(answer.to_dict())
