"""InvitationWorkflow: one durable invitation of one person into one paid account.

1. Register the invitation, mail the link, and wait (days, weeks) for the invitee, with
   reminders to them and an "expiring soon" notice to the admin; unanswered, it expires.
2. `accept` checks the blocking conditions (error 1009) and quotes the refund at that
   moment: a blocked invitation stays open; a paid plan first asks where the refund goes.
3. A saga links the member, pays the refund once, moves every data category in parallel
   and finalises, each undo registered before its step runs.
4. A step that fails for good undoes all that was done, newest first, and the invitation
   ends failed-and-compensated with the reason; otherwise it ends completed.
5. Declined, revoked and expired invitations end without touching any data.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import CancelledError as TemporalCancelledError

with workflow.unsafe.imports_passed_through():
    from models import search_attributes as sa
    from models.activity_io import (
        TRANSFER_ACTIVITY,
        AcceptanceCheck,
        AcceptanceFacts,
        ClaimRefusal,
        Finalise,
        Finalised,
        LinkMember,
        Membership,
        PayRefund,
        RegisteredInvitation,
        RegisterInvitation,
        ReverseRefund,
        Transfer,
        Transferred,
        UndoneTransfer,
        UndoTransfer,
    )
    from models.money import format_minor
    from models.payloads import (
        AcceptOutcome,
        AcceptRequest,
        Category,
        CategoryProgress,
        DeclineRequest,
        EmailKind,
        InvitationInput,
        InvitationResult,
        InvitationStatus,
        Payment,
        Progress,
        RefundChoice,
        RefundDestination,
        ResendRequest,
        RevokeRequest,
    )
    from models.platform import ERROR_1009

from workflows import options
from workflows.bookkeeping import Bookkeeping
from workflows.details import (
    CATEGORY_LABELS,
    blocked_message,
    describe_failure,
    refund_message,
)
from workflows.saga import Compensations, shielded
from workflows.schedule import Due, wake_ups

S = InvitationStatus
S_ORIGINAL = RefundDestination.ORIGINAL_PAYMENT_METHOD  # also when there is nothing to refund
T = TypeVar("T")

# Rows per committed batch of a transfer (the checkpoint granularity of a resume).
TRANSFER_BATCH_SIZE = 1000
# Open, nothing moved yet: can be declined, resent, revoked, and can expire.
OPEN = (S.PENDING, S.BLOCKED, S.AWAITING_REFUND_CHOICE)
# The waiting phase ends at one of these.
DECIDED = (S.ACCEPTED, S.DECLINED, S.REVOKED, S.EXPIRED)
WAITING_STEP = "Waiting for the invitee to accept"


class StepFailed(Exception):
    """A saga step failed for good; `step` names it (and the category) for the reason."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step} failed: {reason}")
        self.step, self.reason = step, reason


def _rejected(kind: str, message: str) -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=True)


