"""The first version of InvitationWorkflow, frozen: invitations started before the
"invitation-v2" patch replay and finish on this code (workflows/invitation.py hands them
over). Do not change what it does (its commands, their order, their arguments); delete it
once no such invitation is running. The saga is in workflows/v1/joining.py, what it tells
the world in workflows/v1/bookkeeping.py.

InvitationWorkflow: one durable invitation of one person into one paid account.

1. Register the invitation, mail the link, and wait (days, weeks) for the invitee, with
   reminders to them and an "expiring soon" notice to the admin; unanswered, it expires.
2. `accept` checks the blocking conditions (error 1009) and quotes the refund at that
   moment: a blocked invitation stays open; a paid plan first asks where the refund goes.
3. A saga links the member, pays the refund once, moves every data category in parallel
   and finalises, each undo registered before its step runs.
4. A step that fails for good runs the registered undo steps, newest first, and the
   invitation ends failed-and-compensated with the reason (an undo that fails is only
   added to the reason); otherwise it ends completed. Known gaps of this version, fixed
   in the current one: a finalise that committed but lost its answer is compensated, and
   a link whose answer was lost is not undone.
5. Declined, revoked and expired invitations end without touching any data.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.platform import PlatformActivities
    from messages import search_attributes as sa
    from messages.activity_io import (
        AcceptanceCheck,
        AcceptanceFacts,
        Membership,
        RegisterInvitation,
    )
    from messages.payloads import (
        AcceptOutcome,
        AcceptRequest,
        Category,
        CategoryProgress,
        DeclineRequest,
        EmailKind,
        InvitationInput,
        InvitationResult,
        InvitationStatus,
        Progress,
        RefundChoice,
        RefundDestination,
        ResendRequest,
        RevokeRequest,
    )
    from rules.platform import ERROR_1009

from workflows.v1 import options
from workflows.v1.details import blocked_message, describe_failure, refund_message
from workflows.v1.joining import ORIGINAL_PAYMENT_METHOD, Joining, StepFailed
from workflows.v1.saga import shielded
from workflows.v1.schedule import Due, wake_ups

S = InvitationStatus

# Open, nothing moved yet: can be declined, resent, revoked, and can expire.
OPEN = (S.PENDING, S.BLOCKED, S.AWAITING_REFUND_CHOICE)
# The waiting phase ends at one of these.
DECIDED = (S.ACCEPTED, S.DECLINED, S.REVOKED, S.EXPIRED)
WAITING_STEP = "Waiting for the invitee to accept"


def _rejected(kind: str, message: str) -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=True)


class InvitationWorkflowV1(Joining):
    """One invitation, from the mail to the end (see the module docstring)."""

    @workflow.init
    def __init__(self, input: InvitationInput) -> None:
        now = workflow.now()
        self._input = input
        self._id = workflow.info().workflow_id
        self._issued_at = now  # of the link in the latest invitation mail
        self._progress = Progress(
            invitation_id=self._id, status=S.PENDING, account_id=input.account_id,
            invited_by=input.invited_by, email=input.email, first_name=input.first_name,
            last_name=input.last_name, user_type=input.user_type, group=input.group,
            message=input.message, invited_at=now,
            expires_at=now + timedelta(days=input.expires_in_days),
            step="Registering the invitation",
        )
        self._facts: AcceptanceFacts | None = None
        self._destination: RefundDestination | None = None
        self._membership: Membership | None = None
        self._checking = False  # an acceptance check is in flight
        self._last_outcome: AcceptOutcome | None = None
        self._schedule_version = 0  # bumped by resend: reminders are recomputed
        self._fired: set[str] = set()
        self._mails: dict[EmailKind, int] = {}
        self._background: list[asyncio.Future[Any]] = []
        self._record_lock = asyncio.Lock()  # status rows are written in transition order
        self._registered = False  # the row exists (or never will): status can be recorded
        self._first_transfer_failure: StepFailed | None = None
        # Custom search attributes exist only where they were registered (not on the
        # time-skipping server); the client sets them at start exactly when they are.
        self._search_attributes_on = (
            workflow.info().typed_search_attributes.get(sa.STATUS) is not None
        )
        self._published: tuple[Any, ...] | None = None

    # ---------------------------------------------------------------- the process

    @workflow.run
    async def run(self, input: InvitationInput) -> InvitationResult:
        self._count("invitations_started")
        try:
            registered = await workflow.execute_activity_method(
                PlatformActivities.register_invitation,
                RegisterInvitation(invitation_id=self._id, input=input,
                                   invited_at=self._progress.invited_at,
                                   expires_at=self._progress.expires_at),
                summary="Register the invitation",
                **options.PLATFORM,
            )
        except ActivityError as err:
            raise _rejected("RegistrationFailed", "The invitation could not be registered: "
                            f"{describe_failure(err)}") from err
        finally:
            self._registered = True
        self._progress.account_name = registered.account_name
        try:
            if self._status in OPEN:  # not revoked or declined in the first instant
                if self._status == S.PENDING and not self._checking:
                    self._set_step(WAITING_STEP)
                workflow.logger.info("invitation sent", extra={"invitation_id": self._id})
                await self._mail(EmailKind.INVITATION, issued_at=self._issued_at)
            await self._wait_for_decision()
        except asyncio.CancelledError:
            if self._status in OPEN:
                await shielded(lambda: self._transition(S.REVOKED, "cancelled",
                                                        "Cancelled by an operator"))
            raise
        if self._status == S.ACCEPTED:
            await self._join()
        elif self._status == S.EXPIRED:
            await self._expired()
        return await self._result()

    async def _wait_for_decision(self) -> None:
        """Sleep until the next reminder or the expiry, waking early on any decision or
        on a resend (which moves the schedule)."""
        while self._status not in DECIDED:
            version = self._schedule_version
            due = next(d for d in wake_ups(
                self._issued_at, self._progress.expires_at, self._input.remind_after,
                self._input.remind_before_expiry,
            ) if d.key not in self._fired)
            delay = due.at - workflow.now()
            if delay > timedelta(0):
                try:
                    await workflow.wait_condition(self._woken(version), timeout=delay,
                                                  timeout_summary=due.summary)
                    continue
                except TimeoutError:
                    pass
            await self._wake_up(due)

    def _woken(self, version: int) -> Callable[[], bool]:
        """Decided, or rescheduled by a resend since `version`."""
        return lambda: self._status in DECIDED or self._schedule_version != version

    async def _wake_up(self, due: Due) -> None:
        if due.kind == "expiry":
            # An acceptance being checked right now decides first.
            await workflow.wait_condition(lambda: not self._checking)
            if self._status in OPEN and workflow.now() >= self._progress.expires_at:
                self._fired.add(due.key)
                await self._transition(S.EXPIRED, "expired", "Expired unanswered")
            return
        self._fired.add(due.key)
        if self._status.awaiting_acceptance:
            self._progress.reminders_sent += 1
            await self._mail(EmailKind.REMINDER, issued_at=self._issued_at)
        if due.kind == "expiring_soon" and self._status in OPEN:
            await self._mail(EmailKind.ADMIN_EXPIRING_SOON, admin=True)

    async def _expired(self) -> None:
        self._count("invitations_expired")
        workflow.logger.info("invitation expired", extra={"invitation_id": self._id})
        await self._mail(EmailKind.EXPIRED)
        await self._mail(EmailKind.ADMIN_EXPIRED, admin=True)


    # ---------------------------------------------------------------- messages

    @workflow.update(name="accept")
    async def accept(self, req: AcceptRequest) -> AcceptOutcome:
        return await self._accept(req)

    @accept.validator
    def _validate_accept(self, req: AcceptRequest) -> None:
        if not self._status.awaiting_acceptance:
            raise self._not_awaiting()

    @workflow.signal(name="accept")
    async def accept_signal(self, req: AcceptRequest) -> None:
        """Fire-and-forget twin of the `accept` update; the outcome shows in `progress`."""
        if not (self._status.awaiting_acceptance or self._checking):
            workflow.logger.info("accept signal ignored: invitation is %s", self._status.value)
            return
        try:
            await self._accept(req)
        except ApplicationError as err:
            workflow.logger.warning("accept signal not applied: %s", err.message)

    @workflow.update
    async def choose_refund(self, choice: RefundChoice) -> AcceptOutcome:
        if self._status != S.AWAITING_REFUND_CHOICE:  # a second choice while the first ran
            return self._outcome()
        return await self._accepted(choice.destination)

    @choose_refund.validator
    def _validate_choose_refund(self, choice: RefundChoice) -> None:
        if self._status != S.AWAITING_REFUND_CHOICE:
            raise _rejected("NotAwaitingRefundChoice", "There is no refund choice to make: "
                            f"the invitation is {self._status.value}.")

    @workflow.update
    async def decline(self, req: DeclineRequest) -> Progress:
        self._validate_decline(req)
        await self._transition(S.DECLINED, "declined", "Declined by the invitee",
                               {"reason": req.reason} if req.reason else {})
        return self._progress

    @decline.validator
    def _validate_decline(self, req: DeclineRequest) -> None:
        if self._status not in OPEN:
            raise self._not_awaiting()

    @workflow.update
    async def resend(self, req: ResendRequest) -> Progress:
        self._validate_resend(req)
        days = req.expires_in_days or self._input.expires_in_days
        self._issued_at = workflow.now()
        self._progress.expires_at = self._issued_at + timedelta(days=days)
        self._schedule_version += 1
        self._fired.clear()
        await self._transition(self._status, "resent", self._progress.step,
                               {"expires_in_days": days})
        await self._mail(EmailKind.INVITATION, issued_at=self._issued_at)
        return self._progress

    @resend.validator
    def _validate_resend(self, req: ResendRequest) -> None:
        if self._status not in OPEN:
            raise self._not_awaiting()

    @workflow.update
    async def revoke(self, req: RevokeRequest) -> Progress:
        self._validate_revoke(req)
        detail = {k: v for k, v in (("by", req.by), ("reason", req.reason)) if v}
        await self._transition(S.REVOKED, "revoked", "Revoked by an admin", detail)
        return self._progress

    @revoke.validator
    def _validate_revoke(self, req: RevokeRequest) -> None:
        if self._status.data_moving:
            raise _rejected("AlreadyMovingData", "The invitation can no longer be revoked: "
                            f"it is {self._status.value} and the invitee's data is moving.")
        if self._status.is_final:
            raise _rejected("InvitationEnded", f"The invitation already ended: it is "
                            f"{self._status.value}.")

    @workflow.query
    def progress(self) -> Progress:
        return self._progress

    # ---------------------------------------------------------------- acceptance

    async def _accept(self, req: AcceptRequest) -> AcceptOutcome:
        if self._checking:  # a second click while the first is checked: share its answer
            await workflow.wait_condition(lambda: not self._checking)
            if self._last_outcome is not None and not self._status.is_final:
                return self._last_outcome
            return await self._accept(req)
        if not self._status.awaiting_acceptance:
            return self._outcome()
        self._checking = True
        try:
            self._last_outcome = None
            self._last_outcome = await self._check(req)
            return self._last_outcome
        finally:
            self._checking = False

    async def _check(self, req: AcceptRequest) -> AcceptOutcome:
        await workflow.wait_condition(lambda: self._registered)  # the answer names the account
        at = workflow.now()
        was = self._status
        self._set_step("Checking the blocking conditions and the refund")
        try:
            facts = await workflow.execute_activity_method(
                PlatformActivities.check_acceptance,
                AcceptanceCheck(invitation_id=self._id, account_id=self._input.account_id,
                                email=self._input.email, user_type=self._input.user_type,
                                group=self._input.group, at=at),
                summary="Check blocking conditions, quote refund",
                **options.PLATFORM,
            )
        except ActivityError as err:
            self._set_step(WAITING_STEP)
            raise _rejected("AcceptanceCheckFailed", "The acceptance could not be checked, "
                            f"please try again: {describe_failure(err)}") from err
        if not self._status.awaiting_acceptance:  # declined, revoked or expired meanwhile
            raise self._not_awaiting()
        self._facts = facts
        if facts.blocking:
            self._progress.blocking = facts.blocking
            self._count("invitations_blocked")
            await self._transition(
                S.BLOCKED, "blocked",
                "Blocked (error 1009): waiting for the invitee to fix it and accept again",
                {"error_code": ERROR_1009,
                 "blocking": [b.model_dump(mode="json") for b in facts.blocking]})
            if was != S.BLOCKED or self._mails.get(EmailKind.ADMIN_BLOCKED) is None:
                self._spawn(self._mail(EmailKind.ADMIN_BLOCKED, admin=True))
            return self._outcome()
        self._progress.blocking = []
        self._progress.quote = facts.quote
        self._progress.settings_changed = facts.settings_changes
        self._progress.reports_left_behind = facts.reports_left_behind
        self._progress.accepted_at = at
        if facts.quote is not None and facts.quote.amount_minor > 0 \
                and req.refund_destination is None:
            await self._transition(
                S.AWAITING_REFUND_CHOICE, "refund_choice_needed",
                "Waiting for the invitee to choose where the refund goes",
                {"quote": facts.quote.model_dump(mode="json")})
            return self._outcome()
        return await self._accepted(req.refund_destination)

    async def _accepted(self, destination: RefundDestination | None) -> AcceptOutcome:
        self._destination = destination or ORIGINAL_PAYMENT_METHOD
        if self._facts is not None and self._facts.source_account_id is not None:
            self._progress.categories = {c: CategoryProgress(category=c) for c in Category}
        await self._transition(S.ACCEPTED, "accepted", "Accepted: joining the account",
                               {"refund_destination": self._destination.value}
                               if self._progress.quote else {})
        return self._outcome()

    def _outcome(self) -> AcceptOutcome:
        """The answer to `accept` in the current state (also for a repeated click)."""
        p = self._progress
        if self._status == S.BLOCKED:
            return AcceptOutcome(outcome="blocked", error_code=ERROR_1009, blocking=p.blocking,
                                 message=blocked_message(p.account_name, p.blocking))
        if self._status == S.AWAITING_REFUND_CHOICE and p.quote is not None:
            return AcceptOutcome(outcome="refund_choice_needed", quote=p.quote,
                                 message=refund_message(p.quote))
        if self._status in (S.ACCEPTED, S.TRANSFERRING, S.COMPLETED):
            return AcceptOutcome(outcome="accepted", quote=p.quote,
                                 message=f"Accepted: your account joins {p.account_name}; "
                                         "your data is on its way.")
        raise self._not_awaiting()

    def _not_awaiting(self) -> ApplicationError:
        return _rejected("NotAwaitingAcceptance", "The invitation is not awaiting acceptance: "
                         f"it is {self._status.value}.")
