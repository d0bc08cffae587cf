"""The saga's steps and their undo: link the member, pay the refund, move each category
of data in parallel; unlink, reverse, remove the copies; the compensation that runs the
undo newest first; finalise (the point of no return) and the release after it. Called
from `InvitationWorkflow._join` (workflows/invitation.py), whose state they read.

Link and refund are short local activities; a transfer, finalise and the release are a
quick local try first (a small category moves whole inside the workflow task), then, for
what is left, an activity. Every undo is keyed by the invitation (never by a step's
returned result), so it is right even when its step committed but the answer was lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import FailureError

with workflow.unsafe.imports_passed_through():
    from activities.finalising import FinaliseActivities
    from activities.platform import PlatformActivities
    from activities.quick_join import QuickJoinActivities
    from activities.transfers import TransferActivities
    from messages.activity_io import (
        AuditNote,
        Finalise,
        LinkMember,
        PayRefund,
        QuickJoin,
        QuickJoined,
        Released,
        ReleaseSource,
        ReverseRefund,
        StatusChange,
        Transfer,
        Transferred,
        UndoTransfer,
        UnlinkInvitation,
    )
    from messages.payloads import (
        Category,
        EmailKind,
        InvitationStatus,
        Payment,
        RefundDestination,
    )

from workflows import options
from workflows.details import CATEGORY_LABELS, describe_failure
from workflows.saga import Compensations, shielded
from workflows.telling import Mail, Telling, cancelled

S = InvitationStatus

# Invitations started before this patch transfer, finalise and release with activities only.
QUICK = "quick-first-tries"
# Before this one, the link, the refund and each category's quick transfer were a local
# activity each; since, one local activity tries them all first (`_quick_join`).
QUICK_JOIN = "quick-join"

TRANSFER_METHODS = {
    Category.PROFILE: TransferActivities.transfer_profile,
    Category.MEETINGS: TransferActivities.transfer_meetings,
    Category.RECORDINGS: TransferActivities.transfer_recordings,
    Category.CHAT: TransferActivities.transfer_chat,
    Category.CONTACTS: TransferActivities.transfer_contacts,
    Category.SETTINGS: TransferActivities.transfer_settings,
}


class StepFailed(Exception):
    """A saga step failed for good; the message names the step and the reason."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step} failed: {reason}")


def _failed(step: str, err: FailureError) -> BaseException:
    if cancelled(err):
        return asyncio.CancelledError()
    return StepFailed(step, describe_failure(err))


Finishing = TypeVar("Finishing", Transferred, Released)
Answer = TypeVar("Answer")


async def _first_try(method: Callable[[Any, Any], Awaitable[Answer]], arg: Any, summary: str,
                     step_options: dict[str, Any]) -> Answer | None:
    """A local activity tried first: its answer, or None if it failed (what it did not do
    then runs as its own step). A cancel of the workflow stays a cancel."""
    try:
        return await workflow.execute_local_activity_method(method, arg, summary=summary,
                                                            **step_options)
    except FailureError as err:
        if cancelled(err):
            raise asyncio.CancelledError() from err
        return None


async def _quick_try(method: Callable[[Any, Any], Awaitable[Finishing]], arg: Any,
                     summary: str) -> Finishing | None:
    """A quick first try (options.QUICK): the local activity's result if it finished
    within its budget; None if it did not or failed, for the activity to go on with."""
    done = await _first_try(method, arg, summary, options.QUICK)
    return done if done is not None and done.finished else None


