"""A domain sweep survives a restart of the Temporal server (issue #14: DomainWorkflow
"survives worker and server restarts"; tests/test_domain_sweep.py restarts the worker).

The test runs its own dev server (`temporal server start-dev` on a SQLite file of its own,
with our search attributes), stops it mid-sweep and starts it again on the same port and
file: what is under test is the server's durability, the sweep and its invitations carry
on from what the server persisted, with nobody invited twice."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select
from temporalio import activity
from temporalio.api.enums.v1 import WorkflowExecutionStatus
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client, WorkflowExecutionDescription
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode

from config import Settings
from demo.seed import IndividualSpec
from domains.sweep import SweepsClient
from domains.sweep_tables import DomainSweepPerson
from invitations import InvitationsClient
from messages import search_attributes
from messages.domain_sweep import FindPeople, PeoplePage, SweepProgress, SweepResult, SweepStatus
from messages.payloads import (
    AcceptRequest,
    InvitationResult,
    InvitationStatus,
    RefundDestination,
)
from records.tables import Invitation, SentEmail, User
from tests.conftest import _binary, free_port, new_worker
from tests.test_domain_sweep import (
    DomainWorld,
    _end_leftovers,
    blocked_spec,
    domain_world,
    person,
    status_of,
)
from tests.workflow_helpers import (
    ADMIN,
    activities_with,
    activity_name,
    eventually,
    ledger,
    real_activity,
)

S = InvitationStatus
RUNNING = WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING


class DevServer:
    """`temporal server start-dev` as a subprocess of this test, on a fixed port and
    database file, so that it can be stopped and started again with its history."""

    def __init__(self, db: Path, log: Path) -> None:
        self.db, self.log = db, log
        self.port, self.http_port = free_port(), free_port()
        while self.http_port == self.port:
            self.http_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self, within: float = 30) -> None:
        assert self.proc is None
        self.starts += 1
        with open(self.log, "ab") as out:  # the child keeps its own descriptor
            out.write(f"--- start {self.starts}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [_binary("temporal"), "server", "start-dev", "--headless",
                 "--ip", "127.0.0.1", "--port", str(self.port),
                 "--http-port", str(self.http_port), "--db-filename", str(self.db),
                 "--log-level", "warn",
                 "--dynamic-config-value", "frontend.enableUpdateWorkflowExecution=true",
                 *search_attributes.cli_flags()],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        await eventually(self._accepting, within=within, interval=0.05,
                         what=f"the dev server on {self.target} (log: {self.log})")

    async def connect(self, within: float = 30) -> Client:
        """A client, once the frontend serves the default namespace (it listens a little
        before: its namespace registry may still be loading)."""
        async def attempt() -> Client | None:
            try:
                return await Client.connect(self.target, data_converter=pydantic_data_converter)
            except RuntimeError:  # "Failed client connect"
                return None
        client: Client = await eventually(attempt, within=within, interval=0.1,
                                          what=f"a client of {self.target}")
        await self.ready(client, within)
        return client

    async def ready(self, client: Client, within: float = 30) -> None:
        async def serves() -> bool:
            try:
                await client.workflow_service.describe_namespace(
                    DescribeNamespaceRequest(namespace=client.namespace), retry=False,
                    timeout=timedelta(seconds=2))
                return True
            except RPCError:
                return False
        await eventually(serves, within=within, interval=0.1,
                         what=f"{self.target} to serve {client.namespace}")

    def _accepting(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the dev server exited ({self.proc.returncode}): "
                                 f"{self.log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self, within: float = 20) -> None:
        """SIGTERM, and wait for it to exit (SIGKILL only if it does not, in time)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=within)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    async def wait_closed(self, within: float = 10) -> None:
        def closed() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return False
            except OSError:
                return True
        await eventually(closed, within=within, what=f"{self.target} to close")


TRANSIENT = (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED)


