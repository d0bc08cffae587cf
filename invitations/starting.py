"""Starting validated invitations: the start options (id, policies, summary, details,
search attributes) and `BulkStart`, which runs the starts with bounded concurrency and
records each started invitation in the database."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from temporalio.client import Client
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from config import Settings
from content.labels import user_type_label
from invitations.errors import InvitationError, StartFailed
from invitations.models import ErrorInfo, InviteRequest, Outcome, RowResult
from invitations.validation import Checked, Inviter
from messages import search_attributes as sa
from messages.payloads import InvitationInput, InvitationStatus
from records.changes import upsert_invitation
from records.db import write_session

WORKFLOW = "InvitationWorkflow"
_Write = tuple[str, InvitationInput, int, datetime, datetime]


class BulkStart:
    def __init__(self, temporal: Client, settings: Settings, engine: Engine, *,
                 search_attributes: bool = True) -> None:
        self.temporal, self.settings, self.engine = temporal, settings, engine
        self.search_attributes = search_attributes

    async def run(
        self, rows: Sequence[Checked], concurrency: int,
        on_result: Callable[[int, RowResult], None] | None = None,
    ) -> list[RowResult]:
        """`concurrency` starters pull from one iterator; a writer records the started
        rows in the database in batches (the workflow's register activity writes the same
        row again, idempotently, should this process die in between)."""
        results: list[RowResult | None] = [None] * len(rows)
        pending: Iterator[int] = iter(range(len(rows)))
        writes: asyncio.Queue[_Write | None] = asyncio.Queue()

        async def starter() -> None:
            for i in pending:
                results[i] = await self._start_one(rows[i], writes)
                if on_result is not None:
                    on_result(i, results[i])  # type: ignore[arg-type]

        async with asyncio.TaskGroup() as outer:
            writer = outer.create_task(self._writer(writes))
            async with asyncio.TaskGroup() as starters:
                for _ in range(max(1, min(concurrency, len(rows)))):
                    starters.create_task(starter())
            await writes.put(None)
            await writer
        return [r for r in results if r is not None]

    async def _start_one(self, row: Checked, writes: asyncio.Queue[_Write | None]) -> RowResult:
        inp, wid, inviter = row.input, row.invitation_id, row.inviter
        assert inp is not None and wid is not None and inviter is not None
        now = datetime.now(UTC)
        expires_at = now + timedelta(days=inp.expires_in_days)
        try:
            await self.temporal.start_workflow(WORKFLOW, inp, **start_options(
                self.settings, wid, inp, inviter, expires_at,
                search_attributes=self.search_attributes))
        except WorkflowAlreadyStartedError:
            return RowResult(line=row.request.line, email=row.email, invitation_id=wid,
                             outcome=Outcome.ALREADY_PENDING,
                             status=row.open_status or InvitationStatus.PENDING.value)
        except RPCError as exc:
            return error_row(row.request, row.email, StartFailed(
                f"Temporal did not start the invitation: {exc.message}"), wid)
        await writes.put((wid, inp, inviter.user_id, now, expires_at))
        return RowResult(line=row.request.line, email=row.email, invitation_id=wid,
                         outcome=Outcome.STARTED, status=InvitationStatus.PENDING.value,
                         expires_at=expires_at)

    async def _writer(self, writes: asyncio.Queue[_Write | None]) -> None:
        finished = False
        while not finished:
            batch = [await writes.get()]
            while not writes.empty():
                batch.append(writes.get_nowait())
            finished = batch[-1] is None
            items = [b for b in batch if b is not None]
            if items:
                await asyncio.to_thread(self._write_rows, items)

    def _write_rows(self, items: list[_Write]) -> None:
        with write_session(self.engine) as session:
            for wid, inp, user_id, invited_at, expires_at in items:
                upsert_invitation(session, wid, inp, invited_by_user_id=user_id,
                                  invited_at=invited_at, expires_at=expires_at)
            session.commit()


def start_options(
    settings: Settings, workflow_id: str, inp: InvitationInput, inviter: Inviter,
    expires_at: datetime, *, search_attributes: bool = True,
) -> dict[str, Any]:
    """Everything `start_workflow` gets besides the workflow and its input. A running
    workflow with the same id refuses the start (FAIL); an ended one may be re-run."""
    attrs = TypedSearchAttributes([
        SearchAttributePair(sa.STATUS, InvitationStatus.PENDING.value),
        SearchAttributePair(sa.ACCOUNT_ID, str(inp.account_id)),
        SearchAttributePair(sa.INVITEE_EMAIL, inp.email),
        SearchAttributePair(sa.USER_TYPE, inp.user_type.value),
        SearchAttributePair(sa.REFUND_MINOR, 0),  # so that `InvitationRefundMinor = 0` finds it
        SearchAttributePair(sa.ALERT, sa.NO_ALERT),
    ])
    return {
        "id": workflow_id, "task_queue": settings.task_queue,
        "id_reuse_policy": WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        "id_conflict_policy": WorkflowIDConflictPolicy.FAIL,
        "static_summary": summary(inp, inviter.account_name),
        "static_details": details(inp, inviter, expires_at),
        "search_attributes": attrs if search_attributes else None,
    }


def summary(inp: InvitationInput, account_name: str) -> str:
    return f"Invite {inp.email} to {account_name} as {user_type_label(inp.user_type)}"


def details(inp: InvitationInput, inviter: Inviter, expires_at: datetime) -> str:
    """Markdown shown under the summary in the Web UI."""
    name = f"{inp.first_name} {inp.last_name}".strip()
    return "\n".join([
        f"**Invitee:** {inp.email}" + (f" ({name})" if name else ""),
        f"**Invited by:** {inviter.name} <{inviter.email}>",
        f"**Account:** {inviter.account_name} (id {inp.account_id})",
        f"**User type:** {user_type_label(inp.user_type)}",
        f"**Group:** {inp.group or '-'}",
        f"**Expires:** {expires_at:%Y-%m-%d %H:%M} UTC ({inp.expires_in_days} days)",
    ])


def error_row(request: InviteRequest, email: str, error: InvitationError,
               invitation_id: str | None = None) -> RowResult:
    return RowResult(line=request.line, email=email or request.email, outcome=Outcome.ERROR,
                     invitation_id=invitation_id,
                     error=ErrorInfo(code=error.code, field=error.field, message=error.message))
