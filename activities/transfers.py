"""One activity per data category: copy the invitee's rows into the organisation's scope
as *staged* copies (see models.tables), and `undo_transfer` to remove them again.

Rows move in keyset batches: each batch is one transaction that checks the attempt still
holds the transfer, finds its upper id with an index walk (`id > :checkpoint ORDER BY id
LIMIT 1 OFFSET n-1`), copies with one `INSERT ... SELECT ... ON CONFLICT (invitation_id,
source_id) DO NOTHING`, and moves the checkpoint in the transfer's state row (see
activities.fencing). A crash loses at most the batch in flight, and a new attempt resumes
from the committed checkpoint. Recording files are copied to a per-attempt temporary
file, verified, and renamed into place in the transaction that stages their row.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, delete, func, literal, select, update
from sqlmodel import Session, col
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.fencing import (
    COUNT_ROWS,
    LIVE,
    RELEASED,
    STATE,
    UNDONE,
    BatchSizer,
    Cursor,
    advance,
    claim,
    hold,
    in_thread,
    insert_for,
    inserted_rows,
    state_row,
)
from activities.platform import source_view
from activities.recording_files import (
    copy_verified,
    remove_staging_files,
    staged_rel_path,
    staging_dir_name,
    temp_path,
)
from config import Settings
from models.activity_io import (
    ERR_SOURCE_CHANGED,
    ERR_TRANSFER_FAILED,
    ERR_TRANSFER_LIVE,
    Transfer,
    Transferred,
    UndoneTransfer,
    UndoTransfer,
)
from models.db import as_utc, write_transaction
from models.payloads import Category
from models.platform import CATEGORY_TABLES, reports_left_behind, settings_changes
from models.tables import Account, Recording, User, UserSetting, utcnow

__all__ = ["TransferActivities", "staging_dir_name"]

STAGING_KEY = ["invitation_id", "source_id"]


def table_of(category: Category) -> Table:
    return CATEGORY_TABLES[category].__table__  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Batch:
    upto: int  # the new checkpoint (last source id of the batch)
    inserted: int
    size: int = 0  # bytes (recordings)
    last: bool = False  # nothing was left after it when it committed


class TransferActivities:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine

    @activity.defn(name="transfer_profile")
    async def transfer_profile(self, t: Transfer) -> Transferred:
        return await self._transfer(t, Category.PROFILE)

    @activity.defn(name="transfer_meetings")
    async def transfer_meetings(self, t: Transfer) -> Transferred:
        return await self._transfer(t, Category.MEETINGS)  # meetings and webinars (`kind`)

    @activity.defn(name="transfer_recordings")
    async def transfer_recordings(self, t: Transfer) -> Transferred:
        return await self._transfer(t, Category.RECORDINGS)

    @activity.defn(name="transfer_chat")
    async def transfer_chat(self, t: Transfer) -> Transferred:
        return await self._transfer(t, Category.CHAT)

    @activity.defn(name="transfer_contacts")
    async def transfer_contacts(self, t: Transfer) -> Transferred:
        return await self._transfer(t, Category.CONTACTS)

    @activity.defn(name="transfer_settings")
    async def transfer_settings(self, t: Transfer) -> Transferred:
        return await self._transfer(t, Category.SETTINGS)

    # -- the copy -----------------------------------------------------------------------

    async def _transfer(self, t: Transfer, category: Category) -> Transferred:
        if t.category != category:
            raise ApplicationError(f"transfer_{category.value} called for {t.category.value}",
                                   type=ERR_TRANSFER_FAILED, non_retryable=True)
        info = activity.info()
        cursor, total = await in_thread(self._claim, t, info.current_attempt_scheduled_time)
        resumed_from = cursor.checkpoint or None
        if cursor.state in (LIVE, RELEASED):  # finalise committed: nothing left to copy
            return Transferred(category=category, total=cursor.rows_copied,
                               copied=cursor.rows_copied, resumed_from=resumed_from,
                               attempt=info.attempt, epoch=cursor.epoch)
        meter = activity.metric_meter().with_additional_attributes({"category": category.value})
        rows_metric = meter.create_counter(
            "invitation_transfer_rows", "Rows staged by invitation transfers", "rows")
        bytes_metric = meter.create_counter(
            "invitation_transfer_bytes", "Recording bytes staged by invitation transfers", "By")
        sizer = BatchSizer(t.batch_size)
        batches = inserted = copied_bytes = 0
        while True:
            started = time.monotonic()
            progress = {"checkpoint": cursor.checkpoint, "epoch": cursor.epoch}
            if category == Category.RECORDINGS:
                batch = await self._copy_next_recording(t, cursor)
            else:
                batch = await in_thread(self._copy_batch, t, cursor, details=progress)
            if batch is None:
                break
            if category != Category.RECORDINGS:
                sizer.record(batch.inserted, time.monotonic() - started)
            cursor = cursor.at(batch.upto, sizer.size)
            batches += 1
            inserted += batch.inserted
            copied_bytes += batch.size
            rows_metric.add(batch.inserted)
            bytes_metric.add(batch.size)
            activity.heartbeat({"checkpoint": cursor.checkpoint, "epoch": cursor.epoch,
                                "batches": batches, "rows": inserted})
            if batch.last:
                break
        changed, reports, copied = await in_thread(self._finish, t, cursor)
        return Transferred(
            category=category, total=total, copied=copied, bytes=copied_bytes, batches=batches,
            resumed_from=resumed_from, attempt=info.attempt, settings_changed=changed,
            reports_left_behind=reports, epoch=cursor.epoch, inserted=inserted,
        )

    def _claim(self, t: Transfer, scheduled_at: datetime) -> tuple[Cursor, int]:
        """Take the transfer; unless it is already live, check and count the source."""
        with write_transaction(self.engine) as conn:
            cursor = claim(conn, t.invitation_id, t.category.value, scheduled_at, t.batch_size)
            if cursor.state in (LIVE, RELEASED):
                return cursor, cursor.rows_copied
            return cursor, self._check_source(conn, t)

    def _source_filter(self, table: Table, t: Transfer) -> list[Any]:
        # The columns of the keyset index (user_id, account_id, staged, id), in its order.
        return [table.c.user_id == t.user_id, table.c.account_id == t.source_account_id,
                table.c.staged == False]  # noqa: E712

    def _check_source(self, conn: Connection, t: Transfer) -> int:
        """Fail for good if the individual account or the user is gone; else count rows."""
        accounts, users = Account.__table__, User.__table__  # type: ignore[attr-defined]
        status = conn.execute(select(accounts.c.status).where(
            accounts.c.id == t.source_account_id)).scalar()
        user = conn.execute(select(users.c.id).where(users.c.id == t.user_id)).scalar()
        if status != "active" or user is None:
            raise ApplicationError(
                f"the source account {t.source_account_id} or user {t.user_id} no longer "
                "exists", type=ERR_SOURCE_CHANGED, non_retryable=True)
        table = table_of(t.category)
        return int(conn.execute(select(func.count()).select_from(table).where(
            *self._source_filter(table, t))).scalar_one())

    def _copy_batch(self, t: Transfer, cursor: Cursor) -> Batch | None:
        """Stage the next `cursor.limit` source rows after `cursor.checkpoint`, in one
        transaction with the checkpoint. None when nothing is left."""
        table = table_of(t.category)
        source = [*self._source_filter(table, t), table.c.id > cursor.checkpoint]
        with write_transaction(self.engine) as conn:
            hold(conn, cursor)
            upto = conn.execute(select(table.c.id).where(*source).order_by(table.c.id)
                                .offset(cursor.limit - 1).limit(1)).scalar()
            last = upto is None
            if last:  # fewer rows than a batch are left: take them all
                upto = conn.execute(select(table.c.id).where(*source)
                                    .order_by(table.c.id.desc()).limit(1)).scalar()
                if upto is None:
                    return None
            overrides = {
                "account_id": literal(t.org_account_id, table.c.account_id.type),
                "invitation_id": literal(t.invitation_id, table.c.invitation_id.type),
                "source_id": table.c.id,
                "staged": literal(True, table.c.staged.type),
            }
            columns = [c.name for c in table.columns if c.name != "id"]
            rows = select(*[overrides.get(name, table.c[name]) for name in columns]).where(
                *source, table.c.id <= upto).order_by(table.c.id)
            stmt = insert_for(self.engine, table).from_select(columns, rows) \
                .on_conflict_do_nothing(index_elements=STAGING_KEY)
            inserted = inserted_rows(conn.execute(stmt, execution_options=COUNT_ROWS))
            advance(conn, cursor, int(upto), inserted)
        return Batch(int(upto), inserted, last=last)

    def _finish(self, t: Transfer, cursor: Cursor) -> tuple[list[Any], int, int]:
        """Apply the organisation's locks to staged settings (fenced like a batch); say
        which reports stay behind (transfer_profile); return the rows copied this round."""
        view = source_view(t.user_id, t.source_account_id)
        changed: list[Any] = []
        reports = 0
        with Session(self.engine) as session:
            if t.category == Category.SETTINGS:
                # The same rule the preview showed, so preview and transfer agree.
                changed = settings_changes(session, view, t.org_account_id, t.group)
            if t.category == Category.PROFILE:
                reports = len(reports_left_behind(session, view))
        with write_transaction(self.engine) as conn:
            hold(conn, cursor)
            for change in changed:
                conn.execute(update(UserSetting).where(
                    col(UserSetting.invitation_id) == t.invitation_id,
                    col(UserSetting.staged) == True,  # noqa: E712
                    col(UserSetting.key) == change.key,
                ).values(value=change.new))
            copied = state_row(conn, t.invitation_id, t.category.value).rows_copied
        return changed, reports, int(copied)

    # -- recordings ---------------------------------------------------------------------

    async def _copy_next_recording(self, t: Transfer, cursor: Cursor) -> Batch | None:
        """Stage the next recording after the checkpoint: copy to this attempt's own file,
        verify, then rename and insert its row in one fenced transaction."""
        src = await in_thread(self._next_recording, t, cursor.checkpoint)
        if src is None:
            return None
        assert src.id is not None
        root = Path(self.settings.recordings_dir)
        rel = staged_rel_path(t.org_account_id, t.invitation_id, src.id, src.path)
        temp = temp_path(root / rel, cursor.epoch, activity.info().attempt)
        stop = threading.Event()
        what = f"recording {src.id} ({src.topic!r}, {src.path})"
        progress = {"checkpoint": cursor.checkpoint, "epoch": cursor.epoch, "file": src.id}
        size = await in_thread(copy_verified, root / src.path, temp, src.sha256, what, stop,
                               details=progress, on_cancel=stop.set)
        try:
            inserted = await in_thread(self._stage_recording, t, cursor, src, temp, rel, size)
        finally:
            temp.unlink(missing_ok=True)  # renamed away on success; never left behind
        return Batch(src.id, inserted, size)

    def _next_recording(self, t: Transfer, checkpoint: int) -> Recording | None:
        with Session(self.engine) as session:
            row = session.execute(select(Recording).where(
                col(Recording.user_id) == t.user_id,
                col(Recording.account_id) == t.source_account_id,
                col(Recording.staged) == False,  # noqa: E712
                col(Recording.id) > checkpoint,
            ).order_by(col(Recording.id)).limit(1)).scalars().first()
            if row is not None:
                session.expunge(row)
            return row

    def _stage_recording(self, t: Transfer, cursor: Cursor, src: Recording, temp: Path,
                         rel: Path, size: int) -> int:
        values = src.model_dump(exclude={"id"}) | {
            "account_id": t.org_account_id, "invitation_id": t.invitation_id,
            "source_id": src.id, "staged": True, "path": str(rel), "size_bytes": size,
        }
        with write_transaction(self.engine) as conn:
            hold(conn, cursor)
            # Renamed while this attempt holds the transfer's lock: once an undo or a newer
            # attempt took it, a stale attempt never renames into the staged path.
            temp.replace(Path(self.settings.recordings_dir) / rel)
            stmt = insert_for(self.engine, table_of(Category.RECORDINGS)).values(**values) \
                .on_conflict_do_nothing(index_elements=STAGING_KEY)
            inserted = inserted_rows(conn.execute(stmt, execution_options=COUNT_ROWS))
            assert src.id is not None
            advance(conn, cursor, src.id, inserted, size)
            return inserted

    # -- compensation -------------------------------------------------------------------

    @activity.defn(name="undo_transfer")
    async def undo_transfer(self, req: UndoTransfer) -> UndoneTransfer:
        return await in_thread(self._undo, req, activity.info().scheduled_time)

    def _undo(self, req: UndoTransfer, scheduled_at: datetime) -> UndoneTransfer:
        """Delete this invitation's staged copies (never a source row, never a live one),
        in the transaction that bumps the epoch: no batch of an older attempt commits
        after it. An undo scheduled before a new round began leaves that round alone."""
        table = table_of(req.category)
        with write_transaction(self.engine) as conn:
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
            remove_staging_files(Path(self.settings.recordings_dir), req.invitation_id)
        return UndoneTransfer(category=req.category, removed=max(int(removed or 0), 0))