async def answered(call: Callable[[], Awaitable[Any]], *, within: float,
                   what: str) -> Any:
    """`call`'s result once the server answers: while it comes back after the restart, a
    call may fail as unavailable (any other error, e.g. not found, is raised at once)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await asyncio.wait_for(call(), timeout=max(0.5, deadline - time.monotonic()))
        except (RPCError, TimeoutError) as exc:
            if isinstance(exc, RPCError) and exc.status not in TRANSIENT:
                raise
            if time.monotonic() >= deadline:
                raise AssertionError(f"no answer in {within}s for {what}: {exc!r}") from exc
        await asyncio.sleep(0.1)


async def quiet(client: Client, wid: str) -> WorkflowExecutionDescription | None:
    """The description of `wid` if it is running and waiting (no workflow task and no
    activity pending), else None."""
    desc = await client.get_workflow_handle(wid).describe()
    raw = desc.raw_description
    idle = (desc.status == RUNNING and not raw.pending_activities
            and not raw.HasField("pending_workflow_task"))
    return desc if idle else None


def invitation_mails(engine: Engine, email: str) -> int:
    with Session(engine) as s:
        return len(s.exec(select(SentEmail).where(SentEmail.kind == "invitation",
                                                  SentEmail.to == email)).all())


@pytest.mark.sqlite_only
async def test_a_domain_sweep_survives_a_temporal_server_restart(
    engine: Engine, settings: Settings, smtp: Path, tmp_path: Path,
) -> None:
    now = datetime.now(UTC)
    world: DomainWorld = domain_world(
        engine, settings, paula=IndividualSpec(email="", price_minor=1500,
                                               period_start=now - timedelta(days=10),
                                               period_end=now + timedelta(days=20)),
        fran=None, blocked=blocked_spec())

    # The sweep reads page one (paula, fran: user ids in seeding order), starts their
    # invitations, then holds in reading page two (blocked) until the server is back:
    # the restart falls mid-fan-out, with an activity of the sweep in flight.
    gate, entered = asyncio.Event(), asyncio.Event()
    real = real_activity(settings, engine, "find_domain_people")

    @activity.defn(name=activity_name(real))
    async def gated(req: FindPeople) -> PeoplePage:
        page: PeoplePage = await real(req)
        if req.after_user_id:
            entered.set()
            await gate.wait()
        return page

    server = DevServer(tmp_path / "temporal.db", tmp_path / "temporal.log")
    try:
        await server.start()
        client = await server.connect()
        sweeps = SweepsClient(client, settings, engine)
        invitations = InvitationsClient(client, settings, engine)
        worker = new_worker(client, settings, engine,
                            activities=activities_with(settings, engine, gated))
        async with worker:
            try:
                wid = await sweeps.start(world.org_id, ADMIN, world.domain, mode="invite",
                                         page_size=2, window=2,
                                         tally_every=timedelta(seconds=1))
                sweep = client.get_workflow_handle(wid, result_type=SweepResult)
                await asyncio.wait_for(entered.wait(), 30)
                before: SweepProgress = await sweep.query("progress",
                                                          result_type=SweepProgress)
                assert (before.counts.found, before.counts.invited) == (2, 2)
                assert before.status == SweepStatus.SWEEPING
                first = [world.wid("paula"), world.wid("fran")]
                # Stop at a quiet point (the children registered, mailed and waiting; the
                # sweep only in its held activity): what is tested is what the server
                # persisted, not an RPC lost in the instant of the stop.
                for child in first:
                    await eventually(lambda c=child: quiet(client, c), within=20,  # type: ignore[misc]
                                     what=f"{child} to wait for its invitee")
                assert [invitation_mails(engine, world.people[k]) for k in ("paula", "fran")] \
                    == [1, 1]
                run_id = (await sweep.describe()).run_id

                server.stop()
                await server.wait_closed()
                with pytest.raises(RPCError) as down:  # really down: nothing answers
                    await client.workflow_service.describe_namespace(
                        DescribeNamespaceRequest(namespace=client.namespace), retry=False,
                        timeout=timedelta(seconds=2))
                assert down.value.status in TRANSIENT
                await server.start()
                await server.ready(client)

                # The same run of the sweep, still running, from the server's database.
                desc = await answered(sweep.describe, within=20,
                                      what="the sweep after the restart")
                assert (desc.run_id, desc.status) == (run_id, RUNNING)
                # The worker (same client, same worker object) reconnects by itself: the
                # SDK retries its polls while the server is down. (Were it not to, a fresh
                # worker would do: what is under test is the server's durability.) The
                # query answers once it polls again.
                gate.set()

                async def found_all() -> SweepProgress | None:
                    try:
                        p: SweepProgress = await sweep.query(
                            "progress", result_type=SweepProgress,
                            rpc_timeout=timedelta(seconds=5))
                    except RPCError:  # no worker polling yet
                        return None
                    return p if p.status == SweepStatus.WATCHING else None
                p = await eventually(found_all, within=40, interval=0.1,
                                     what="the fan-out to end after the restart")
                # Page one was not read again: nobody found twice, nobody skipped.
                assert (p.counts.found, p.counts.invited, p.counts.skipped) == (3, 3, 0)

                paid = await invitations.accept(world.wid("paula"), AcceptRequest(
                    refund_destination=RefundDestination.ORIGINAL_PAYMENT_METHOD))
                assert paid.outcome == "accepted"
                assert (await invitations.accept(world.wid("fran"))).outcome == "accepted"
                blocked = await invitations.accept(world.wid("blocked"))
                assert (blocked.outcome, blocked.error_code) == ("blocked", 1009)

                async def joined() -> SweepProgress | None:
                    p = await sweep.query("progress", result_type=SweepProgress)
                    return p if p.counts.completed == 2 else None
                p = await eventually(joined, within=40, interval=0.1,
                                     what="two joins to complete")
                assert (p.counts.blocked, p.counts.open, p.status) == (
                    1, 1, SweepStatus.WATCHING)
                assert status_of(engine, world.wid("paula")) == S.COMPLETED.value
                assert status_of(engine, world.wid("fran")) == S.COMPLETED.value
                assert status_of(engine, world.wid("blocked")) == S.BLOCKED.value
                assert [e.kind for e in ledger(engine, world.wid("paula"))] == ["refund"]
                assert ledger(engine, world.wid("paula"))[0].amount_minor > 0
                assert ledger(engine, world.wid("fran")) == []
                with Session(engine) as s:
                    for key in ("paula", "fran"):
                        joiner = s.exec(select(User).where(
                            User.email == world.people[key])).one()
                        assert joiner.account_id == world.org_id
                    rows = s.exec(select(Invitation).where(
                        Invitation.account_id == world.org_id)).all()
                    assert sorted(r.id for r in rows) == sorted(
                        world.wid(k) for k in world.people)

                # Nobody invited twice: one run per invitation, one invitation mail each,
                # every person recorded once, against their invitation.
                for key in world.people:
                    runs = [w async for w in client.list_workflows(
                        f'WorkflowId="{world.wid(key)}"')]
                    assert len(runs) == 1, (key, runs)
                    assert invitation_mails(engine, world.people[key]) == 1
                    row = person(engine, world, key)
                    assert (row.state, row.invitation_id) == ("invited", world.wid(key))
                with Session(engine) as s:
                    assert len(s.exec(select(DomainSweepPerson).where(
                        DomainSweepPerson.domain == world.domain)).all()) == 3

                # End it: cancel, revoking the one still open (the blocked invitation).
                done = await sweeps.cancel(world.org_id, world.domain, revoke_started=True)
                assert done.status == SweepStatus.CANCELLED and done.counts.open == 0
                assert (await sweep.result()).status == SweepStatus.CANCELLED
                assert status_of(engine, world.wid("blocked")) == S.REVOKED.value
                ended = {key: (await asyncio.wait_for(client.get_workflow_handle(
                    world.wid(key), result_type=InvitationResult).result(), 30)).status
                    for key in world.people}  # nothing left running on the worker
                assert ended == {"paula": S.COMPLETED, "fran": S.COMPLETED,
                                 "blocked": S.REVOKED}
                assert (await sweep.describe()).run_id == run_id  # one run throughout
            finally:
                gate.set()  # a failure while held: let the activity end with the worker
                if server.running:  # end whatever a failure left running
                    with contextlib.suppress(Exception):  # not to hide the failure
                        await asyncio.wait_for(_end_leftovers(client, engine), 30)
    finally:
        server.stop()
