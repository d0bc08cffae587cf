"""Workflow tier on the dev server (real time, our search attributes registered): a worker
stopped in the middle of a large chat history, what operators see, and cancellation
(which the time-skipping server mishandles: it rejects cancelling an activity that has
just completed, ACTIVITY_UNKNOWN, where the real server copes)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from temporalio import activity
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import CancelledError
from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig
from temporalio.testing import WorkflowEnvironment

from activities.transfers import TransferActivities
from config import Settings
from messages.activity_io import Transfer, Transferred
from messages.payloads import (
    AcceptRequest,
    Category,
    InvitationStatus,
    RefundChoice,
    RefundDestination,
)
from records.tables import ChatMessage
from tests.conftest import new_worker
from tests.workflow_helpers import (
    activities_with,
    copies,
    count,
    duplicated_sources,
    events,
    eventually,
    gated_transfer,
    invitation_input,
    invitation_row,
    ledger,
    mails,
    make_world,
    real_activity,
    save_history,
    small_batches,
    source_counts,
    start,
    subscription,
    user,
    wait_status,
)
from workflows.invitation import InvitationWorkflow

CHAT_ROWS = 30_000
BATCH = 500


class SlowTransfers(TransferActivities):
    """The real transfers, each batch followed by a short pause, so that the test can stop
    the worker while the chat history is half copied."""

    def _copy_batch(self, t: Any, checkpoint: int) -> tuple[int, int, int] | None:
        done = super()._copy_batch(t, checkpoint)
        time.sleep(0.03)
        return done


async def test_worker_stopped_mid_chat_resumes_from_its_checkpoint(
    dev_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    world = make_world(engine, settings, chat=CHAT_ROWS, meetings=2, contacts=3)
    inv = world.invitation
    first: list[Transferred] = []
    slow = small_batches(SlowTransfers(settings, engine).transfer_chat, BATCH, first)
    worker = new_worker(dev_env.client, settings, engine,
                        activities=activities_with(settings, engine, slow))
    running = asyncio.create_task(worker.run())
    handle = await start(dev_env.client, settings, invitation_input(world),
                         with_search_attributes=True)
    await handle.execute_update(InvitationWorkflow.accept, AcceptRequest())

    def staged_chat() -> int:
        return count(engine, ChatMessage, ChatMessage.invitation_id == inv)

    await eventually(lambda: staged_chat() >= 10 * BATCH, within=60, what="10 chat batches")
    await worker.shutdown()  # the worker stops in the middle of the chat history
    await running
    at_stop = staged_chat()
    assert 0 < at_stop < CHAT_ROWS and first == []  # really stopped half-way

    second: list[Transferred] = []
    resumed = small_batches(TransferActivities(settings, engine).transfer_chat, BATCH, second)
    async with new_worker(dev_env.client, settings, engine,
                          activities=activities_with(settings, engine, resumed)):
        result = await asyncio.wait_for(handle.result(), 90)
        await save_history(handle, "worker_restarted_mid_chat")
    assert result.status == InvitationStatus.COMPLETED, result.progress.failure_reason
    assert copies(engine, inv, staged=False)[Category.CHAT] == CHAT_ROWS
    assert duplicated_sources(engine, inv) == 0
    [done] = second
    assert done.copied == done.total == CHAT_ROWS and done.attempt >= 2
    # It resumed from the last checkpoint heartbeated before the stop (the batch in flight
    # at that moment may be committed after its heartbeat was lost: at most one more), and
    # wrote only the batches that were left.
    total_batches = CHAT_ROWS // BATCH
    assert done.resumed_from is not None and done.resumed_from > 0
    assert done.batches < total_batches
    assert done.batches <= total_batches - at_stop // BATCH + 2


async def test_operators_find_invitations_and_read_their_state(
    dev_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    """Search attributes by status/account/email, current details, and our counters."""
    buffer = MetricBuffer(10_000)
    runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer))
    client = await Client.connect(
        dev_env.client.service_client.config.target_host,
        namespace=dev_env.client.namespace, data_converter=pydantic_data_converter,
        runtime=runtime,
    )
    now = await dev_env.get_current_time()
    world = make_world(engine, settings, price_minor=1200, period_start=now - timedelta(days=15),
                       period_end=now + timedelta(days=15))
    async with new_worker(client, settings, engine):
        handle = await start(client, settings, invitation_input(world),
                             with_search_attributes=True)
        outcome = await handle.execute_update(InvitationWorkflow.accept, AcceptRequest())
        assert outcome.outcome == "refund_choice_needed" and outcome.quote is not None

        async def details() -> str:
            meta = await handle.query("__temporal_workflow_metadata",
                                      result_type=WorkflowMetadata)
            return meta.current_details
        waiting = await details()
        assert "awaiting_refund_choice" in waiting and "Refund:" in waiting

        query = (f'InvitationStatus = "awaiting_refund_choice" AND '
                 f'InviteeEmail = "{world.email}" AND InvitationAccountId = "{world.org_id}" '
                 f'AND TaskQueue = "{settings.task_queue}"')
        found = await eventually(lambda: _ids(client, query), within=30, what="visibility")
        assert found == [handle.id]

        await handle.execute_update(
            InvitationWorkflow.choose_refund,
            RefundChoice(destination=RefundDestination.ORIGINAL_PAYMENT_METHOD))
        result = await handle.result()
        await save_history(handle, "completed_with_search_attributes")
        final = await details()
    assert result.status == InvitationStatus.COMPLETED
    assert "| Chat history | live |" in final and "Status: `completed`" in final
    refund = outcome.quote.amount_minor
    # This test's task queue: the [sqlite] and [postgresql] runs share ids and the server.
    query = (f'InvitationStatus = "completed" AND InvitationRefundMinor = {refund} '
             f'AND InvitationUserType = "licensed" AND TaskQueue = "{settings.task_queue}"')
    assert await eventually(lambda: _ids(client, query), within=30) == [handle.id]

    seen: dict[str, int] = {}
    for update in buffer.retrieve_updates():
        if update.metric.name.startswith(("invitations_", "invitation_refund")):
            seen[update.metric.name] = seen.get(update.metric.name, 0) + int(update.value)
    assert seen == {"invitations_started": 1, "invitations_accepted": 1,
                    "invitations_completed": 1, "invitation_refund_minor_paid": refund}


async def _ids(client: Client, query: str) -> list[str]:
    return [wf.id async for wf in client.list_workflows(query)]


async def test_cancel_mid_transfer_compensates_before_ending(
    dev_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    """An operator cancelling the workflow while data moves: the transfer in flight is
    stopped, everything done is undone (shielded from the cancel), then the run ends."""
    now = await dev_env.get_current_time()
    world = make_world(engine, settings, price_minor=1499, period_start=now - timedelta(days=10),
                       period_end=now + timedelta(days=20), meetings=3, chat=300)
    held = gated_transfer(real_activity(settings, engine, "transfer_chat"), asyncio.Event())
    async with new_worker(dev_env.client, settings, engine,
                          activities=activities_with(settings, engine, held),
                          max_heartbeat_throttle_interval=timedelta(milliseconds=200)):
        handle = await start(dev_env.client, settings, invitation_input(world))
        await handle.execute_update(
            InvitationWorkflow.accept,
            AcceptRequest(refund_destination=RefundDestination.ORIGINAL_PAYMENT_METHOD))
        await wait_status(handle, "transferring")
        await eventually(lambda: copies(engine, world.invitation)[Category.MEETINGS] > 0,
                         what="other categories staged")
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as err:
            await handle.result()
    assert isinstance(err.value.cause, CancelledError)
    row = invitation_row(engine, world.invitation)
    assert row is not None and row.status == "failed_compensated"
    assert sum(copies(engine, world.invitation).values()) == 0
    assert source_counts(engine, world) == world.source_counts
    assert [r.kind for r in ledger(engine, world.invitation)] == ["refund", "reversal"]
    assert user(engine, world.user_id).account_id == world.source_account_id  # type: ignore[union-attr]
    assert subscription(engine, world.source_account_id).status == "active"  # type: ignore[union-attr]


async def test_cancel_while_waiting_ends_it_as_cancelled(
    dev_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    world = make_world(engine, settings)
    async with new_worker(dev_env.client, settings, engine):
        handle = await start(dev_env.client, settings, invitation_input(world))
        await eventually(lambda: "invitation" in mails(engine, world.invitation))
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    assert invitation_row(engine, world.invitation).status == "cancelled"  # type: ignore[union-attr]
    assert events(engine, world.invitation)[-1] == "cancelled"
    # Both are told: the invitee that the invitation was withdrawn, the admin likewise.
    assert {"revoked", "admin_revoked"} <= set(mails(engine, world.invitation))


class PausingTransfers(TransferActivities):
    """The real transfers with a pause after each batch: a chat history that does not fit
    the quick try's budget (workflows/options.QUICK_BUDGET_SECONDS)."""

    def _copy_batch(self, t: Any, checkpoint: Any) -> Any:
        done = super()._copy_batch(t, checkpoint)
        time.sleep(1.2)
        return done


