"""User Management > Users: the account's members, and the Pending list (what blocks a
blocked invitation, when its latest email went out, the reminders sent), a page at a time."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request, Response
from fastapi.responses import RedirectResponse
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from admin.console_kit import (
    Admin,
    account_name,
    console_router,
    own_invitation,
    render,
    state,
)
from admin.principal import Principal
from content.present import datetime_utc
from invitations.client import InvitationsClient
from invitations.errors import InvitationError
from invitations.models import PendingInvitation
from messages.payloads import EmailKind, Progress
from records.tables import SentEmail, User

router = console_router()
PAGE_SIZE = 100  # rows of the Pending list per page
NOTICES = {"resent": "A new invitation email was sent to {email}; it expires {expires}.",
           "revoked": "The invitation of {email} was revoked."}


@router.get("/")
async def home(principal: Admin) -> Response:
    return RedirectResponse("/users", status_code=303)


def _members(engine: Engine, account_id: int) -> list[User]:
    with Session(engine) as session:
        return list(session.exec(select(User).where(col(User.account_id) == account_id)
                                 .order_by(col(User.role), col(User.email))).all())


@router.get("/users")
async def users(request: Request, principal: Admin) -> Response:
    _, engine, _ = state(request)
    members = await asyncio.to_thread(_members, engine, principal.account_id)
    name = await asyncio.to_thread(account_name, engine, principal.account_id)
    return render(request, "users.html", {"members": members, "account_name": name,
                                          "nav": "members"}, principal=principal)


def _mail_facts(engine: Engine, ids: list[str]) -> dict[str, tuple[Any, int]]:
    """Per invitation: when its latest invitation email went out, and reminders sent."""
    if not ids:
        return {}
    with Session(engine) as session:
        rows = session.exec(
            select(SentEmail.invitation_id, SentEmail.kind, func.max(SentEmail.sent_at),
                   func.count())
            .where(col(SentEmail.invitation_id).in_(ids),
                   col(SentEmail.kind).in_([EmailKind.INVITATION.value,
                                            EmailKind.REMINDER.value]))
            .group_by(col(SentEmail.invitation_id), col(SentEmail.kind))).all()
    facts: dict[str, tuple[Any, int]] = {}
    for inv, kind, latest, n in rows:
        sent, reminders = facts.get(str(inv), (None, 0))
        if kind == EmailKind.INVITATION.value:
            sent = latest
        else:
            reminders = int(n)
        facts[str(inv)] = (sent, reminders)
    return facts


async def _blocking(client: InvitationsClient, rows: list[PendingInvitation]
                    ) -> dict[str, Progress]:
    """The live state of the blocked ones (what blocks them), read from their workflows."""
    blocked = [r.invitation_id for r in rows if r.status == "blocked"][:50]

    async def one(inv: str) -> Progress | None:
        try:
            return await asyncio.wait_for(client.status(inv), timeout=5)
        except (InvitationError, TimeoutError):
            return None

    found = await asyncio.gather(*(one(i) for i in blocked))
    return {i: p for i, p in zip(blocked, found, strict=True) if p is not None}


async def pending_page(request: Request, principal: Principal, *, notice: str | None = None,
                       error: str | None = None, status_code: int = 200, page: int = 1
                       ) -> Response:
    _, engine, client = state(request)
    everyone = await client.pending(principal.account_id)
    pages = max(1, -(-len(everyone) // PAGE_SIZE))
    page = min(max(page, 1), pages)
    rows = everyone[(page - 1) * PAGE_SIZE:page * PAGE_SIZE]
    facts = await asyncio.to_thread(_mail_facts, engine, [r.invitation_id for r in rows])
    live = await _blocking(client, rows)
    name = await asyncio.to_thread(account_name, engine, principal.account_id)
    return render(request, "pending.html", {
        "rows": rows, "facts": facts, "live": live, "notice": notice, "error": error,
        "account_name": name, "nav": "pending", "page": page, "pages": pages,
        "total": len(everyone), "first": (page - 1) * PAGE_SIZE + 1},
        status_code, principal=principal)


@router.get("/users/pending")
async def pending(request: Request, principal: Admin, notice: str = "",
                  invitation: str = "", page: int = 1) -> Response:
    text = None
    if notice in NOTICES and invitation:
        row = own_invitation(request.app.state.engine, principal, invitation)
        if row is not None:
            text = NOTICES[notice].format(email=row.email, expires=datetime_utc(row.expires_at))
    return await pending_page(request, principal, notice=text, page=page)
