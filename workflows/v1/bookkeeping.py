"""Frozen with workflows/v1/invitation.py (see there).

What the invitation tells the world as it goes, kept apart from the process itself:
the DB Invitation row (record_status, in transition order), the operator's view (current
details, search attributes, metrics) and mail (best effort, never fatal).

`InvitationWorkflow` inherits these methods; the state they read is set in its __init__.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import datetime
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities.mail import MailActivities
    from activities.platform import PlatformActivities
    from messages import search_attributes as sa
    from messages.activity_io import AcceptanceFacts, StatusChange
    from messages.payloads import (
        EmailKind,
        EmailRequest,
        InvitationInput,
        InvitationResult,
        InvitationStatus,
        Progress,
    )

from workflows.v1 import options
from workflows.v1.details import current_details, describe_failure


class Bookkeeping:
    _id: str
    _input: InvitationInput
    _progress: Progress
    _facts: AcceptanceFacts | None
    _registered: bool  # the DB row exists (or never will): status changes can be recorded
    _record_lock: asyncio.Lock
    _search_attributes_on: bool
    _published: tuple[Any, ...] | None
    _mails: dict[EmailKind, int]
    _background: list[asyncio.Future[Any]]

    @property
    def _status(self) -> InvitationStatus:
        return self._progress.status

    def _set_step(self, step: str) -> None:
        self._progress.step = step
        self._publish()

    async def _transition(self, status: InvitationStatus, event: str, step: str,
                          detail: dict[str, Any] | None = None) -> None:
        """Change state now (queries and validators see it at once), then write it down."""
        self._progress.status, self._progress.step = status, step
        if status.is_final:
            self._progress.finished_at = workflow.now()
        self._publish()
        change = StatusChange(
            invitation_id=self._id, status=status, at=workflow.now(),
            expires_at=self._progress.expires_at, event=event, detail=detail or {},
            source_account_id=self._facts.source_account_id if self._facts else None,
        )
        async with self._record_lock:
            # A message may arrive before the run registered the row it updates.
            await workflow.wait_condition(lambda: self._registered)
            try:
                await workflow.execute_activity_method(
                    PlatformActivities.record_status, change, summary=f"Record: {event}",
                    **options.PLATFORM)
            except ActivityError as err:  # logged, not fatal: the row may lag (and a join
                # claim stay held) until the next recorded change
                workflow.logger.error("could not record status %s: %s", status.value,
                                      describe_failure(err), extra={"invitation_id": self._id})

    def _publish(self) -> None:
        """What operators see: current details, and the search attributes when registered."""
        workflow.set_current_details(current_details(self._progress))
        refund = self._progress.quote.amount_minor if self._progress.quote else 0
        state = (self._status.value, refund)
        if not self._search_attributes_on or state == self._published:
            return
        self._published = state
        workflow.upsert_search_attributes([
            sa.STATUS.value_set(self._status.value),
            sa.ACCOUNT_ID.value_set(str(self._input.account_id)),
            sa.INVITEE_EMAIL.value_set(self._input.email),
            sa.USER_TYPE.value_set(self._input.user_type.value),
            sa.REFUND_MINOR.value_set(refund),
        ])

    async def _mail(self, kind: EmailKind, *, admin: bool = False,
                    issued_at: datetime | None = None) -> None:
        """Best effort: a mail that cannot be sent is logged, never fatal."""
        n = self._mails[kind] = self._mails.get(kind, 0) + 1
        info = workflow.info()
        request = EmailRequest(
            message_key=f"{info.workflow_id}:{info.run_id}:{kind.value}:{n}", kind=kind,
            to=self._input.invited_by if admin else self._input.email,
            invitation_id=self._id, progress=self._progress.model_copy(deep=True),
            issued_at=issued_at, admin_email=self._input.invited_by,
        )
        try:
            await workflow.execute_activity_method(
                MailActivities.send_email, request,
                summary=f"Email: {kind.value.replace('_', ' ')}", **options.MAIL)
        except ActivityError as err:
            workflow.logger.warning("could not send the %s mail: %s", kind.value,
                                    describe_failure(err), extra={"invitation_id": self._id})

    def _spawn(self, work: Awaitable[None]) -> None:
        self._background.append(asyncio.ensure_future(work))

    def _count(self, name: str, value: int = 1) -> None:
        workflow.metric_meter().create_counter(name).add(value)


    async def _result(self) -> InvitationResult:
        # Every message handler, and every mail they started, ends before the run does.
        while True:
            await workflow.wait_condition(workflow.all_handlers_finished)
            pending = [t for t in self._background if not t.done()]
            if not pending:
                break
            await asyncio.gather(*pending, return_exceptions=True)
        self._publish()
        return InvitationResult(status=self._status, progress=self._progress)