async def test_small_categories_move_inside_the_workflow_task_and_a_big_one_goes_on_as_an_activity(
    dev_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    """Every category is first tried as a local activity; the chat history, too big for
    the try's budget, stops after a few batches and its activity resumes from that checkpoint:
    every row copied once, and the only activity in the history is the chat's."""
    from temporalio.api.enums.v1 import EventType

    world = make_world(engine, settings, chat=3_000, meetings=2, contacts=3)
    results: list[Transferred] = []
    real = PausingTransfers(settings, engine).transfer_chat

    @activity.defn(name="transfer_chat")
    async def chat(t: Transfer) -> Transferred:
        done = await real(t)
        results.append(done)
        return done

    async with new_worker(dev_env.client, settings, engine,
                          activities=activities_with(settings, engine, chat)):
        handle = await start(dev_env.client, settings, invitation_input(world))
        await handle.execute_update(InvitationWorkflow.accept, AcceptRequest())
        result = await asyncio.wait_for(handle.result(), 60)
        history = await handle.fetch_history()
    assert result.status == InvitationStatus.COMPLETED, result.progress.failure_reason
    scheduled = [e.activity_task_scheduled_event_attributes.activity_type.name
                 for e in history.events
                 if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
    assert scheduled == ["transfer_chat"]
    quick, resumed = results
    assert not quick.finished and 0 < quick.copied < 3_000 and quick.attempt == 1
    assert resumed.finished and resumed.resumed_from is not None and resumed.copied == 3_000
    assert resumed.inserted == 3_000 - quick.copied  # only what the quick try left
    assert copies(engine, world.invitation, staged=False)[Category.CHAT] == 3_000
    assert duplicated_sources(engine, world.invitation) == 0
