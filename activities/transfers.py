"""One activity per data category: copy the invitee's rows into the organisation's scope
as *staged* copies (see models.tables), and `undo_transfer` to remove them again.

Rows move in bulk: one `INSERT ... SELECT ... ON CONFLICT (invitation_id, source_id) DO
NOTHING` per batch, committed, then a heartbeat with the last source id copied. A retry
resumes from that checkpoint, and the unique (invitation_id, source_id) pair makes any
overlap harmless, so a category is copied exactly once however often it runs. Recording
files are streamed and checksummed on the way; nothing unverified is ever staged.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import Engine, Table, delete, func, literal, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.platform import source_view
from config import Settings
from models.activity_io import (
    ERR_CHECKSUM_MISMATCH,
    ERR_SOURCE_CHANGED,
    ERR_TRANSFER_FAILED,
    Transfer,
    Transferred,
    UndoneTransfer,
    UndoTransfer,
)
from models.db import write_session, write_transaction
from models.payloads import Category
from models.platform import CATEGORY_TABLES, reports_left_behind, settings_changes
from models.tables import Account, Recording, User, UserSetting

CHUNK = 1024 * 1024  # recording files stream in 1 MiB chunks
CHUNKS_PER_HEARTBEAT = 16  # heartbeat at least every 16 MiB of a long file
STAGING_KEY = ["invitation_id", "source_id"]


def staging_dir_name(invitation_id: str) -> str:
    """A file-system-safe, collision-free directory name for an invitation id."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", invitation_id)[:80]
    return f"{safe}-{hashlib.sha256(invitation_id.encode()).hexdigest()[:8]}"


def _insert(engine: Engine, table: Table) -> Any:
    dialect = {"sqlite": sqlite, "postgresql": postgresql}.get(engine.dialect.name)
    if dialect is None:
        raise RuntimeError(f"no ON CONFLICT insert for database {engine.dialect.name!r}")
    return dialect.insert(table)


