"""One activity per data category: copy the invitee's rows into the organisation's scope
as *staged* copies (see models.tables), and `undo_transfer` to remove them again.

The claim's transaction (see activities.fencing) also checks and counts the source. A
source no bigger than the first batch (the usual case: a few rows) is then copied and
finished in that same transaction: claim, copy, checkpoint and the settings' locks
commit together or not at all, one write transaction for the whole category. A bigger one
moves in keyset batches: each batch is one transaction that checks the attempt still
holds the transfer, finds its upper id with an index walk (`id > :checkpoint ORDER BY id
LIMIT 1 OFFSET n-1`), copies with one `INSERT ... SELECT ... ON CONFLICT (invitation_id,
source_id) DO NOTHING`, and moves the checkpoint in the transfer's state row. A crash loses
at most the batch in flight, and a new attempt resumes from the committed checkpoint.
Recording files are copied to a per-attempt temporary file, verified, and renamed into
place in the fenced transaction that stages their row (and reads the next one).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    bindparam,
    delete,
    func,
    literal,
    select,
    update,
)
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
    heartbeat,
    hold,
    in_thread,
    inserted_rows,
    state_row,
)
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
from models.db import as_utc, insert_for, prepared, write_transaction
from models.payloads import Category, SettingChange
from models.platform import (
    CATEGORY_TABLES,
    reports_left_behind_count,
    settings_changes,
    source_view,
)
from models.tables import Account, User, UserSetting, utcnow

__all__ = ["TransferActivities", "staging_dir_name"]

STAGING_KEY = ["invitation_id", "source_id"]
# A quick try (Transfer.budget_seconds) leaves a recording bigger than this to the
# activity that follows, which heartbeats while it copies.
QUICK_RECORDING_BYTES = 16 * 1024 * 1024
RECORDINGS: Table = CATEGORY_TABLES[Category.RECORDINGS].__table__


def table_of(category: Category) -> Table:
    return CATEGORY_TABLES[category].__table__  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Batch:
    upto: int  # the new checkpoint (last source id of the batch)
    inserted: int
    size: int = 0  # bytes (recordings)
    last: bool = False  # nothing was left after it when it committed
    copied: int = 0  # rows copied by the round's committed batches, this one included


@dataclass(frozen=True)
class Source:
    """What the claim's transaction read of the source."""

    rows: int  # source rows not copied yet by anyone (staged=False, in the source account)
    last_id: int | None  # the highest of their ids
    reports: int = 0  # reports left behind (profile only)
    recording: Any = None  # the first recording after the checkpoint (recordings only)


