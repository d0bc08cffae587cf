"""Writes to the admin-facing Invitation record, shared by the client (at start) and the
workflow's activities (at every state change).

One statement each, safe to run twice and at the same time: `INSERT ... ON CONFLICT DO
UPDATE` creates the row, or reopens it for a new run only if the previous run ended (a
re-invitation); a row of a run still open is left as it is, so two writers racing to
create it neither fail nor undo each other.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table
from sqlmodel import Session

from models.db import insert_for, prepared
from models.payloads import FINAL_STATUS_VALUES, InvitationInput, InvitationStatus
from models.tables import Invitation

INVITATIONS: Table = Invitation.__table__  # type: ignore[attr-defined]


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
    conn = session.connection()

    def build() -> Any:  # once per dialect: the values are parameters
        insert = insert_for(conn, INVITATIONS)
        reopen = {k: insert.excluded[k] for k in values if k not in ("id", "account_id", "email")}
        return insert.on_conflict_do_update(
            index_elements=["id"], set_=reopen,
            where=INVITATIONS.c.status.in_(FINAL_STATUS_VALUES))

    conn.execute(prepared(conn, "upsert_invitation", build), values)
