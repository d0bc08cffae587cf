"""Writes to the admin-facing Invitation record, shared by the client (at start) and the
workflow's activities (at every state change).

One statement each, safe to run twice and at the same time: `INSERT ... ON CONFLICT DO
UPDATE` creates the row, or reopens it for a new run only if the previous run ended (a
re-invitation); a row of a run still open is left as it is, so two writers racing to
create it neither fail nor undo each other.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import EllipsisType
from typing import Any

from sqlalchemy import Connection, Table, bindparam, select, update
from sqlmodel import Session

from messages.activity_io import AuditNote, StatusChange
from messages.payloads import FINAL_STATUS_VALUES, InvitationInput, InvitationStatus
from records import claims
from records.db import as_utc, insert_for, prepared
from records.tables import AuditEvent, Invitation
from webhooks import outbox

EVENTS = AuditEvent.__table__  # type: ignore[attr-defined]

INVITATIONS: Table = Invitation.__table__  # type: ignore[attr-defined]


def upsert_invitation(
    session: Session | Connection, invitation_id: str, inp: InvitationInput, *,
    invited_by_user_id: int, invited_at: datetime, expires_at: datetime,
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
    conn = claims.connection_of(session)

    def build() -> Any:  # once per dialect: the values are parameters
        insert = insert_for(conn, INVITATIONS)
        reopen = {k: insert.excluded[k] for k in values if k not in ("id", "account_id", "email")}
        return insert.on_conflict_do_update(
            index_elements=["id"], set_=reopen,
            where=INVITATIONS.c.status.in_(FINAL_STATUS_VALUES))

    conn.execute(prepared(conn, "upsert_invitation", build), values)


def insert_event_once(conn: Connection, *, invitation_id: str, kind: str, at: datetime,
                      account_id: int | None, detail: dict[str, Any]) -> bool:
    """Audit events are keyed by (invitation, kind, time): the workflow's clock makes a
    retried activity write the same key, and a unique index (`uq_auditevent_once`) lets
    only one of two attempts at the same time write it. True if written now."""
    key = {"invitation_id": invitation_id, "kind": kind, "at": as_utc(at)}
    inserted = conn.execute(prepared(conn, "event_once", lambda: insert_for(conn, EVENTS)
                                     .on_conflict_do_nothing().returning(EVENTS.c.id)),
                            key | {"account_id": account_id, "detail": detail}).first()
    return inserted is not None


def _status_update(final: bool, values: dict[str, Any]) -> Any:
    """The Invitation row's update for these parameters (built once per shape): a late,
    non-final status never reopens an ended invitation."""
    sets: dict[str, Any] = {"status": bindparam("new_status"), "updated_at": bindparam("now")}
    if "new_expires_at" in values:
        sets["expires_at"] = bindparam("new_expires_at")
    if "new_source" in values:
        sets["source_account_id"] = bindparam("new_source")
    stmt = update(INVITATIONS).where(INVITATIONS.c.id == bindparam("invitation"))
    if not final:
        stmt = stmt.where(INVITATIONS.c.status.not_in(FINAL_STATUS_VALUES))
    return stmt.values(**sets)


def record_change(conn: Connection, change: StatusChange, *,
                  account_id: int | None | EllipsisType = ...) -> None:
    """Write one status change of the workflow (and the states it passed through before
    it) to the Invitation row and the audit trail, and let the person's join claim follow
    an ending. Safe to run twice: audit events are keyed by (invitation, kind, time), and
    an ended invitation is never reopened by a late, non-final status. `account_id`: the
    Invitation row's, when the caller read it in this transaction (None: no row)."""
    new = change.status.value
    mine = {"invitation": change.invitation_id}
    if account_id is ...:
        account_id = conn.execute(prepared(conn, "change_account", lambda: select(
            INVITATIONS.c.account_id).where(INVITATIONS.c.id == bindparam("invitation"))),
            mine).scalar()
    if account_id is None:
        return  # nothing registered (yet): the workflow registers first
    values: dict[str, Any] = mine | {"new_status": new, "now": as_utc(change.at)}
    if change.expires_at is not None:
        values["new_expires_at"] = as_utc(change.expires_at)
    if change.source_account_id is not None:
        values["new_source"] = change.source_account_id
    final = new in FINAL_STATUS_VALUES
    conn.execute(prepared(conn, ("change_status", final, tuple(sorted(values))),
                          lambda: _status_update(final, values)), values)
    if new == InvitationStatus.COMPLETED.value:
        claims.mark_joined(conn, change.invitation_id)
    elif new in FINAL_STATUS_VALUES:
        claims.release(conn, change.invitation_id)
    notes: list[AuditNote | StatusChange] = [*change.earlier, change]
    for note in notes:
        insert_event_once(conn, invitation_id=change.invitation_id, kind=note.event,
                          at=note.at, account_id=account_id,
                          detail={"status": note.status.value, **note.detail})
    # The same transaction writes the webhooks' outbox rows (nothing without endpoints).
    outbox.enqueue(conn, change.invitation_id, account_id, [
        outbox.Note(kind=n.event, at=as_utc(n.at), status=n.status.value, detail=n.detail)
        for n in notes])
