"""InvitationWorkflow: one durable invitation of one person into one paid account.

1. Register the invitation, mail the link, and wait (days, weeks) for the invitee, with
   reminders to them and an "expiring soon" notice to the admin; unanswered, it expires.
2. `accept` checks the blocking conditions (error 1009), takes the person's join claim
   (one join at a time: another company's acceptance is refused at once) and quotes the
   refund: a blocked invitation stays open; a paid plan first asks where the refund goes.
3. A saga links the member, pays the refund once and moves every data category in
   parallel, each undo registered before its step runs; a failure for good undoes all
   that was done, newest first (an undo that cannot finish waits for an operator).
4. Finalise is the point of no return: retried until it commits, never undone; then the
   invitation completes and the source is released off the critical path.
5. Every ending (completed, failed, declined, revoked, expired, cancelled) is told to the
   invitee and the admin.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, TypeVar, cast

from temporalio import workflow
from temporalio.exceptions import ApplicationError, FailureError

with workflow.unsafe.imports_passed_through():
    from activities.finalising import FinaliseActivities
    from activities.platform import PlatformActivities
    from models.activity_io import (
        AcceptanceCheck,
        AcceptanceFacts,
        AuditNote,
        ClaimRefusal,
        Finalise,
        RegisterInvitation,
        ReleaseSource,
    )
    from models.payloads import (
        AcceptOutcome,
        AcceptRequest,
        Carried,
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
        RetryCompensation,
        RevokeRequest,
    )
    from models.platform import ERROR_1009
    from workflows.v1.invitation import InvitationWorkflowV1

from models import search_attributes as sa
from workflows import options
from workflows.details import blocked_message, describe_failure, refund_message
from workflows.moving import QUICK, Moving, StepFailed
from workflows.saga import Compensations, shielded
from workflows.schedule import Due, wake_ups
from workflows.telling import Mail, cancelled

S = InvitationStatus
T = TypeVar("T")
# Invitations started before this patch run the frozen first version (workflows/v1).
V2 = "invitation-v2"
# Open, nothing moved yet: can be declined, resent, revoked, cancelled, and can expire.
OPEN = (S.PENDING, S.BLOCKED, S.AWAITING_REFUND_CHOICE)
# The waiting phase ends at one of these.
DECIDED = (S.ACCEPTED, S.DECLINED, S.REVOKED, S.EXPIRED, S.JOINED_ELSEWHERE, S.CANCELLED)
WAITING_STEP = "Waiting for the invitee to accept"
# Who hears of each ending that comes before any data moved.
ENDING_MAILS = {
    S.DECLINED: (Mail(EmailKind.DECLINED), Mail(EmailKind.ADMIN_DECLINED, admin=True)),
    S.REVOKED: (Mail(EmailKind.REVOKED), Mail(EmailKind.ADMIN_REVOKED, admin=True)),
    S.CANCELLED: (Mail(EmailKind.REVOKED), Mail(EmailKind.ADMIN_REVOKED, admin=True)),
    S.EXPIRED: (Mail(EmailKind.EXPIRED), Mail(EmailKind.ADMIN_EXPIRED, admin=True)),
}


def _rejected(kind: str, message: str) -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=True)


def _check_link(req: AcceptRequest, p: Progress) -> None:
    """What the link handler's signed link says must match the invitation now: the email,
    the latest link (a resend supersedes older ones, to the second: tokens carry whole
    seconds), and, while open, the expiry (which may pass before the timer ends it)."""
    if req.link_email is not None and req.link_email.strip().lower() != p.email.lower():
        raise _rejected("LinkMismatch", "The link does not belong to this invitation.")
    issued = p.link_issued_at
    if req.link_issued_at is not None and issued is not None \
            and int(req.link_issued_at.timestamp()) != int(issued.timestamp()):
        raise _rejected("LinkSuperseded", "This link was replaced by a newer invitation email.")
    if req.link_issued_at is not None and p.status in OPEN \
            and workflow.now() >= p.expires_at:
        raise _rejected("LinkExpired", "The invitation has expired.")


@workflow.defn(name="InvitationWorkflow")
class InvitationWorkflow(Moving):
    """One invitation, from the mail to the end (see the module docstring)."""

    @workflow.init
    def __init__(self, input: InvitationInput) -> None:
        # The frozen first version, typed loosely: its handlers keep their decorators
        # (whose types are the handler's, not a bound method's), so results are cast.
        self._v1: Any = None if workflow.patched(V2) else InvitationWorkflowV1(input)
        now = workflow.now()
        self._input = input
        self._id = workflow.info().workflow_id
        carried = input.carried
        self._issued_at = carried.issued_at if carried else now  # of the latest link
        self._progress = carried.progress if carried else Progress(
            invitation_id=self._id, status=S.PENDING, account_id=input.account_id,
            invited_by=input.invited_by, email=input.email, first_name=input.first_name,
            last_name=input.last_name, user_type=input.user_type, group=input.group,
            message=input.message, invited_at=now,
            expires_at=now + timedelta(days=input.expires_in_days),
            step="Registering the invitation", link_issued_at=now)
        self._fired: set[str] = set(carried.fired) if carried else set()
        self._mails: dict[EmailKind, int] = dict(carried.mails) if carried else {}
        self._registered = carried is not None  # the row exists: status can be recorded
        self._facts: AcceptanceFacts | None = None
        self._destination = RefundDestination.ORIGINAL_PAYMENT_METHOD
        self._checking = False  # an acceptance check is in flight
        self._last_outcome: AcceptOutcome | None = None
        self._schedule_version = 0  # bumped by resend: reminders are recomputed
        self._background: list[asyncio.Future[Any]] = []
        self._record_lock = asyncio.Lock()  # status rows are written in transition order
        self._unrecorded: list[AuditNote] = []
        self._retry_compensation = False
        self._user_id = 0  # the invitee's user, once linked
        self._made_live: dict[str, int] = {}
        attrs = workflow.info().typed_search_attributes
        # Custom search attributes exist only where registered (not on the time-skipping
        # server); the client sets them at start exactly when they are.
        self._search_attributes = attrs.get(sa.STATUS) is not None
        self._alerts = attrs.get(sa.ALERT) is not None
        # What the run's search attributes already say (set by the client at start, or
        # carried over by continue-as-new): an upsert that changes nothing is not made.
        self._published: tuple[Any, ...] | None = (
            attrs.get(sa.STATUS), attrs.get(sa.REFUND_MINOR) or 0,
            None if attrs.get(sa.ALERT) in (None, sa.NO_ALERT) else attrs.get(sa.ALERT),
        ) if self._search_attributes else None

    # ---------------------------------------------------------------- the process

    @workflow.run
    async def run(self, input: InvitationInput) -> InvitationResult:
        if self._v1 is not None:
            return cast(InvitationResult, await self._v1.run(input))
        if input.carried is None:
            await self._register(input)
        try:
            await self._wait_for_decision()
            if self._status == S.ACCEPTED:
                await self._answer_first()
        except asyncio.CancelledError:
            # Accepted but not yet linked is still "before anything moved".
            if self._status in OPEN or self._status == S.ACCEPTED:
                await shielded(lambda: self._transition(S.CANCELLED, "cancelled",
                                                        "Cancelled by an operator"))
                await shielded(lambda: self._tell(*ENDING_MAILS[S.CANCELLED]))
            raise
        if self._status == S.ACCEPTED:
            await self._join()
        elif self._status in ENDING_MAILS:
            self._count(f"invitations_{self._status.value}")
            await self._tell(*ENDING_MAILS[self._status])
        return await self._result()

    async def _register(self, input: InvitationInput) -> None:
        self._count("invitations_started")
        try:
            registered = await workflow.execute_local_activity_method(
                PlatformActivities.register_invitation,
                RegisterInvitation(invitation_id=self._id, input=input,
                                   invited_at=self._progress.invited_at,
                                   expires_at=self._progress.expires_at),
                summary="Register the invitation", **options.CHECK)
        except FailureError as err:
            raise _rejected("RegistrationFailed", "The invitation could not be registered: "
                            f"{describe_failure(err)}") from err
        finally:
            self._registered = True
        self._progress.account_name = registered.account_name
        if self._status == S.PENDING and not self._checking:
            self._set_step(WAITING_STEP)
        if self._status in OPEN:  # not revoked or declined in the first instant
            self._spawn(self._tell(Mail(EmailKind.INVITATION)))

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

    async def _answer_first(self) -> None:
        """End the workflow task that accepted, so that the invitee's answer leaves now.
        An update's answer leaves with its workflow task, and a task waits for every local
        activity started in it: without this, the click would wait for the link, the
        refund and the admin's mail too (p95 ~0.7 s against ~0.1 s with 5 at once, see
        bench/README.md). A 1 ms timer: one action and two events."""
        await workflow.sleep(timedelta(milliseconds=1))

    async def _join(self) -> None:
        """The saga: link, pay, transfer; compensate on a failure for good; finalise."""
        facts = self._facts
        assert facts is not None
        self._count("invitations_accepted")
        self._spawn(self._tell(Mail(EmailKind.ADMIN_ACCEPTED, admin=True)))
        saga = Compensations()
        source = facts.source_account_id
        try:
            saga.register("unlink the member", self._unlink)
            record = None
            if source is not None:  # the data phase starts with the link, which writes it
                self._progress.status = S.TRANSFERRING
                record = self._change(S.TRANSFERRING, "transferring")
            await self._link(record)
            quote = self._progress.quote
            if quote is not None and source is not None:
                saga.register("reverse the refund", lambda: self._reverse(source))
                await self._pay(source)
            if source is not None:
                for category in Category:
                    saga.register(f"remove the copied {category.value}",
                                  lambda c=category: self._undo_transfer(c))  # type: ignore[misc]
                self._set_step("Transferring data")
                await self._transfer_all(self._user_id, source)
            quick = workflow.patched(QUICK)
            if quick:  # a cancel that came during the quick steps is seen here, and undoes
                await self._end_task()
        except StepFailed as failure:
            await self._compensate(saga, str(failure))
            return
        except asyncio.CancelledError:
            await self._compensate(saga, "cancelled by an operator")
            raise
        await shielded(self._finalise)
        if quick:  # finalise is written down before anything can end the run
            await shielded(self._end_task)
        await self._completed(source)

    async def _end_task(self) -> None:
        """End the workflow task here (a 1 ms timer: one action, two events). The link, the
        refund, quick transfers and finalise are local activities: without this they and
        the run's completion could share one workflow task, and a cancel or message that
        arrives meanwhile makes the server refuse that completion (UnhandledCommand), which
        drops their results; the task's retry would then see the cancel first and forget
        steps that did happen. With it, the cancel is seen before the point of no return
        (and undoes what was done) or after finalise (and is refused)."""
        await workflow.sleep(timedelta(milliseconds=1))

    async def _finalise(self) -> None:
        """The point of no return: once it starts it runs until it commits. A cancel here
        is refused (it would undo a join the database has made final)."""
        self._set_step("Finalising")
        req = Finalise(invitation_id=self._id, user_id=self._user_id,
                       source_account_id=self._facts.source_account_id if self._facts else None,
                       org_account_id=self._input.account_id,
                       completed=self._change(S.COMPLETED, "completed"))
        policy = options.FINALISE_FIRST
        quick = workflow.patched(QUICK)  # one short transaction: first inside the task
        while True:
            try:
                if quick:
                    quick = False
                    finalised = await workflow.execute_local_activity_method(
                        FinaliseActivities.finalise, req,
                        summary="Finalise (point of no return)", **options.QUICK)
                else:
                    finalised = await workflow.execute_activity_method(
                        FinaliseActivities.finalise, req,
                        summary="Finalise (point of no return)", **policy)
                break
            except FailureError as err:
                reason = describe_failure(err)
            except asyncio.CancelledError:
                workflow.logger.warning("cancel refused: past the point of no return",
                                        extra={"invitation_id": self._id})
                self._progress.step = "Finalising (a cancel was refused: no return now)"
                continue
            workflow.logger.error("finalise keeps failing: %s", reason,
                                  extra={"invitation_id": self._id})
            self._progress.failure_reason = f"finalising is stuck, still retrying: {reason}"
            self._set_step("Finalising is stuck: retrying until it commits")
            self._alert("finalising_stuck", "invitations_finalising_stuck")
            policy = options.FINALISE_AGAIN
        if self._progress.alert == "finalising_stuck":
            self._progress.failure_reason = None
            self._alert(None)
        self._made_live = finalised.made_live

    async def _completed(self, source: int | None) -> None:
        for progress in self._progress.categories.values():
            progress.state = "live"
        # Finalise wrote "completed" in its own transaction; here only memory and operators.
        self._progress.status, self._progress.step = S.COMPLETED, "Completed"
        self._progress.finished_at = workflow.now()
        self._publish()
        self._count("invitations_completed")
        workflow.logger.info("invitation completed", extra={"invitation_id": self._id})
        mails = [Mail(EmailKind.COMPLETION), Mail(EmailKind.ADMIN_COMPLETED, admin=True)]
        if self._progress.payment is not None and self._progress.payment.amount_minor > 0:
            mails.insert(0, Mail(EmailKind.REFUND_RECEIPT))  # final only now
        tasks = [self._tell(*mails)]
        if source is not None:
            tasks.append(self._release(source))
        await shielded(lambda: asyncio.gather(*tasks))

    async def _release(self, source: int) -> None:
        req = ReleaseSource(invitation_id=self._id, user_id=self._user_id,
                            source_account_id=source, org_account_id=self._input.account_id)
        if workflow.patched(QUICK):
            try:  # a small source goes inside the workflow task; the rest as an activity
                released = await workflow.execute_local_activity_method(
                    FinaliseActivities.release_source,
                    req.model_copy(update={"budget_seconds": options.QUICK_BUDGET_SECONDS}),
                    summary="Release the source (quick)", **options.QUICK)
                if released.finished:
                    return
            except FailureError as err:
                if cancelled(err):
                    raise asyncio.CancelledError() from err
        await workflow.execute_activity_method(
            FinaliseActivities.release_source, req,
            summary="Release the source (after completion)", **options.RELEASE)

    async def _compensate(self, saga: Compensations, reason: str) -> None:
        self._progress.failure_reason = reason
        self._set_step("Compensating: undoing every step done, newest first")
        workflow.logger.error("invitation failed, compensating: %s", reason,
                              extra={"invitation_id": self._id})
        while failed := await saga.run():
            # An undo failed for good: say exactly what is left and wait for an operator.
            self._progress.undo_left = failed
            self._alert("needs_attention", "invitations_needs_attention")
            await shielded(lambda: self._transition(
                S.NEEDS_ATTENTION, "needs_attention",
                "Needs attention: an undo step failed; fix it, then retry_compensation",
                {"undo_left": failed}))
            self._spawn(self._tell(Mail(EmailKind.ADMIN_NEEDS_ATTENTION, admin=True)))
            await workflow.wait_condition(lambda: self._retry_compensation)
            self._set_step("Compensating again, as an operator asked")
        self._retry_compensation = False
        self._progress.undo_left = []
        self._alert(None)
        for progress in self._progress.categories.values():
            if progress.state in ("running", "staged"):
                progress.state = "compensated"
        await shielded(lambda: self._transition(
            S.FAILED, "failed_compensated", "Failed; everything done was undone",
            {"reason": self._progress.failure_reason}))
        self._count("invitations_failed")
        await shielded(lambda: self._tell(Mail(EmailKind.FAILED),
                                          Mail(EmailKind.ADMIN_FAILED, admin=True)))

    # ---------------------------------------------------------------- messages

    @workflow.update(name="accept")
    async def accept(self, req: AcceptRequest) -> AcceptOutcome:
        if self._v1 is not None:
            outcome, progress = cast(AcceptOutcome, await self._v1.accept(req)), self._v1._progress
        else:
            outcome, progress = await self._accept(req), self._progress
        # A copy now: the join goes on changing the progress after this handler returns.
        return outcome.model_copy(update={"progress": progress.model_copy(deep=True)})

    @accept.validator
    def _validate_accept(self, req: AcceptRequest) -> None:
        _check_link(req, self._v1._progress if self._v1 is not None else self._progress)
        if self._v1 is not None:
            self._v1._validate_accept(req)
            return
        if not self._status.awaiting_acceptance:
            raise self._not_awaiting()

    @workflow.signal(name="accept")
    async def accept_signal(self, req: AcceptRequest) -> None:
        """Fire-and-forget twin of the `accept` update; the outcome shows in `progress`."""
        if self._v1 is not None:
            await self._v1.accept_signal(req)
            return
        if not (self._status.awaiting_acceptance or self._checking):
            workflow.logger.info("accept signal ignored: invitation is %s", self._status.value)
            return
        try:
            await self._accept(req)
        except ApplicationError as err:
            workflow.logger.warning("accept signal not applied: %s", err.message)

    @workflow.update
    async def choose_refund(self, choice: RefundChoice) -> AcceptOutcome:
        if self._v1 is not None:
            return cast(AcceptOutcome, await self._v1.choose_refund(choice))
        if self._status != S.AWAITING_REFUND_CHOICE:  # a second choice while the first ran
            return self._outcome()
        return await self._accepted(choice.destination)

    @choose_refund.validator
    def _validate_choose_refund(self, choice: RefundChoice) -> None:
        if self._v1 is not None:
            self._v1._validate_choose_refund(choice)
            return
        if self._status != S.AWAITING_REFUND_CHOICE:
            raise _rejected("NotAwaitingRefundChoice", "There is no refund choice to make: "
                            f"the invitation is {self._status.value}.")

    @workflow.update
    async def decline(self, req: DeclineRequest) -> Progress:
        if self._v1 is not None:
            return cast(Progress, await self._v1.decline(req))
        self._validate_decline(req)
        await self._transition(S.DECLINED, "declined", "Declined by the invitee",
                               {"reason": req.reason} if req.reason else {})
        return self._progress

    @decline.validator
    def _validate_decline(self, req: DeclineRequest) -> None:
        if self._v1 is not None:
            self._v1._validate_decline(req)
            return
        if self._status not in OPEN:
            raise self._not_awaiting()

    @workflow.update
    async def resend(self, req: ResendRequest) -> Progress:
        """A new email with a new link: every earlier link stops working."""
        if self._v1 is not None:
            return cast(Progress, await self._v1.resend(req))
        self._validate_resend(req)
        days = req.expires_in_days or self._input.expires_in_days
        self._issued_at = self._progress.link_issued_at = workflow.now()
        self._progress.expires_at = self._issued_at + timedelta(days=days)
        self._schedule_version += 1
        self._fired.clear()
        await self._transition(self._status, "resent", self._progress.step,
                               {"expires_in_days": days})
        self._spawn(self._tell(Mail(EmailKind.INVITATION)))
        return self._progress

    @resend.validator
    def _validate_resend(self, req: ResendRequest) -> None:
        if self._v1 is not None:
            self._v1._validate_resend(req)
            return
        if self._status not in OPEN:
            raise self._not_awaiting()

    @workflow.update
    async def revoke(self, req: RevokeRequest) -> Progress:
        if self._v1 is not None:
            return cast(Progress, await self._v1.revoke(req))
        self._validate_revoke(req)
        detail = {k: v for k, v in (("by", req.by), ("reason", req.reason)) if v}
        await self._transition(S.REVOKED, "revoked", "Revoked by an admin", detail)
        return self._progress

    @revoke.validator
    def _validate_revoke(self, req: RevokeRequest) -> None:
        if self._v1 is not None:
            self._v1._validate_revoke(req)
            return
        if self._status.data_moving:
            raise _rejected("AlreadyMovingData", "The invitation can no longer be revoked: "
                            f"it is {self._status.value} and the invitee's data is moving.")
        if self._status.is_final:
            raise _rejected("InvitationEnded", f"The invitation already ended: it is "
                            f"{self._status.value}.")

    @workflow.update
    async def retry_compensation(self, req: RetryCompensation) -> Progress:
        """Operators: the cause of a failed undo is fixed; undo what is left."""
        self._retry_compensation = True
        await workflow.wait_condition(lambda: self._status != S.NEEDS_ATTENTION
                                      or not self._retry_compensation)
        return self._progress

    @retry_compensation.validator
    def _validate_retry_compensation(self, req: RetryCompensation) -> None:
        if self._v1 is not None or self._status != S.NEEDS_ATTENTION:
            status = self._v1._status if self._v1 is not None else self._status
            raise _rejected("NothingToRetry", "There is no failed undo to retry: the "
                            f"invitation is {status.value}.")

    @workflow.query
    def progress(self) -> Progress:
        return self._v1.progress() if self._v1 is not None else self._progress

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
            facts = await workflow.execute_local_activity_method(
                PlatformActivities.check_acceptance,
                AcceptanceCheck(invitation_id=self._id, account_id=self._input.account_id,
                                email=self._input.email, user_type=self._input.user_type,
                                group=self._input.group, at=at),
                summary="Check blocking conditions, claim the join, quote the refund",
                **options.CHECK)
        except FailureError as err:
            if cancelled(err):
                raise asyncio.CancelledError() from err
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
                self._spawn(self._tell(Mail(EmailKind.ADMIN_BLOCKED, admin=True)))
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
        self._destination = destination or RefundDestination.ORIGINAL_PAYMENT_METHOD
        if self._facts is not None and self._facts.source_account_id is not None:
            self._progress.categories = {c: CategoryProgress(category=c) for c in Category}
        # Written with the next change (transferring, or completed): same workflow task.
        await self._transition(S.ACCEPTED, "accepted", "Accepted: joining the account",
                               {"refund_destination": self._destination.value}
                               if self._progress.quote else {}, record=False)
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
