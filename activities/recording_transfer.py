"""The recordings' transfer, one recording (row and file) per batch: the file is copied to
this attempt's own temporary file and verified (activities.recording_files), then renamed
into place in the fenced transaction that stages its row and reads the next recording.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, select
from temporalio import activity

from activities.fencing import COUNT_ROWS, Cursor, advance, hold, in_thread, inserted_rows
from activities.recording_files import copy_verified, staged_rel_path, temp_path
from activities.staging import STAGING_KEY, Batch, table_of
from messages.activity_io import Transfer
from messages.payloads import Category
from records.db import insert_for, write_transaction

# A quick try (Transfer.budget_seconds) leaves a recording bigger than this to the
# activity that follows, which heartbeats while it copies.
QUICK_RECORDING_BYTES = 16 * 1024 * 1024
RECORDINGS: Table = table_of(Category.RECORDINGS)


def recording_after(conn: Connection, t: Transfer, checkpoint: int) -> Any:
    """The invitee's first recording not staged yet after `checkpoint` (None: none left)."""
    return conn.execute(select(RECORDINGS).where(
        RECORDINGS.c.user_id == t.user_id,
        RECORDINGS.c.account_id == t.source_account_id,
        RECORDINGS.c.staged == False,  # noqa: E712
        RECORDINGS.c.id > checkpoint,
    ).order_by(RECORDINGS.c.id).limit(1)).first()


async def copy_recording(engine: Engine, root: Path, t: Transfer, cursor: Cursor,
                         src: Any) -> tuple[Batch, Any]:
    """Stage the recording `src` (the next after the checkpoint; files under `root`): copy
    to this attempt's own file, verify, then rename and insert its row in one fenced
    transaction, which also reads the recording after it (None: the last)."""
    rel = staged_rel_path(t.org_account_id, t.invitation_id, src.id, src.path)
    temp = temp_path(root / rel, cursor.epoch, activity.info().attempt)
    stop = threading.Event()
    what = f"recording {src.id} ({src.topic!r}, {src.path})"
    progress = {"checkpoint": cursor.checkpoint, "epoch": cursor.epoch, "file": src.id}
    size = await in_thread(copy_verified, root / src.path, temp, src.sha256, what, stop,
                           details=progress, on_cancel=stop.set)
    try:
        return await in_thread(stage_recording, engine, root, t, cursor, src, temp, rel, size)
    finally:
        temp.unlink(missing_ok=True)  # renamed away on success; never left behind


def stage_recording(engine: Engine, root: Path, t: Transfer, cursor: Cursor, src: Any,
                    temp: Path, rel: Path, size: int) -> tuple[Batch, Any]:
    values = {k: v for k, v in src._mapping.items() if k != "id"} | {
        "account_id": t.org_account_id, "invitation_id": t.invitation_id,
        "source_id": src.id, "staged": True, "path": str(rel), "size_bytes": size,
    }
    with write_transaction(engine) as conn:
        hold(conn, cursor)
        # Renamed while this attempt holds the transfer's lock: once an undo or a newer
        # attempt took it, a stale attempt never renames into the staged path.
        temp.replace(root / rel)
        stmt = insert_for(conn, RECORDINGS).values(**values) \
            .on_conflict_do_nothing(index_elements=STAGING_KEY)
        inserted = inserted_rows(conn.execute(stmt, execution_options=COUNT_ROWS))
        copied = advance(conn, cursor, src.id, inserted, size)
        after = recording_after(conn, t, src.id)
    return Batch(src.id, inserted, size, last=after is None, copied=copied), after
