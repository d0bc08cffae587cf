"""The saga on the dev server, in real time: a cancel arriving during each kind of step
(honoured before the point of no return, refused after it), a worker killed inside the
link and the refund (another worker moves on within 20 s), and an SMTP outage (shown
while it lasts, one message once the server is back)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import typing
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session
from temporalio import activity
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from config import Settings
from mailcatcher import read_messages, start_catcher
from messages.payloads import AcceptRequest, InvitationStatus, RefundDestination
from records.tables import JoinClaim
from tests.concurrency_helpers import ROOT, wait_for_pollers, worker_env
from tests.conftest import new_worker
from tests.workflow_helpers import (
    activities_with,
    activity_name,
    events,
    eventually,
    invitation_input,
    invitation_row,
    ledger,
    mails,
    make_world,
    progress,
    real_activity,
    save_history,
    start,
    user,
)
from workflows.invitation import InvitationWorkflow

CREDIT = AcceptRequest(refund_destination=RefundDestination.ACCOUNT_CREDIT)


async def _world(env: WorkflowEnvironment, engine: Engine, settings: Settings) -> Any:
    now = await env.get_current_time()
    return make_world(engine, settings, email=f"dev-{uuid.uuid4().hex[:8]}@example.com",
                      price_minor=1499, period_start=now - timedelta(days=10),
                      period_end=now + timedelta(days=20), meetings=2, chat=50)


def _gated(real: Callable[..., Awaitable[Any]], entered: asyncio.Event,
           release: asyncio.Event, first_only: bool = False) -> Any:
    """The real activity, held at its start until `release` (it signals `entered`)."""
    calls = {"n": 0}

    async def gated(arg: Any) -> Any:
        calls["n"] += 1
        if not first_only or calls["n"] == 1:
            entered.set()
            await release.wait()
        return await real(arg)

    return activity.defn(name=activity_name(real))(typed_like(gated, real))


def typed_like(fn: Any, real: Any) -> Any:
    """Give `fn(arg)` the argument and result types of `real`, so that the data converter
    decodes the same payload models for it."""
    hints = typing.get_type_hints(real)
    fn.__annotations__ = {"arg": next(v for k, v in hints.items() if k != "return"),
                          "return": hints.get("return")}
    return fn


# Where the cancel lands, and how the invitation must end.
CANCEL_POINTS = {
    "mail": ("send_emails", True, "cancelled"),  # the invitation mail, before acceptance
    # The check is a local activity inside the workflow task: the cancel is seen just
    # after it, while the answer leaves (workflows/invitation.py `_answer_first`):
    # accepted, nothing linked or paid yet, so it ends cancelled and the claim is freed.
    "check": ("check_acceptance", False, "cancelled"),
    "link": ("link_member", False, "failed_compensated"),
    "refund": ("pay_refund", False, "failed_compensated"),
    "finalise": ("finalise", False, "completed"),  # past the point of no return: refused
}


@pytest.mark.parametrize("point", list(CANCEL_POINTS))
async def test_a_cancel_during_each_step(
    dev_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path, point: str,
) -> None:
    name, first_only, ending = CANCEL_POINTS[point]
    world = await _world(dev_env, engine, settings)
    entered, release = asyncio.Event(), asyncio.Event()
    acts = activities_with(settings, engine, _gated(real_activity(settings, engine, name),
                                                    entered, release, first_only))
    async with new_worker(dev_env.client, settings, engine, activities=acts):
        handle = await start(dev_env.client, settings, invitation_input(world))
        accepting = None
        if point != "mail":
            accepting = asyncio.ensure_future(
                handle.execute_update(InvitationWorkflow.accept, CREDIT))
        await eventually(entered.is_set, within=30, what=f"{name} running")
        await handle.cancel()
        release.set()
        if ending == "completed":
            result = await handle.result()
            assert result.status == InvitationStatus.COMPLETED
            assert "Finalising" in result.progress.step or result.progress.step == "Completed"
        else:
            with pytest.raises(WorkflowFailureError):
                await handle.result()
        if accepting is not None:
            await asyncio.gather(accepting, return_exceptions=True)
        await save_history(handle, f"cancel_during_{point}")
    row = invitation_row(engine, world.invitation)
    assert row is not None and row.status == ending
    invitee = user(engine, world.user_id)
    assert invitee is not None
    with Session(engine) as session:
        claim = session.get(JoinClaim, world.email)
    if ending == "completed":
        assert invitee.account_id == world.org_id and claim is not None
    else:  # nothing moved, or everything undone; the person free to join elsewhere
        assert invitee.account_id == world.source_account_id and claim is None
        assert sum(r.amount_minor for r in ledger(engine, world.invitation)) == 0
    if ending == "cancelled":
        assert {"revoked", "admin_revoked"} <= set(mails(engine, world.invitation))
    if ending == "failed_compensated":
        assert {"failed", "admin_failed"} <= set(mails(engine, world.invitation))


FAULT_WORKER = """
import asyncio, sys, pathlib
from temporalio import activity
import worker
from records.db import engine_from
from config import get_settings
from tests.workflow_helpers import activities_with, real_activity
from tests.test_saga_dev import typed_like

