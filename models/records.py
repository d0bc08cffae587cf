"""Writes to the admin-facing Invitation record, shared by the client (at start) and the
workflow's activities (at every state change).

One statement each, safe to run twice and at the same time: `INSERT ... ON CONFLICT DO
UPDATE` creates the row, or reopens it for a new run only if the previous run ended (a
re-invitation); a row of a run still open is left as it is, so two writers racing to
create it neither fail nor undo each other.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from models.payloads import FINAL_STATUS_VALUES, InvitationInput, InvitationStatus
from models.tables import Invitation


def upsert_invitation(
    session: Session, invitation_id: str, inp: InvitationInput, *, invited_by_user_id: int,
    invited_at: datetime, expires_at: datetime,
) -> None:
    """Create the row, or reopen it for a new run (a re-invitation after an end)."""
    values = {
        "id": invitation_id, "account_id": inp.account_id,
        "invited_by_user_id": invited_by_user_id, "email": inp.email,
        "first_name": inp.first_name, "last_name": inp.last_name,
        "user_type": inp.user_type.value, "group_name": inp.group, "message": inp.message,
        "status": InvitationStatus.PENDING.value, "invited_at": invited_at,
        "expires_at": expires_at, "updated_at": datetime.now(UTC), "source_account_id": None,
    }
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    insert = dialect.insert(Invitation).values(**values)
    reopen = {k: insert.excluded[k] for k in values if k not in ("id", "account_id", "email")}
    session.connection().execute(insert.on_conflict_do_update(
        index_elements=["id"], set_=reopen,
        where=col(Invitation.status).in_(FINAL_STATUS_VALUES)))