class Moving(Telling):
    _destination: RefundDestination
    _user_id: int
    _made_live: dict[str, int]
    _retry_compensation: bool  # an operator asked to undo what is left
    _quick: bool  # quick first tries (patch QUICK, or QUICK_JOIN which implies it)

    def _link_request(self, record: StatusChange | None) -> LinkMember:
        i = self._input
        return LinkMember(invitation_id=self._id, account_id=i.account_id, email=i.email,
                          first_name=i.first_name, last_name=i.last_name,
                          user_type=i.user_type, group=i.group, record=record)

    def _pay_request(self, source: int) -> PayRefund:
        quote = self._progress.quote
        assert quote is not None
        return PayRefund(invitation_id=self._id, source_account_id=source,
                         org_account_id=self._input.account_id, at=quote.at,
                         destination=self._destination)

    async def _quick_join(self, record: StatusChange | None, source: int | None,
                          pays: bool) -> QuickJoined | None:
        """The quick first try of link, refund and transfers (QUICK_JOIN): what it did,
        or None if it failed as a whole (every step then runs alone). Each undo is
        registered before it runs. A cancel of the workflow stays a cancel."""
        self._set_step("Linking the member, paying the refund, moving the data")
        req = QuickJoin(link=self._link_request(record),
                        pay=self._pay_request(source) if pays and source is not None else None,
                        categories=list(Category) if source is not None else [],
                        source_account_id=source, scheduled_at=workflow.now(),
                        budget_seconds=options.QUICK_BUDGET_SECONDS,
                        start_transfers_within=options.QUICK_JOIN_SECONDS)
        return await _first_try(QuickJoinActivities.join_quick, req,
                                "Link, refund and data (quick)", options.QUICK_JOIN)

    async def _join_quickly(self, saga: Compensations, record: StatusChange | None,
                            source: int | None) -> None:
        """Link, pay and transfer (QUICK_JOIN): every undo registered first, then one local
        activity tries the steps; what it did not finish runs alone."""
        pays = self._progress.quote is not None and source is not None
        if source is not None:
            if pays:
                saga.register("reverse the refund", lambda: self._reverse(source))
            self._register_transfer_undos(saga)
            for progress in self._progress.categories.values():
                progress.state = "running"  # the quick try moves them (a cancel: undone)
        joined = await self._quick_join(record, source, pays) or QuickJoined()
        if joined.member is None:
            await self._link(record, options.SAGA_STEP_WAIT)
        else:
            self._user_id = joined.member.user_id
        if pays and source is not None:
            if joined.payment is None:
                await self._pay(source, options.SAGA_STEP_WAIT)
            else:
                self._paid(joined.payment)
        if source is not None:
            self._set_step("Transferring data")
            await self._transfer_all(self._user_id, source, joined)

    async def _link(self, record: StatusChange | None,
                    step_options: dict[str, Any] = options.SAGA_STEP) -> None:
        self._set_step("Linking the member to the account")
        try:
            member = await workflow.execute_local_activity_method(
                PlatformActivities.link_member, self._link_request(record),
                summary="Link the member to the account", **step_options)
        except FailureError as err:
            if record is not None:  # not written: the next status change writes it
                self._unrecorded = [*record.earlier, AuditNote(
                    status=record.status, at=record.at, event=record.event)]
            raise _failed("link the member", err) from err
        self._user_id = member.user_id

    async def _unlink(self) -> None:
        await workflow.execute_activity_method(
            PlatformActivities.unlink_invitation, UnlinkInvitation(invitation_id=self._id),
            summary="Undo: unlink the member, restore their account", **options.UNDO)

    async def _pay(self, source: int, step_options: dict[str, Any] = options.SAGA_STEP) -> None:
        self._set_step("Paying the refund")
        try:
            payment = await workflow.execute_local_activity_method(
                PlatformActivities.pay_refund, self._pay_request(source),
                summary="Pay the refund once", **step_options)
        except FailureError as err:
            raise _failed("pay the refund", err) from err
        self._paid(payment)

    def _paid(self, payment: Payment) -> None:
        self._progress.payment = payment
        if payment.status == "paid":
            workflow.metric_meter().create_counter("invitation_refund_minor_paid").add(
                payment.amount_minor)

    async def _reverse(self, source: int) -> None:
        reversal = await workflow.execute_activity_method(
            PlatformActivities.reverse_refund,
            ReverseRefund(invitation_id=self._id, source_account_id=source,
                          org_account_id=self._input.account_id),
            summary="Undo: reverse the refund and reinstate the subscription", **options.UNDO)
        if reversal.status == "reversed":  # what the invitee and the admin are told
            self._progress.payment = reversal

    async def _transfer_all(self, user_id: int, source: int,
                            joined: QuickJoined | None = None) -> None:
        """One activity per category, in parallel (`joined`: what the quick join did; a
        category it finished is not run again, one it tried goes on as the activity). A
        failure for good does not cancel the others (their undo removes what they copied,
        and the database fences any write of theirs after it); a cancel of the workflow
        stops them and waits until they stopped writing before anything is undone."""
        tasks = [asyncio.ensure_future(self._transfer(c, user_id, source, joined))
                 for c in Category]
        try:
            results = await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
            await shielded(lambda: asyncio.gather(*tasks, return_exceptions=True))
        for result in results:
            if isinstance(result, asyncio.CancelledError):
                raise result
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _transfer(self, category: Category, user_id: int, source: int,
                        joined: QuickJoined | None = None) -> None:
        progress = self._progress.categories[category]
        progress.state = "running"
        step = Transfer(invitation_id=self._id, category=category, user_id=user_id,
                        source_account_id=source, org_account_id=self._input.account_id,
                        group=self._input.group)
        label = CATEGORY_LABELS[category.value]
        try:
            if joined is not None and category in joined.tried:
                quick = next((t for t in joined.transferred if t.category == category), None)
            else:
                quick = await self._quick_transfer(step, label) \
                    if self._quick else None
            if quick is None:
                self._loud()  # this transfer takes a while: operators can find it
            done: Transferred = quick if quick is not None else \
                await workflow.execute_activity_method(
                    TRANSFER_METHODS[category], step, summary=f"Transfer {label}",
                    **options.TRANSFER)
        except FailureError as err:
            failure = _failed(f"transfer {category.value}", err)
            if isinstance(failure, StepFailed):
                progress.state, progress.error = "failed", describe_failure(err)
                self._publish()
            raise failure from err
        progress.state, progress.total, progress.copied = "staged", done.total, done.copied
        progress.bytes_copied, progress.attempts = done.bytes, done.attempt
        if category == Category.SETTINGS:
            self._progress.settings_changed = done.settings_changed
        if category == Category.PROFILE and done.reports_left_behind:
            self._progress.reports_left_behind = done.reports_left_behind
        self._publish()

    async def _quick_transfer(self, step: Transfer, label: str) -> Transferred | None:
        """The quick first try of a transfer: a small category moves whole inside the
        workflow task. None when it ran out of its budget or failed: the activity then
        resumes from the committed checkpoint (a failure for good fails it too)."""
        return await _quick_try(
            TRANSFER_METHODS[step.category],
            step.model_copy(update={"budget_seconds": options.QUICK_BUDGET_SECONDS,
                                    "scheduled_at": workflow.now()}),
            f"Transfer {label} (quick)")

    def _register_transfer_undos(self, saga: Compensations) -> None:
        for category in Category:
            saga.register(f"remove the copied {category.value}",
                          lambda c=category: self._undo_transfer(c))  # type: ignore[misc]

    async def _undo_transfer(self, category: Category) -> Any:
        return await workflow.execute_activity_method(
            TransferActivities.undo_transfer,
            UndoTransfer(invitation_id=self._id, category=category),
            summary=f"Undo: remove copied {CATEGORY_LABELS[category.value].lower()}",
            **options.UNDO)

    # -- the point of no return, and after it

    async def _finalise(self) -> None:
        """The point of no return: once it starts it runs until it commits. A cancel here
        is refused (it would undo a join the database has made final)."""
        self._set_step("Finalising")
        req = Finalise(invitation_id=self._id, user_id=self._user_id,
                       source_account_id=self._facts.source_account_id if self._facts else None,
                       org_account_id=self._input.account_id,
                       completed=self._change(S.COMPLETED, "completed"))
        policy = options.FINALISE_FIRST
        quick = self._quick  # one short transaction: first inside the task
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

    async def _release(self, source: int) -> None:
        req = ReleaseSource(invitation_id=self._id, user_id=self._user_id,
                            source_account_id=source, org_account_id=self._input.account_id)
        if self._quick and await _quick_try(  # a small source, in the task
                FinaliseActivities.release_source,
                req.model_copy(update={"budget_seconds": options.QUICK_BUDGET_SECONDS}),
                "Release the source (quick)") is not None:
            return
        await workflow.execute_activity_method(
            FinaliseActivities.release_source, req,
            summary="Release the source (after completion)", **options.RELEASE)

    async def _compensate(self, saga: Compensations, reason: str) -> None:
        self._loud()
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
            # Only an operator ends this wait: a cancel now would leave the undo half done.
            await shielded(lambda: workflow.wait_condition(lambda: self._retry_compensation))
            self._set_step("Compensating again, as an operator asked")
        self._retry_compensation = False
        self._progress.undo_left = []
        self._alert(None)
        for progress in self._progress.categories.values():
            if progress.state in ("running", "staged"):
                progress.state = "compensated"
        await shielded(lambda: self._transition(
            S.FAILED_COMPENSATED, "failed_compensated", "Failed; everything done was undone",
            {"reason": self._progress.failure_reason}))
        self._count("invitations_failed")
        await shielded(lambda: self._tell(Mail(EmailKind.FAILED),
                                          Mail(EmailKind.ADMIN_FAILED, admin=True)))
