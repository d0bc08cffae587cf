"""What goes into the client and what comes back: plain pydantic models, so that
`starter.py --json` prints them as they are (`model_dump(mode="json")`)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel

from messages.payloads import UserType


class InviteRequest(BaseModel):
    """One invitation to start. Kept as typed by the caller (a CSV cell, an argument):
    validation turns every bad value into a per-row typed error, not an exception here."""

    account_id: int
    invited_by: str
    email: str
    first_name: str = ""
    last_name: str = ""
    user_type: str = UserType.BASIC.value
    group: str | None = None
    message: str | None = None
    expires_in_days: int | None = None  # None: settings.invitation_expiry_days
    line: int | None = None  # line of the CSV file it came from, for error reports


class Outcome(StrEnum):
    STARTED = "started"
    ALREADY_PENDING = "already_pending"  # a workflow with this id is already running
    ERROR = "error"


class ErrorInfo(BaseModel):
    code: str
    field: str | None
    message: str


class RowResult(BaseModel):
    line: int | None = None
    email: str
    outcome: Outcome
    invitation_id: str | None = None
    status: str | None = None  # the invitation's status when already pending
    expires_at: datetime | None = None
    error: ErrorInfo | None = None


class InviteResult(BaseModel):
    """One invitation, started now or found already running."""

    invitation_id: str
    email: str
    outcome: Outcome
    status: str
    expires_at: datetime | None = None


class PendingInvitation(BaseModel):
    """A line of the admin's Pending list (from the Invitation table)."""

    invitation_id: str
    email: str
    first_name: str
    last_name: str
    user_type: str
    group: str | None
    status: str
    invited_by: str
    invited_at: datetime
    expires_at: datetime


class AcceptanceLink(BaseModel):
    invitation_id: str
    email: str
    url: str
    issued_at: datetime
