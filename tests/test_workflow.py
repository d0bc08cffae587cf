"""Workflow tier on the time-skipping server: the invitation's paths end to end against
the production worker (real activities, a real SQLite database, real SMTP), days passing
at once where the path needs them."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from config import Settings
from messages.payloads import (
    AcceptRequest,
    Category,
    DeclineRequest,
    InvitationStatus,
    RefundChoice,
    RefundDestination,
    ResendRequest,
    RevokeRequest,
)
from records.tables import Room, User
from rules.money import FORMULA, format_minor
from tests.conftest import new_worker
from tests.workflow_helpers import (
    ADMIN,
    account,
    activities_with,
    copies,
    duplicated_sources,
    events,
    gated_transfer,
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
    subscription,
    user,
    wait_status,
)
from workflows.invitation import InvitationWorkflow

PRICE = 1499
DATA = dict(meetings=3, webinars=1, recordings=2, chat=120, contacts=4, reports=2)


def assert_all_moved_once(engine: Engine, settings: Settings, world) -> None:  # type: ignore[no-untyped-def]
    assert copies(engine, world.invitation, staged=False) == world.source_counts
    assert copies(engine, world.invitation, staged=True) == dict.fromkeys(Category, 0)
    assert duplicated_sources(engine, world.invitation) == 0
    assert sum(source_counts(engine, world).values()) == 0
    assert sorted(recording_checksums(engine, settings, world.org_id).values()) == \
        sorted(world.checksums.values())


async def paid_world(env: WorkflowEnvironment, engine: Engine, settings: Settings, **kw):  # type: ignore[no-untyped-def]
    """A paid individual 10 days into a 30-day period, by the server's clock."""
    now = await env.get_current_time()
    return make_world(engine, settings, price_minor=PRICE, period_start=now - timedelta(days=10),
                      period_end=now + timedelta(days=20), **{**DATA, **kw})


