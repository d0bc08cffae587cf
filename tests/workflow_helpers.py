"""Helpers of the workflow tests: build a world, start an invitation, poll with a deadline,
read what reached the platform's records, and swap one activity for a failing one."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, func
from sqlmodel import Session, col, select
from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ApplicationError

from config import Settings
from demo.seed import IndividualSpec, create_individual, create_org
from messages import search_attributes as sa
from messages.activity_io import Transfer, Transferred
from messages.payloads import Category, InvitationInput, InvitationResult, Progress, UserType
from records.ids import invitation_id
from records.tables import (
    Account,
    AuditEvent,
    Invitation,
    Recording,
    RefundLedger,
    SentEmail,
    Subscription,
    User,
)
from rules.platform import CATEGORY_TABLES
from worker import build_activities
from workflows.invitation import InvitationWorkflow

T = TypeVar("T")
HISTORIES = Path(__file__).resolve().parent / "histories"
ADMIN = "admin@acme.test"
Handle = WorkflowHandle[InvitationWorkflow, InvitationResult]


@dataclass
class World:
    org_id: int
    user_id: int
    source_account_id: int
    email: str
    source_counts: dict[Category, int]
    checksums: dict[str, str]  # recording topic -> sha256 of the source file

    @property
    def invitation(self) -> str:
        return invitation_id(self.org_id, self.email)


def make_world(engine: Engine, settings: Settings, *, email: str | None = None,
               **spec: Any) -> World:
    """Acme (with admin@acme.test) and one individual account with `spec`'s data. The
    invitee is a new person each time (unless `email` is given): the [sqlite] and
    [postgresql] runs of a test share one Temporal server, where an invitation id left
    open by the other run would take this run's messages."""
    email = email or f"paula.{uuid.uuid4().hex[:8]}@example.com"
    with Session(engine) as session:
        org = create_org(session)
        user = create_individual(session, settings.recordings_dir,
                                 IndividualSpec(email=email, first_name="Paula",
                                                last_name="Paid", **spec))
        session.commit()
        assert org.id is not None and user.id is not None
        world = World(org.id, user.id, user.account_id, user.email, {}, {})
    world.source_counts = source_counts(engine, world)
    world.checksums = recording_checksums(engine, settings, world.source_account_id)
    return world


def invitation_input(world: World, **kw: Any) -> InvitationInput:
    kw.setdefault("user_type", UserType.LICENSED)
    return InvitationInput(account_id=world.org_id, invited_by=ADMIN, email=world.email,
                           first_name="Paula", last_name="Paid", **kw)


async def start(client: Client, settings: Settings, inp: InvitationInput, *,
                with_search_attributes: bool = False) -> Handle:
    """Start as the client does: id from (account, email); search attributes set at start
    where the server has them registered (dev server), never on the time-skipping one."""
    attrs = None
    if with_search_attributes:
        attrs = TypedSearchAttributes([
            SearchAttributePair(sa.STATUS, "pending"),
            SearchAttributePair(sa.ACCOUNT_ID, str(inp.account_id)),
            SearchAttributePair(sa.INVITEE_EMAIL, inp.email),
            SearchAttributePair(sa.USER_TYPE, inp.user_type.value),
            SearchAttributePair(sa.REFUND_MINOR, 0),
            SearchAttributePair(sa.ALERT, sa.NO_ALERT),
        ])
    return await client.start_workflow(
        InvitationWorkflow.run, inp, id=invitation_id(inp.account_id, inp.email),
        task_queue=settings.task_queue, search_attributes=attrs,
    )


async def eventually(check: Callable[[], Any], *, within: float = 30,
                     interval: float = 0.05, what: str = "condition") -> Any:
    """Poll `check` (sync or async) until it returns something truthy, or fail."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {within}s waiting for {what} (last: {last!r})")


async def progress(handle: Handle) -> Progress:
    return await handle.query(InvitationWorkflow.progress)


async def wait_status(handle: Handle, *statuses: str, within: float = 30) -> Progress:
    async def check() -> Progress | None:
        p = await progress(handle)
        return p if p.status.value in statuses else None
    return await eventually(check, within=within, what=f"status in {statuses}")  # type: ignore[no-any-return]


async def save_history(handle: Handle, name: str) -> None:
    """With UPDATE_HISTORIES=1, commit this run's history for the replay tests."""
    if os.environ.get("UPDATE_HISTORIES") != "1":
        return
    history = await handle.fetch_history()
    HISTORIES.mkdir(exist_ok=True)
    (HISTORIES / f"{name}.json").write_text(history.to_json())


# -- the platform's records ------------------------------------------------------------


def count(engine: Engine, table: Any, *where: Any) -> int:
    with Session(engine) as session:
        return int(session.exec(select(func.count()).select_from(table).where(*where)).one())


def source_counts(engine: Engine, world: World) -> dict[Category, int]:
    """Rows still in the invitee's individual account (never copies)."""
    return {c: count(engine, t, t.user_id == world.user_id,  # type: ignore[attr-defined]
                     t.account_id == world.source_account_id,  # type: ignore[attr-defined]
                     col(t.invitation_id).is_(None))  # type: ignore[attr-defined]
            for c, t in CATEGORY_TABLES.items()}


def copies(engine: Engine, inv: str, *, staged: bool | None = None) -> dict[Category, int]:
    """Copies made by invitation `inv` (live and staged, or only one kind)."""
    out = {}
    for c, t in CATEGORY_TABLES.items():
        where = [t.invitation_id == inv]  # type: ignore[attr-defined]
        if staged is not None:
            where.append(t.staged == staged)  # type: ignore[attr-defined]
        out[c] = count(engine, t, *where)
    return out


