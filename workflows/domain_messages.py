"""What DomainWorkflow (workflows/domain.py) answers: the `sign_in`, `pause`, `resume` and
`cancel` updates, the `refresh` signal, the `progress` query, and the current details
operators see. The process itself (workflows/domain.py) reads the flags these set: a
pause holds the starts not yet begun, a cancel ends the sweep, a sign-in or a refresh
makes the watcher count again at once.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.domain_sweep import DomainSweepActivities
    from domains.names import email_domain
    from messages.domain_sweep import (
        CancelSweep,
        PauseSweep,
        RecordSignIn,
        SignIn,
        SignInAnswer,
        SweepCounts,
        SweepInput,
        SweepMode,
        SweepProgress,
        SweepResult,
        SweepStatus,
    )

from workflows import options

ST = SweepStatus
STEP: dict[str, Any] = {"start_to_close_timeout": timedelta(minutes=2),
                        "retry_policy": options.RECORD["retry_policy"]}
SLOW_STEP: dict[str, Any] = {"start_to_close_timeout": timedelta(hours=1),
                             "heartbeat_timeout": timedelta(seconds=30),
                             "retry_policy": options.RECORD["retry_policy"]}


def _refused(kind: str, message: str) -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=True)


class DomainMessages:
    """DomainWorkflow's message handlers; the state is set in its __init__."""

    _input: SweepInput
    _id: str
    _cursor: int
    _counts: SweepCounts
    _status: SweepStatus
    _paused: bool
    _account_name: str
    _runs: int
    _cancel: CancelSweep | None
    _reason: str | None
    _poked: int  # bumped by a sign-in or a refresh: the watcher re-counts at once

    @workflow.update(name="sign_in")
    async def sign_in(self, req: SignIn) -> SignInAnswer:
        """A person of the domain signed in: count it (once per update id) and say how many
        sign-ins they have left before they must join or change their email."""
        info = workflow.current_update_info()
        key = info.id if info is not None else str(workflow.uuid4())
        answer: SignInAnswer = await workflow.execute_activity_method(
            DomainSweepActivities.record_sign_in,
            RecordSignIn(account_id=self._input.account_id, domain=self._input.domain,
                         email=req.email, key=key, grace_sign_ins=self._input.grace_sign_ins,
                         consolidating=self._input.mode == SweepMode.CONSOLIDATE),
            summary=f"Count a sign-in of {req.email}", **STEP)
        self._poked += 1
        return answer

    @sign_in.validator
    def _validate_sign_in(self, req: SignIn) -> None:
        if email_domain(req.email) != self._input.domain:
            raise _refused("NotOnDomain", f"email: {req.email!r} is not on "
                                          f"{self._input.domain}")

    @workflow.update(name="pause")
    async def pause(self, req: PauseSweep) -> SweepProgress:
        """Hold the starts not yet begun (the ones in flight finish)."""
        self._paused = True
        self._publish()
        return self.progress()

    @pause.validator
    def _validate_pause(self, req: PauseSweep) -> None:
        if self._status != ST.SWEEPING or self._cancel is not None:
            raise _refused("SweepNotRunning", f"the sweep of {self._input.domain} is "
                                              f"{self._status.value}: only a sweep still "
                                              "finding people can be paused")
        if self._paused:
            raise _refused("SweepAlreadyPaused", f"the sweep of {self._input.domain} is "
                                                 "already paused")

    @workflow.update(name="resume")
    async def resume(self, req: PauseSweep) -> SweepProgress:
        self._paused = False
        self._publish()
        return self.progress()

    @resume.validator
    def _validate_resume(self, req: PauseSweep) -> None:
        if not self._paused or self._status.is_final:
            raise _refused("SweepNotPaused", f"the sweep of {self._input.domain} is not "
                                             f"paused (it is {self._status.value})")

    @workflow.update(name="cancel")
    async def cancel(self, req: CancelSweep) -> SweepProgress:
        """Stop finding and inviting; with `revoke_started`, revoke the open invitations it
        started (those already moving data go on). Answers once the sweep has ended."""
        self._cancel = req
        self._paused = False
        await workflow.wait_condition(lambda: self._status == ST.CANCELLED)
        return self.progress()

    @cancel.validator
    def _validate_cancel(self, req: CancelSweep) -> None:
        if self._status.is_final or self._cancel is not None:
            raise _refused("SweepEnded", f"the sweep of {self._input.domain} has ended "
                                         f"({self._status.value})" if self._cancel is None
                           else f"the sweep of {self._input.domain} is being cancelled")

    @workflow.signal(name="refresh")
    def refresh(self) -> None:
        """Re-count now (an email changed, an invitation ended)."""
        self._poked += 1

    @workflow.query
    def progress(self) -> SweepProgress:
        inp = self._input
        status = ST.PAUSED if self._paused and self._status == ST.SWEEPING else self._status
        return SweepProgress(
            sweep_id=self._id, account_id=inp.account_id, account_name=self._account_name,
            domain=inp.domain, mode=inp.mode, started_by=inp.started_by, status=status,
            paused=self._paused, counts=self._counts.model_copy(), cursor=self._cursor,
            runs=self._runs, grace_sign_ins=inp.grace_sign_ins, reason=self._reason)

    # ---------------------------------------------------------------- plumbing

    def _result(self) -> SweepResult:
        return SweepResult(status=self._status, progress=self.progress())

    def _publish(self) -> None:
        p = self.progress()
        c: SweepCounts = p.counts
        workflow.set_current_details("\n".join([
            f"**Sweep of {p.domain}** for {p.account_name or p.account_id} ({p.mode.value}), "
            f"by {p.started_by}: **{p.status.value}**" + (f" ({p.reason})" if p.reason else ""),
            "",
            "| found | notified | invited | skipped | open | blocked | completed | failed "
            "| ended | email changed | must choose |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {c.found} | {c.notified} | {c.invited} | {c.skipped} | {c.open} | {c.blocked} "
            f"| {c.completed} | {c.failed} | {c.ended} | {c.email_changed} | {c.must_choose} |",
            "",
            f"Cursor: user {p.cursor}; run {p.runs}.",
        ]))
