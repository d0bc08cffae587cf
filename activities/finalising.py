"""The point of no return and what follows it.

- `finalise`: ONE short transaction. Every transfer of the invitation goes live (its
  TransferState row "running" -> "live", epoch bumped so no stale attempt writes again),
  the individual account is closed when nobody is left in it, an audit event is written
  once. Nothing is deleted and no data row is touched, so it takes milliseconds whatever
  the amount of data. From then on a staged copy of a live transfer counts as live (see
  models.platform.live_rows).
- `release_source`: after completion, off the critical path, safe to re-run any number of
  times: in time-sized batches it flips the copies of live transfers to staged=False and
  deletes the source rows they were copied from (each batch in one transaction with its
  checkpoint); a source recording file is deleted only after the destination file's
  sha256 was re-read and matched. A mismatch keeps the source file and row and fails with
  a non-retryable ChecksumMismatch once everything else is released.
"""

from __future__ import annotations

import functools
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, delete, func, select, update
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.fencing import LIVE, RELEASED, RUNNING, STATE, UNDONE, BatchSizer, in_thread
from activities.recording_files import remove_staging_files, sha256_of
from config import Settings
from models.activity_io import (
    ERR_CHECKSUM_MISMATCH,
    ERR_NOT_FINALISED,
    ERR_TRANSFER_UNDONE,
    Finalise,
    Finalised,
    Released,
    ReleaseSource,
)
from models.db import write_transaction
from models.payloads import Category
from models.platform import CATEGORY_TABLES
from models.records import record_change
from models.tables import Account, AuditEvent, User, utcnow


def _table(category: Category) -> Table:
    return CATEGORY_TABLES[category].__table__  # type: ignore[no-any-return]


