"""Waiting for the invitee: days or weeks of timers, a reminder at each, the admin's
"expiring soon" notice, the expiry; a resend moves the schedule; a long wait continues as
new. Part of `InvitationWorkflow` (workflows/invitation.py), whose state it reads.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from messages.payloads import Carried, EmailKind, InvitationInput, InvitationStatus

from workflows.accepting import DECIDED, OPEN, Accepting
from workflows.schedule import Due, wake_ups
from workflows.telling import Mail

S = InvitationStatus


class Waiting(Accepting):
    _input: InvitationInput
    _issued_at: datetime
    _fired: set[str]
    _schedule_version: int  # bumped by resend: reminders are recomputed

    async def _wait_for_decision(self) -> None:
        """Sleep until the next reminder or the expiry, waking early on any decision or
        on a resend (which moves the schedule). A long wait continues as new."""
        while self._status not in DECIDED:
            if self._history_is_long():
                await self._continue_as_new()
            version = self._schedule_version
            due = next(d for d in wake_ups(
                self._issued_at, self._progress.expires_at, self._input.remind_after,
                self._input.remind_before_expiry) if d.key not in self._fired)
            delay = due.at - workflow.now()
            if delay > timedelta(0):
                timer = asyncio.ensure_future(workflow.sleep(delay, summary=due.summary))
                await workflow.wait_condition(
                    lambda v=version, t=timer: t.done()  # type: ignore[misc]
                    or self._status in DECIDED or self._schedule_version != v
                    or self._history_is_long())
                if not timer.done():
                    # A resend moved the schedule: this timer is moot. A decision leaves
                    # it running (it is dropped when the run ends): one event fewer.
                    if self._schedule_version != version:
                        timer.cancel()
                    continue
            await self._wake_up(due)

    async def _wake_up(self, due: Due) -> None:
        if due.kind == "expiry":
            # An acceptance being checked right now decides first.
            await workflow.wait_condition(lambda: not self._checking)
            if self._status in OPEN and workflow.now() >= self._progress.expires_at:
                self._fired.add(due.key)
                await self._transition(S.EXPIRED, "expired", "Expired unanswered")
            return
        self._fired.add(due.key)
        mails = []
        if self._status.awaiting_acceptance:
            self._progress.reminders_sent += 1
            mails.append(Mail(EmailKind.REMINDER))
        if due.kind == "expiring_soon" and self._status in OPEN:
            mails.append(Mail(EmailKind.ADMIN_EXPIRING_SOON, admin=True))
        if mails:
            self._spawn(self._tell(*mails))
        if self._status.awaiting_acceptance:  # in the audit trail (and its webhook)
            await self._transition(self._status, "reminder_sent", self._progress.step,
                                   {"reminders_sent": self._progress.reminders_sent})

    def _history_is_long(self) -> bool:
        info = workflow.info()
        return (info.get_current_history_length() >= self._input.history_limit
                or info.is_continue_as_new_suggested())

    async def _continue_as_new(self) -> None:
        """Hand the waiting state to a fresh run once every handler and mail finished."""
        await self._settled()
        if self._status in DECIDED:
            return
        carried = Carried(progress=self._progress, issued_at=self._issued_at,
                          fired=sorted(self._fired), mails=self._mails)
        workflow.continue_as_new(self._input.model_copy(update={"carried": carried}))
