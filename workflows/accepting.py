"""Acceptance: the invitee's click, checked. `accept` (an update, or its signal twin)
runs the check once at a time (a second click shares the first one's answer): the
blocking conditions (error 1009), the join claim (one join at a time) and the refund
quote, all in one local activity; then blocked, a refund choice to make, or accepted.
Part of `InvitationWorkflow` (workflows/invitation.py), whose state it reads and sets.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import ApplicationError, FailureError

with workflow.unsafe.imports_passed_through():
    from activities.platform import PlatformActivities
    from messages.activity_io import AcceptanceCheck, AcceptanceFacts, ClaimRefusal
    from messages.payloads import (
        AcceptOutcome,
        AcceptRequest,
        Category,
        CategoryProgress,
        EmailKind,
        InvitationStatus,
        Progress,
        RefundDestination,
    )
    from rules.platform import ERROR_1009

from workflows import options
from workflows.details import blocked_message, describe_failure, refund_message
from workflows.moving import Moving
from workflows.telling import Mail, cancelled

S = InvitationStatus
# Open, nothing moved yet: can be declined, resent, revoked, cancelled, and can expire.
OPEN = (S.PENDING, S.BLOCKED, S.AWAITING_REFUND_CHOICE)
# The waiting phase ends at one of these.
DECIDED = (S.ACCEPTED, S.DECLINED, S.REVOKED, S.EXPIRED, S.JOINED_ELSEWHERE, S.CANCELLED)
WAITING_STEP = "Waiting for the invitee to accept"
# Runs started before it ended joined_elsewhere without telling the admin.
JOINED_ELSEWHERE_MAIL = "joined-elsewhere-mail"


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


class Accepting(Moving):
    _facts: AcceptanceFacts | None
    _checking: bool  # an acceptance check is in flight
    _last_outcome: AcceptOutcome | None

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
            if workflow.patched(JOINED_ELSEWHERE_MAIL):  # the invitee reads it in the answer
                self._spawn(self._tell(Mail(EmailKind.ADMIN_JOINED_ELSEWHERE, admin=True)))
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