name, marker = sys.argv[1], pathlib.Path(sys.argv[2])
settings = get_settings()
engine = engine_from(settings)
real = real_activity(settings, engine, name)

async def stuck(arg):
    marker.write_text("in")  # the worker dies in here
    await asyncio.sleep(3600)

stuck = activity.defn(name=name)(typed_like(stuck, real))

async def main():
    client = await worker.connect_temporal(settings)
    async with worker.build_worker(client, settings, engine,
                                   activities=activities_with(settings, engine, stuck)):
        await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.mark.parametrize("step", ["link_member", "pay_refund"])
async def test_a_worker_killed_inside_the_step_is_replaced_within_20_seconds(
    dev_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
    tmp_path: Path, step: str,
) -> None:
    world = await _world(dev_env, engine, settings)
    marker = tmp_path / "inside"
    env = worker_env(settings, dev_env.client.service_client.config.target_host)
    env["INVITES_METRICS_PORT"] = "0"
    env["PYTHONPATH"] = str(ROOT)
    script = tmp_path / "fault_worker.py"
    script.write_text(FAULT_WORKER)
    doomed = subprocess.Popen([sys.executable, str(script), step, str(marker)], cwd=ROOT,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await wait_for_pollers(dev_env.client, settings.task_queue, 1)
        handle = await start(dev_env.client, settings, invitation_input(world))
        accepting = asyncio.ensure_future(handle.execute_update(InvitationWorkflow.accept,
                                                                CREDIT))
        await eventually(marker.exists, within=60, what=f"{step} running")
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=30)
        killed = time.monotonic()
        async with new_worker(dev_env.client, settings, engine):
            p = await eventually(lambda: _moved_on(handle), within=40, interval=0.2,
                                 what="the invitation moving on")
            took = time.monotonic() - killed
            result = await handle.result()
        await asyncio.gather(accepting, return_exceptions=True)
    finally:
        if doomed.poll() is None:
            doomed.kill()
    assert took < 20, f"moved on {took:.1f} s after the kill ({p.status}, {p.step})"
    assert result.status == InvitationStatus.COMPLETED
    assert [r.kind for r in ledger(engine, world.invitation)] == ["refund"]
    assert "unlinked" not in events(engine, world.invitation)


async def _moved_on(handle: Any) -> Any:
    p = await progress(handle)
    return p if p.status in (InvitationStatus.TRANSFERRING, InvitationStatus.COMPLETED) \
        else None


async def test_an_smtp_outage_is_shown_then_the_mail_goes_out_once(
    dev_env: WorkflowEnvironment, settings: Settings, engine: Engine,
) -> None:
    world = await _world(dev_env, engine, settings)
    async with new_worker(dev_env.client, settings, engine):
        handle = await start(dev_env.client, settings, invitation_input(world))
        p = await eventually(lambda: _mail_problem(handle), within=40, interval=0.5,
                             what="the undelivered mail shown")
        assert p.mail_problem.startswith("invitation email not delivered yet:")
        assert p.alert == "mail_undelivered" and "invitation" not in mails(
            engine, world.invitation)
        catcher = start_catcher("127.0.0.1", settings.smtp_port, settings.maildir)
        try:
            await eventually(lambda: "invitation" in mails(engine, world.invitation),
                             within=60, interval=0.5, what="the mail delivered")
            p = await eventually(lambda: _cleared(handle), within=20, what="cleared")
        finally:
            catcher.stop()
        await handle.terminate()
    messages = [m for m in read_messages(settings.maildir)
                if m["X-Email-Kind"] == "invitation"]
    assert len(messages) == 1 and messages[0]["To"] == world.email


async def _mail_problem(handle: Any) -> Any:
    p = await progress(handle)
    return p if p.mail_problem else None


async def _cleared(handle: Any) -> Any:
    p = await progress(handle)
    return p if p.mail_problem is None and p.alert is None else None