def _checkpoint(details: Any) -> int | None:
    """The last heartbeat's checkpoint: {"checkpoint": id, ...} (or a bare id)."""
    if not details:
        return None
    last = details[-1] if isinstance(details, list | tuple) else details
    if isinstance(last, dict):
        last = last.get("checkpoint")
    return int(last) if last is not None else None


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
        resumed_from = _checkpoint(info.heartbeat_details)
        total = await asyncio.to_thread(self._check_source, t)
        meter = activity.metric_meter().with_additional_attributes({"category": category.value})
        rows_metric = meter.create_counter(
            "invitation_transfer_rows", "Rows staged by invitation transfers", "rows")
        bytes_metric = meter.create_counter(
            "invitation_transfer_bytes", "Recording bytes staged by invitation transfers", "By")
        checkpoint, batches, copied_bytes = resumed_from or 0, 0, 0
        while True:
            if category == Category.RECORDINGS:
                step = await self._copy_next_recording(t, checkpoint)
            else:
                step = await asyncio.to_thread(self._copy_batch, t, checkpoint)
            if step is None:
                break
            checkpoint, inserted, size = step
            batches += 1
            copied_bytes += size
            rows_metric.add(inserted)
            bytes_metric.add(size)
            activity.heartbeat({"checkpoint": checkpoint, "batches": batches,
                                "bytes": copied_bytes})
        changed, reports, staged = await asyncio.to_thread(self._finish, t)
        return Transferred(
            category=category, total=total, copied=staged, bytes=copied_bytes, batches=batches,
            resumed_from=resumed_from, attempt=info.attempt, settings_changed=changed,
            reports_left_behind=reports,
        )

    def _table(self, category: Category) -> Table:
        return CATEGORY_TABLES[category].__table__  # type: ignore[attr-defined,no-any-return]

    def _source_filter(self, table: Table, t: Transfer) -> list[Any]:
        return [table.c.user_id == t.user_id, table.c.account_id == t.source_account_id,
                table.c.staged == False]  # noqa: E712

    def _check_source(self, t: Transfer) -> int:
        """Fail for good if the individual account or the user is gone; else count rows."""
        with Session(self.engine) as session:
            account = session.get(Account, t.source_account_id)
            if account is None or account.status != "active" or session.get(
                    User, t.user_id) is None:
                raise ApplicationError(
                    f"the source account {t.source_account_id} or user {t.user_id} no longer "
                    "exists", type=ERR_SOURCE_CHANGED, non_retryable=True)
            table = self._table(t.category)
            return int(session.exec(select(func.count()).select_from(table).where(
                *self._source_filter(table, t))).one())

    def _copy_batch(self, t: Transfer, checkpoint: int) -> tuple[int, int, int] | None:
        """Stage the next `batch_size` source rows after `checkpoint`, in one statement and
        one transaction. Returns (new checkpoint, rows inserted, 0 bytes), None when done."""
        table = self._table(t.category)
        source = self._source_filter(table, t)
        with write_transaction(self.engine) as conn:
            ids = select(table.c.id).where(*source, table.c.id > checkpoint) \
                .order_by(table.c.id).limit(t.batch_size).subquery()
            upto = conn.execute(select(func.max(ids.c.id))).scalar_one()
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
                *source, table.c.id > checkpoint, table.c.id <= upto).order_by(table.c.id)
            stmt = _insert(self.engine, table).from_select(columns, rows) \
                .on_conflict_do_nothing(index_elements=STAGING_KEY)
            inserted = conn.execute(stmt).rowcount
        return int(upto), max(int(inserted or 0), 0), 0

    def _finish(self, t: Transfer) -> tuple[list[Any], int, int]:
        """Apply the organisation's locks to staged settings; count what is staged and
        which reports stay behind (reported by transfer_profile)."""
        view = source_view(t.user_id, t.source_account_id)
        with write_session(self.engine) as session:
            changed: list[Any] = []
            reports = 0
            if t.category == Category.SETTINGS:
                # The same rule the preview showed, so preview and transfer agree.
                changed = settings_changes(session, view, t.org_account_id, t.group)
                for change in changed:
                    session.exec(update(UserSetting).where(
                        col(UserSetting.invitation_id) == t.invitation_id,
                        col(UserSetting.staged) == True,  # noqa: E712
                        col(UserSetting.key) == change.key,
                    ).values(value=change.new))
                session.commit()
            if t.category == Category.PROFILE:
                reports = len(reports_left_behind(session, view))
            table = self._table(t.category)
            staged = session.exec(select(func.count()).select_from(table).where(
                table.c.invitation_id == t.invitation_id)).one()
            return changed, reports, int(staged)

    # -- recordings ---------------------------------------------------------------------

    async def _copy_next_recording(
        self, t: Transfer, checkpoint: int,
    ) -> tuple[int, int, int] | None:
        """Stage the next recording after `checkpoint`: stream, verify, rename, insert.
        Returns (its source id, rows inserted, bytes copied), None when done."""
        src = await asyncio.to_thread(self._next_recording, t, checkpoint)
        if src is None:
            return None
        assert src.id is not None
        if await asyncio.to_thread(self._is_staged, t, src.id):
            return src.id, 0, 0
        rel = Path(str(t.org_account_id)) / "staged" / staging_dir_name(t.invitation_id) / \
            f"{src.id}-{Path(src.path).name}"
        root = Path(self.settings.recordings_dir)
        dest, part = root / rel, root / rel.with_name(rel.name + ".part")
        try:
            source_file = await asyncio.to_thread(open, root / src.path, "rb")
        except FileNotFoundError:
            raise ApplicationError(
                f"recording {src.id} ({src.topic!r}) has no file at {src.path}",
                type=ERR_SOURCE_CHANGED, non_retryable=True) from None
        digest, size = hashlib.sha256(), 0
        try:
            await asyncio.to_thread(part.parent.mkdir, parents=True, exist_ok=True)
            out = await asyncio.to_thread(open, part, "wb")
            try:
                while n := await asyncio.to_thread(_copy_chunks, source_file, out, digest):
                    size += n
                    activity.heartbeat({"checkpoint": checkpoint, "file": src.id, "bytes": size})
                await asyncio.to_thread(_sync, out)
            finally:
                out.close()
        finally:
            source_file.close()
        if digest.hexdigest() != src.sha256:
            await asyncio.to_thread(part.unlink, missing_ok=True)
            raise ApplicationError(
                f"recording {src.id} ({src.topic!r}, {src.path}) does not match its checksum: "
                f"expected sha256 {src.sha256}, read {digest.hexdigest()}",
                type=ERR_CHECKSUM_MISMATCH, non_retryable=True)
        # Atomic: a staged path only ever holds a verified file.
        await asyncio.to_thread(os.replace, part, dest)
        inserted = await asyncio.to_thread(self._insert_recording, t, src, str(rel), size)
        return src.id, inserted, size

    def _next_recording(self, t: Transfer, checkpoint: int) -> Recording | None:
        with Session(self.engine) as session:
            row = session.exec(select(Recording).where(
                Recording.user_id == t.user_id, Recording.account_id == t.source_account_id,
                Recording.staged == False,  # noqa: E712
                col(Recording.id) > checkpoint,
            ).order_by(col(Recording.id)).limit(1)).first()
            if row is not None:
                session.expunge(row)
            return row

    def _is_staged(self, t: Transfer, source_id: int) -> bool:
        with Session(self.engine) as session:
            return session.exec(select(Recording.id).where(
                Recording.invitation_id == t.invitation_id, Recording.source_id == source_id,
            )).first() is not None

    def _insert_recording(self, t: Transfer, src: Recording, rel: str, size: int) -> int:
        values = src.model_dump(exclude={"id"}) | {
            "account_id": t.org_account_id, "invitation_id": t.invitation_id,
            "source_id": src.id, "staged": True, "path": rel, "size_bytes": size,
        }
        table = self._table(Category.RECORDINGS)
        with write_transaction(self.engine) as conn:
            stmt = _insert(self.engine, table).values(**values) \
                .on_conflict_do_nothing(index_elements=STAGING_KEY)
            return max(int(conn.execute(stmt).rowcount or 0), 0)

    # -- compensation -------------------------------------------------------------------

    @activity.defn(name="undo_transfer")
    async def undo_transfer(self, req: UndoTransfer) -> UndoneTransfer:
        return await asyncio.to_thread(self._undo, req)

    def _undo(self, req: UndoTransfer) -> UndoneTransfer:
        """Delete this invitation's staged copies (never a source row, never a live one)."""
        table = self._table(req.category)
        root = Path(self.settings.recordings_dir)
        with write_transaction(self.engine) as conn:
            if req.category == Category.RECORDINGS:
                for (path,) in conn.execute(select(table.c.path).where(
                        table.c.invitation_id == req.invitation_id, table.c.staged == True)):  # noqa: E712
                    (root / path).unlink(missing_ok=True)
            removed = conn.execute(delete(table).where(
                table.c.invitation_id == req.invitation_id, table.c.staged == True,  # noqa: E712
            )).rowcount
            if req.category == Category.RECORDINGS:
                live = {p for (p,) in conn.execute(select(table.c.path).where(
                    table.c.invitation_id == req.invitation_id))}
                _remove_orphans(root, staging_dir_name(req.invitation_id), live)
        return UndoneTransfer(category=req.category, removed=max(int(removed or 0), 0))


def _copy_chunks(src: BinaryIO, out: BinaryIO, digest: Any) -> int:
    """Copy up to CHUNKS_PER_HEARTBEAT chunks, hashing them; 0 at the end of the file."""
    copied = 0
    for _ in range(CHUNKS_PER_HEARTBEAT):
        chunk = src.read(CHUNK)
        if not chunk:
            break
        digest.update(chunk)
        out.write(chunk)
        copied += len(chunk)
    return copied


def _sync(out: BinaryIO) -> None:
    out.flush()
    os.fsync(out.fileno())


def _remove_orphans(root: Path, dir_name: str, keep: set[str]) -> None:
    """Files an interrupted attempt left in this invitation's staging directories (a
    `.part`, or a verified file whose row was never inserted)."""
    for folder in root.glob(f"*/staged/{dir_name}"):
        for f in folder.iterdir():
            if str(f.relative_to(root)) not in keep:
                f.unlink(missing_ok=True)
        if not any(folder.iterdir()):
            folder.rmdir()

