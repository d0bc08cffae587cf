"""The transactional outbox: an event's delivery rows are written by the transaction that
records it (records.changes.record_change; `enqueue_event` for single audit events such as
"invited"), so an event is delivered if and only if it was recorded.

On the hot path: one indexed lookup of the account's endpoints per recorded change, and
nothing more for an account without endpoints (most of them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, bindparam, select

from records.db import as_utc, insert_for, prepared
from records.tables import Invitation
from webhooks.events import event_body, event_for, event_id
from webhooks.tables import WebhookDelivery, WebhookEndpoint

ENDPOINTS: Table = WebhookEndpoint.__table__  # type: ignore[attr-defined]
DELIVERIES: Table = WebhookDelivery.__table__  # type: ignore[attr-defined]
INVITATIONS: Table = Invitation.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Note:
    """One audit event as the outbox sees it."""

    kind: str
    at: datetime
    status: str | None
    detail: dict[str, Any]


def enqueue(conn: Connection, invitation_id: str, account_id: int,
            notes: Sequence[Note]) -> int:
    """Write a delivery row per lifecycle event in `notes` (oldest first) and endpoint of
    the account subscribed to it. Safe to run twice: (endpoint, event id) is unique."""
    endpoints = conn.execute(prepared(conn, "webhook_endpoints_of", lambda: select(
        ENDPOINTS.c.id, ENDPOINTS.c.events).where(
        ENDPOINTS.c.account_id == bindparam("account_id"))),
        {"account_id": account_id}).all()
    if not endpoints:
        return 0
    events = [(note, event) for note in notes
              if (event := event_for(note.kind, note.status)) is not None]
    if not events:
        return 0
    invitation = conn.execute(select(
        INVITATIONS.c.email, INVITATIONS.c.user_type, INVITATIONS.c.expires_at).where(
        INVITATIONS.c.id == invitation_id)).first()
    about: dict[str, Any] = {"invitation_id": invitation_id, "account_id": account_id}
    if invitation is not None:
        about |= {"email": invitation.email, "user_type": invitation.user_type}
    rows = []
    now = datetime.now(UTC)
    for note, event in events:  # in order: row ids follow the order events happened in
        eid = event_id(invitation_id, note.kind, note.at)
        status = note.status or ("pending" if event == "created" else None)
        body = event_body(event_id=eid, event=event, at=note.at, invitation=about,
                          status=status, detail=note.detail)
        rows += [{"endpoint_id": endpoint.id, "event_id": eid, "event_type": event,
                  "invitation_id": invitation_id, "body": body, "state": "pending",
                  "created_at": now, "attempts": 0}
                 for endpoint in endpoints if not endpoint.events or event in endpoint.events]
    written = 0
    for row in rows:  # one statement per row: ids are assigned in this order
        result = conn.execute(insert_for(conn, DELIVERIES).values(**row)
                              .on_conflict_do_nothing(index_elements=["endpoint_id", "event_id"]))
        written += result.rowcount or 0
    return written


def enqueue_event(conn: Connection, *, invitation_id: str, account_id: int | None, kind: str,
                  at: datetime, detail: dict[str, Any], status: str | None = None) -> int:
    """The one-line hook for a writer of a single audit event (e.g. "invited" in
    activities/platform.py `add_event_once`): call it in the same transaction."""
    if account_id is None:
        return 0
    return enqueue(conn, invitation_id, account_id,
                   [Note(kind=kind, at=as_utc(at), status=status, detail=detail)])