async def test_free_user_joins_with_all_data(
    ts_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    world = make_world(engine, settings, **DATA)
    async with new_worker(ts_env.client, settings, engine):
        handle = await start(ts_env.client, settings, invitation_input(world))
        outcome = await handle.execute_update(InvitationWorkflow.accept, AcceptRequest())
        assert outcome.outcome == "accepted" and outcome.quote is None
        result = await handle.result()
        await save_history(handle, "free_user_completed")
    assert result.status == InvitationStatus.COMPLETED, result.progress.failure_reason
    assert_all_moved_once(engine, settings, world)
    assert result.progress.categories[Category.CHAT].copied == 120
    assert result.progress.reports_left_behind == 2
    assert ledger(engine, world.invitation) == []
    assert invitation_row(engine, world.invitation).status == "completed"  # type: ignore[union-attr]
    assert Counter(mails(engine, world.invitation)) == Counter(
        ["invitation", "admin_accepted", "completion", "admin_completed"])


async def test_paid_user_refund_to_original_payment_method(
    ts_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    world = await paid_world(ts_env, engine, settings)
    sub = subscription(engine, world.source_account_id)
    assert sub is not None
    async with new_worker(ts_env.client, settings, engine):
        handle = await start(ts_env.client, settings, invitation_input(world))
        before = await ts_env.get_current_time()
        outcome = await handle.execute_update(InvitationWorkflow.accept, AcceptRequest())
        assert outcome.outcome == "refund_choice_needed"
        quote = outcome.quote
        assert quote is not None
        # The written rule, at the acceptance time the quote was fixed for.
        assert before <= quote.at <= before + timedelta(minutes=1)
        left = int((sub.period_end.replace(tzinfo=quote.at.tzinfo) - quote.at).total_seconds())
        assert quote.seconds_left == left and quote.period_seconds == 30 * 86400
        assert quote.amount_minor == PRICE * left // (30 * 86400) > 0
        assert quote.formula == FORMULA
        assert format_minor(quote.amount_minor, "USD") in outcome.message
        waiting = await progress(handle)
        assert waiting.status == InvitationStatus.AWAITING_REFUND_CHOICE
        chosen = await handle.execute_update(
            InvitationWorkflow.choose_refund,
            RefundChoice(destination=RefundDestination.ORIGINAL_PAYMENT_METHOD))
        assert chosen.outcome == "accepted"
        result = await handle.result()
        await save_history(handle, "paid_user_refund_completed")
    assert result.status == InvitationStatus.COMPLETED, result.progress.failure_reason
    assert_all_moved_once(engine, settings, world)
    rows = ledger(engine, world.invitation)
    assert [(r.kind, r.amount_minor, r.destination) for r in rows] == [
        ("refund", quote.amount_minor, "original_payment_method")]
    assert result.progress.payment is not None
    assert result.progress.payment.amount_minor == quote.amount_minor
    assert subscription(engine, world.source_account_id).status == "ended"  # type: ignore[union-attr]
    assert "refund_receipt" in mails(engine, world.invitation)


async def test_refund_as_credit_to_the_joining_account(
    ts_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    world = await paid_world(ts_env, engine, settings)
    async with new_worker(ts_env.client, settings, engine):
        handle = await start(ts_env.client, settings, invitation_input(world))
        outcome = await handle.execute_update(
            InvitationWorkflow.accept,
            AcceptRequest(refund_destination=RefundDestination.ACCOUNT_CREDIT))
        assert outcome.outcome == "accepted" and outcome.quote is not None
        result = await handle.result()
    assert result.status == InvitationStatus.COMPLETED, result.progress.failure_reason
    amount = outcome.quote.amount_minor
    assert [(r.kind, r.amount_minor, r.destination) for r in ledger(engine, world.invitation)] \
        == [("refund", amount, "account_credit")]
    assert account(engine, world.org_id).credit_balance_minor == amount  # type: ignore[union-attr]


@pytest.mark.parametrize("blocker", ["other_user", "room"])
async def test_blocked_1009_names_blockers_and_accepting_after_the_fix_succeeds(
    ts_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path, blocker: str,
) -> None:
    spec = {"other_users": ("olga.colleague@example.com",)} if blocker == "other_user" \
        else {"rooms": ("Rita's Boardroom",)}
    name = "olga.colleague@example.com" if blocker == "other_user" else "Rita's Boardroom"
    world = make_world(engine, settings, **spec)  # type: ignore[arg-type]
    async with new_worker(ts_env.client, settings, engine):
        handle = await start(ts_env.client, settings, invitation_input(world))
        outcome = await handle.execute_update(InvitationWorkflow.accept, AcceptRequest())
        assert outcome.outcome == "blocked" and outcome.error_code == 1009
        assert [(b.kind, b.name) for b in outcome.blocking] == [(blocker, name)]
        assert name in outcome.message and outcome.blocking[0].action
        blocked = await progress(handle)
        assert blocked.status == InvitationStatus.BLOCKED and blocked.blocking
        assert invitation_row(engine, world.invitation).status == "blocked"  # type: ignore[union-attr]
        assert sum(copies(engine, world.invitation).values()) == 0  # nothing moved

        with Session(engine) as session:  # the invitee fixes it
            if blocker == "other_user":
                session.delete(session.exec(select(User).where(User.email == name)).one())
            else:
                session.delete(session.exec(select(Room).where(Room.name == name)).one())
            session.commit()
        again = await handle.execute_update(InvitationWorkflow.accept, AcceptRequest())
        assert again.outcome == "accepted" and again.blocking == []
        result = await handle.result()
        await save_history(handle, f"blocked_by_{blocker}_then_completed")
    assert result.status == InvitationStatus.COMPLETED, result.progress.failure_reason
    assert result.progress.blocking == []
    assert_all_moved_once(engine, settings, world)
    assert "admin_blocked" in mails(engine, world.invitation)
    assert events(engine, world.invitation).count("blocked") == 1


async def test_decline_ends_without_moving_anything(
    ts_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    world = make_world(engine, settings)
    async with new_worker(ts_env.client, settings, engine):
        handle = await start(ts_env.client, settings, invitation_input(world))
        declined = await handle.execute_update(InvitationWorkflow.decline,
                                               DeclineRequest(reason="not now"))
        assert declined.status == InvitationStatus.DECLINED
        result = await handle.result()
        await save_history(handle, "declined")
        with pytest.raises((WorkflowUpdateFailedError, RPCError)):  # the run has ended
            await handle.execute_update(InvitationWorkflow.accept, AcceptRequest())
    assert result.status == InvitationStatus.DECLINED
    assert source_counts(engine, world) == world.source_counts
    assert invitation_row(engine, world.invitation).status == "declined"  # type: ignore[union-attr]


async def test_expires_after_30_days_with_reminders_and_admin_notices(
    ts_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    world = make_world(engine, settings)
    async with new_worker(ts_env.client, settings, engine):
        handle = await start(ts_env.client, settings, invitation_input(world))
        result = await handle.result()  # time skips: 7 days, 27 days, 30 days
        await save_history(handle, "expired")
    p = result.progress
    assert result.status == InvitationStatus.EXPIRED
    assert p.finished_at is not None and p.expires_at - p.invited_at == timedelta(days=30)
    assert p.expires_at <= p.finished_at < p.expires_at + timedelta(minutes=1)
    assert p.reminders_sent == 2
    assert mails(engine, world.invitation) == [
        "invitation", "reminder", "reminder", "admin_expiring_soon", "expired", "admin_expired"]
    assert invitation_row(engine, world.invitation).status == "expired"  # type: ignore[union-attr]
    assert source_counts(engine, world) == world.source_counts


async def test_resend_moves_expiry_and_reschedules_reminders(
    ts_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    world = make_world(engine, settings)
    async with new_worker(ts_env.client, settings, engine):
        handle = await start(ts_env.client, settings, invitation_input(world))
        first = await progress(handle)
        await ts_env.sleep(timedelta(days=10))
        p = await progress(handle)
        assert p.reminders_sent == 1  # the 7-day reminder went out
        resent = await handle.execute_update(InvitationWorkflow.resend, ResendRequest())
        moved = resent.expires_at - first.invited_at
        assert timedelta(days=40) <= moved <= timedelta(days=40, minutes=5)
        assert invitation_row(engine, world.invitation).expires_at.replace(  # type: ignore[union-attr]
            tzinfo=resent.expires_at.tzinfo) == resent.expires_at
        result = await handle.result()
        await save_history(handle, "resent_then_expired")
    assert result.status == InvitationStatus.EXPIRED
    finished = result.progress.finished_at
    assert finished is not None
    assert resent.expires_at <= finished < resent.expires_at + timedelta(minutes=1)
    # 7 days after the first mail, 7 after the resend, 3 before the new expiry.
    assert mails(engine, world.invitation) == [
        "invitation", "reminder", "invitation", "reminder", "reminder", "admin_expiring_soon",
        "expired", "admin_expired"]


async def test_revoke_ends_an_open_invitation(
    ts_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    world = make_world(engine, settings)
    async with new_worker(ts_env.client, settings, engine):
        handle = await start(ts_env.client, settings, invitation_input(world))
        revoked = await handle.execute_update(
            InvitationWorkflow.revoke, RevokeRequest(by=ADMIN, reason="wrong person"))
        assert revoked.status == InvitationStatus.REVOKED
        assert (await handle.result()).status == InvitationStatus.REVOKED
        await save_history(handle, "revoked")
    assert invitation_row(engine, world.invitation).status == "revoked"  # type: ignore[union-attr]
    assert "revoked" in events(engine, world.invitation)
    assert source_counts(engine, world) == world.source_counts


def rejection(err: pytest.ExceptionInfo[WorkflowUpdateFailedError]) -> ApplicationError:
    assert isinstance(err.value.cause, ApplicationError)
    return err.value.cause


async def test_rejections_name_the_current_state(
    ts_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    world = await paid_world(ts_env, engine, settings)
    gate = asyncio.Event()
    acts = activities_with(settings, engine, gated_transfer(
        real_activity(settings, engine, "transfer_contacts"), gate))
    async with new_worker(ts_env.client, settings, engine, activities=acts):
        handle = await start(ts_env.client, settings, invitation_input(world))
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await handle.execute_update(
                InvitationWorkflow.choose_refund,
                RefundChoice(destination=RefundDestination.ACCOUNT_CREDIT))
        assert rejection(err).type == "NotAwaitingRefundChoice"
        await handle.execute_update(InvitationWorkflow.accept, AcceptRequest())
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await handle.execute_update(InvitationWorkflow.accept, AcceptRequest())
        assert rejection(err).type == "NotAwaitingAcceptance"
        assert "awaiting_refund_choice" in rejection(err).message
        await handle.execute_update(
            InvitationWorkflow.choose_refund,
            RefundChoice(destination=RefundDestination.ORIGINAL_PAYMENT_METHOD))
        await wait_status(handle, "transferring")  # held there by the gated category
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await handle.execute_update(InvitationWorkflow.revoke, RevokeRequest(by=ADMIN))
        assert rejection(err).type == "AlreadyMovingData"
        assert "can no longer be revoked" in rejection(err).message
        for update, arg in ((InvitationWorkflow.accept, AcceptRequest()),
                            (InvitationWorkflow.decline, DeclineRequest()),
                            (InvitationWorkflow.resend, ResendRequest())):
            with pytest.raises(WorkflowUpdateFailedError) as err:
                await handle.execute_update(update, arg)  # type: ignore[arg-type]
            assert rejection(err).type == "NotAwaitingAcceptance"
            assert "transferring" in rejection(err).message
        gate.set()
        result = await handle.result()
    assert result.status == InvitationStatus.COMPLETED, result.progress.failure_reason
    assert_all_moved_once(engine, settings, world)


async def test_accept_signal_for_fire_and_forget_clients(
    ts_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    world = make_world(engine, settings)
    async with new_worker(ts_env.client, settings, engine):
        handle = await start(ts_env.client, settings, invitation_input(world))
        await handle.signal(InvitationWorkflow.accept_signal, AcceptRequest())
        await handle.signal("accept", AcceptRequest())  # by name, as other SDKs would
        result = await handle.result()
        await save_history(handle, "accepted_by_signal")
    assert result.status == InvitationStatus.COMPLETED, result.progress.failure_reason
    assert events(engine, world.invitation).count("accepted") == 1
    assert_all_moved_once(engine, settings, world)


async def test_two_accept_clicks_make_one_acceptance_and_one_refund(
    ts_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    world = await paid_world(ts_env, engine, settings)
    async with new_worker(ts_env.client, settings, engine):
        handle = await start(ts_env.client, settings, invitation_input(world))
        # Two clicks (different update ids) and a fire-and-forget signal, all at once.
        first, second, _ = await asyncio.gather(
            handle.execute_update(InvitationWorkflow.accept, AcceptRequest(), id="click-1"),
            handle.execute_update(InvitationWorkflow.accept, AcceptRequest(), id="click-2"),
            handle.signal(InvitationWorkflow.accept_signal, AcceptRequest()),
            return_exceptions=True,
        )
        answers = [a for a in (first, second) if not isinstance(a, BaseException)]
        if not answers:  # the signal's check ended before either click arrived: both are
            # told the state moved on (the link handler then shows the refund choice)
            for click in (first, second):
                assert isinstance(click, WorkflowUpdateFailedError), repr(click)
                assert isinstance(click.cause, ApplicationError)
                assert click.cause.type == "NotAwaitingAcceptance"
            assert (await progress(handle)).status == InvitationStatus.AWAITING_REFUND_CHOICE
        else:  # the clicks that got in share one check: one quote
            assert all(a.outcome == "refund_choice_needed" for a in answers)
            assert len({a.quote.amount_minor for a in answers}) == 1  # type: ignore[union-attr]
        choices = await asyncio.gather(*(
            handle.execute_update(InvitationWorkflow.choose_refund, RefundChoice(destination=d),
                                  id=f"choice-{d.value}")
            for d in RefundDestination), return_exceptions=True)
        for choice in choices:
            if isinstance(choice, WorkflowUpdateFailedError):
                assert choice.cause.type == "NotAwaitingRefundChoice"  # type: ignore[attr-defined]
            else:
                assert not isinstance(choice, BaseException) and choice.outcome == "accepted"
        result = await handle.result()
        await save_history(handle, "two_clicks_one_refund")
    assert result.status == InvitationStatus.COMPLETED, result.progress.failure_reason
    assert events(engine, world.invitation).count("accepted") == 1
    assert events(engine, world.invitation).count("refund_choice_needed") == 1
    assert [r.kind for r in ledger(engine, world.invitation)] == ["refund"]
    assert user(engine, world.user_id).account_id == world.org_id  # type: ignore[union-attr]


async def test_someone_without_an_account_joins_as_a_new_member(
    ts_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    world = make_world(engine, settings)  # Acme; the invitee below has no account at all
    inp = invitation_input(world).model_copy(update={"email": "nina.new@example.com"})
    async with new_worker(ts_env.client, settings, engine):
        handle = await start(ts_env.client, settings, inp)
        outcome = await handle.execute_update(InvitationWorkflow.accept, AcceptRequest())
        assert outcome.outcome == "accepted"
        result = await handle.result()
    assert result.status == InvitationStatus.COMPLETED, result.progress.failure_reason
    assert result.progress.categories == {} and result.progress.payment is None
    with Session(engine) as session:
        member = session.exec(select(User).where(User.email == "nina.new@example.com")).one()
    assert member.account_id == world.org_id
