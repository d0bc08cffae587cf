"""The quick join (workflows/moving.py `_join_quickly`, patch "quick-join"): one local
activity tries the link, the refund and every category's transfer in turn; whatever it
did not finish runs as its own step. These tests break it where it hurts: a refund that
committed inside it but whose answer was lost, a link that fails inside it, a transfer that
committed part of its rows and then failed. Each time the invitation completes with the
money paid once and every row copied exactly once (time-skipping server)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from temporalio import activity
from temporalio.client import WorkflowFailureError, WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from activities.platform import PlatformActivities
from config import Settings
from messages.activity_io import LinkMember, Membership, PayRefund, Transfer, Transferred
from messages.payloads import AcceptRequest, Category, InvitationStatus, Payment, RefundDestination
from tests.conftest import new_worker
from tests.workflow_helpers import (
    activities_with,
    activity_name,
    copies,
    duplicated_sources,
    events,
    eventually,
    invitation_input,
    invitation_row,
    ledger,
    make_world,
    real_activity,
    start,
    user,
)
from workflows.invitation import InvitationWorkflow

CREDIT = AcceptRequest(refund_destination=RefundDestination.ACCOUNT_CREDIT)
INSIDE = "join_quick"


async def _world(env: WorkflowEnvironment, engine: Engine, settings: Settings) -> Any:
    now = await env.get_current_time()
    return make_world(engine, settings, email=f"quick-{uuid.uuid4().hex[:8]}@example.com",
                      period_start=now - timedelta(days=10),
                      period_end=now + timedelta(days=20), meetings=2, recordings=1,
                      chat=50, contacts=2, price_minor=1499)


def _steps(history: WorkflowHistory) -> list[str]:
    """Activity types in the order the history records them: local ones (markers) and
    activities."""
    out = []
    for e in history.events:
        if e.HasField("marker_recorded_event_attributes"):
            data = e.marker_recorded_event_attributes.details.get("data")
            if data is not None and data.payloads:
                decoded = json.loads(data.payloads[0].data)
                if isinstance(decoded, dict) and decoded.get("activity_type"):
                    out.append(str(decoded["activity_type"]))
        elif e.HasField("activity_task_scheduled_event_attributes"):
            out.append("activity:" + e.activity_task_scheduled_event_attributes
                       .activity_type.name)
    return out


async def _run(env: WorkflowEnvironment, settings: Settings, engine: Engine, world: Any,
               *replacements: Any) -> tuple[Any, list[str]]:
    acts = activities_with(settings, engine, *replacements)
    async with new_worker(env.client, settings, engine, activities=acts):
        handle = await start(env.client, settings, invitation_input(world))
        assert (await handle.execute_update(InvitationWorkflow.accept, CREDIT)).outcome == \
            "accepted"
        result = await handle.result()
        history = await handle.fetch_history()
    return result, _steps(history)


def _completed_once(engine: Engine, world: Any, result: Any) -> None:
    assert result.status == InvitationStatus.COMPLETED
    assert [r.kind for r in ledger(engine, world.invitation)] == ["refund"]
    assert result.progress.payment is not None and result.progress.payment.status == "paid"
    assert result.progress.payment.amount_minor > 0
    assert copies(engine, world.invitation) == world.source_counts  # every row, once
    assert duplicated_sources(engine, world.invitation) == 0
    assert user(engine, world.user_id).account_id == world.org_id  # type: ignore[union-attr]


async def test_all_in_one_local_activity(
    ts_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    world = await _world(ts_env, engine, settings)
    result, steps = await _run(ts_env, settings, engine, world)
    _completed_once(engine, world, result)
    assert INSIDE in steps
    for alone in ("link_member", "pay_refund", *(f"transfer_{c.value}" for c in Category)):
        assert alone not in steps and f"activity:{alone}" not in steps, steps


async def test_a_refund_paid_inside_whose_answer_was_lost_is_paid_once(
    ts_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    real = real_activity(settings, engine, "pay_refund")

    @activity.defn(name=activity_name(real))
    async def pay_then_lose(req: PayRefund) -> Payment:
        paid: Payment = await real(req)  # committed
        if activity.info().activity_type == INSIDE:
            raise RuntimeError("connection lost after the refund committed")
        return paid

    world = await _world(ts_env, engine, settings)
    result, steps = await _run(ts_env, settings, engine, world, pay_then_lose)
    _completed_once(engine, world, result)
    assert steps.index(INSIDE) < steps.index("pay_refund"), steps  # paid again alone: once


async def test_a_link_failing_inside_runs_alone_then_every_step(
    ts_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    real = real_activity(settings, engine, "link_member")

    @activity.defn(name=activity_name(real))
    async def link_not_inside(req: LinkMember) -> Membership:
        if activity.info().activity_type == INSIDE:
            raise RuntimeError("database busy")
        linked: Membership = await real(req)
        return linked

    world = await _world(ts_env, engine, settings)
    result, steps = await _run(ts_env, settings, engine, world, link_not_inside)
    _completed_once(engine, world, result)
    after = [s for s in steps[steps.index(INSIDE) + 1:] if s != "send_emails"]
    assert after[:2] == ["link_member", "pay_refund"], steps
    assert {f"transfer_{c.value}" for c in Category} <= set(after), steps


async def test_a_transfer_failing_inside_after_a_commit_goes_on_as_its_activity(
    ts_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    real = real_activity(settings, engine, "transfer_chat")

    @activity.defn(name=activity_name(real))
    async def chat_then_fail(t: Transfer) -> Transferred:
        if activity.info().activity_type == INSIDE:
            await real(t.model_copy(update={"batch_size": 20}))  # some batches committed
            raise RuntimeError("worker lost its database connection")
        done: Transferred = await real(t)
        return done

    world = await _world(ts_env, engine, settings)
    result, steps = await _run(ts_env, settings, engine, world, chat_then_fail)
    _completed_once(engine, world, result)
    assert "activity:transfer_chat" in steps, steps
    assert "transfer_chat" not in steps  # no second quick try: straight to the activity


@pytest.mark.parametrize("where", ["inside", "alone"])
async def test_a_cancel_waits_for_a_step_still_writing_then_undoes_it(
    ts_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path, where: str,
) -> None:
    """The cancel reaches the link (inside the quick join, or run alone after the quick
    join's try failed) while it runs on a thread that cannot be interrupted and commits
    only afterwards (a slow database): the cancellation must not be reported, and the
    unlink run, before that commit, or the member would stay linked."""
    entered = threading.Event()

    class SlowDatabase(PlatformActivities):
        def _link_member(self, req: LinkMember) -> Membership:  # the thread's work
            inside = activity.info().activity_type == INSIDE
            if inside and where == "alone":
                raise RuntimeError("database busy")  # the link then runs alone
            if inside == (where == "inside"):
                entered.set()
                deadline = time.monotonic() + 60
                while not activity.is_cancelled() and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert activity.is_cancelled(), "the cancel never reached the link"
                time.sleep(0.5)  # the commit lands well after the cancel
            return super()._link_member(req)

    slow_link = SlowDatabase(settings, engine).link_member  # the real activity method
    world = await _world(ts_env, engine, settings)
    acts = activities_with(settings, engine, slow_link)
    async with new_worker(ts_env.client, settings, engine, activities=acts):
        handle = await start(ts_env.client, settings, invitation_input(world))
        accepting = asyncio.ensure_future(handle.execute_update(InvitationWorkflow.accept,
                                                                CREDIT))
        await eventually(entered.is_set, within=30, what="the link inside the quick join")
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        await asyncio.gather(accepting, return_exceptions=True)
    assert invitation_row(engine, world.invitation).status == "failed_compensated"  # type: ignore[union-attr]
    assert "linked" in events(engine, world.invitation)  # the late commit happened...
    assert "unlinked" in events(engine, world.invitation)  # ...and was undone after it
    assert user(engine, world.user_id).account_id == world.source_account_id  # type: ignore[union-attr]
    assert ledger(engine, world.invitation) == []  # the refund never started
    assert sum(copies(engine, world.invitation).values()) == 0
