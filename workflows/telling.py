"""What the invitation tells the world as it goes, kept apart from the process itself:
the Invitation row (one local activity per state change, in transition order), the
operator's view (current details, search attributes, metrics) and mail (durable: a quick
try, then retries for a day with the problem shown; the same message key throughout).

`InvitationWorkflow` inherits these methods; the state they read is set in its __init__.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate
from temporalio.exceptions import ActivityError, FailureError
from temporalio.exceptions import CancelledError as TemporalCancelledError

with workflow.unsafe.imports_passed_through():
    from activities.mail import MailActivities
    from activities.platform import PlatformActivities
    from messages import search_attributes as sa
    from messages.activity_io import AcceptanceFacts, AuditNote, StatusChange
    from messages.payloads import (
        EmailBatch,
        EmailKind,
        EmailRequest,
        InvitationInput,
        InvitationResult,
        InvitationStatus,
        Progress,
    )

from workflows import options
from workflows.details import current_details, describe_failure

# Mails that carry the signed link: their failure is the invitation's problem.
LINKED = (EmailKind.INVITATION, EmailKind.REMINDER)


def cancelled(err: BaseException) -> bool:
    """An activity failure that is really the workflow being cancelled. (A local
    activity's failure arrives unwrapped, not as an ActivityError.)"""
    if isinstance(err, ActivityError):
        err = err.cause  # type: ignore[assignment]
    return isinstance(err, TemporalCancelledError)


@dataclass(frozen=True)
class Mail:
    kind: EmailKind
    admin: bool = False


class Telling:
    _id: str
    _input: InvitationInput
    _progress: Progress
    _facts: AcceptanceFacts | None
    _issued_at: datetime
    _registered: bool  # the DB row exists: status changes can be recorded
    _record_lock: asyncio.Lock
    _unrecorded: list[AuditNote]
    _search_attributes: bool
    _alerts: bool
    _published: tuple[Any, ...] | None
    _quiet_search: bool  # no search-attribute upsert for now (a state of milliseconds)
    _mails: dict[EmailKind, int]
    _background: list[asyncio.Future[Any]]

    @property
    def _status(self) -> InvitationStatus:
        return self._progress.status

    def _set_step(self, step: str) -> None:
        self._progress.step = step
        self._publish()

    async def _transition(self, status: InvitationStatus, event: str, step: str,
                          detail: dict[str, Any] | None = None, *,
                          record: bool = True) -> None:
        """Change state now (queries and validators see it at once), then write it down.
        `record=False` for a state that lasts one workflow task: it is written with the
        next status change (`_change`), one round trip fewer."""
        self._progress.status, self._progress.step = status, step
        if status.is_final:
            self._progress.finished_at = workflow.now()
        self._publish(search=record)
        if not record:
            self._unrecorded.append(AuditNote(status=status, at=workflow.now(), event=event,
                                              detail=detail or {}))
            return
        change = self._change(status, event, detail)
        async with self._record_lock:
            # A message may arrive before the run registered the row it updates.
            await workflow.wait_condition(lambda: self._registered)
            await workflow.execute_local_activity_method(
                PlatformActivities.record_status, change, summary=f"Record: {event}",
                **options.RECORD)

    def _change(self, status: InvitationStatus, event: str,
                detail: dict[str, Any] | None = None) -> StatusChange:
        """The next status change to write, with the states passed through unwritten."""
        earlier, self._unrecorded = self._unrecorded, []
        return StatusChange(
            invitation_id=self._id, status=status, at=workflow.now(),
            expires_at=self._progress.expires_at, event=event, detail=detail or {},
            source_account_id=self._facts.source_account_id if self._facts else None,
            earlier=earlier)

    def _loud(self) -> None:
        """The search attributes follow the status again (see InvitationWorkflow._join)."""
        if self._quiet_search:
            self._quiet_search = False
            self._publish()

    def _alert(self, alert: str | None, metric: str | None = None) -> None:
        if metric and alert != self._progress.alert:
            self._count(metric)
        if alert is not None:
            self._quiet_search = False  # an alert is for operators to find at once
        self._progress.alert = alert
        self._publish()

    def _publish(self, *, search: bool = True) -> None:
        """What operators see: current details, and the search attributes when registered
        (`search=False` for a state that lasts one workflow task)."""
        workflow.set_current_details(current_details(self._progress))
        if not search or self._quiet_search:
            return
        refund = self._progress.quote.amount_minor if self._progress.quote else 0
        state = (self._status.value, refund, self._progress.alert)
        if not self._search_attributes or state == self._published:
            return
        self._published = state
        updates: list[SearchAttributeUpdate[Any]] = [
            sa.STATUS.value_set(self._status.value), sa.REFUND_MINOR.value_set(refund)]
        if self._alerts:
            updates.append(sa.ALERT.value_set(self._progress.alert or sa.NO_ALERT))
        workflow.upsert_search_attributes(updates)

    def _email(self, mail: Mail) -> EmailRequest:
        # Keys count per kind from the first run of this invitation (continue-as-new keeps
        # the counts; a re-invitation is a new first run), so a retry re-sends the same key.
        n = self._mails[mail.kind] = self._mails.get(mail.kind, 0) + 1
        key = f"{self._id}:{workflow.info().first_execution_run_id}:{mail.kind.value}:{n}"
        return EmailRequest(
            message_key=key, kind=mail.kind,
            to=self._input.invited_by if mail.admin else self._input.email,
            invitation_id=self._id, progress=self._progress.model_copy(deep=True),
            issued_at=self._issued_at if mail.kind in LINKED else None,
            admin_email=self._input.invited_by)

    async def _tell(self, *mails: Mail) -> None:
        """One mail activity for the messages of one moment. A quick try first; then,
        with the problem shown to operators, retries for a day; never fatal."""
        batch = EmailBatch(messages=[self._email(m) for m in mails])
        summary = "Email: " + ", ".join(m.kind.value.replace("_", " ") for m in mails)
        linked = any(m.kind in LINKED for m in mails)
        try:  # the quick try is a local activity: no history events of its own
            await workflow.execute_local_activity_method(
                MailActivities.send_emails, batch, summary=summary, **options.MAIL_FIRST)
            return
        except FailureError as err:
            if cancelled(err):
                raise asyncio.CancelledError() from err
            problem = describe_failure(err)
        workflow.logger.warning("mail not delivered yet (%s): %s", summary, problem,
                                extra={"invitation_id": self._id})
        if linked:
            self._progress.mail_problem = f"invitation email not delivered yet: {problem}"
            self._alert("mail_undelivered", "invitation_mail_undelivered")
        try:
            await workflow.execute_activity_method(MailActivities.send_emails, batch,
                                                   summary=f"{summary} (retrying)",
                                                   **options.MAIL_DURABLE)
        except FailureError as err:
            if cancelled(err):
                raise asyncio.CancelledError() from err
            if linked:
                self._progress.mail_problem = ("the invitation email could not be delivered: "
                                               f"{describe_failure(err)}")
                self._publish()
                self._spawn(self._tell(Mail(EmailKind.ADMIN_MAIL_UNDELIVERED, admin=True)))
            return
        if linked:
            self._progress.mail_problem = None
            self._alert(None)

    def _spawn(self, work: Awaitable[None]) -> None:
        self._background.append(asyncio.ensure_future(work))

    def _count(self, name: str, value: int = 1) -> None:
        workflow.metric_meter().create_counter(name).add(value)

    async def _settled(self) -> None:
        """Every message handler, and every mail they started, has ended."""
        while True:
            await workflow.wait_condition(workflow.all_handlers_finished)
            pending = [t for t in self._background if not t.done()]
            if not pending:
                return
            await asyncio.gather(*pending, return_exceptions=True)

    async def _result(self) -> InvitationResult:
        await self._settled()
        self._publish()
        return InvitationResult(status=self._status, progress=self._progress)
