"""Writes to the admin-facing Invitation record, shared by the client (at start) and the
workflow's activities (at every state change). Upserts: safe to run twice."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlmodel import Session

from models.payloads import FINAL_STATUS_VALUES, InvitationInput, InvitationStatus
from models.tables import Invitation


def upsert_invitation(
    session: Session, invitation_id: str, inp: InvitationInput, *, invited_by_user_id: int,
    invited_at: datetime, expires_at: datetime,
) -> Invitation:
    """Create the row, or reopen it for a new run (a re-invitation after an end)."""
    row = session.get(Invitation, invitation_id)
    if row is None:
        row = Invitation(id=invitation_id, account_id=inp.account_id,
                         invited_by_user_id=invited_by_user_id, email=inp.email,
                         expires_at=expires_at, invited_at=invited_at)
    elif row.status not in FINAL_STATUS_VALUES:
        return row  # same run: a retry, or the client and the workflow both writing
    row.invited_by_user_id = invited_by_user_id
    row.first_name, row.last_name = inp.first_name, inp.last_name
    row.user_type, row.group_name, row.message = inp.user_type.value, inp.group, inp.message
    row.status = InvitationStatus.PENDING.value
    row.invited_at, row.expires_at = invited_at, expires_at
    row.updated_at = datetime.now(UTC)
    row.source_account_id = None
    session.add(row)
    return row
