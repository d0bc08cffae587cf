"""One activity per data category: copy the invitee's rows into the organisation's scope
as *staged* copies (see records.tables), and `undo_transfer` to remove them again
(activities.transfer_undo).

The claim's transaction (see activities.fencing) also checks and counts the source. A
source no bigger than the first batch (the usual case: a few rows) is then copied and
finished in that same transaction: claim, copy, checkpoint and the settings' locks
commit together or not at all, one write transaction for the whole category. A bigger one
moves in keyset batches: each batch is one transaction that checks the attempt still
holds the transfer, finds its upper id with an index walk (`id > :checkpoint ORDER BY id
LIMIT 1 OFFSET n-1`), copies with one `INSERT ... SELECT` (activities.staging), and moves
the checkpoint in the transfer's state row. A crash loses at most the batch in flight, and
a new attempt resumes from the committed checkpoint. Recordings move one file at a time
(activities.recording_transfer).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Connection, Engine, select
from sqlmodel import Session
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.fencing import (
    LIVE,
    RELEASED,
    BatchSizer,
    Cursor,
    claim,
    heartbeat,
    hold,
    in_thread,
    state_row,
)
from activities.recording_transfer import QUICK_RECORDING_BYTES, copy_recording, recording_after
from activities.staging import (
    Batch,
    Source,
    apply_locks,
    check_source,
    copy_upto,
    source_filter,
    table_of,
)
from activities.transfer_undo import undo_staged
from config import Settings
from messages.activity_io import (
    ERR_TRANSFER_FAILED,
    Transfer,
    Transferred,
    UndoneTransfer,
    UndoTransfer,
)
from messages.payloads import Category, SettingChange
from records.db import write_transaction
from rules.platform import settings_changes, source_view

__all__ = ["TransferActivities"]


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
                    batch, recording = await copy_recording(
                        self.engine, Path(self.settings.recordings_dir), t, cursor, recording)
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
                whole = copy_upto(conn, t, cursor, source.last_id, last=True)
            apply_locks(conn, t, changes)
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
        source = check_source(conn, t)
        if t.category == Category.RECORDINGS:
            source = Source(source.rows, source.last_id, source.reports,
                            recording_after(conn, t, cursor.checkpoint))
        return cursor, source

    def _copy_batch(self, t: Transfer, cursor: Cursor) -> Batch | None:
        """Stage the next `cursor.limit` source rows after `cursor.checkpoint`, in one
        transaction with the checkpoint. None when nothing is left."""
        table = table_of(t.category)
        source = [*source_filter(table, t), table.c.id > cursor.checkpoint]
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
            return copy_upto(conn, t, cursor, upto, last=last)

    def _settings_changes(self, t: Transfer) -> list[SettingChange]:
        # The same rule the preview showed, so preview and transfer agree.
        with Session(self.engine) as session:
            return settings_changes(session, source_view(t.user_id, t.source_account_id),
                                    t.org_account_id, t.group)

    def _finish(self, t: Transfer, cursor: Cursor, changes: list[SettingChange]) -> int:
        """Apply the organisation's locks to the staged settings, fenced like a batch (a
        transfer copied in batches); returns the rows copied this round."""
        with write_transaction(self.engine) as conn:
            hold(conn, cursor)
            apply_locks(conn, t, changes)
            return int(state_row(conn, t.invitation_id, t.category.value).rows_copied)

    # -- compensation -------------------------------------------------------------------

    @activity.defn(name="undo_transfer")
    async def undo_transfer(self, req: UndoTransfer) -> UndoneTransfer:
        return await in_thread(undo_staged, self.engine, Path(self.settings.recordings_dir),
                               req, activity.info().scheduled_time)



def _count_rows(category: Category, rows: int, size: int) -> None:
    meter = activity.metric_meter().with_additional_attributes({"category": category.value})
    meter.create_counter(
        "invitation_transfer_rows", "Rows staged by invitation transfers", "rows").add(rows)
    if category == Category.RECORDINGS:
        meter.create_counter("invitation_transfer_bytes",
                             "Recording bytes staged by invitation transfers", "By").add(size)

