"""Fencing and pacing shared by the data-moving activities (transfers, undo, finalise,
release). The state of one (invitation, category) transfer is a `TransferState` row:

- `claim`: an attempt takes the transfer by bumping its `epoch` (the row is created on
  first use) and resumes from the checkpoint stored there.
- `hold` / `advance`: inside each batch's own transaction, the UPDATE that checks the
  attempt still holds the transfer (same epoch, state "running") and, at the end, moves the
  checkpoint. A batch whose check hits no row rolls back and the attempt stops with a
  non-retryable `TransferSuperseded`: a newer attempt, an undo or finalise took over.
- `BatchSizer`: batches sized by time, not by a fixed row count.
- `in_thread`: blocking work on the loop's default executor (sized by worker.py), with a
  heartbeat every second while it runs, so a short heartbeat timeout still tells a dead
  worker from a long batch.

Rounds: an invitation that failed and was compensated can be sent again (same id). The
undo stamps `undone_at` with the server time the undo was scheduled; an attempt scheduled
before that belongs to the undone round and is refused (`TransferUndone`), one scheduled
after it starts a new round from zero. Both times come from the Temporal server's clock.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Integer, Table, and_, bindparam, update
from temporalio import activity
from temporalio.exceptions import ApplicationError

from messages.activity_io import ERR_TRANSFER_SUPERSEDED, ERR_TRANSFER_UNDONE
from records.db import as_utc, insert_for, prepared
from records.tables import TransferState, utcnow

RUNNING, UNDONE, LIVE, RELEASED = "running", "undone", "live", "released"
HEARTBEAT_EVERY = 1.0  # seconds between heartbeats while a thread works
STATE: Table = TransferState.__table__  # type: ignore[attr-defined]

T = TypeVar("T")


# SQLAlchemy reports an INSERT's rowcount only when asked (PostgreSQL otherwise says -1).
COUNT_ROWS = {"preserve_rowcount": True}


def inserted_rows(result: Any) -> int:
    """Rows an INSERT ... ON CONFLICT DO NOTHING inserted (conflicts not counted)."""
    if result.rowcount is None or result.rowcount < 0:
        raise RuntimeError("the database did not report how many rows were inserted")
    return int(result.rowcount)


@dataclass(frozen=True)
class Cursor:
    """What one attempt holds: its state row and epoch, and where the next batch starts."""

    state_id: int
    epoch: int
    state: str
    checkpoint: int
    rows_copied: int
    bytes_copied: int
    limit: int = 1000  # rows in the next batch

    def at(self, checkpoint: int, limit: int) -> Cursor:
        return replace(self, checkpoint=checkpoint, limit=limit)


def _upsert_state(conn: Connection, claiming: bool) -> Any:
    """INSERT the state row, or on conflict: bump the epoch of a running one (claiming),
    or touch it; RETURNING the row (none when a claim meets a row not running)."""
    def build() -> Any:
        insert = insert_for(conn, STATE).values(
            invitation_id=bindparam("invitation_id"), category=bindparam("category"),
            epoch=1 if claiming else 0, state=RUNNING, updated_at=bindparam("now"))
        if claiming:
            upsert = insert.on_conflict_do_update(
                index_elements=["invitation_id", "category"],
                set_={"epoch": STATE.c.epoch + 1, "updated_at": insert.excluded.updated_at},
                where=STATE.c.state == RUNNING)
        else:
            upsert = insert.on_conflict_do_update(
                index_elements=["invitation_id", "category"],
                set_={"updated_at": insert.excluded.updated_at})
        return upsert.returning(*STATE.c)
    return prepared(conn, ("upsert_state", claiming), build)


def state_row(conn: Connection, invitation_id: str, category: str) -> Any:
    """The state row, created if missing and locked until commit, in one statement: an
    upsert whose DO UPDATE (of `updated_at` only) takes the row lock on PostgreSQL like
    FOR UPDATE (SQLite's IMMEDIATE transaction already holds the database), and RETURNING
    gives the row as it stands, so what is decided from it holds until commit."""
    return conn.execute(_upsert_state(conn, claiming=False), {
        "invitation_id": invitation_id, "category": category, "now": utcnow()}).one()


def _cursor(row: Any, first_batch: int) -> Cursor:
    return Cursor(row.id, row.epoch, row.state, row.checkpoint, row.rows_copied,
                  row.bytes_copied, first_batch)


def claim(conn: Connection, invitation_id: str, category: str, scheduled_at: datetime,
          first_batch: int) -> Cursor:
    """Take the transfer for an attempt scheduled (by the server) at `scheduled_at`.

    The usual case is one statement: an upsert that creates the row with epoch 1 or, if
    it is running, bumps its epoch (DO UPDATE ... WHERE state = 'running'; the conflicting
    row is locked on PostgreSQL whether or not it matches). A row in another state comes
    back empty and is decided below."""
    taken = conn.execute(_upsert_state(conn, claiming=True), {
        "invitation_id": invitation_id, "category": category, "now": utcnow()}).first()
    if taken is not None:
        return _cursor(taken, first_batch)
    row = state_row(conn, invitation_id, category)
    if row.state == UNDONE:
        if row.undone_at is None or as_utc(scheduled_at) <= as_utc(row.undone_at):
            raise ApplicationError(
                f"the {category} transfer of {invitation_id} was undone; an attempt of the "
                "undone round never copies again", type=ERR_TRANSFER_UNDONE, non_retryable=True)
        # A new round (the invitation was sent again after its compensation): from zero.
        values: dict[str, Any] = dict(state=RUNNING, checkpoint=0, rows_copied=0, batches=0,
                                      bytes_copied=0, released_upto=0)
    elif row.state == RUNNING:
        values = {}
    else:  # live or released: finalise committed, nothing is copied any more
        return _cursor(row, first_batch)
    row = conn.execute(update(STATE).where(STATE.c.id == row.id).values(
        epoch=STATE.c.epoch + 1, updated_at=utcnow(), **values).returning(*STATE.c)).one()
    return _cursor(row, first_batch)


def _superseded(cursor: Cursor) -> ApplicationError:
    return ApplicationError(
        f"transfer attempt with epoch {cursor.epoch} no longer holds the transfer (a newer "
        "attempt, an undo or finalise took it): its batch was rolled back",
        type=ERR_TRANSFER_SUPERSEDED, non_retryable=True)


def _held() -> Any:
    """The attempt's fence: its state row still carries its epoch and is running."""
    return and_(STATE.c.id == bindparam("state_id"), STATE.c.epoch == bindparam("held_epoch"),
                STATE.c.state == RUNNING)


def hold(conn: Connection, cursor: Cursor) -> None:
    """First statement of a batch's transaction: check the attempt still holds the
    transfer, and take the lock that keeps it so until commit. Being a write, it also keeps
    SQLite from failing a read transaction's later upgrade to a write (SQLITE_BUSY)."""
    stmt = prepared(conn, "hold", lambda: update(STATE).where(_held()).values(
        updated_at=bindparam("now")))
    done = conn.execute(stmt, {"state_id": cursor.state_id, "held_epoch": cursor.epoch,
                               "now": utcnow()})
    if done.rowcount != 1:
        raise _superseded(cursor)


def advance(conn: Connection, cursor: Cursor, checkpoint: int, rows: int,
            size: int = 0) -> int:
    """Last statement of a batch's transaction: the checkpoint moves with the batch.
    Returns the rows copied by every committed batch of the round, this one included."""
    stmt = prepared(conn, "advance", lambda: update(STATE).where(_held()).values(
        checkpoint=bindparam("new_checkpoint"),
        rows_copied=STATE.c.rows_copied + bindparam("rows", type_=Integer),
        batches=STATE.c.batches + 1,
        bytes_copied=STATE.c.bytes_copied + bindparam("size", type_=Integer),
        updated_at=bindparam("now")).returning(STATE.c.rows_copied))
    done = conn.execute(stmt, {"state_id": cursor.state_id, "held_epoch": cursor.epoch,
                               "new_checkpoint": checkpoint, "rows": rows, "size": size,
                               "now": utcnow()}).first()
    if done is None:
        raise _superseded(cursor)
    return int(done.rows_copied)


class BatchSizer:
    """Rows per batch, aiming at `target` seconds a batch: a batch is long enough that its
    fixed costs (statements, commit, fence) vanish, short enough that a crash loses little
    and other writers wait little. Changes at most 2x per batch."""

    def __init__(self, first: int, *, target: float = 0.75, low: int = 200,
                 high: int = 100_000) -> None:
        self.size = max(1, first)
        self.target, self.low, self.high = target, low, high

    def record(self, rows: int, seconds: float) -> int:
        if rows >= self.size:  # only full batches tell the speed
            ideal = rows * self.target / max(seconds, 1e-3)
            ideal = min(max(ideal, self.size / 2), self.size * 2)
            self.size = int(min(max(ideal, self.low), self.high))
        return self.size


def heartbeat(*details: Any) -> None:
    """`activity.heartbeat`, except in a local activity (a quick first try inside the
    workflow task), which has no heartbeat: its timeout and the fencing cover it."""
    if not activity.info().is_local:
        activity.heartbeat(*details)


async def in_thread(fn: Callable[..., T], *args: Any, details: Any = None,
                    on_cancel: Callable[[], None] | None = None) -> T:
    """Run `fn(*args)` on the loop's default executor, heartbeating every HEARTBEAT_EVERY s.

    A thread cannot be interrupted: on cancellation `on_cancel` asks it to stop (file
    copies check it between chunks), and we wait until it has returned, so that its
    transaction has committed or rolled back before the cancellation is reported and an
    undo can follow."""
    loop = asyncio.get_running_loop()
    # In the activity's context, as asyncio.to_thread does (activity.info() works there).
    future = loop.run_in_executor(None, functools.partial(
        contextvars.copy_context().run, fn, *args))
    try:
        while True:
            done, _ = await asyncio.wait({future}, timeout=HEARTBEAT_EVERY)
            if done:
                return future.result()
            heartbeat(details)
    except asyncio.CancelledError:
        if on_cancel is not None:
            on_cancel()
        await asyncio.wait({future})
        if not future.cancelled():
            future.exception()  # retrieved: the cancellation is what we report
        raise
