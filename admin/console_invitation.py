"""One invitation: its state and the live per-category progress of its data (the page
refreshes itself while data moves), and Resend / Revoke from there or from Pending."""

from __future__ import annotations

import asyncio
from typing import Annotated
from urllib.parse import quote, urlencode

from fastapi import Form, Request, Response
from fastapi.responses import RedirectResponse

from admin.console_kit import (
    Admin,
    account_name,
    check_csrf,
    console_router,
    error_page,
    own_invitation,
    render,
    state,
)
from admin.console_users import pending_page
from admin.principal import Principal
from invitations.errors import InvitationError, TemporalUnavailable
from messages.payloads import Category, Progress

router = console_router()

@router.get("/invitations/{invitation_id:path}")
async def invitation_page(request: Request, principal: Admin, invitation_id: str) -> Response:
    _, engine, client = state(request)
    row = await asyncio.to_thread(own_invitation, engine, principal, invitation_id)
    if row is None:
        return error_page(request, 404)
    progress: Progress | None = None
    unavailable = None
    try:
        progress = await client.status(invitation_id)
    except InvitationError as exc:
        unavailable = exc.message
    categories = ([progress.categories[c] for c in Category if c in progress.categories]
                  if progress is not None else [])
    name = await asyncio.to_thread(account_name, engine, principal.account_id)
    return render(request, "invitation.html", {
        "row": row, "p": progress, "categories": categories, "unavailable": unavailable,
        "account_name": name, "nav": "pending"}, principal=principal)


async def _act(request: Request, principal: Principal, invitation_id: str, csrf: str,
               action: str, back: str, reason: str = "") -> Response:
    check_csrf(request, csrf)
    _, engine, client = state(request)
    row = await asyncio.to_thread(own_invitation, engine, principal, invitation_id)
    if row is None:
        return error_page(request, 404)
    try:
        if action == "resend":
            await client.resend(invitation_id)
        else:
            await client.revoke(invitation_id, by=principal.email, reason=reason.strip() or None)
    except InvitationError as exc:
        code = 503 if isinstance(exc, TemporalUnavailable) else 409
        return await pending_page(request, principal, status_code=code,
                                  error=f"{action} {row.email}: {exc.message}")
    if back == "invitation":
        return RedirectResponse(f"/invitations/{quote(invitation_id, safe='@/')}", status_code=303)
    done = {"resend": "resent", "revoke": "revoked"}[action]
    return RedirectResponse("/users/pending?" + urlencode({"notice": done,
                                                           "invitation": invitation_id}),
                            status_code=303)


@router.post("/invitations/{invitation_id:path}/resend")
async def resend(request: Request, principal: Admin, invitation_id: str,
                 csrf: Annotated[str, Form()] = "", back: Annotated[str, Form()] = "") -> Response:
    return await _act(request, principal, invitation_id, csrf, "resend", back)


@router.post("/invitations/{invitation_id:path}/revoke")
async def revoke(request: Request, principal: Admin, invitation_id: str,
                 csrf: Annotated[str, Form()] = "", back: Annotated[str, Form()] = "",
                 reason: Annotated[str, Form()] = "") -> Response:
    return await _act(request, principal, invitation_id, csrf, "revoke", back, reason)
