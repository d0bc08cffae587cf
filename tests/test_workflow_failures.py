"""Workflow tier, time-skipping server: failures. A permanent failure in any step undoes
everything done before it (newest first) and ends failed-and-compensated with the reason;
a transient one is retried to success without duplicating anything."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from temporalio.testing import WorkflowEnvironment

from config import Settings
from messages.activity_io import Transferred
from messages.payloads import AcceptRequest, Category, InvitationStatus, RefundDestination
from records.tables import Role
from tests.conftest import new_worker
from tests.workflow_helpers import (
    account,
    activities_with,
    broken_transfer,
    copies,
    duplicated_sources,
    events,
    flaky_transfer,
    invitation_input,
    invitation_row,
    ledger,
    make_world,
    real_activity,
    recording_checksums,
    save_history,
    source_counts,
    staged_files,
    start,
    subscription,
    user,
)
from workflows.invitation import InvitationWorkflow

DATA = dict(meetings=3, webinars=1, recordings=2, chat=600, contacts=4, reports=1,
            price_minor=1499)


async def paid_world(env: WorkflowEnvironment, engine: Engine, settings: Settings, **kw):  # type: ignore[no-untyped-def]
    now = await env.get_current_time()
    return make_world(engine, settings, period_start=now - timedelta(days=10),
                      period_end=now + timedelta(days=20), **{**DATA, **kw})


@pytest.mark.parametrize("failing", list(Category))
async def test_permanent_transfer_failure_is_compensated(
    ts_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
    failing: Category,
) -> None:
    world = await paid_world(ts_env, engine, settings)
    acts = activities_with(settings, engine, broken_transfer(
        real_activity(settings, engine, f"transfer_{failing.value}")))
    async with new_worker(ts_env.client, settings, engine, activities=acts):
        handle = await start(ts_env.client, settings, invitation_input(world))
        outcome = await handle.execute_update(
            InvitationWorkflow.accept,
            AcceptRequest(refund_destination=RefundDestination.ACCOUNT_CREDIT))
        assert outcome.outcome == "accepted"
        result = await handle.result()
        if failing == Category.CHAT:
            await save_history(handle, "transfer_failed_compensated")
    p = result.progress
    assert result.status == InvitationStatus.FAILED_COMPENSATED
    assert p.failure_reason is not None
    assert f"transfer {failing.value} failed" in p.failure_reason
    assert "broke for good" in p.failure_reason and "(TransferFailed)" in p.failure_reason
    assert p.categories[failing].state == "failed"
    assert all(c.state == "compensated" for k, c in p.categories.items() if k != failing)
    # Source data intact, bytes included; no copy left, staged or live, rows or files.
    assert source_counts(engine, world) == world.source_counts
    assert recording_checksums(engine, settings, world.source_account_id) == world.checksums
    assert sum(copies(engine, world.invitation).values()) == 0
    assert staged_files(settings) == []
    # The refund reversed, the subscription reinstated, the membership undone.
    rows = ledger(engine, world.invitation)
    assert [r.kind for r in rows] == ["refund", "reversal"] and rows[0].amount_minor > 0
    assert sum(r.amount_minor for r in rows) == 0
    assert account(engine, world.org_id).credit_balance_minor == 0  # type: ignore[union-attr]
    assert subscription(engine, world.source_account_id).status == "active"  # type: ignore[union-attr]
    invitee = user(engine, world.user_id)
    assert invitee is not None and invitee.account_id == world.source_account_id
    assert invitee.role == Role.OWNER
    # Operators see it ended failed-and-compensated, with the reason.
    row = invitation_row(engine, world.invitation)
    assert row is not None and row.status == "failed_compensated"
    assert events(engine, world.invitation)[-1] == "failed_compensated"


async def test_failure_before_any_data_moves_undoes_the_link(
    ts_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    """A business failure of the refund itself (credit in another currency): the member is
    unlinked again and the subscription keeps running."""
    world = await paid_world(ts_env, engine, settings, currency="EUR")
    async with new_worker(ts_env.client, settings, engine):
        handle = await start(ts_env.client, settings, invitation_input(world))
        await handle.execute_update(
            InvitationWorkflow.accept,
            AcceptRequest(refund_destination=RefundDestination.ACCOUNT_CREDIT))
        result = await handle.result()
    assert result.status == InvitationStatus.FAILED_COMPENSATED
    assert result.progress.failure_reason is not None
    assert result.progress.failure_reason.startswith("pay the refund failed")
    assert "CurrencyMismatch" in result.progress.failure_reason
    assert user(engine, world.user_id).account_id == world.source_account_id  # type: ignore[union-attr]
    assert subscription(engine, world.source_account_id).status == "active"  # type: ignore[union-attr]
    assert [r.kind for r in ledger(engine, world.invitation)] == []
    assert source_counts(engine, world) == world.source_counts
    assert "unlinked" in events(engine, world.invitation)


async def test_transient_failure_is_retried_without_duplicates(
    ts_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    world = await paid_world(ts_env, engine, settings)
    finished: list[Transferred] = []
    acts = activities_with(settings, engine, flaky_transfer(
        real_activity(settings, engine, "transfer_chat"), finished))
    async with new_worker(ts_env.client, settings, engine, activities=acts):
        handle = await start(ts_env.client, settings, invitation_input(world))
        await handle.execute_update(
            InvitationWorkflow.accept,
            AcceptRequest(refund_destination=RefundDestination.ORIGINAL_PAYMENT_METHOD))
        result = await handle.result()
        await save_history(handle, "transient_failure_retried")
    assert result.status == InvitationStatus.COMPLETED, result.progress.failure_reason
    chat = result.progress.categories[Category.CHAT]
    assert chat.attempts == 2 and chat.copied == chat.total == 600
    assert [t.attempt for t in finished] == [2]
    assert copies(engine, world.invitation, staged=False) == world.source_counts
    assert duplicated_sources(engine, world.invitation) == 0
    assert [r.kind for r in ledger(engine, world.invitation)] == ["refund"]

