"""Exact resume: a process copying a 200,000-row chat history is killed (SIGKILL, no clean
up), and a new attempt finishes it. Counted from the database: what was committed at the
kill is exactly what the state row says, the new attempt starts from that checkpoint and
inserts exactly the rest (no committed row is copied again; only the uncommitted batch in
flight was lost), and the final counts are exact. On the dev server, a worker killed the
same way is replaced within 20 s (heartbeat timeout 10 s)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from sqlalchemy import Engine
from temporalio.testing import WorkflowEnvironment

from activities.transfers import TransferActivities
from config import Settings
from messages.payloads import Category
from records.tables import ChatMessage, TransferState
from tests.test_transfers import INVITATION, count, make_world, state, transfer
from tests.transfer_harness import ChatTransferWorkflow, make_worker
from tests.workflow_helpers import duplicated_sources, eventually

ROWS = 200_000
ROOT = Path(__file__).resolve().parent.parent


def spawn(*args: str) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-m", "tests.transfer_harness", *args],
                             cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


def kill(child: subprocess.Popen[str]) -> None:
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    assert child.stdout is not None
    child.stdout.close()


def progress(engine: Engine) -> TransferState | None:
    try:
        return state(engine)
    except Exception:  # noqa: BLE001 - no row yet
        return None


def assert_resumed_exactly(engine: Engine, at_kill: TransferState, done) -> None:  # type: ignore[no-untyped-def]
    assert done.resumed_from == at_kill.checkpoint
    assert done.inserted == ROWS - at_kill.rows_copied  # no committed row copied again
    assert done.total == done.copied == ROWS
    assert count(engine, ChatMessage, ChatMessage.invitation_id == INVITATION) == ROWS
    assert duplicated_sources(engine, INVITATION) == 0
    final = state(engine)
    assert final.rows_copied == ROWS  # the INSERTs of both processes, summed: exact
    assert final.checkpoint == max_source_id(engine)


def max_source_id(engine: Engine) -> int:
    from sqlalchemy import func, select
    from sqlmodel import Session

    with Session(engine) as session:
        return int(session.exec(select(func.max(ChatMessage.source_id))).one()[0])


async def test_killed_process_mid_chat_resumes_exactly(engine, settings: Settings):
    w = make_world(engine, settings, chat=ROWS)
    t = transfer(w, Category.CHAT)
    child = spawn("activity", settings.database_url, str(settings.recordings_dir),
                  t.model_dump_json())
    try:
        await eventually(lambda: (p := progress(engine)) and p.rows_copied >= 60_000,
                         within=120, what="60,000 rows committed")
    finally:
        kill(child)
    at_kill = state(engine)
    assert at_kill.rows_copied < ROWS, "killed too late to prove anything"
    # What the database holds is exactly what the checkpoint says: the batch in flight
    # was rolled back with its checkpoint.
    assert count(engine, ChatMessage, ChatMessage.invitation_id == INVITATION) == \
        at_kill.rows_copied
    done = await _retry(settings, engine, t)
    assert done.epoch == at_kill.epoch + 1
    assert_resumed_exactly(engine, at_kill, done)


async def _retry(settings: Settings, engine: Engine, t):  # type: ignore[no-untyped-def]
    from temporalio.testing import ActivityEnvironment

    return await ActivityEnvironment().run(TransferActivities(settings, engine).transfer_chat, t)


async def test_killed_worker_is_replaced_within_20_seconds(
    dev_env: WorkflowEnvironment, engine, settings: Settings,
):
    w = make_world(engine, settings, chat=ROWS)
    t = transfer(w, Category.CHAT)
    address = dev_env.client.service_client.config.target_host
    child = spawn("worker", address, settings.task_queue, settings.database_url,
                  str(settings.recordings_dir))
    try:
        handle = await dev_env.client.start_workflow(
            ChatTransferWorkflow.run, t, id=f"resume-{uuid.uuid4()}",
            task_queue=settings.task_queue)
        await eventually(lambda: (p := progress(engine)) and p.rows_copied >= 50_000,
                         within=120, what="50,000 rows committed")
    finally:
        kill(child)
    killed_at = time.monotonic()
    at_kill = state(engine)
    assert at_kill.rows_copied < ROWS, "killed too late to prove anything"
    async with make_worker(dev_env.client, settings, engine):
        await eventually(lambda: state(engine).epoch > at_kill.epoch, within=30,
                         interval=0.2, what="a new attempt")
        resumed_after = time.monotonic() - killed_at
        done = await asyncio.wait_for(handle.result(), 120)
    assert resumed_after < 20, f"the new worker took over after {resumed_after:.1f} s"
    assert done.attempt >= 2
    assert_resumed_exactly(engine, at_kill, done)