@workflow.defn(name="InvitationWorkflow")
class InvitationWorkflow(Bookkeeping):
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
            step="Registering the invitation", link_issued_at=now,
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
            registered = await workflow.execute_activity(
                "register_invitation",
                RegisterInvitation(invitation_id=self._id, input=input,
                                   invited_at=self._progress.invited_at,
                                   expires_at=self._progress.expires_at),
                result_type=RegisteredInvitation, summary="Register the invitation",
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

    async def _join(self) -> None:
        """The saga: link, pay, transfer, finalise; compensate on a failure for good."""
        facts = self._facts
        assert facts is not None
        self._count("invitations_accepted")
        self._spawn(self._mail(EmailKind.ADMIN_ACCEPTED, admin=True))
        saga = Compensations()
        source = facts.source_account_id
        try:
            saga.register("unlink_member", self._unlink_member)
            self._set_step("Linking the member to the account")
            self._membership = member = await self._step("link the member",
                                                         workflow.execute_activity(
                "link_member",
                LinkMember(invitation_id=self._id, account_id=self._input.account_id,
                           email=self._input.email, first_name=self._input.first_name,
                           last_name=self._input.last_name, user_type=self._input.user_type,
                           group=self._input.group),
                result_type=Membership, summary="Link the member to the account",
                **options.SAGA_STEP,
            ))
            quote = self._progress.quote
            if quote is not None and source is not None:
                reversal = ReverseRefund(invitation_id=self._id, source_account_id=source,
                                         org_account_id=self._input.account_id)
                saga.register("reverse_refund", lambda: self._undo(
                    "reverse_refund", reversal, Payment,
                    "Undo: reverse the refund and reinstate the subscription"))
                self._set_step("Paying the refund")
                self._progress.payment = payment = await self._step(
                    "pay the refund", workflow.execute_activity(
                        "pay_refund",
                        PayRefund(invitation_id=self._id, source_account_id=source,
                                  org_account_id=self._input.account_id, at=quote.at,
                                  destination=self._destination or S_ORIGINAL),
                        result_type=Payment,
                        summary=f"Pay the refund once: "
                                f"{format_minor(quote.amount_minor, quote.currency)}",
                        **options.SAGA_STEP,
                    ))
                if payment.status == "paid":
                    self._count("invitation_refund_minor_paid", payment.amount_minor)
            if source is not None:
                for category in Category:
                    saga.register(f"undo_transfer {category.value}",
                                  partial(self._undo_transfer, category))
                await self._transition(S.TRANSFERRING, "transferring", "Transferring data")
                await self._transfer_all(member.user_id, source)
            self._set_step("Finalising")
            # The point of no return: once started it runs to its end, cancel or not.
            finalised = await shielded(lambda: self._step("finalise", workflow.execute_activity(
                "finalise",
                Finalise(invitation_id=self._id, user_id=member.user_id,
                         source_account_id=source, org_account_id=self._input.account_id),
                result_type=Finalised, summary="Finalise: make the data live (no return)",
                **options.SAGA_STEP,
            )))
        except StepFailed as failure:
            await self._compensate(saga, failure.args[0])
            return
        except asyncio.CancelledError:
            await self._compensate(saga, "cancelled by an operator")
            raise
        for progress in self._progress.categories.values():
            progress.state = "live"
        await self._transition(S.COMPLETED, "completed", "Completed",
                               {"made_live": finalised.made_live,
                                "source_account_closed": finalised.source_account_closed})
        self._count("invitations_completed")
        workflow.logger.info("invitation completed", extra={"invitation_id": self._id})
        # The refund is only final now: the receipt waits for the point of no return.
        if self._progress.payment is not None and self._progress.payment.amount_minor > 0:
            await self._mail(EmailKind.REFUND_RECEIPT)
        await self._mail(EmailKind.COMPLETION)
        await self._mail(EmailKind.ADMIN_COMPLETED, admin=True)

    async def _transfer_all(self, user_id: int, source: int) -> None:
        """One activity per category, in parallel. A failure for good does not cancel the
        others: cancelling races their completion, and they are cheap to let finish since
        their undo removes what they staged. A cancel of the workflow does stop them, and
        waits until they have stopped writing before anything is undone."""
        tasks = [asyncio.create_task(self._transfer(c, user_id, source)) for c in Category]
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
            await shielded(lambda: asyncio.gather(*tasks, return_exceptions=True))
        if self._first_transfer_failure is not None:
            raise self._first_transfer_failure
        for task in tasks:  # anything else would be a bug: surface it
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def _transfer(self, category: Category, user_id: int, source: int) -> None:
        progress = self._progress.categories[category]
        progress.state = "running"
        self._publish()
        try:
            done = await workflow.execute_activity(
                TRANSFER_ACTIVITY[category],
                Transfer(invitation_id=self._id, category=category, user_id=user_id,
                         source_account_id=source, org_account_id=self._input.account_id,
                         group=self._input.group, batch_size=TRANSFER_BATCH_SIZE),
                result_type=Transferred, summary=f"Transfer {CATEGORY_LABELS[category.value]}",
                **options.TRANSFER,
            )
        except ActivityError as err:
            if isinstance(err.cause, TemporalCancelledError):
                return  # stopped because the workflow was cancelled
            progress.state, progress.error = "failed", describe_failure(err)
            failure = StepFailed(f"transfer {category.value}", progress.error)
            if self._first_transfer_failure is None:
                self._first_transfer_failure = failure
            self._publish()
            raise failure from err
        progress.state, progress.total, progress.copied = "staged", done.total, done.copied
        progress.bytes_copied, progress.attempts = done.bytes, done.attempt
        if category == Category.SETTINGS:
            self._progress.settings_changed = done.settings_changed
            self._progress.reports_left_behind = done.reports_left_behind or \
                self._progress.reports_left_behind
        self._publish()

    async def _compensate(self, saga: Compensations, reason: str) -> None:
        self._progress.failure_reason = reason
        self._set_step("Compensating: undoing every step done, newest first")
        workflow.logger.error("invitation failed, compensating: %s", reason,
                              extra={"invitation_id": self._id})
        failed_undo = await saga.run()
        if failed_undo:
            self._progress.failure_reason += "; compensation incomplete: " + "; ".join(failed_undo)
        for progress in self._progress.categories.values():
            if progress.state in ("running", "staged"):
                progress.state = "compensated"
        await shielded(lambda: self._transition(
            S.FAILED, "failed_compensated", "Failed; everything done was undone",
            {"reason": self._progress.failure_reason}))
        self._count("invitations_failed")

    async def _unlink_member(self) -> None:
        # link_member commits all or nothing: without its result there is nothing to undo.
        if self._membership is not None:
            await self._undo("unlink_member", self._membership, None,
                             "Undo: unlink the member, restore their account")

    async def _undo_transfer(self, category: Category) -> None:
        await self._undo("undo_transfer", UndoTransfer(invitation_id=self._id, category=category),
                         UndoneTransfer,
                         f"Undo: remove staged {CATEGORY_LABELS[category.value].lower()}")

    async def _undo(self, name: str, arg: Any, result_type: type | None, summary: str) -> None:
        await workflow.execute_activity(name, arg, result_type=result_type, summary=summary,
                                        **options.UNDO)

    @staticmethod
    async def _step(name: str, activity: Awaitable[T]) -> T:
        try:
            return await activity
        except ActivityError as err:
            raise StepFailed(name, describe_failure(err)) from err

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
        self._progress.link_issued_at = self._issued_at
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
            facts = await workflow.execute_activity(
                "check_acceptance",
                AcceptanceCheck(invitation_id=self._id, account_id=self._input.account_id,
                                email=self._input.email, user_type=self._input.user_type,
                                group=self._input.group, at=at),
                result_type=AcceptanceFacts, summary="Check blocking conditions, quote refund",
                **options.PLATFORM,
            )
        except ActivityError as err:
            self._set_step(WAITING_STEP)
            raise _rejected("AcceptanceCheckFailed", "The acceptance could not be checked, "
                            f"please try again: {describe_failure(err)}") from err
        if not self._status.awaiting_acceptance:  # declined, revoked or expired meanwhile
            raise self._not_awaiting()
        if facts.refusal is not None:
            return await self._refused(facts.refusal)
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

    async def _refused(self, refusal: ClaimRefusal) -> AcceptOutcome:
        """The join is not this invitation's to make: say so at once, link nothing. While
        another account's join or a seat shortage is the reason the invitation stays open;
        once the person has joined elsewhere it ends."""
        p, name = self._progress, refusal.account_name
        self._count(f"invitations_refused_{refusal.kind}")
        if refusal.kind == "joined_elsewhere":
            p.failure_reason = f"{p.email} joined {name}"
            await self._transition(S.JOINED_ELSEWHERE, "joined_elsewhere",
                                   f"Ended: the invitee joined {name}",
                                   {"joined_account": name})
            return AcceptOutcome(
                outcome="joined_elsewhere", error_code="joined_another_account",
                joining_account_name=name,
                message=f"You already joined {name}, so this invitation to {p.account_name} "
                        "has ended. Nothing changed on your account because of it.")
        if refusal.kind == "no_free_seat":
            message = (f"{name} has no free licensed seat right now, so you cannot join yet. "
                       f"Your invitation stays open: ask {p.invited_by} to free or add a "
                       "seat, then accept again.")
            code, step = "no_free_licensed_seat", "Waiting for a free licensed seat"
        else:
            message = (f"Your account is already joining {name}. This invitation to "
                       f"{p.account_name} stays open: you can accept it if that join does "
                       "not go through.")
            code, step = "already_joining_another_account", f"Waiting: already joining {name}"
        await self._transition(self._status, "join_refused", step,
                               {"reason": refusal.kind, "account": name})
        return AcceptOutcome(outcome=refusal.kind, error_code=code, message=message,
                             joining_account_name=name)

    async def _accepted(self, destination: RefundDestination | None) -> AcceptOutcome:
        self._destination = destination or S_ORIGINAL
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
