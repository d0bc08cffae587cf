"""The lifecycle events endpoints receive, and how the audit trail's kinds map to them.

An event's id is derived from (invitation, audit kind, time): the workflow's clock makes a
retried recording produce the same id, so the outbox row (unique per endpoint and id) is
written once and every delivery attempt carries the same `webhook-id`.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from records.db import as_utc

# The names endpoints subscribe to (`--events`); the payload's `type` is "invitation.<name>".
EVENT_TYPES: tuple[str, ...] = (
    "created", "reminder_sent", "blocked", "refund_choice_needed", "accepted",
    "transfer_started", "completed", "failed", "expired", "declined", "revoked",
    "needs_attention", "cancelled", "joined_elsewhere",
)

# Audit event kind (records.changes, activities) -> lifecycle event. Kinds not listed
# ("resent", "join_refused", "linked", "refund", ...) are bookkeeping, not events.
KIND_TO_EVENT: dict[str, str] = {
    "invited": "created",
    "reminder_sent": "reminder_sent",
    "reminder": "reminder_sent",
    "blocked": "blocked",
    "refund_choice_needed": "refund_choice_needed",
    "accepted": "accepted",
    "transferring": "transfer_started",
    "transfer_started": "transfer_started",
    "completed": "completed",
    "failed_compensated": "failed",
    "failed": "failed",
    "expired": "expired",
    "declined": "declined",
    "revoked": "revoked",
    "needs_attention": "needs_attention",
    "cancelled": "cancelled",
    "joined_elsewhere": "joined_elsewhere",
}

# An ending written under a kind not listed above still tells the endpoints (by status).
FINAL_STATUS_TO_EVENT: dict[str, str] = {
    "completed": "completed", "failed_compensated": "failed", "expired": "expired",
    "declined": "declined", "revoked": "revoked", "cancelled": "cancelled",
    "joined_elsewhere": "joined_elsewhere", "needs_attention": "needs_attention",
}


def event_for(kind: str, status: str | None) -> str | None:
    """The lifecycle event an audit note is, or None for bookkeeping."""
    if kind in KIND_TO_EVENT:
        return KIND_TO_EVENT[kind]
    return FINAL_STATUS_TO_EVENT.get(status or "")


def parse_events(names: list[str] | None) -> list[str]:
    """`--events` / the API's `events`: known names (with or without "invitation."), in
    EVENT_TYPES order; empty means all. Raises ValueError naming the unknown ones."""
    wanted = {n.strip().removeprefix("invitation.") for n in names or [] if n.strip()}
    unknown = sorted(wanted - set(EVENT_TYPES))
    if unknown:
        raise ValueError(f"unknown event {', '.join(unknown)}; known events: "
                         f"{', '.join(EVENT_TYPES)}")
    return [e for e in EVENT_TYPES if e in wanted]


def event_id(invitation_id: str, kind: str, at: datetime) -> str:
    key = f"{invitation_id}\n{kind}\n{as_utc(at).isoformat()}".encode()
    return "evt_" + hashlib.sha256(key).hexdigest()[:32]


def event_body(*, event_id: str, event: str, at: datetime, invitation: dict[str, Any],
               status: str | None, detail: dict[str, Any]) -> str:
    """The JSON body, per the Standard Webhooks payload shape (type, timestamp, data)."""
    payload = {
        "type": f"invitation.{event}",
        "timestamp": as_utc(at).isoformat().replace("+00:00", "Z"),
        "data": {"id": event_id, "event": event, "status": status, **invitation,
                 "detail": detail},
    }
    return json.dumps(payload, separators=(",", ":"), default=str)
