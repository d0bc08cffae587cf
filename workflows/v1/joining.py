"""Frozen with workflows/v1/invitation.py (see there).

The saga of the first version: link the member, pay the refund once, move every data
category in parallel (one activity each) and finalise, each undo registered before its
step runs; a step that fails for good (or a cancel) runs the undo steps registered,
newest first, and the invitation ends failed-and-compensated with the reason (see the
known gaps in workflows/v1/invitation.py).

`InvitationWorkflowV1` inherits these methods; the state they read is set in its __init__.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError
from temporalio.exceptions import CancelledError as TemporalCancelledError

with workflow.unsafe.imports_passed_through():
    from activities.finalising import FinaliseActivities
    from activities.platform import PlatformActivities
    from activities.transfers import TransferActivities
    from messages.activity_io import (
        Finalise,
        LinkMember,
        Membership,
        PayRefund,
        ReverseRefund,
        Transfer,
        UndoTransfer,
    )
    from messages.payloads import Category, EmailKind, InvitationStatus, RefundDestination
    from rules.money import format_minor

from workflows.v1 import options
from workflows.v1.bookkeeping import Bookkeeping
from workflows.v1.details import CATEGORY_LABELS, describe_failure
from workflows.v1.saga import Compensations, shielded

S = InvitationStatus
# The refund's destination when none was chosen (also when there is nothing to refund).
ORIGINAL_PAYMENT_METHOD = RefundDestination.ORIGINAL_PAYMENT_METHOD
T = TypeVar("T")
A = TypeVar("A")

# Rows per committed batch of a transfer (the checkpoint granularity of a resume).
TRANSFER_BATCH_SIZE = 1000
TRANSFER_METHODS = {
    Category.PROFILE: TransferActivities.transfer_profile,
    Category.MEETINGS: TransferActivities.transfer_meetings,
    Category.RECORDINGS: TransferActivities.transfer_recordings,
    Category.CHAT: TransferActivities.transfer_chat,
    Category.CONTACTS: TransferActivities.transfer_contacts,
    Category.SETTINGS: TransferActivities.transfer_settings,
}


class StepFailed(Exception):
    """A saga step failed for good; `step` names it (and the category) for the reason."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step} failed: {reason}")
        self.step, self.reason = step, reason


class Joining(Bookkeeping):
    _destination: RefundDestination | None
    _membership: Membership | None
    _first_transfer_failure: StepFailed | None

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
                                                         workflow.execute_activity_method(
                PlatformActivities.link_member,
                LinkMember(invitation_id=self._id, account_id=self._input.account_id,
                           email=self._input.email, first_name=self._input.first_name,
                           last_name=self._input.last_name, user_type=self._input.user_type,
                           group=self._input.group),
                summary="Link the member to the account",
                **options.SAGA_STEP,
            ))
            quote = self._progress.quote
            if quote is not None and source is not None:
                reversal = ReverseRefund(invitation_id=self._id, source_account_id=source,
                                         org_account_id=self._input.account_id)
                saga.register("reverse_refund", lambda: self._undo(
                    PlatformActivities.reverse_refund, reversal,
                    "Undo: reverse the refund and reinstate the subscription"))
                self._set_step("Paying the refund")
                self._progress.payment = payment = await self._step(
                    "pay the refund", workflow.execute_activity_method(
                        PlatformActivities.pay_refund,
                        PayRefund(invitation_id=self._id, source_account_id=source,
                                  org_account_id=self._input.account_id, at=quote.at,
                                  destination=self._destination or ORIGINAL_PAYMENT_METHOD),
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
            # Shielded from a cancel; a failure of its own after 10 attempts still
            # compensates (a gap of this version: see the module docstring).
            finalised = await shielded(lambda: self._step(
                "finalise", workflow.execute_activity_method(
                    FinaliseActivities.finalise,
                    Finalise(invitation_id=self._id, user_id=member.user_id,
                             source_account_id=source, org_account_id=self._input.account_id),
                    summary="Finalise: make the data live (no return)",
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
            done = await workflow.execute_activity_method(
                TRANSFER_METHODS[category],
                Transfer(invitation_id=self._id, category=category, user_id=user_id,
                         source_account_id=source, org_account_id=self._input.account_id,
                         group=self._input.group, batch_size=TRANSFER_BATCH_SIZE),
                summary=f"Transfer {CATEGORY_LABELS[category.value]}",
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
            S.FAILED_COMPENSATED, "failed_compensated", "Failed; everything done was undone",
            {"reason": self._progress.failure_reason}))
        self._count("invitations_failed")

    async def _unlink_member(self) -> None:
        # Undone from the link's result only: a link whose answer was lost is not undone
        # (a gap of this version; the current one undoes from the "linked" event).
        if self._membership is not None:
            await self._undo(PlatformActivities.unlink_member, self._membership,
                             "Undo: unlink the member, restore their account")

    async def _undo_transfer(self, category: Category) -> None:
        await self._undo(TransferActivities.undo_transfer,
                         UndoTransfer(invitation_id=self._id, category=category),
                         f"Undo: remove staged {CATEGORY_LABELS[category.value].lower()}")

    async def _undo(self, activity: Callable[[Any, A], Awaitable[Any]], arg: A,
                    summary: str) -> None:
        await workflow.execute_activity_method(activity, arg, summary=summary, **options.UNDO)

    @staticmethod
    async def _step(name: str, activity: Awaitable[T]) -> T:
        try:
            return await activity
        except ActivityError as err:
            raise StepFailed(name, describe_failure(err)) from err
