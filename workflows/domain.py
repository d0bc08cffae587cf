"""DomainWorkflow: one sweep of a claimed (verified) domain, for its organisation account.

1. Check that the account verified the domain and that the admin may invite into it.
2. Page through the owners of individual accounts whose email is on the domain (keyset on
   the user id), and per person either mail a notice (once: the message key) or start one
   child InvitationWorkflow (the usual 1009 checks, refund, transfer and compensation),
   `window` starts in flight; someone already invited is skipped, never invited twice.
3. Invite sweeps then watch: they re-count where the invitations stand (completed, blocked,
   failed...) and, when consolidating, count each person's sign-ins (their grace), until
   every invitation ended. Pause, resume and cancel (optionally revoking what it started).
4. A long history continues as new, carrying the cursor and the counts.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from activities.domain_sweep import DomainSweepActivities
    from invitations.starting import summary
    from messages.domain_sweep import (
        CancelSweep,
        CheckSweep,
        FindPeople,
        InvitedPerson,
        NotifyPeople,
        Person,
        PersonState,
        RecordInvited,
        RevokeStarted,
        SweepCarried,
        SweepInput,
        SweepMode,
        SweepResult,
        Tallied,
        Tally,
    )
    from messages.payloads import InvitationInput, InvitationStatus
    from records.ids import invitation_id
    from workflows.invitation import InvitationWorkflow

from messages import search_attributes as sa
from workflows.domain_messages import SLOW_STEP, ST, STEP, DomainMessages

NOTIFY_BATCH = 50  # notices per activity (one SMTP session)


@workflow.defn(name="DomainWorkflow")
class DomainWorkflow(DomainMessages):
    """One domain sweep (see the module docstring); what it answers (updates, signal,
    query) is in DomainMessages (workflows/domain_messages.py)."""

    @workflow.init
    def __init__(self, input: SweepInput) -> None:
        carried = input.carried or SweepCarried()
        self._input = input
        self._id = workflow.info().workflow_id
        # This sweep, across continue-as-new (earlier sweeps of the domain share its id).
        self._run_id = workflow.info().first_execution_run_id
        self._cursor = carried.cursor
        self._counts = carried.counts.model_copy()
        self._status = carried.status
        self._paused = carried.paused
        self._account_name = carried.account_name
        self._runs = carried.runs
        self._cancel: CancelSweep | None = None
        self._reason: str | None = None
        self._poked = 0  # bumped by a sign-in or a refresh: the watcher re-counts at once
        # InvitationDomain exists only where registered (not on the time-skipping server);
        # the client sets it on the sweep exactly when it is, and the children get it then.
        self._search_attributes = workflow.info().typed_search_attributes.get(sa.DOMAIN) \
            is not None

    # ---------------------------------------------------------------- the process

    @workflow.run
    async def run(self, input: SweepInput) -> SweepResult:
        try:
            if input.carried is None and not await self._checked():
                return self._result()
            if self._status == ST.SWEEPING:
                await self._sweep()
            if self._status == ST.WATCHING and self._cancel is None:
                await self._watch()
            if self._cancel is not None:
                await self._cancelled(self._cancel)
        except asyncio.CancelledError:
            # `temporal workflow cancel`: the sweep stops; what it started goes on.
            self._status, self._reason = ST.CANCELLED, "cancelled by an operator"
            self._publish()
            raise
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._result()

    async def _checked(self) -> bool:
        checked = await workflow.execute_activity_method(
            DomainSweepActivities.check_sweep,
            CheckSweep(account_id=self._input.account_id, domain=self._input.domain,
                       started_by=self._input.started_by),
            summary=f"Check {self._input.domain} is verified", **STEP)
        if not checked.ok:
            self._status, self._reason = ST.REFUSED, checked.reason
            self._publish()
            return False
        self._account_name = checked.account_name
        self._publish()
        return True

    async def _sweep(self) -> None:
        inp = self._input
        while True:
            await workflow.wait_condition(lambda: not self._paused or self._cancel is not None)
            if self._cancel is not None:
                return
            if self._history_is_long():
                await self._continue_as_new()
                return  # cancelled meanwhile
            page = await workflow.execute_activity_method(
                DomainSweepActivities.find_people,
                FindPeople(account_id=inp.account_id, domain=inp.domain, sweep_id=self._id,
                           mode=inp.mode, after_user_id=self._cursor, limit=inp.page_size),
                summary=f"Find people on {inp.domain} after user {self._cursor}", **STEP)
            self._counts.found += len(page.people)
            todo = [p for p in page.people if p.state == PersonState.FOUND]
            self._counts.skipped += len(page.people) - len(todo)  # handled by an earlier sweep
            if inp.mode == SweepMode.NOTIFY:
                await self._notify(todo)
            else:
                await self._invite(todo)
            self._cursor = page.next_cursor
            self._publish()
            if page.last or self._cancel is not None:
                break
        if self._cancel is None:
            self._status = ST.COMPLETED if inp.mode == SweepMode.NOTIFY else ST.WATCHING
            self._publish()

    async def _notify(self, people: list[Person]) -> None:
        inp = self._input
        for i in range(0, len(people), NOTIFY_BATCH):
            await workflow.wait_condition(lambda: not self._paused or self._cancel is not None)
            if self._cancel is not None:
                return
            marked = await workflow.execute_activity_method(
                DomainSweepActivities.notify_people,
                NotifyPeople(account_id=inp.account_id, account_name=self._account_name,
                             domain=inp.domain, started_by=inp.started_by, message=inp.message,
                             people=people[i:i + NOTIFY_BATCH]),
                summary=f"Mail {len(people[i:i + NOTIFY_BATCH])} notices", **SLOW_STEP)
            self._counts.notified += marked.done + marked.already
            self._publish()

    async def _invite(self, people: list[Person]) -> None:
        """Start one invitation per person, `window` starts in flight; a pause holds the
        starts not yet begun, a cancel drops them."""
        window = asyncio.Semaphore(self._input.window)

        async def one(person: Person) -> InvitedPerson | None:
            async with window:
                await workflow.wait_condition(
                    lambda: not self._paused or self._cancel is not None)
                if self._cancel is not None:
                    return None
                started = await self._start_invitation(person)
                if started.invitation_id and not started.already:
                    self._counts.invited += 1
                else:
                    self._counts.skipped += 1  # already invited by another path
                return started

        results = await asyncio.gather(*(one(p) for p in people))
        done = [r for r in results if r is not None]
        if done:
            await workflow.execute_activity_method(
                DomainSweepActivities.record_invited,
                RecordInvited(account_id=self._input.account_id, domain=self._input.domain,
                              sweep_run_id=self._run_id, people=done),
                summary=f"Record {len(done)} invitations", **STEP)

    async def _start_invitation(self, person: Person) -> InvitedPerson:
        inp = self._input
        wid = invitation_id(inp.account_id, person.email)
        child = InvitationInput(
            account_id=inp.account_id, invited_by=inp.started_by, email=person.email,
            first_name=person.first_name, last_name=person.last_name, user_type=inp.user_type,
            message=inp.message, expires_in_days=inp.expires_in_days)
        try:
            await workflow.start_child_workflow(
                InvitationWorkflow.run, child, id=wid,
                task_queue=inp.child_task_queue or workflow.info().task_queue,
                # The invitation outlives the sweep: cancelling or continuing the sweep
                # leaves it running.
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                search_attributes=self._child_attributes(child),
                static_summary=summary(child, self._account_name),
                static_details=f"**Domain sweep:** {inp.domain} ({self._id}), "
                               f"{inp.mode.value}, started by {inp.started_by}")
        except WorkflowAlreadyStartedError:
            # Their invitation to this account is open already (by hand, by SSO): the id is
            # the same (deterministic), so the sweep records it and follows it (tally,
            # change-email) without having started it.
            return InvitedPerson(email=person.email, invitation_id=wid, already=True,
                                 reason="already invited: an invitation is open")
        return InvitedPerson(email=person.email, invitation_id=wid)

    def _child_attributes(self, child: InvitationInput) -> TypedSearchAttributes | None:
        if not self._search_attributes:
            return None
        return TypedSearchAttributes([
            SearchAttributePair(sa.STATUS, InvitationStatus.PENDING.value),
            SearchAttributePair(sa.ACCOUNT_ID, str(child.account_id)),
            SearchAttributePair(sa.INVITEE_EMAIL, child.email),
            SearchAttributePair(sa.USER_TYPE, child.user_type.value),
            SearchAttributePair(sa.REFUND_MINOR, 0),
            SearchAttributePair(sa.ALERT, sa.NO_ALERT),
            SearchAttributePair(sa.DOMAIN, self._input.domain),
        ])

    async def _watch(self) -> None:
        """Re-count until every invitation ended; early on a sign-in, a refresh or a cancel."""
        while self._cancel is None:
            tallied = await self._tally()
            if tallied.open == 0:
                self._status = ST.COMPLETED
                self._publish()
                return
            if self._history_is_long():
                await self._continue_as_new()
            poked = self._poked
            try:
                await workflow.wait_condition(
                    lambda p=poked: self._cancel is not None or self._poked != p  # type: ignore[misc]
                    or self._history_is_long(),
                    timeout=self._input.tally_every,
                    timeout_summary="Until the next count of the invitations")
            except TimeoutError:
                pass

    async def _tally(self) -> Tallied:
        t: Tallied = await workflow.execute_activity_method(
            DomainSweepActivities.tally,
            Tally(account_id=self._input.account_id, domain=self._input.domain,
                  grace_sign_ins=self._input.grace_sign_ins),
            summary="Count where the invitations stand", **STEP)
        self._counts = self._counts.model_copy(update=t.model_dump())
        self._publish()
        return t

    async def _cancelled(self, req: CancelSweep) -> None:
        if req.revoke_started and self._input.mode != SweepMode.NOTIFY:
            await workflow.execute_activity_method(
                DomainSweepActivities.revoke_started,
                RevokeStarted(account_id=self._input.account_id, domain=self._input.domain,
                              sweep_run_id=self._run_id, by=req.by or self._input.started_by,
                              reason=req.reason or f"the {self._input.domain} sweep was "
                                                   "cancelled"),
                summary="Revoke the invitations this sweep started", **SLOW_STEP)
            await self._tally()
        self._status = ST.CANCELLED
        self._reason = req.reason or ("cancelled; started invitations revoked"
                                      if req.revoke_started else
                                      "cancelled; started invitations left open")
        self._publish()

    def _history_is_long(self) -> bool:
        info = workflow.info()
        return (info.get_current_history_length() > self._input.history_limit
                or info.is_continue_as_new_suggested())

    async def _continue_as_new(self) -> None:
        """Continue as new once the handlers finished; a cancel meanwhile wins (its handler
        waits for the end of this run, so it would never finish)."""
        await workflow.wait_condition(
            lambda: workflow.all_handlers_finished() or self._cancel is not None)
        if self._cancel is not None:
            return
        carried = SweepCarried(cursor=self._cursor, counts=self._counts, status=self._status,
                               paused=self._paused, account_name=self._account_name,
                               runs=self._runs + 1)
        workflow.continue_as_new(self._input.model_copy(update={"carried": carried}))
