"""InvitationWorkflow: one durable invitation of one person into one paid account.

1. Register the invitation, mail the link, and wait (days, weeks) for the invitee, with
   reminders to them and an "expiring soon" notice to the admin; unanswered, it expires.
2. `accept` checks the blocking conditions (error 1009), takes the person's join claim
   (one join at a time: another company's acceptance is refused at once) and quotes the
   refund: a blocked invitation stays open; a paid plan first asks where the refund goes.
3. A saga links the member, pays the refund once and moves every data category in
   parallel, each undo registered before its step runs; a failure for good undoes all
   that was done, newest first (an undo that cannot finish waits for an operator, and a
   cancel does not end that wait).
4. Finalise is the point of no return: retried until it commits, never undone; then the
   invitation completes and the source is released off the critical path.
5. Every ending (completed, failed, declined, revoked, expired, cancelled) is told to the
   invitee and the admin by mail; joined_elsewhere (the invitee had joined another
   account) to the admin by mail and to the invitee in the answer to their click.

The parts: waiting.py (step 1's timers), accepting.py (step 2), moving.py (steps 3 and
4), telling.py (the row, the operator's view and the mail of every step).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, TypeVar, cast

from temporalio import workflow
from temporalio.exceptions import ApplicationError, FailureError

with workflow.unsafe.imports_passed_through():
    from activities.platform import PlatformActivities
    from messages.activity_io import (
        AcceptanceFacts,
        AuditNote,
        RegisterInvitation,
    )
    from messages.payloads import (
        AcceptOutcome,
        AcceptRequest,
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
    from workflows.v1.invitation import InvitationWorkflowV1

from messages import search_attributes as sa
from workflows import options
from workflows.accepting import OPEN, WAITING_STEP, _check_link, _rejected
from workflows.details import describe_failure
from workflows.moving import QUICK, QUICK_JOIN, StepFailed
from workflows.saga import Compensations, shielded
from workflows.telling import Mail
from workflows.waiting import Waiting

S = InvitationStatus
T = TypeVar("T")
# Invitations started before this patch run the frozen first version (workflows/v1).
V2 = "invitation-v2"
# Who hears of each ending that comes before any data moved.
ENDING_MAILS = {
    S.DECLINED: (Mail(EmailKind.DECLINED), Mail(EmailKind.ADMIN_DECLINED, admin=True)),
    S.REVOKED: (Mail(EmailKind.REVOKED), Mail(EmailKind.ADMIN_REVOKED, admin=True)),
    S.CANCELLED: (Mail(EmailKind.REVOKED), Mail(EmailKind.ADMIN_REVOKED, admin=True)),
    S.EXPIRED: (Mail(EmailKind.EXPIRED), Mail(EmailKind.ADMIN_EXPIRED, admin=True)),
}


@workflow.defn(name="InvitationWorkflow")
class InvitationWorkflow(Waiting):
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
        self._quiet_search = False  # see _join
        self._quick = False  # quick first tries (patch QUICK or QUICK_JOIN): see _join
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
        # One patch marker (and its search-attribute upsert) per new run: QUICK_JOIN implies
        # the quick tries of QUICK; runs started between the two patches have QUICK only.
        joins_quickly = workflow.patched(QUICK_JOIN)
        quick = self._quick = joins_quickly or workflow.patched(QUICK)
        # The quick steps take milliseconds: the search attributes say "transferring" only
        # if a step goes on as an activity (or is undone), else they go to "completed".
        self._quiet_search = quick
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
            if joins_quickly:
                await self._join_quickly(saga, record, source)
            else:  # each step alone, its undo registered just before it
                await self._link(record)
                quote = self._progress.quote
                if quote is not None and source is not None:
                    saga.register("reverse the refund", lambda: self._reverse(source))
                    await self._pay(source)
                if source is not None:
                    self._register_transfer_undos(saga)
                    self._set_step("Transferring data")
                    await self._transfer_all(self._user_id, source)
            if quick:  # a cancel that came during the quick steps is seen here, and undoes
                await self._end_task()
        except StepFailed as failure:
            await self._compensate(saga, str(failure))
            return
        except asyncio.CancelledError:
            await self._compensate(saga, "cancelled by an operator")
            raise
        await shielded(self._finalise)
        await self._completed(source)
        if quick:  # finalise is written down before anything can end the run
            await shielded(self._end_task)

    async def _end_task(self) -> None:
        """End the workflow task here (a 1 ms timer: one action, two events). The link, the
        refund, quick transfers, finalise, the mails and the release are local activities:
        without this they and the run's completion could share one workflow task, and a
        cancel or signal that arrives meanwhile makes the server refuse that completion
        (UnhandledCommand), which drops their results; the task's retry would then see the
        cancel first and forget steps that did happen. With it, the cancel is seen before
        the point of no return (and undoes what was done) or after finalise (refused)."""
        await workflow.sleep(timedelta(milliseconds=1))

    async def _completed(self, source: int | None) -> None:
        self._quiet_search = False
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