class FinaliseActivities:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine

    # -- the point of no return ---------------------------------------------------------

    @activity.defn(name="finalise")
    async def finalise(self, req: Finalise) -> Finalised:
        return await in_thread(self._finalise, req)

    def _finalise(self, req: Finalise) -> Finalised:
        with write_transaction(self.engine) as conn:
            # A write first: it takes the lock (SQLite: the database; PostgreSQL: the rows)
            # that keeps every transfer of this invitation as read below until commit.
            conn.execute(update(STATE).where(
                STATE.c.invitation_id == req.invitation_id, STATE.c.state == RUNNING,
            ).values(state=LIVE, epoch=STATE.c.epoch + 1, updated_at=utcnow()))
            states = conn.execute(select(STATE.c.category, STATE.c.state, STATE.c.rows_copied)
                                  .where(STATE.c.invitation_id == req.invitation_id)).all()
            undone = sorted(s.category for s in states if s.state == UNDONE)
            if undone:
                raise ApplicationError(
                    f"cannot finalise {req.invitation_id}: the transfer of {', '.join(undone)} "
                    "was undone", type=ERR_TRANSFER_UNDONE, non_retryable=True)
            copied = {s.category: int(s.rows_copied) for s in states}
            made_live = {c.value: copied.get(c.value, 0) for c in Category}
            closed = False
            if req.source_account_id is not None:
                account = Account.__table__  # type: ignore[attr-defined]
                members = conn.execute(select(func.count()).select_from(User).where(
                    User.account_id == req.source_account_id)).scalar_one()
                if members == 0:
                    conn.execute(update(account).where(
                        account.c.id == req.source_account_id).values(status="closed"))
                closed = conn.execute(select(account.c.status).where(
                    account.c.id == req.source_account_id)).scalar() == "closed"
            events = AuditEvent.__table__  # type: ignore[attr-defined]
            already = conn.execute(select(events.c.id).where(
                events.c.invitation_id == req.invitation_id, events.c.kind == "finalised",
            ).limit(1)).first()
            if already is None:
                conn.execute(events.insert().values(
                    invitation_id=req.invitation_id, account_id=req.org_account_id,
                    at=datetime.now(UTC), kind="finalised",
                    detail={"made_live": made_live, "source_closed": closed}))
            if req.completed is not None:
                record_change(conn, req.completed)
        return Finalised(made_live=made_live, source_account_closed=closed)

    # -- after completion ---------------------------------------------------------------

    @activity.defn(name="release_source")
    async def release_source(self, req: ReleaseSource) -> Released:
        states = await in_thread(self._states, req)
        made_final: dict[str, int] = {}
        deleted: dict[str, int] = {}
        batches = 0
        for category in Category:
            state = states.get(category.value)
            if state is None or state.state != LIVE or category == Category.RECORDINGS:
                continue
            sizer = BatchSizer(1000)
            while True:
                started = time.monotonic()
                step = await in_thread(self._release_batch, req, category, state.id,
                                       sizer.size, details={"category": category.value})
                if step is None:
                    break
                flipped, removed = step
                sizer.record(flipped, time.monotonic() - started)
                made_final[category.value] = made_final.get(category.value, 0) + flipped
                deleted[category.value] = deleted.get(category.value, 0) + removed
                batches += 1
                activity.heartbeat({"category": category.value, "batches": batches})
        files = 0
        recordings = states.get(Category.RECORDINGS.value)
        if recordings is not None and recordings.state == LIVE:
            files, flipped, removed, batches_done = await self._release_recordings(
                req, recordings.id)
            made_final[Category.RECORDINGS.value] = flipped
            deleted[Category.RECORDINGS.value] = removed
            batches += batches_done
        return Released(made_final=made_final, source_rows_deleted=deleted,
                        files_deleted=files, batches=batches)

    def _states(self, req: ReleaseSource) -> dict[str, Any]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(STATE).where(
                STATE.c.invitation_id == req.invitation_id)).all()
        pending = sorted(r.category for r in rows if r.state in (RUNNING, UNDONE))
        if pending:
            raise ApplicationError(
                f"cannot release the source of {req.invitation_id}: the transfer of "
                f"{', '.join(pending)} is not live (finalise has not committed)",
                type=ERR_NOT_FINALISED, non_retryable=True)
        return {r.category: r for r in rows}

    def _source_rows(self, table: Table, req: ReleaseSource) -> list[Any]:
        return [table.c.user_id == req.user_id, table.c.account_id == req.source_account_id,
                table.c.staged == False]  # noqa: E712

    def _release_batch(self, req: ReleaseSource, category: Category, state_id: int,
                       limit: int) -> tuple[int, int] | None:
        """Flip the next `limit` copies (by source id, on the unique copy index) and delete
        their source rows, with the checkpoint, in one transaction. None when done."""
        table = _table(category)
        with write_transaction(self.engine) as conn:
            row = conn.execute(update(STATE).where(  # a write first: takes the lock
                STATE.c.id == state_id, STATE.c.state == LIVE,
            ).values(updated_at=utcnow()))
            if row.rowcount != 1:
                return None  # released meanwhile (a concurrent run)
            after = conn.execute(select(STATE.c.released_upto).where(
                STATE.c.id == state_id)).scalar_one()
            mine = [table.c.invitation_id == req.invitation_id, table.c.source_id > after]
            upto = conn.execute(select(table.c.source_id).where(*mine)
                                .order_by(table.c.source_id).offset(limit - 1).limit(1)).scalar()
            if upto is None:
                upto = conn.execute(select(table.c.source_id).where(*mine)
                                    .order_by(table.c.source_id.desc()).limit(1)).scalar()
            if upto is None:
                conn.execute(update(STATE).where(STATE.c.id == state_id).values(
                    state=RELEASED, updated_at=utcnow()))
                return None
            mine.append(table.c.source_id <= upto)
            copied_from = select(table.c.source_id).where(*mine)
            removed = conn.execute(delete(table).where(
                *self._source_rows(table, req), table.c.id > after, table.c.id <= upto,
                table.c.id.in_(copied_from))).rowcount
            flipped = conn.execute(update(table).where(
                *mine, table.c.staged == True).values(staged=False)).rowcount  # noqa: E712
            conn.execute(update(STATE).where(STATE.c.id == state_id).values(
                released_upto=upto))
        return max(int(flipped or 0), 0), max(int(removed or 0), 0)

    async def _release_recordings(self, req: ReleaseSource,
                                  state_id: int) -> tuple[int, int, int, int]:
        """One recording at a time: re-verify the destination file; then one transaction
        flips the copy, deletes the source file and then the source row. A crash after the
        file went but before the commit leaves a source row without its file, which the
        next run (the destination verified again) finishes; no file is ever orphaned."""
        root = Path(self.settings.recordings_dir)
        copies = await in_thread(self._staged_recordings, req)
        files = flipped = removed = batches = 0
        mismatched: list[str] = []
        for copy in copies:
            stop = threading.Event()
            digest = await in_thread(sha256_of, root / copy.path, stop,
                                     details={"recording": copy.id}, on_cancel=stop.set)
            if digest != copy.sha256:
                mismatched.append(f"recording {copy.source_id} ({copy.topic!r}) at "
                                  f"{copy.path}: expected sha256 {copy.sha256}, read "
                                  f"{digest or 'no file'}")
                continue
            gone, rows = await in_thread(self._release_recording, req, copy, root)
            files += gone
            removed += rows
            flipped += 1
            batches += 1
            activity.heartbeat({"category": Category.RECORDINGS.value, "recording": copy.id})
        if mismatched:
            raise ApplicationError(
                "destination recordings do not match their checksums; their source files "
                "are kept: " + "; ".join(mismatched),
                type=ERR_CHECKSUM_MISMATCH, non_retryable=True)
        await in_thread(self._mark_released, state_id)
        # Live: no attempt holds the transfer any more, so no temporary file is in use.
        await in_thread(functools.partial(remove_staging_files, root, req.invitation_id,
                                          temp_only=True))
        return files, flipped, removed, batches

    def _staged_recordings(self, req: ReleaseSource) -> list[Any]:
        table = _table(Category.RECORDINGS)
        with self.engine.connect() as conn:
            return list(conn.execute(select(table).where(
                table.c.invitation_id == req.invitation_id, table.c.staged == True,  # noqa: E712
            ).order_by(table.c.source_id)).all())

    def _release_recording(self, req: ReleaseSource, copy: Any, root: Path) -> tuple[int, int]:
        table = _table(Category.RECORDINGS)
        with write_transaction(self.engine) as conn:
            conn.execute(update(table).where(table.c.id == copy.id).values(staged=False))
            source = conn.execute(select(table.c.id, table.c.path).where(
                *self._source_rows(table, req), table.c.id == copy.source_id)).first()
            gone = removed = 0
            if source is not None:
                if source.path != copy.path:
                    path = root / source.path
                    gone = int(path.exists())
                    path.unlink(missing_ok=True)
                removed = conn.execute(delete(table).where(table.c.id == source.id)).rowcount
        return gone, max(int(removed or 0), 0)

    def _mark_released(self, state_id: int) -> None:
        with write_transaction(self.engine) as conn:
            conn.execute(update(STATE).where(STATE.c.id == state_id, STATE.c.state == LIVE)
                         .values(state=RELEASED, updated_at=utcnow()))

