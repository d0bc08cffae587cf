"""The saga under late failures (time-skipping server, where retries and days pass at
once): finalise failing before and after its commit (the point of no return: nothing is
ever undone after it, the recordings survive), an undo that fails for good (needs
attention until an operator retries it), every ending told, and a long wait that
continues as new. Each of these fails on the first wave's code."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy import Engine
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from config import Settings
from mailcatcher import MaildirHandler, read_messages
from messages.activity_io import Finalise, Finalised, UndoneTransfer, UndoTransfer
from messages.payloads import (
    AcceptRequest,
    Category,
    DeclineRequest,
    InvitationStatus,
    RefundDestination,
    ResendRequest,
    RetryCompensation,
)
from tests.conftest import new_worker
from tests.workflow_helpers import (
    activities_with,
    activity_name,
    broken_transfer,
    copies,
    events,
    eventually,
    invitation_input,
    invitation_row,
    ledger,
    mails,
    make_world,
    progress,
    real_activity,
    recording_checksums,
    save_history,
    source_counts,
    start,
    user,
)
from workflows.invitation import InvitationWorkflow

CREDIT = AcceptRequest(refund_destination=RefundDestination.ACCOUNT_CREDIT)
DATA = dict(meetings=2, recordings=2, chat=300, contacts=2, price_minor=1499)


async def _world(env: WorkflowEnvironment, engine: Engine, settings: Settings) -> Any:
    """A paid invitee with a unique email: a test that fails leaves no workflow behind
    that the next one's id would collide with."""
    now = await env.get_current_time()
    return make_world(engine, settings, email=f"saga-{uuid.uuid4().hex[:8]}@example.com",
                      period_start=now - timedelta(days=10),
                      period_end=now + timedelta(days=20), **DATA)


def _finalise_failing(real: Any, *, fail: int, after_commit: bool,
                      held: asyncio.Event | None = None,
                      stuck: asyncio.Event | None = None) -> Any:
    """finalise failing its first `fail` attempts, before or after doing its work; the
    attempt after the first round (the alert is up by then) waits for `held`."""
    calls = {"n": 0}

    @activity.defn(name=activity_name(real))
    async def finalise(req: Finalise) -> Finalised:
        calls["n"] += 1
        if held is not None and stuck is not None and calls["n"] == 6:
            stuck.set()
            await held.wait()
        if calls["n"] <= fail:
            if after_commit:
                await real(req)  # committed: only the answer is lost
            raise RuntimeError(f"database connection lost (attempt {calls['n']})")
        return await real(req)

    return finalise


