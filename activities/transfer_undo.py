"""The undo of one category's transfer (`TransferActivities.undo_transfer`): delete this
invitation's staged copies, never a source row nor a live one, in the transaction that
bumps the transfer's epoch, so that no batch of an older attempt commits after it; then,
for recordings, remove the staged files.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, delete, update
from temporalio.exceptions import ApplicationError

from activities.fencing import LIVE, RELEASED, STATE, UNDONE, state_row
from activities.recording_files import remove_staging_files
from activities.staging import table_of
from messages.activity_io import ERR_TRANSFER_LIVE, UndoneTransfer, UndoTransfer
from messages.payloads import Category
from records.db import as_utc, write_transaction
from records.tables import utcnow


def undo_staged(engine: Engine, recordings_dir: Path, req: UndoTransfer,
                scheduled_at: datetime) -> UndoneTransfer:
    """An undo scheduled before a new round began (the invitation was sent again) leaves
    that round alone: see activities.fencing, "Rounds"."""
    table = table_of(req.category)
    with write_transaction(engine) as conn:
        row = state_row(conn, req.invitation_id, req.category.value)
        if row.state in (LIVE, RELEASED):
            raise ApplicationError(
                f"the {req.category.value} transfer of {req.invitation_id} is live "
                "(finalise committed): past the point of no return, nothing is undone",
                type=ERR_TRANSFER_LIVE, non_retryable=True)
        if row.state != UNDONE and row.undone_at is not None and \
                as_utc(scheduled_at) <= as_utc(row.undone_at):
            return UndoneTransfer(category=req.category, removed=0)  # an earlier round
        removed = conn.execute(delete(table).where(
            table.c.invitation_id == req.invitation_id, table.c.staged == True,  # noqa: E712
        )).rowcount
        undone_at = max(as_utc(scheduled_at), as_utc(row.undone_at or scheduled_at))
        conn.execute(update(STATE).where(STATE.c.id == row.id).values(
            epoch=STATE.c.epoch + 1, state=UNDONE, undone_at=undone_at,
            checkpoint=0, rows_copied=0, batches=0, bytes_copied=0, updated_at=utcnow()))
    if req.category == Category.RECORDINGS:
        # After the commit: from here no attempt can rename a file into place.
        remove_staging_files(recordings_dir, req.invitation_id)
    return UndoneTransfer(category=req.category, removed=max(int(removed or 0), 0))
