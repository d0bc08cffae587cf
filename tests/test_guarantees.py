"""Guarantees the code's comments state, each pinned by a test that fails without it
(issue #16: "every comment that states a guarantee is either true and tested, or
removed"). The SQLite-only ones about records/db.py are in tests/test_db.py.

Two workflow tests need a message to reach the workflow while one of its local
activities is still running. The worker keeps a workflow task open while its local
activities run and only heartbeats it (at 80% of the task timeout) to take in new events;
those tests start the invitation with a 2 s task timeout so that this happens within
seconds, and hold the activity until the server shows the message was taken in.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, update
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, select
from temporalio import activity
from temporalio.api.enums.v1 import EventType, ParentClosePolicy
from temporalio.client import (
    Client,
    ScheduleActionExecutionStartWorkflow,
    ScheduleInfo,
    ScheduleOverlapPolicy,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowUpdateStage,
)
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.finalising import FinaliseActivities
from activities.platform import PlatformActivities
from config import ROOT, Settings
from demo.seed import create_org
from domains.schedule import ensure_domain_check_schedule
from domains.sweep import SweepsClient
from invitations import InvitationsClient
from invitations.starting import BulkStart
from messages.activity_io import (
    ERR_INVITEE_UNAVAILABLE,
    AcceptanceCheck,
    AcceptanceFacts,
    Membership,
    StatusChange,
)
from messages.payloads import (
    AcceptOutcome,
    AcceptRequest,
    InvitationInput,
    InvitationStatus,
    ResendRequest,
    RevokeRequest,
    UserType,
)
from records.db import as_utc, make_engine
from records.ids import invitation_id
from records.tables import AuditEvent, Recording, TransferState, User
from rules.platform import find_user
from tests.concurrency_helpers import at_once
from tests.conftest import new_worker
from tests.test_domain_sweep import _end_leftovers as end_leftovers
from tests.test_domain_sweep import domain_world
from tests.test_domain_sweep import until as sweep_until
from tests.test_finalising import finalise_req, release_req, transferred_world
from tests.test_platform_activities import EMAIL, INVITATION, NOW, link, rows
from tests.test_platform_activities import make_world as platform_world
from tests.workflow_helpers import (
    ADMIN,
    Handle,
    activities_with,
    events,
    eventually,
    invitation_input,
    invitation_row,
    make_world,
    progress,
    real_activity,
)
from workflows import options
from workflows.accepting import WAITING_STEP
from workflows.invitation import InvitationWorkflow

# The invitations below: a workflow task taking in new events every 1.6 s while a local
# activity runs (the default, 10 s, would heartbeat it every 8 s).
SHORT_TASK = timedelta(seconds=2)


async def start_short(client: Client, settings: Settings, inp: InvitationInput) -> Handle:
    return await client.start_workflow(
        InvitationWorkflow.run, inp, id=invitation_id(inp.account_id, inp.email),
        task_queue=settings.task_queue, task_timeout=SHORT_TASK)


async def waiting(handle: Handle) -> None:
    """Registered, its mail on the way: waiting for the invitee."""
    async def check() -> bool:
        return (await progress(handle)).step == WAITING_STEP
    await eventually(check, within=20, what="the invitation waiting")


async def event_types(handle: Handle) -> list[int]:
    return [e.event_type async for e in handle.fetch_history_events()]


async def taken_in_after(handle: Handle, event: int) -> None:
    """Until a workflow task that began after `event` completed: the worker has run the
    workflow code that `event` woke up (a heartbeat of the task the activity holds open)."""
    async def check() -> bool:
        kinds = await event_types(handle)
        if event not in kinds:
            return False
        after = kinds[kinds.index(event):]
        started = EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED
        return started in after and EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED in \
            after[after.index(started):]
    await eventually(check, within=20, interval=0.1, what=f"event {event} taken in")


# -- workflows/telling.py: status rows written in transition order ----------------------


async def test_status_changes_are_written_in_the_order_they_happened(
    ts_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    """The invitee is blocked (error 1009); while that change is still being written (a
    slow database), the admin resends. The resend's change waits for the first: the audit
    trail says blocked, then resent, and the row keeps the resend's new expiry. (Written
    at once, the resend's change would land first and "blocked" would then put the old
    expiry back.)"""
    world = make_world(engine, settings, rooms=("Rita's Boardroom",))
    real = real_activity(settings, engine, "record_status")
    entered, release = asyncio.Event(), asyncio.Event()

    @activity.defn(name="record_status")
    async def slow_record(change: StatusChange) -> None:
        if change.event == "blocked":
            entered.set()
            await release.wait()
        await real(change)

    acts = activities_with(settings, engine, slow_record)
    async with new_worker(ts_env.client, settings, engine, activities=acts):
        handle = await start_short(ts_env.client, settings, invitation_input(world))
        await waiting(handle)
        accept = await handle.start_update(InvitationWorkflow.accept, AcceptRequest(),
                                           wait_for_stage=WorkflowUpdateStage.ACCEPTED)
        await asyncio.wait_for(entered.wait(), 20)
        # Accepted by the workflow (its handler ran) while "blocked" is still unwritten.
        resend = await handle.start_update(InvitationWorkflow.resend, ResendRequest(),
                                           wait_for_stage=WorkflowUpdateStage.ACCEPTED)
        release.set()
        blocked: AcceptOutcome = await accept.result()  # type: ignore[assignment]
        assert blocked.outcome == "blocked"
        resent = await resend.result()
        await handle.execute_update(InvitationWorkflow.revoke, RevokeRequest(by=ADMIN))
        await handle.result()
    trail = events(engine, world.invitation)
    assert trail.index("blocked") < trail.index("resent") < trail.index("revoked"), trail
    row = invitation_row(engine, world.invitation)
    assert row is not None
    assert as_utc(row.expires_at) == resent.expires_at


# -- workflows/waiting.py: an acceptance being checked decides before the expiry --------


async def test_an_acceptance_checked_across_the_expiry_is_accepted_not_expired(
    ts_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    """The invitee accepts 3 s before the expiry; the check (a slow database) is still
    running when the expiry timer fires and the workflow takes it in: the acceptance
    decides, the invitation is not expired under it."""
    world = make_world(engine, settings)
    real = real_activity(settings, engine, "check_acceptance")
    entered, release = asyncio.Event(), asyncio.Event()

    @activity.defn(name="check_acceptance")
    async def slow_check(check: AcceptanceCheck) -> AcceptanceFacts:
        entered.set()
        await release.wait()
        return await real(check)  # type: ignore[no-any-return]

    acts = activities_with(settings, engine, slow_check)
    async with new_worker(ts_env.client, settings, engine, activities=acts):
        handle = await start_short(ts_env.client, settings,
                                   invitation_input(world, expires_in_days=1))
        await waiting(handle)
        p = await progress(handle)
        # Days pass at once up to 3 s before the expiry; from there the server's clock
        # runs in real time (it skips none while a workflow task is open).
        await ts_env.sleep(p.expires_at - await ts_env.get_current_time()
                           - timedelta(seconds=3))
        accept = await handle.start_update(InvitationWorkflow.accept, AcceptRequest(),
                                           wait_for_stage=WorkflowUpdateStage.ACCEPTED)
        await asyncio.wait_for(entered.wait(), 20)
        await taken_in_after(handle, EventType.EVENT_TYPE_TIMER_FIRED)  # the expiry
        assert (await progress(handle)).status == InvitationStatus.PENDING
        release.set()
        outcome: AcceptOutcome = await accept.result()  # type: ignore[assignment]
        assert outcome.outcome == "accepted", outcome.message
        result = await handle.result()
    assert result.status == InvitationStatus.COMPLETED, result.progress.failure_reason
    assert "expired" not in events(engine, world.invitation)
    assert invitation_row(engine, world.invitation).status == "completed"  # type: ignore[union-attr]


# -- workflows/options.py: bookkeeping retried without end --------------------------------


def test_bookkeeping_is_retried_without_end() -> None:
    """The status record (and the sweep's bookkeeping, which shares its policy) has no
    attempt limit, no overall deadline and no error type it gives up on: a database down
    for an hour delays the row, it never drops a change."""
    policy = options.RECORD["retry_policy"]
    assert policy.maximum_attempts == 0  # Temporal: unlimited
    assert not policy.non_retryable_error_types
    assert "schedule_to_close_timeout" not in options.RECORD


# -- workflows/domain_check.py: one re-check at a time -----------------------------------


@pytest.mark.sqlite_only  # no database: the schedule only
async def test_the_domain_check_schedule_skips_a_run_while_one_is_running(
    dev_env: WorkflowEnvironment, settings: Settings,
) -> None:
    """The schedule as the worker makes it (created, then updated as at every start): a
    run that has not ended makes the next one be skipped, not started beside it. No worker
    polls this test's queue, so the first run stays running."""
    schedule_id = f"domain-check-{uuid.uuid4().hex[:8]}"
    handle = await ensure_domain_check_schedule(dev_env.client, settings, schedule_id)

    async def info() -> ScheduleInfo:
        return (await handle.describe()).info

    async def runs() -> list[str]:
        return [a.workflow_id for a in (await info()).running_actions
                if isinstance(a, ScheduleActionExecutionStartWorkflow)]

    try:
        await ensure_domain_check_schedule(dev_env.client, settings, schedule_id)
        assert (await handle.describe()).schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
        await handle.trigger()
        await eventually(lambda: _running(runs, 1), within=20, what="the first run")
        await handle.trigger()  # while the first one runs

        async def settled() -> ScheduleInfo | None:
            i = await info()
            return i if i.num_actions_skipped_overlap or len(i.running_actions) > 1 else None

        done: ScheduleInfo = await eventually(settled, within=20, what="the second trigger")
        assert done.num_actions_skipped_overlap == 1 and len(done.running_actions) == 1, done
    finally:
        running = await runs()
        await handle.delete()
        for wid in running:
            await dev_env.client.get_workflow_handle(wid).terminate("test finished")


async def _running(runs: Any, n: int) -> bool:
    return len(await runs()) == n


# -- activities/platform.py link_member: a concurrent move of the invitee fails the link --


def test_a_move_of_the_invitee_while_the_link_runs_fails_the_link(
    engine: Engine, settings: Settings, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """link_member has read the invitee (in their individual account); before it moves
    them, another writer moves them to Globex. Exactly one of the two takes effect: on
    PostgreSQL the move commits and the link's conditional UPDATE fails it ("moved
    meanwhile", nothing linked); on SQLite the link's write lock keeps the move out
    until it committed. Never both, with the undo holding a stale "previous account"."""
    acts = PlatformActivities(settings, engine)
    w = platform_world(engine, settings)
    with Session(engine) as session:
        globex = create_org(session, "Globex", owner="ceo@globex.test", admins=())
        session.commit()
        globex_id = globex.id
    facts = acts._check_acceptance(AcceptanceCheck(
        invitation_id=INVITATION, account_id=w.org_id, email=EMAIL,
        user_type=UserType.LICENSED, group="Sales", at=NOW))
    assert facts.refusal is None and facts.blocking == []

    read, moved = threading.Event(), threading.Event()

    def find_then_let_the_move_run(session: Session, email: str) -> Any:
        found = find_user(session, email)
        read.set()
        moved.wait(timeout=10)
        return found

    monkeypatch.setattr("activities.platform.find_user", find_then_let_the_move_run)
    impatient = make_engine(settings.database_url, busy_timeout_seconds=0.2)

    def move() -> str:
        read.wait(timeout=10)
        try:
            with impatient.begin() as conn:
                conn.execute(update(User).where(col(User.id) == w.user_id)
                             .values(account_id=globex_id))
            return "moved"
        finally:
            moved.set()

    try:
        linked, move_result = at_once([lambda: acts._link_member(link(w)), move])
    finally:
        impatient.dispose()
    did_move = move_result == "moved"
    did_link = not isinstance(linked, BaseException)
    assert did_move != did_link, (linked, move_result)
    with Session(engine) as session:
        person = session.get(User, w.user_id)
        links = session.exec(select(AuditEvent).where(AuditEvent.kind == "linked")).all()
    assert person is not None
    if did_move:  # PostgreSQL
        assert isinstance(linked, ApplicationError), linked
        assert linked.type == ERR_INVITEE_UNAVAILABLE and "meanwhile" in linked.message
        assert person.account_id == globex_id and links == []
    else:  # SQLite: the move waited for the link's lock and gave up
        assert isinstance(move_result, OperationalError) and "locked" in str(move_result)
        assert isinstance(linked, Membership) and linked.source_account_id == w.source_id
        assert person.account_id == w.org_id and len(links) == 1
    assert engine.dialect.name == ("postgresql" if did_move else "sqlite")


# -- activities/finalising.py: a crash mid-release orphans no file ------------------------


class Killed(Exception):
    pass


def recording_files(settings: Settings, engine: Engine) -> tuple[set[str], set[str]]:
    """(files on disk with no Recording row, Recording rows with no file on disk)."""
    root = Path(settings.recordings_dir)
    on_disk = {str(f.relative_to(root)) for f in root.rglob("*") if f.is_file()}
    with Session(engine) as session:
        in_rows = {r.path for r in session.exec(select(Recording)).all()}
    return on_disk - in_rows, in_rows - on_disk


async def test_a_crash_between_deleting_a_source_file_and_the_commit_orphans_no_file(
    engine: Engine, settings: Settings,
) -> None:
    """release_source deletes a source recording's file, then its row, then commits. The
    process dies in between: the row is back (rolled back) without its file, never a file
    without its row; the next run finishes it."""
    env = ActivityEnvironment()
    fin = FinaliseActivities(settings, engine)
    w = await transferred_world(env, engine, settings)
    await env.run(fin.finalise, finalise_req(w))
    sources = {r.path for r in rows(engine, Recording, Recording.account_id == w.source_id)}
    assert len(sources) == 2 and recording_files(settings, engine) == (set(), set())

    real = fin._release_recording

    def dies_before_the_commit(*args: Any) -> Any:
        real(*args)  # the file is gone, the row deleted in the open transaction
        raise Killed("the process dies before the commit")

    fin._release_recording = dies_before_the_commit  # type: ignore[method-assign,assignment]
    with pytest.raises(Killed):  # its transaction is rolled back, as a dead process's
        await env.run(fin.release_source, release_req(w))
    orphans, missing = recording_files(settings, engine)
    assert orphans == set() and len(missing) == 1 and missing <= sources

    fin._release_recording = real  # type: ignore[method-assign]
    done = await env.run(fin.release_source, release_req(w))
    assert done.made_final["recordings"] == 2 and done.source_rows_deleted["recordings"] == 2
    assert recording_files(settings, engine) == (set(), set())
    assert rows(engine, Recording, Recording.account_id == w.source_id) == []
    assert {s.state for s in rows(engine, TransferState)} == {"released"}


# -- messages/payloads.py: payloads never import the table classes --------------------------


def test_the_workflow_payloads_import_no_database_code() -> None:
    """What the workflows import for their inputs and results: no table class, nor the
    database layer beneath it (a fresh interpreter, nothing imported before)."""
    code = ("import sys, messages.payloads, messages.activity_io; "
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('sqlmodel', 'sqlalchemy') or m in ('records.tables', 'records.db'))))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []


# -- invitations/starting.py: register writes the row should the starter die ------------


async def test_the_row_is_written_by_the_workflow_should_the_starter_die_before_it(
    dev_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The starter started the workflow and died before its batched write of the row:
    the workflow's register step writes the row (from its input) and the audit event."""
    world = make_world(engine, settings)
    monkeypatch.setattr(BulkStart, "_write_rows", lambda self, items: None)  # never runs
    client = InvitationsClient(dev_env.client, settings, engine)
    started = await client.invite(world.org_id, ADMIN, world.email, first_name="Paula",
                                  user_type=UserType.LICENSED, group="Sales",
                                  message="Welcome", expires_in_days=14)
    handle = dev_env.client.get_workflow_handle_for(InvitationWorkflow.run,
                                                    started.invitation_id)
    assert invitation_row(engine, started.invitation_id) is None  # the starter wrote nothing
    async with new_worker(dev_env.client, settings, engine):
        await waiting(handle)
        row = invitation_row(engine, started.invitation_id)
        assert row is not None
        assert (row.status, row.email, row.first_name, row.user_type, row.group_name,
                row.message) == ("pending", world.email, "Paula", "licensed", "Sales",
                                 "Welcome")
        assert as_utc(row.expires_at) == (await progress(handle)).expires_at
        assert events(engine, started.invitation_id) == ["invited"]
        await handle.execute_update(InvitationWorkflow.revoke, RevokeRequest(by=ADMIN))
        await handle.result()


# -- workflows/domain.py: a workflow cancel of a sweep leaves its invitations running ----


@pytest.mark.sqlite_only
async def test_a_workflow_cancel_of_a_sweep_leaves_its_invitations_running(
    dev_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path,
) -> None:
    """`temporal workflow cancel` (not the sweep's own `cancel` update) ends the sweep
    cancelled; the invitations it started were started to outlive it (ABANDON) and go on
    waiting for their invitees."""
    world = domain_world(engine, settings, ann=None)
    async with new_worker(dev_env.client, settings, engine):
        try:
            wid = await SweepsClient(dev_env.client, settings, engine).start(
                world.org_id, ADMIN, world.domain, mode="invite")
            await sweep_until(dev_env.client, world, lambda p: p.counts.invited == 1,
                              "the invitation started")
            sweep = dev_env.client.get_workflow_handle(wid)
            await sweep.cancel()
            with pytest.raises(WorkflowFailureError) as ended:
                await sweep.result()
            assert isinstance(ended.value.cause, CancelledError)
            history = [e async for e in sweep.fetch_history_events()]
            starts = [e.start_child_workflow_execution_initiated_event_attributes
                      for e in history if e.event_type ==
                      EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED]
            assert [s.workflow_id for s in starts] == [world.wid("ann")]
            assert {s.parent_close_policy for s in starts} == {
                ParentClosePolicy.PARENT_CLOSE_POLICY_ABANDON}
            invitation = dev_env.client.get_workflow_handle_for(InvitationWorkflow.run,
                                                                world.wid("ann"))
            described = await invitation.describe()
            assert described.status == WorkflowExecutionStatus.RUNNING
            assert (await progress(invitation)).status == InvitationStatus.PENDING
            await invitation.execute_update(InvitationWorkflow.revoke,
                                            RevokeRequest(by=ADMIN))
            assert (await invitation.result()).status == InvitationStatus.REVOKED
        finally:
            await end_leftovers(dev_env.client, engine)