def duplicated_sources(engine: Engine, inv: str) -> int:
    """Copies sharing a source row (must be 0: every row arrives exactly once)."""
    dupes = 0
    with Session(engine) as session:
        for t in CATEGORY_TABLES.values():
            rows = session.exec(
                select(t.source_id, func.count()).where(  # type: ignore[attr-defined]
                    t.invitation_id == inv).group_by(t.source_id)  # type: ignore[attr-defined]
                .having(func.count() > 1)).all()
            dupes += len(rows)
    return dupes


def recording_checksums(engine: Engine, settings: Settings, account_id: int) -> dict[str, str]:
    """sha256 of each recording *file* of an account, by topic (reads the bytes)."""
    with Session(engine) as session:
        rows = session.exec(select(Recording).where(Recording.account_id == account_id)).all()
        return {r.topic: hashlib.sha256((Path(settings.recordings_dir) / r.path).read_bytes())
                .hexdigest() for r in rows}


def staged_files(settings: Settings) -> list[Path]:
    return [f for f in Path(settings.recordings_dir).glob("*/staged/**/*") if f.is_file()]


def ledger(engine: Engine, inv: str) -> list[RefundLedger]:
    with Session(engine) as session:
        return list(session.exec(select(RefundLedger).where(RefundLedger.invitation_id == inv)
                                 .order_by(col(RefundLedger.id))).all())


def subscription(engine: Engine, account_id: int) -> Subscription | None:
    with Session(engine) as session:
        return session.exec(select(Subscription).where(
            Subscription.account_id == account_id)).first()


def user(engine: Engine, user_id: int) -> User | None:
    with Session(engine) as session:
        return session.get(User, user_id)


def account(engine: Engine, account_id: int) -> Account | None:
    with Session(engine) as session:
        return session.get(Account, account_id)


def invitation_row(engine: Engine, inv: str) -> Invitation | None:
    with Session(engine) as session:
        return session.get(Invitation, inv)


def events(engine: Engine, inv: str) -> list[str]:
    with Session(engine) as session:
        return [e.kind for e in session.exec(select(AuditEvent).where(
            AuditEvent.invitation_id == inv).order_by(col(AuditEvent.id))).all()]


def mails(engine: Engine, inv: str) -> list[str]:
    """Kinds of the mails sent for `inv`, in order (the SentEmail record of mail.py)."""
    with Session(engine) as session:
        return [m.kind for m in session.exec(select(SentEmail).where(
            SentEmail.invitation_id == inv).order_by(col(SentEmail.id))).all()]


# -- activities, real and broken -------------------------------------------------------


def activity_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__temporal_activity_definition").name  # noqa: B009


def real_activity(settings: Settings, engine: Engine, name: str) -> Callable[..., Any]:
    return next(a for a in build_activities(settings, engine) if activity_name(a) == name)


def activities_with(settings: Settings, engine: Engine,
                    *replacements: Callable[..., Any]) -> list[Callable[..., Any]]:
    """The production activities, with those named like a replacement swapped for it."""
    names = {activity_name(r) for r in replacements}
    kept = [a for a in build_activities(settings, engine) if activity_name(a) not in names]
    return kept + list(replacements)


def broken_transfer(real: Callable[[Transfer], Awaitable[Transferred]],
                    error_type: str = "TransferFailed") -> Callable[..., Any]:
    """Copies everything (so staged rows exist), then fails for good: a permanent fault."""
    name = activity_name(real)

    @activity.defn(name=name)
    async def broken(t: Transfer) -> Transferred:
        await real(t)
        raise ApplicationError(f"{name} broke for good after staging its rows",
                               type=error_type, non_retryable=True)

    return broken


def flaky_transfer(real: Callable[[Transfer], Awaitable[Transferred]],
                   results: list[Transferred] | None = None) -> Callable[..., Any]:
    """The first attempt copies everything and then dies before reporting (a transient
    fault at the worst moment); later attempts run normally."""
    name = activity_name(real)

    @activity.defn(name=name)
    async def flaky(t: Transfer) -> Transferred:
        done = await real(t)
        if activity.info().attempt == 1:
            raise RuntimeError("connection reset by peer (transient)")
        if results is not None:
            results.append(done)
        return done

    return flaky


def gated_transfer(real: Callable[[Transfer], Awaitable[Transferred]],
                   gate: asyncio.Event) -> Callable[..., Any]:
    """Holds the transfer until the test opens `gate`: the invitation stays mid-transfer.
    It heartbeats meanwhile, so that a cancel reaches it."""
    @activity.defn(name=activity_name(real))
    async def gated(t: Transfer) -> Transferred:
        while not gate.is_set():
            activity.heartbeat()
            await asyncio.sleep(0.05)
        return await real(t)

    return gated


def quick_try_declined(t: Transfer) -> Transferred | None:
    """In a transfer's quick first try (a local activity), the answer a source too big for
    its budget gives: not finished, nothing copied; the activity then does the work. None
    in the activity itself."""
    if activity.info().is_local:
        return Transferred(category=t.category, total=0, copied=0, finished=False)
    return None


def small_batches(real: Callable[[Transfer], Awaitable[Transferred]], batch_size: int,
                  results: list[Transferred]) -> Callable[..., Any]:
    """The real transfer with a small batch (more checkpoints); records what it returns.
    It declines the quick first try (a local activity), as a source too big for its budget
    would: the tests using it are about the transfer activity, its heartbeats and retries."""
    @activity.defn(name=activity_name(real))
    async def batched(t: Transfer) -> Transferred:
        if (declined := quick_try_declined(t)) is not None:
            return declined
        done = await real(t.model_copy(update={"batch_size": batch_size}))
        results.append(done)
        return done

    return batched