async def test_finalise_failing_before_its_commit_alerts_and_retries_until_it_commits(
    ts_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    world = await _world(ts_env, engine, settings)
    held, stuck = asyncio.Event(), asyncio.Event()
    acts = activities_with(settings, engine, _finalise_failing(
        real_activity(settings, engine, "finalise"), fail=7, after_commit=False,
        held=held, stuck=stuck))
    async with new_worker(ts_env.client, settings, engine, activities=acts):
        handle = await start(ts_env.client, settings, invitation_input(world))
        assert (await handle.execute_update(InvitationWorkflow.accept, CREDIT)).outcome == \
            "accepted"
        await eventually(stuck.is_set, what="finalise retried past its first round")
        p = await progress(handle)
        assert p.alert == "finalising_stuck" and "Finalising is stuck" in p.step
        assert p.status == InvitationStatus.TRANSFERRING  # never compensating
        # Nothing undone meanwhile, and both copies of every recording exist.
        assert recording_checksums(engine, settings, world.source_account_id) == \
            world.checksums
        assert copies(engine, world.invitation)[Category.RECORDINGS] == 2
        held.set()
        result = await handle.result()
        await save_history(handle, "finalise_stuck_then_completed")
    assert result.status == InvitationStatus.COMPLETED and result.progress.alert is None
    assert "unlinked" not in events(engine, world.invitation)
    assert [r.kind for r in ledger(engine, world.invitation)] == ["refund"]
    assert user(engine, world.user_id).account_id == world.org_id  # type: ignore[union-attr]


async def test_finalise_failing_after_its_commit_never_moves_the_user_back(
    ts_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    world = await _world(ts_env, engine, settings)
    acts = activities_with(settings, engine, _finalise_failing(
        real_activity(settings, engine, "finalise"), fail=3, after_commit=True))
    async with new_worker(ts_env.client, settings, engine, activities=acts):
        handle = await start(ts_env.client, settings, invitation_input(world))
        await handle.execute_update(InvitationWorkflow.accept, CREDIT)
        result = await handle.result()
    assert result.status == InvitationStatus.COMPLETED
    assert "unlinked" not in events(engine, world.invitation)
    assert [r.kind for r in ledger(engine, world.invitation)] == ["refund"]
    assert user(engine, world.user_id).account_id == world.org_id  # type: ignore[union-attr]
    # Released after completion: the source is gone, every copy live and verified.
    assert sum(source_counts(engine, world).values()) == 0
    assert copies(engine, world.invitation, staged=True) == {c: 0 for c in Category}
    assert {"completion", "admin_completed", "refund_receipt"} <= set(
        mails(engine, world.invitation))


async def test_an_undo_failing_for_good_needs_attention_until_an_operator_retries(
    ts_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    world = await _world(ts_env, engine, settings)
    real_undo = real_activity(settings, engine, "undo_transfer")
    fixed = asyncio.Event()

    @activity.defn(name="undo_transfer")
    async def undo(req: UndoTransfer) -> UndoneTransfer:
        if req.category == Category.CHAT and not fixed.is_set():
            raise ApplicationError("the chat store refuses deletes (permission denied)",
                                   type="PermissionDenied", non_retryable=True)
        return await real_undo(req)  # type: ignore[no-any-return]

    acts = activities_with(settings, engine, undo, broken_transfer(
        real_activity(settings, engine, "transfer_meetings")))
    async with new_worker(ts_env.client, settings, engine, activities=acts):
        handle = await start(ts_env.client, settings, invitation_input(world))
        await handle.execute_update(InvitationWorkflow.accept, CREDIT)
        p = await eventually(lambda: _status_of(handle, InvitationStatus.NEEDS_ATTENTION),
                             what="needs attention")
        assert p.alert == "needs_attention"
        assert len(p.undo_left) == 1 and "remove the copied chat" in p.undo_left[0]
        assert "permission denied" in p.undo_left[0]
        assert invitation_row(engine, world.invitation).status == "needs_attention"  # type: ignore[union-attr]
        await eventually(lambda: "admin_needs_attention" in mails(engine, world.invitation),
                         what="the admin told")
        # Everything else was undone; the chat copies are what is left.
        assert copies(engine, world.invitation)[Category.CHAT] > 0
        assert copies(engine, world.invitation)[Category.PROFILE] == 0
        # A cancel does not end the wait: the undo would be left half done.
        await handle.cancel()
        assert (await progress(handle)).status == InvitationStatus.NEEDS_ATTENTION
        fixed.set()
        after = await handle.execute_update(InvitationWorkflow.retry_compensation,
                                            RetryCompensation(by="ops@meet.example"))
        assert after.status == InvitationStatus.FAILED_COMPENSATED
        result = await handle.result()
        await save_history(handle, "needs_attention_then_retried")
    assert result.progress.undo_left == [] and result.progress.alert is None
    assert sum(copies(engine, world.invitation).values()) == 0
    assert source_counts(engine, world) == world.source_counts
    assert user(engine, world.user_id).account_id == world.source_account_id  # type: ignore[union-attr]


async def _status_of(handle: Any, status: InvitationStatus) -> Any:
    p = await progress(handle)
    return p if p.status == status else None


async def test_a_failed_join_tells_both_what_was_undone(
    ts_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    world = await _world(ts_env, engine, settings)
    acts = activities_with(settings, engine, broken_transfer(
        real_activity(settings, engine, "transfer_chat")))
    async with new_worker(ts_env.client, settings, engine, activities=acts):
        handle = await start(ts_env.client, settings, invitation_input(world))
        await handle.execute_update(InvitationWorkflow.accept, CREDIT)
        result = await handle.result()
        await save_history(handle, "failed_join_told_what_was_undone")
    assert result.status == InvitationStatus.FAILED_COMPENSATED
    payment = result.progress.payment
    assert payment is not None and payment.status == "reversed" and payment.amount_minor > 0
    sent = mails(engine, world.invitation)
    assert {"failed", "admin_failed"} <= set(sent)
    bodies = {m["X-Email-Kind"]: m.get_body(("plain",)).get_content()  # type: ignore[union-attr]
              for m in read_messages(smtp)}
    assert "reversed" in bodies["failed"] and "reversed" in bodies["admin_failed"]


async def test_a_long_wait_continues_as_new_and_keeps_its_state(
    ts_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    world = await _world(ts_env, engine, settings)
    async with new_worker(ts_env.client, settings, engine):
        started = await start(ts_env.client, settings,
                              invitation_input(world, history_limit=60))
        first = (await started.describe()).run_id
        # Not bound to the first run: messages go to whichever run is current.
        handle = ts_env.client.get_workflow_handle_for(InvitationWorkflow.run, started.id)
        for _ in range(12):
            await handle.execute_update(InvitationWorkflow.resend, ResendRequest())
        await eventually(lambda: _new_run(handle, first), what="a new run")
        p = await progress(handle)
        assert p.status == InvitationStatus.PENDING and p.link_issued_at is not None
        outcome = await handle.execute_update(InvitationWorkflow.accept, CREDIT)
        assert outcome.outcome == "accepted"
        result = await handle.result()
        await save_history(handle, "continued_as_new_then_completed")
    assert result.status == InvitationStatus.COMPLETED
    invitations = [k for k in mails(engine, world.invitation) if k == "invitation"]
    assert len(invitations) == 13  # the first mail and one per resend, none twice


async def _new_run(handle: Any, first: str) -> bool:
    return bool((await handle.describe()).run_id != first)


class RefusingHandler(MaildirHandler):
    """A mail server that refuses one recipient for good (550) and keeps the rest."""

    def __init__(self, maildir: Path, refused: str) -> None:
        super().__init__(maildir)
        self.refused = refused

    async def handle_RCPT(self, server, session, envelope, address, options):  # type: ignore[no-untyped-def]
        if address.lower() == self.refused:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"


async def test_an_invitation_mail_that_cannot_be_delivered_tells_the_admin(
    ts_env: WorkflowEnvironment, settings: Settings, engine: Engine,
) -> None:
    world = await _world(ts_env, engine, settings)
    catcher = Controller(RefusingHandler(settings.maildir, world.email),
                         hostname="127.0.0.1", port=settings.smtp_port)
    catcher.start()
    try:
        async with new_worker(ts_env.client, settings, engine):
            handle = await start(ts_env.client, settings, invitation_input(world))
            await eventually(lambda: "admin_mail_undelivered" in mails(
                engine, world.invitation), what="the admin told")
            p = await progress(handle)
            assert p.mail_problem is not None and "could not be delivered" in p.mail_problem
            assert "recipient refused" in p.mail_problem
            assert p.alert == "mail_undelivered" and p.status == InvitationStatus.PENDING
            await handle.execute_update(InvitationWorkflow.decline, DeclineRequest())
            await handle.result()
    finally:
        catcher.stop()
    notices = [m for m in read_messages(settings.maildir)
               if m["X-Email-Kind"] == "admin_mail_undelivered"]
    assert len(notices) == 1 and notices[0]["To"] == "admin@acme.test"
    assert world.email in notices[0].get_body(("plain",)).get_content()  # type: ignore[union-attr]
