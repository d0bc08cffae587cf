"""`InvitationsClient`: the one class services and `starter.py` use to invite people and
to follow, resend and revoke their invitations.

Inviting validates every row first (synchronous database reads, in a thread), then starts
the valid rows with bounded concurrency. The workflow id is derived from (account,
email) and a running workflow with that id refuses a second start, so inviting twice,
or re-running a CSV, starts nothing twice: that row comes back "already pending".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select
from temporalio.api.enums.v1 import WorkflowExecutionStatus
from temporalio.client import (
    Client,
    WorkflowContinuedAsNewError,
    WorkflowFailureError,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from config import Settings
from invitations.errors import (
    InvitationClosed,
    InvitationError,
    InvitationNotFound,
    StartFailed,
    TemporalUnavailable,
    UnknownAccount,
    WorkflowRefused,
    refusal,
)
from invitations.models import (
    AcceptanceLink,
    InviteRequest,
    InviteResult,
    PendingInvitation,
    RowResult,
)
from invitations.starting import BulkStart, error_row
from invitations.validation import Checked, Inviter, check_inviter, validate
from messages.payloads import (
    FINAL_STATUS_VALUES,
    AcceptOutcome,
    AcceptRequest,
    DeclineRequest,
    InvitationResult,
    InvitationStatus,
    Progress,
    RefundChoice,
    ResendRequest,
    RevokeRequest,
    UserType,
)
from records.db import as_utc
from records.tables import Account, Invitation, User
from rules.links import signed_acceptance_url

OPEN_STATUSES = (InvitationStatus.PENDING, InvitationStatus.BLOCKED,
                 InvitationStatus.AWAITING_REFUND_CHOICE)
QUERY_TIMEOUT = timedelta(seconds=10)  # a query needs a worker: say so rather than hang

Progressed = Callable[[RowResult, int, int], None]  # (result, done, total)


class InvitationsClient:
    def __init__(self, temporal_client: Client, settings: Settings, engine: Engine, *,
                 search_attributes: bool = True) -> None:
        self.temporal = temporal_client
        self.settings = settings
        self.engine = engine
        # The time-skipping test server cannot hold custom search attributes.
        self.search_attributes = search_attributes

    # --- inviting -------------------------------------------------------------------
    async def check_inviter(self, account_id: int, by: str) -> Inviter:
        """Raise the typed error if `by` may not invite into `account_id` at all."""
        return await asyncio.to_thread(self._in_session, check_inviter, account_id, by)

    async def invite(
        self, account_id: int, by: str, email: str, *, first_name: str = "",
        last_name: str = "", user_type: UserType | str = UserType.BASIC,
        group: str | None = None, message: str | None = None,
        expires_in_days: int | None = None,
    ) -> InviteResult:
        """Invite one person; raises the typed validation error, nothing started."""
        request = InviteRequest(
            account_id=account_id, invited_by=by, email=email, first_name=first_name,
            last_name=last_name, user_type=str(user_type), group=group, message=message,
            expires_in_days=expires_in_days)
        [row] = await asyncio.to_thread(self._validate, [request])
        if row.error is not None:
            raise row.error
        [result] = await self._starts().run([row], concurrency=1)
        if result.error is not None:
            raise StartFailed(result.error.message)
        assert result.invitation_id is not None
        return InviteResult(invitation_id=result.invitation_id, email=result.email,
                            outcome=result.outcome, status=result.status or "pending",
                            expires_at=result.expires_at)

    async def invite_many(
        self, rows: Sequence[InviteRequest], concurrency: int = 32,
        progress: Progressed | None = None,
    ) -> list[RowResult]:
        """Validate every row, then start the valid ones, `concurrency` at a time. One
        result per row, in order; a row's error never stops the others."""
        checked = await asyncio.to_thread(self._validate, rows)
        results: list[RowResult | None] = [None] * len(checked)
        done = 0

        def report(i: int, result: RowResult) -> None:
            nonlocal done
            results[i], done = result, done + 1
            if progress is not None:
                progress(result, done, len(checked))

        todo = []
        for i, row in enumerate(checked):
            if row.error is not None:
                report(i, error_row(row.request, row.email, row.error))
            else:
                todo.append(i)
        started = await self._starts().run([checked[i] for i in todo], concurrency,
                                           lambda j, r: report(todo[j], r))
        assert all(r is not None for r in results) and len(started) == len(todo)
        return [r for r in results if r is not None]

    def _validate(self, rows: Sequence[InviteRequest]) -> list[Checked]:
        with Session(self.engine) as session:
            return validate(session, rows, self.settings.invitation_expiry_days)

    def _starts(self) -> BulkStart:
        return BulkStart(self.temporal, self.settings, self.engine,
                         search_attributes=self.search_attributes)

    # --- the Pending list and one invitation -------------------------------------------
    async def pending(
        self, account_id: int, *, include_all: bool = False,
    ) -> list[PendingInvitation]:
        return await asyncio.to_thread(self._pending, account_id, include_all)

    def _pending(self, account_id: int, include_all: bool) -> list[PendingInvitation]:
        with Session(self.engine) as session:
            if session.get(Account, account_id) is None:
                raise UnknownAccount(f"there is no account with id {account_id}")
            query = (select(Invitation, User.email)
                     .join(User, col(User.id) == col(Invitation.invited_by_user_id))
                     .where(Invitation.account_id == account_id)
                     .order_by(col(Invitation.invited_at), col(Invitation.email)))
            if not include_all:
                query = query.where(col(Invitation.status).in_([s.value for s in OPEN_STATUSES]))
            return [
                PendingInvitation(
                    invitation_id=row.id, email=row.email, first_name=row.first_name,
                    last_name=row.last_name, user_type=row.user_type, group=row.group_name,
                    status=row.status, invited_by=by, invited_at=as_utc(row.invited_at),
                    expires_at=as_utc(row.expires_at))
                for row, by in session.exec(query).all()
            ]

    async def status(self, invitation: str) -> Progress:
        """The workflow's `progress` query; for an ended workflow, its result."""
        handle = self.temporal.get_workflow_handle(invitation, result_type=InvitationResult)
        try:
            desc = await handle.describe()
            if desc.status != WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING:
                try:
                    ended = await handle.result(follow_runs=False)
                    return ended.progress
                except (WorkflowFailureError, WorkflowContinuedAsNewError):
                    pass  # failed or terminated: the query still reads its last state
            return await handle.query("progress", result_type=Progress,
                                      rpc_timeout=QUERY_TIMEOUT)
        except RPCError as exc:
            raise await self._rpc_error(invitation, exc) from exc

    async def resend(self, invitation: str, expires_in_days: int | None = None) -> Progress:
        """A new email; the expiry moves to `expires_in_days` (default: the settings' 30)
        days from now."""
        days = expires_in_days or self.settings.invitation_expiry_days
        # The update answers once the workflow recorded the new expiry (the row's only
        # writer): the Pending list shows it at once.
        return await self._update(invitation, "resend", ResendRequest(expires_in_days=days),
                                  Progress)

    async def revoke(self, invitation: str, by: str | None = None,
                     reason: str | None = None) -> Progress:
        """Ends an invitation whose data has not started moving; after that point the
        workflow refuses with AlreadyMovingData (raised as such)."""
        return await self._update(invitation, "revoke", RevokeRequest(by=by, reason=reason),
                                  Progress)

    async def accept(self, invitation: str, request: AcceptRequest | None = None) -> AcceptOutcome:
        return await self._update(invitation, "accept", request or AcceptRequest(), AcceptOutcome)

    async def choose_refund(self, invitation: str, choice: RefundChoice) -> AcceptOutcome:
        return await self._update(invitation, "choose_refund", choice, AcceptOutcome)

    async def decline(self, invitation: str, request: DeclineRequest | None = None) -> Progress:
        return await self._update(invitation, "decline", request or DeclineRequest(), Progress)

    async def link(self, invitation: str) -> AcceptanceLink:
        """The current acceptance link of an open invitation: the one in its latest email
        (signed with the workflow's `link_issued_at`), since only that one works. Reads the
        `progress` query, so a worker must be running."""
        row = await asyncio.to_thread(self._row, invitation)
        if row is None:
            raise InvitationNotFound(f"no invitation {invitation!r}")
        if row.status in FINAL_STATUS_VALUES:
            raise InvitationClosed(f"invitation {invitation} has ended ({row.status}); its "
                                   "link no longer works")
        progress = await self.status(invitation)
        if progress.status.is_final:
            raise InvitationClosed(f"invitation {invitation} has ended "
                                   f"({progress.status.value}); its link no longer works")
        # Started before link_issued_at existed: the link handler accepts any of our links.
        issued = progress.link_issued_at or datetime.now(UTC)
        return AcceptanceLink(invitation_id=invitation, email=progress.email, issued_at=issued,
                              url=signed_acceptance_url(self.settings, invitation,
                                                        progress.email, issued))

    # --- plumbing -----------------------------------------------------------------------
    async def _update(self, invitation: str, name: str, arg: Any, result_type: type) -> Any:
        handle = self.temporal.get_workflow_handle(invitation)
        try:
            return await handle.execute_update(name, arg, result_type=result_type)
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError):
                raise refusal(cause.type, cause.message) from exc
            raise WorkflowRefused("UpdateFailed", str(cause or exc)) from exc
        except RPCError as exc:
            raise await self._rpc_error(invitation, exc) from exc

    async def _rpc_error(self, invitation: str, exc: RPCError) -> InvitationError:
        if exc.status == RPCStatusCode.NOT_FOUND:
            row = await asyncio.to_thread(self._row, invitation)
            try:
                desc = await self.temporal.get_workflow_handle(invitation).describe()
            except RPCError:
                desc = None
            if desc is None and row is None:
                return InvitationNotFound(f"no invitation {invitation!r}")
            state = row.status if row is not None else desc.status.name.lower()  # type: ignore[union-attr]
            return InvitationClosed(f"invitation {invitation} has ended ({state})")
        if exc.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED):
            return TemporalUnavailable(f"no answer about {invitation} in time: is a worker "
                                       f"polling task queue {self.settings.task_queue!r}?")
        return TemporalUnavailable(f"Temporal refused the request: {exc.message}")

    def _row(self, invitation: str) -> Invitation | None:
        with Session(self.engine) as session:
            return session.get(Invitation, invitation)

    def _in_session(self, fn: Callable[..., Any], *args: Any) -> Any:
        with Session(self.engine) as session:
            return fn(session, *args)
