"""The point of no return and what follows it.

- `finalise`: ONE short transaction. Every transfer of the invitation goes live (its
  TransferState row "running" -> "live", epoch bumped so no stale attempt writes again),
  the individual account is closed when nobody is left in it, an audit event is written
  once. Nothing is deleted and no data row is touched, so it takes milliseconds whatever
  the amount of data. From then on a staged copy of a live transfer counts as live (see
  rules.platform.live_rows).
- `release_source`: after completion, off the critical path, safe to re-run any number of
  times: in time-sized batches it flips the copies of live transfers to staged=False and
  deletes the source rows they were copied from (each batch in one transaction with the
  checkpoints it moves; a batch goes on from one category to the next, so a small
  invitation's source goes in one transaction, and a transfer is marked released in the
  batch that finishes it); a source recording file is deleted only after the destination
  file's sha256 was re-read and matched. A mismatch keeps the source file and row and
  fails with a non-retryable ChecksumMismatch once everything else is released.
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, bindparam, delete, func, select, update
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.fencing import (
    LIVE,
    RELEASED,
    RUNNING,
    STATE,
    UNDONE,
    BatchSizer,
    heartbeat,
    in_thread,
)
from activities.recording_files import remove_staging_files, sha256_of
from config import Settings
from messages.activity_io import (
    ERR_CHECKSUM_MISMATCH,
    ERR_NOT_FINALISED,
    ERR_TRANSFER_UNDONE,
    Finalise,
    Finalised,
    Released,
    ReleaseSource,
)
from messages.payloads import Category
from records.changes import insert_event_once, record_change
from records.db import prepared, write_transaction
from records.tables import Account, AuditEvent, Invitation, User, utcnow
from rules.platform import CATEGORY_TABLES


def _table(category: Category) -> Table:
    return CATEGORY_TABLES[category].__table__  # type: ignore[no-any-return]


def _source_params(table: Table) -> list[Any]:
    """The source rows of the invitee (parameters src_user and src_account)."""
    return [table.c.user_id == bindparam("src_user"),
            table.c.account_id == bindparam("src_account"),
            table.c.staged == False]  # noqa: E712


class FinaliseActivities:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine

    # -- the point of no return ---------------------------------------------------------

    @activity.defn(name="finalise")
    async def finalise(self, req: Finalise) -> Finalised:
        return await in_thread(self._finalise, req)

    def _finalise(self, req: Finalise) -> Finalised:
        account = Account.__table__  # type: ignore[attr-defined]
        events = AuditEvent.__table__  # type: ignore[attr-defined]
        invitations = Invitation.__table__  # type: ignore[attr-defined]
        mine = {"invitation": req.invitation_id}
        with write_transaction(self.engine) as conn:
            # A write first: it takes the lock (SQLite: the database; PostgreSQL: the rows)
            # that keeps every transfer of this invitation as read below until commit.
            conn.execute(prepared(conn, "finalise_live", lambda: update(STATE).where(
                STATE.c.invitation_id == bindparam("invitation"), STATE.c.state == RUNNING,
            ).values(state=LIVE, epoch=STATE.c.epoch + 1, updated_at=bindparam("now"))),
                mine | {"now": utcnow()})
            states = conn.execute(prepared(conn, "finalise_states", lambda: select(
                STATE.c.category, STATE.c.state, STATE.c.rows_copied,
            ).where(STATE.c.invitation_id == bindparam("invitation"))), mine).all()
            undone = sorted(s.category for s in states if s.state == UNDONE)
            if undone:
                raise ApplicationError(
                    f"cannot finalise {req.invitation_id}: the transfer of {', '.join(undone)} "
                    "was undone", type=ERR_TRANSFER_UNDONE, non_retryable=True)
            copied = {s.category: int(s.rows_copied) for s in states}
            made_live = {c.value: copied.get(c.value, 0) for c in Category}
            closed = False
            if req.source_account_id is not None:
                source = {"source": req.source_account_id}
                # Closed when nobody is left in it (one statement); then read as it stands.
                users = User.__table__  # type: ignore[attr-defined]
                conn.execute(prepared(conn, "finalise_close", lambda: update(account).where(
                    account.c.id == bindparam("source"),
                    ~select(users.c.id).where(users.c.account_id == bindparam("source"))
                    .exists(),
                ).values(status="closed")), source)
            # In one statement: the source account as it stands, whether the event is
            # written, and the invitation's account (for record_change).
            status, already, account_id = conn.execute(prepared(
                conn, "finalise_read", lambda: select(
                    select(account.c.status).where(account.c.id == bindparam("source"))
                    .scalar_subquery(),
                    select(events.c.id).where(events.c.invitation_id == bindparam("invitation"),
                                              events.c.kind == "finalised").limit(1)
                    .scalar_subquery(),
                    select(invitations.c.account_id).where(
                        invitations.c.id == bindparam("invitation")).scalar_subquery())),
                mine | {"source": req.source_account_id}).one()
            closed = req.source_account_id is not None and status == "closed"
            if already is None:  # keyed by the workflow's time: overlapping attempts agree
                insert_event_once(
                    conn, invitation_id=req.invitation_id, kind="finalised",
                    at=req.completed.at if req.completed is not None else datetime.now(UTC),
                    account_id=req.org_account_id,
                    detail={"made_live": made_live, "source_closed": closed})
            if req.completed is not None:
                record_change(conn, req.completed, account_id=account_id)
        return Finalised(made_live=made_live, source_account_closed=closed)

    # -- after completion ---------------------------------------------------------------

    @activity.defn(name="release_source")
    async def release_source(self, req: ReleaseSource) -> Released:
        began = time.monotonic()

        def out_of_time() -> bool:  # a quick try (see ReleaseSource) stops here
            return req.budget_seconds is not None \
                and time.monotonic() - began > req.budget_seconds

        plan = await in_thread(self._plan, req)
        root = Path(self.settings.recordings_dir)
        # Every staged recording's destination file is re-read first (no lock held);
        # only the verified ones lose their source.
        verified: list[Any] = []
        mismatched: list[str] = []
        for copy in plan.recordings:
            if out_of_time():  # nothing released yet: the activity that follows does it
                return Released(made_final={}, source_rows_deleted={}, files_deleted=0,
                                batches=0, finished=False)
            stop = threading.Event()
            digest = await in_thread(sha256_of, root / copy.path, stop,
                                     details={"recording": copy.id}, on_cancel=stop.set)
            if digest == copy.sha256:
                verified.append(copy)
            else:
                mismatched.append(f"recording {copy.source_id} ({copy.topic!r}) at "
                                  f"{copy.path}: expected sha256 {copy.sha256}, read "
                                  f"{digest or 'no file'}")
        todo = Pending(plan.categories, verified,
                       None if mismatched else plan.recordings_state)
        done = Released(made_final={c.value: 0 for c, _ in plan.categories},
                        source_rows_deleted={c.value: 0 for c, _ in plan.categories},
                        files_deleted=0, batches=0)
        if plan.recordings_state is not None:
            done.made_final[Category.RECORDINGS.value] = 0
            done.source_rows_deleted[Category.RECORDINGS.value] = 0
        sizer = BatchSizer(1000)
        while todo.categories or todo.recordings or todo.recordings_state is not None:
            started = time.monotonic()
            todo, rows = await in_thread(self._release_step, req, todo, sizer.size, done,
                                         details={"batches": done.batches})
            sizer.record(rows, time.monotonic() - started)
            done.batches += 1
            if todo.categories or todo.recordings or todo.recordings_state is not None:
                if out_of_time() and not mismatched:
                    done.finished = False
                    return done
                heartbeat({"batches": done.batches})  # not after the last batch
        if mismatched:
            raise ApplicationError(
                "destination recordings do not match their checksums; their source files "
                "are kept: " + "; ".join(mismatched),
                type=ERR_CHECKSUM_MISMATCH, non_retryable=True)
        if plan.recordings_state is not None:
            # Released: no attempt holds the transfer any more, so no temporary file is in
            # use.
            await in_thread(functools.partial(remove_staging_files, root, req.invitation_id,
                                              temp_only=True,
                                              org_account_id=req.org_account_id))
        return done

    def _plan(self, req: ReleaseSource) -> Plan:
        """The live transfers to release (refused unless finalise committed for all) and
        the staged recording copies, read in one transaction."""
        with self.engine.connect() as conn:
            mine = {"invitation": req.invitation_id}
            rows = conn.execute(prepared(conn, "release_plan", lambda: select(
                STATE.c.id, STATE.c.category, STATE.c.state).where(
                STATE.c.invitation_id == bindparam("invitation"))), mine).all()
            pending = sorted(r.category for r in rows if r.state in (RUNNING, UNDONE))
            if pending:
                raise ApplicationError(
                    f"cannot release the source of {req.invitation_id}: the transfer of "
                    f"{', '.join(pending)} is not live (finalise has not committed)",
                    type=ERR_NOT_FINALISED, non_retryable=True)
            live = {r.category: r.id for r in rows if r.state == LIVE}
            recordings_state = live.get(Category.RECORDINGS.value)
            copies: list[Any] = []
            if recordings_state is not None:
                table = _table(Category.RECORDINGS)
                copies = list(conn.execute(prepared(conn, "release_plan_copies", lambda: select(
                    table).where(table.c.invitation_id == bindparam("invitation"),
                                 table.c.staged == True,  # noqa: E712
                                 ).order_by(table.c.source_id)), mine).all())
        categories: list[tuple[Category, int]] = [
            (c, live[c.value]) for c in Category if c != Category.RECORDINGS and c.value in live]
        return Plan(categories, copies, recordings_state)

    def _source_rows(self, table: Table, req: ReleaseSource) -> list[Any]:
        return [table.c.user_id == req.user_id, table.c.account_id == req.source_account_id,
                table.c.staged == False]  # noqa: E712

    def _release_step(self, req: ReleaseSource, todo: Pending, limit: int,
                      done: Released) -> tuple[Pending, int]:
        """One transaction: release up to `limit` copies, category after category (a
        small invitation's whole source in one go), then the verified recordings; each
        transfer is marked released in the transaction that finishes it. Adds to `done`;
        returns what is left and the copies handled."""
        categories, recordings = list(todo.categories), list(todo.recordings)
        recordings_state = todo.recordings_state
        budget = limit
        root = Path(self.settings.recordings_dir)
        ids = [state_id for _, state_id in categories]
        if recordings_state is not None:
            ids.append(recordings_state)
        with write_transaction(self.engine) as conn:
            # A write first: it takes the lock (SQLite: the database; PostgreSQL: the rows)
            # and reads the checkpoints of the transfers still live.
            live = {row.id: row for row in conn.execute(prepared(
                conn, "release_lock", lambda: update(STATE).where(
                    STATE.c.id.in_(bindparam("ids", expanding=True)), STATE.c.state == LIVE,
                ).values(updated_at=bindparam("now")).returning(
                    STATE.c.id, STATE.c.released_upto, STATE.c.rows_copied)),
                {"ids": ids, "now": utcnow()})}
            released: list[int] = []
            while categories and budget > 0:
                category, state_id = categories[0]
                state = live.get(state_id)
                if state is None:  # released meanwhile (a concurrent run)
                    categories.pop(0)
                    continue
                if state.released_upto == 0 and state.rows_copied <= budget:
                    handled, flipped, removed = self._release_all(conn, req, category)
                    handled, finished = max(handled, state.rows_copied), True
                else:
                    handled, flipped, removed, finished = self._release_window(
                        conn, req, category, state_id, state.released_upto, budget)
                done.made_final[category.value] += flipped
                done.source_rows_deleted[category.value] += removed
                budget -= handled
                if finished:
                    released.append(state_id)
                    categories.pop(0)
            while not categories and recordings and budget > 0:
                gone, removed = self._release_recording(conn, req, recordings.pop(0), root)
                done.made_final[Category.RECORDINGS.value] += 1
                done.source_rows_deleted[Category.RECORDINGS.value] += removed
                done.files_deleted += gone
                budget -= 1
            if not categories and not recordings and recordings_state is not None:
                released.append(recordings_state)
                recordings_state = None
            if released:
                conn.execute(prepared(conn, "release_done", lambda: update(STATE).where(
                    STATE.c.id.in_(bindparam("ids", expanding=True)), STATE.c.state == LIVE,
                ).values(state=RELEASED, updated_at=bindparam("now"))),
                    {"ids": released, "now": utcnow()})
        return Pending(categories, recordings, recordings_state), limit - budget

    def _release_all(self, conn: Connection, req: ReleaseSource,
                     category: Category) -> tuple[int, int, int]:
        """Every copy of a transfer with none released yet and no more copies than the
        batch may take (its rows_copied): two statements, no window to find. Returns
        (copies handled, flipped, source rows deleted)."""
        table = _table(category)
        mine = table.c.invitation_id == bindparam("invitation")
        params = {"invitation": req.invitation_id, "src_user": req.user_id,
                  "src_account": req.source_account_id}
        removed = conn.execute(prepared(conn, ("release_sources", category), lambda: delete(
            table).where(*_source_params(table),
                         table.c.id.in_(select(table.c.source_id).where(mine)))),
            params).rowcount
        flipped = conn.execute(prepared(conn, ("release_copies", category), lambda: update(
            table).where(mine, table.c.staged == True).values(staged=False)),  # noqa: E712
            params).rowcount
        flipped, removed = max(int(flipped or 0), 0), max(int(removed or 0), 0)
        return flipped, flipped, removed

    def _release_window(self, conn: Connection, req: ReleaseSource, category: Category,
                        state_id: int, after: int, limit: int) -> tuple[int, int, int, bool]:
        """Flip the next `limit` copies after the checkpoint `after` (by source id, on the
        unique copy index) and delete their source rows; moves the checkpoint unless
        none are left. Returns (copies handled, flipped, source rows deleted, finished)."""
        table = _table(category)
        mine = [table.c.invitation_id == req.invitation_id, table.c.source_id > after]
        window = select(table.c.source_id).where(*mine).order_by(table.c.source_id) \
            .limit(limit).subquery()
        handled, upto = conn.execute(select(func.count(), func.max(window.c.source_id))).one()
        flipped = removed = 0
        if handled:
            mine.append(table.c.source_id <= upto)
            copied_from = select(table.c.source_id).where(*mine)
            removed = conn.execute(delete(table).where(
                *self._source_rows(table, req), table.c.id > after, table.c.id <= upto,
                table.c.id.in_(copied_from))).rowcount
            flipped = conn.execute(update(table).where(
                *mine, table.c.staged == True).values(staged=False)).rowcount  # noqa: E712
        finished = handled < limit  # nothing left after this window
        if not finished:
            conn.execute(update(STATE).where(STATE.c.id == state_id).values(
                released_upto=upto))
        return (int(handled), max(int(flipped or 0), 0), max(int(removed or 0), 0),
                finished)

    def _release_recording(self, conn: Connection, req: ReleaseSource, copy: Any,
                           root: Path) -> tuple[int, int]:
        """Flip a verified copy, delete the source file and then the source row. A crash
        after the file went but before the commit leaves a source row without its file,
        which the next run (the destination verified again) finishes; no file is ever
        orphaned."""
        table = _table(Category.RECORDINGS)
        conn.execute(prepared(conn, "release_recording_copy", lambda: update(table).where(
            table.c.id == bindparam("copy")).values(staged=False)), {"copy": copy.id})
        source = conn.execute(prepared(conn, "release_recording_source", lambda: select(
            table.c.id, table.c.path).where(*_source_params(table),
                                            table.c.id == bindparam("source"))),
            {"src_user": req.user_id, "src_account": req.source_account_id,
             "source": copy.source_id}).first()
        gone = removed = 0
        if source is not None:
            if source.path != copy.path:
                path = root / source.path
                gone = int(path.exists())
                path.unlink(missing_ok=True)
            removed = conn.execute(prepared(conn, "release_recording_row", lambda: delete(
                table).where(table.c.id == bindparam("source"))), {"source": source.id}).rowcount
        return gone, max(int(removed or 0), 0)


@dataclass(frozen=True)
class Plan:
    categories: list[tuple[Category, int]]  # live transfers (but recordings), state ids
    recordings: list[Any]  # staged recording copies
    recordings_state: int | None  # the recordings' state id, if live


@dataclass(frozen=True)
class Pending:
    categories: list[tuple[Category, int]]  # still to release, in order, with state ids
    recordings: list[Any]  # verified recording copies still to flip
    recordings_state: int | None  # to mark released once every copy is flipped