@dataclass(frozen=True)
class Start:
    cursor: Cursor
    source: Source
    whole: Batch | None = None  # set when the claim's transaction did the whole transfer
    done: bool = False  # nothing left to do (copied and finished in the claim, or live)


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
        # The settings the organisation's locks override: read before the write
        # transaction (they do not depend on the copy), so that it stays short.
        changes = await in_thread(self._settings_changes, t) \
            if category == Category.SETTINGS else []
        started = time.monotonic()  # the quick try's budget counts from here
        scheduled_at = t.scheduled_at or info.current_attempt_scheduled_time
        start = await in_thread(self._start, t, scheduled_at, changes)
        cursor, source = start.cursor, start.source
        resumed_from = cursor.checkpoint or None
        if cursor.state in (LIVE, RELEASED):  # finalise committed: nothing left to copy
            return Transferred(category=category, total=cursor.rows_copied,
                               copied=cursor.rows_copied, resumed_from=resumed_from,
                               attempt=info.attempt, epoch=cursor.epoch)
        batches = inserted = copied_bytes = 0
        copied = cursor.rows_copied
        if start.whole is not None:
            batches, inserted, copied = 1, start.whole.inserted, start.whole.copied
            _count_rows(category, inserted, 0)
        elif not start.done:
            sizer = BatchSizer(t.batch_size)
            recording = source.recording
            while True:
                began = time.monotonic()
                progress = {"checkpoint": cursor.checkpoint, "epoch": cursor.epoch}
                if category == Category.RECORDINGS:
                    if recording is None:
                        break
                    if t.budget_seconds is not None \
                            and recording.size_bytes > QUICK_RECORDING_BYTES:
                        return self._unfinished(t, info.attempt, cursor, copied, inserted,
                                            batches)
                    batch, recording = await self._copy_recording(t, cursor, recording)
                else:
                    next_batch = await in_thread(self._copy_batch, t, cursor,
                                                 details=progress)
                    if next_batch is None:
                        break
                    batch = next_batch
                    sizer.record(batch.inserted, time.monotonic() - began)
                cursor = cursor.at(batch.upto, sizer.size)
                copied = batch.copied
                batches += 1
                inserted += batch.inserted
                copied_bytes += batch.size
                _count_rows(category, batch.inserted, batch.size)
                if batch.last:  # the result follows at once: no heartbeat (a billed action)
                    break
                if t.budget_seconds is not None \
                        and time.monotonic() - started > t.budget_seconds:
                    return self._unfinished(t, info.attempt, cursor, copied, inserted,
                                            batches)
                heartbeat({"checkpoint": cursor.checkpoint, "epoch": cursor.epoch,
                           "batches": batches, "rows": inserted})
            if changes:
                copied = await in_thread(self._finish, t, cursor, changes)
        return Transferred(
            category=category, total=source.rows, copied=copied, bytes=copied_bytes,
            batches=batches, resumed_from=resumed_from, attempt=info.attempt,
            settings_changed=changes, reports_left_behind=source.reports, epoch=cursor.epoch,
            inserted=inserted,
        )

    @staticmethod
    def _unfinished(t: Transfer, attempt: int, cursor: Cursor, copied: int,
                    inserted: int, batches: int) -> Transferred:
        """A quick try's answer when its budget ran out: what is committed stays, and the
        activity that follows resumes from the checkpoint."""
        return Transferred(category=t.category, total=0, copied=copied, attempt=attempt,
                           epoch=cursor.epoch, inserted=inserted, batches=batches,
                           finished=False)

    def _start(self, t: Transfer, scheduled_at: datetime,
               changes: list[SettingChange]) -> Start:
        """Claim, check and count the source in one transaction; when the source is no
        bigger than the first batch, copy and finish in it too."""
        with write_transaction(self.engine) as conn:
            cursor, source = self._claim_in(conn, t, scheduled_at)
            if cursor.state in (LIVE, RELEASED):
                return Start(cursor, source, done=True)
            if t.category == Category.RECORDINGS or source.rows > cursor.limit:
                return Start(cursor, source)
            whole = None
            if source.last_id is not None and source.last_id > cursor.checkpoint:
                # This transaction holds the transfer since its claim: no hold needed.
                whole = self._copy_upto(conn, t, cursor, source.last_id, last=True)
            self._apply_locks(conn, t, changes)
            return Start(cursor, source, whole, done=True)

    def _claim(self, t: Transfer, scheduled_at: datetime) -> tuple[Cursor, int]:
        """Take the transfer; unless it is already live, check and count the source."""
        with write_transaction(self.engine) as conn:
            cursor, source = self._claim_in(conn, t, scheduled_at)
            return cursor, source.rows

    def _claim_in(self, conn: Connection, t: Transfer,
                  scheduled_at: datetime) -> tuple[Cursor, Source]:
        cursor = claim(conn, t.invitation_id, t.category.value, scheduled_at, t.batch_size)
        if cursor.state in (LIVE, RELEASED):
            return cursor, Source(cursor.rows_copied, None)
        source = self._check_source(conn, t)
        if t.category == Category.RECORDINGS:
            source = Source(source.rows, source.last_id, source.reports,
                            self._recording_after(conn, t, cursor.checkpoint))
        return cursor, source

    def _source_filter(self, table: Table, t: Transfer) -> list[Any]:
        # The columns of the keyset index (user_id, account_id, staged, id), in its order.
        return [table.c.user_id == t.user_id, table.c.account_id == t.source_account_id,
                table.c.staged == False]  # noqa: E712

    @staticmethod
    def _source_rows(table: Table) -> list[Any]:
        """_source_filter for a prepared statement: parameters src_user and src_account."""
        return [table.c.user_id == bindparam("src_user"),
                table.c.account_id == bindparam("src_account"),
                table.c.staged == False]  # noqa: E712

    def _check_source(self, conn: Connection, t: Transfer) -> Source:
        """Fail for good if the individual account or the user is gone; else count rows
        (and, for the profile, the reports left behind): one statement."""
        def build() -> Any:
            accounts, users = Account.__table__, User.__table__  # type: ignore[attr-defined]
            table = table_of(t.category)
            reports = reports_left_behind_count(bindparam("src_user"), bindparam("src_account")) \
                if t.category == Category.PROFILE else literal(0)
            return select(
                select(accounts.c.status).where(accounts.c.id == bindparam("src_account"))
                .scalar_subquery(),
                select(users.c.id).where(users.c.id == bindparam("src_user"))
                .scalar_subquery(),
                func.count(), func.max(table.c.id), reports,
            ).select_from(table).where(*self._source_rows(table))
        row = conn.execute(prepared(conn, ("check_source", t.category), build), {
            "src_user": t.user_id, "src_account": t.source_account_id}).one()
        status, user, rows, last_id, reports_left = row
        if status != "active" or user is None:
            raise ApplicationError(
                f"the source account {t.source_account_id} or user {t.user_id} no longer "
                "exists", type=ERR_SOURCE_CHANGED, non_retryable=True)
        return Source(int(rows), None if last_id is None else int(last_id), int(reports_left))

    def _copy_batch(self, t: Transfer, cursor: Cursor) -> Batch | None:
        """Stage the next `cursor.limit` source rows after `cursor.checkpoint`, in one
        transaction with the checkpoint. None when nothing is left."""
        table = table_of(t.category)
        source = [*self._source_filter(table, t), table.c.id > cursor.checkpoint]
        with write_transaction(self.engine) as conn:
            hold(conn, cursor)
            upto: int | None = conn.execute(select(table.c.id).where(*source).order_by(
                table.c.id).offset(cursor.limit - 1).limit(1)).scalar()
            last = upto is None
            if upto is None:  # fewer rows than a batch are left: take them all
                upto = conn.execute(select(table.c.id).where(*source)
                                    .order_by(table.c.id.desc()).limit(1)).scalar()
                if upto is None:
                    return None
            return self._copy_upto(conn, t, cursor, upto, last=last)

    def _copy_upto(self, conn: Connection, t: Transfer, cursor: Cursor, upto: int, *,
                   last: bool) -> Batch:
        """Stage the source rows in (checkpoint, upto] and move the checkpoint to `upto`,
        inside the caller's transaction, which holds the transfer."""
        def build() -> Any:
            table = table_of(t.category)
            overrides = {
                "account_id": bindparam("org_account", type_=table.c.account_id.type),
                "invitation_id": bindparam("invitation", type_=table.c.invitation_id.type),
                "source_id": table.c.id,
                "staged": literal(True, table.c.staged.type),
            }
            columns = [c.name for c in table.columns if c.name != "id"]
            rows = select(*[overrides.get(name, table.c[name]) for name in columns]).where(
                *self._source_rows(table), table.c.id > bindparam("after"),
                table.c.id <= bindparam("upto")).order_by(table.c.id)
            return insert_for(conn, table).from_select(columns, rows) \
                .on_conflict_do_nothing(index_elements=STAGING_KEY)
        stmt = prepared(conn, ("copy", t.category), build)
        inserted = inserted_rows(conn.execute(stmt, {
            "org_account": t.org_account_id, "invitation": t.invitation_id,
            "src_user": t.user_id, "src_account": t.source_account_id,
            "after": cursor.checkpoint, "upto": upto}, execution_options=COUNT_ROWS))
        copied = advance(conn, cursor, upto, inserted)
        return Batch(upto, inserted, last=last, copied=copied)

    def _settings_changes(self, t: Transfer) -> list[SettingChange]:
        # The same rule the preview showed, so preview and transfer agree.
        with Session(self.engine) as session:
            return settings_changes(session, source_view(t.user_id, t.source_account_id),
                                    t.org_account_id, t.group)

    @staticmethod
    def _apply_locks(conn: Connection, t: Transfer, changes: list[SettingChange]) -> None:
        for change in changes:
            conn.execute(update(UserSetting).where(
                col(UserSetting.invitation_id) == t.invitation_id,
                col(UserSetting.staged) == True,  # noqa: E712
                col(UserSetting.key) == change.key,
            ).values(value=change.new))

    def _finish(self, t: Transfer, cursor: Cursor, changes: list[SettingChange]) -> int:
        """Apply the organisation's locks to the staged settings, fenced like a batch (a
        transfer copied in batches); returns the rows copied this round."""
        with write_transaction(self.engine) as conn:
            hold(conn, cursor)
            self._apply_locks(conn, t, changes)
            return int(state_row(conn, t.invitation_id, t.category.value).rows_copied)

    # -- recordings ---------------------------------------------------------------------

    @staticmethod
    def _recording_after(conn: Connection, t: Transfer, checkpoint: int) -> Any:
        return conn.execute(select(RECORDINGS).where(
            RECORDINGS.c.user_id == t.user_id,
            RECORDINGS.c.account_id == t.source_account_id,
            RECORDINGS.c.staged == False,  # noqa: E712
            RECORDINGS.c.id > checkpoint,
        ).order_by(RECORDINGS.c.id).limit(1)).first()

    async def _copy_recording(self, t: Transfer, cursor: Cursor, src: Any) -> tuple[Batch, Any]:
        """Stage the recording `src` (the next after the checkpoint): copy to this
        attempt's own file, verify, then rename and insert its row in one fenced
        transaction, which also reads the recording after it (None: the last)."""
        root = Path(self.settings.recordings_dir)
        rel = staged_rel_path(t.org_account_id, t.invitation_id, src.id, src.path)
        temp = temp_path(root / rel, cursor.epoch, activity.info().attempt)
        stop = threading.Event()
        what = f"recording {src.id} ({src.topic!r}, {src.path})"
        progress = {"checkpoint": cursor.checkpoint, "epoch": cursor.epoch, "file": src.id}
        size = await in_thread(copy_verified, root / src.path, temp, src.sha256, what, stop,
                               details=progress, on_cancel=stop.set)
        try:
            return await in_thread(self._stage_recording, t, cursor, src, temp, rel, size)
        finally:
            temp.unlink(missing_ok=True)  # renamed away on success; never left behind

    def _stage_recording(self, t: Transfer, cursor: Cursor, src: Any, temp: Path,
                         rel: Path, size: int) -> tuple[Batch, Any]:
        values = {k: v for k, v in src._mapping.items() if k != "id"} | {
            "account_id": t.org_account_id, "invitation_id": t.invitation_id,
            "source_id": src.id, "staged": True, "path": str(rel), "size_bytes": size,
        }
        with write_transaction(self.engine) as conn:
            hold(conn, cursor)
            # Renamed while this attempt holds the transfer's lock: once an undo or a newer
            # attempt took it, a stale attempt never renames into the staged path.
            temp.replace(Path(self.settings.recordings_dir) / rel)
            stmt = insert_for(conn, RECORDINGS).values(**values) \
                .on_conflict_do_nothing(index_elements=STAGING_KEY)
            inserted = inserted_rows(conn.execute(stmt, execution_options=COUNT_ROWS))
            copied = advance(conn, cursor, src.id, inserted, size)
            after = self._recording_after(conn, t, src.id)
        return Batch(src.id, inserted, size, last=after is None, copied=copied), after

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


def _count_rows(category: Category, rows: int, size: int) -> None:
    meter = activity.metric_meter().with_additional_attributes({"category": category.value})
    meter.create_counter(
        "invitation_transfer_rows", "Rows staged by invitation transfers", "rows").add(rows)
    if category == Category.RECORDINGS:
        meter.create_counter("invitation_transfer_bytes",
                             "Recording bytes staged by invitation transfers", "By").add(size)

