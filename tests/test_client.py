"""The Python client (`invitations.InvitationsClient`). Without a worker, on the dev server
(search attributes on): validation (each error starts and writes nothing), bulk and CSV
invitations with bounded concurrency and idempotent re-runs, the Pending list. With the
real worker, on the time-skipping server: resend, revoke before and after data moves,
blocked and refund states, and the reminder schedule as days pass.

Every test invents its own invitee addresses: workflow ids are derived from (account,
email) and every test's database numbers its accounts from 1 on the shared servers.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select
from temporalio import activity
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from config import Settings
from demo.seed import IndividualSpec, create_individual, create_org
from invitations import InvitationsClient, InviteRequest, Outcome
from invitations import errors as E
from invitations.csvimport import read_invite_csv
from invitations.emails import email_problem
from messages import search_attributes as sa
from messages.activity_io import Transfer, Transferred
from messages.payloads import (
    EmailKind,
    InvitationInput,
    InvitationResult,
    InvitationStatus,
    RefundChoice,
    RefundDestination,
    UserType,
)
from records.changes import upsert_invitation
from records.db import as_utc
from records.ids import invitation_id
from records.tables import AuditEvent, Invitation, SentEmail, User
from tests.conftest import new_worker
from tests.workflow_helpers import quick_try_declined

# --------------------------------------------------------------------------- helpers


def unique(name: str) -> str:
    return f"{name}.{uuid.uuid4().hex[:10]}@example.com"


@dataclass
class World:
    org: int  # Acme: paid, 2 licensed users (owner, admin) + 1 basic member
    unpaid: int  # Initech: not paid
    owner: str = "owner@acme.test"
    admin: str = "admin@acme.test"
    member: str = "member@acme.test"
    globex_admin: str = "boss@globex.test"  # admin of another business account


def make_world(engine: Engine, settings: Settings, seats: int = 10) -> World:
    with Session(engine) as s:
        org = create_org(s, "Acme", seats=seats)
        unpaid = create_org(s, "Initech", owner="owner@initech.test", admins=(), paid=False)
        create_org(s, "Globex", owner="ceo@globex.test", admins=("boss@globex.test",))
        assert org.id is not None and unpaid.id is not None
        s.add(User(email="member@acme.test", account_id=org.id, first_name="Mem", last_name="Ber"))
        s.commit()
        return World(org.id, unpaid.id)


def add_individual(engine: Engine, settings: Settings, email: str, **spec: Any) -> None:
    with Session(engine) as s:
        create_individual(s, settings.recordings_dir, IndividualSpec(email=email, **spec))
        s.commit()


def count(engine: Engine, table: Any) -> int:
    with Session(engine) as s:
        return int(s.exec(select(func.count()).select_from(table)).one())


async def started(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
        return True
    except RPCError as exc:
        assert exc.status == RPCStatusCode.NOT_FOUND
        return False


async def run_ids(client: Client, ids: list[str]) -> dict[str, str]:
    return {i: (await client.get_workflow_handle(i).describe()).run_id for i in ids}


async def eventually(check: Callable[[], Awaitable[bool] | bool], what: str) -> None:
    """Wait (real time, 15 s at most) for a condition the worker makes true."""
    deadline = asyncio.get_running_loop().time() + 15.0
    while True:
        result = check()
        if await result if asyncio.iscoroutine(result) else result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def ended(env: WorkflowEnvironment, wid: str) -> InvitationResult:
    """The workflow's result, days passing as needed (only handles returned by the env's
    own start_workflow skip time by themselves)."""
    handle = env.client.get_workflow_handle(wid, result_type=InvitationResult)
    async with env.time_skipping_unlocked():  # type: ignore[attr-defined]
        return await handle.result()


def mails(engine: Engine, wid: str) -> list[SentEmail]:
    with Session(engine) as s:
        return list(s.exec(select(SentEmail).where(SentEmail.invitation_id == wid)
                           .order_by(col(SentEmail.id))).all())


def kinds(engine: Engine, wid: str) -> list[str]:
    return [m.kind for m in mails(engine, wid)]


def gated_activities(settings: Settings, engine: Engine, gate: asyncio.Event,
                     name: str = "transfer_chat") -> list[Callable[..., Any]]:
    """The production activities, with one transfer held until `gate` is set: the
    invitation stays "transferring" for as long as a test needs."""
    from worker import build_activities

    acts = build_activities(settings, engine)
    real = next(a for a in acts if a.__temporal_activity_definition.name == name)  # type: ignore[attr-defined]

    @activity.defn(name=name)
    async def held(t: Transfer) -> Transferred:
        if (declined := quick_try_declined(t)) is not None:  # as a big source would
            return declined
        await gate.wait()
        return await real(t)

    return [a for a in acts if a is not real] + [held]


@pytest.fixture
def world(engine: Engine, settings: Settings) -> World:
    return make_world(engine, settings)


@pytest.fixture
async def client(
    dev_env: WorkflowEnvironment, settings: Settings, engine: Engine,
) -> AsyncIterator[InvitationsClient]:
    """For tests without a worker: the dev server (with our search attributes). On the
    time-skipping server a workflow started with no worker polling locks time skipping
    for the rest of the session, even once terminated."""
    yield InvitationsClient(dev_env.client, settings, engine)
    await terminate_leftovers(dev_env.client, engine)


@pytest.fixture
async def ts_client(
    ts_env: WorkflowEnvironment, settings: Settings, engine: Engine,
) -> AsyncIterator[InvitationsClient]:
    """For tests with a worker where days pass. The time-skipping server cannot hold custom
    search attributes. Each test ends every workflow it starts before its worker stops."""
    yield InvitationsClient(ts_env.client, settings, engine, search_attributes=False)
    await terminate_leftovers(ts_env.client, engine)


async def terminate_leftovers(client: Client, engine: Engine) -> None:
    """End whatever a failed test left running on the shared server."""
    with Session(engine) as s:
        ids = list(s.exec(select(Invitation.id)).all())
    for wid in ids:
        try:
            await client.get_workflow_handle(wid).terminate("test finished")
        except RPCError as exc:
            assert exc.status == RPCStatusCode.NOT_FOUND  # already ended


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("email", [
    "alice@example.com", "a.b+tag@sub.example.org", "o'neil@example.co.uk", "x@münchen.de",
    "x_y-z@xn--mnchen-3ya.de", "UPPER@EXAMPLE.COM",
])
def test_email_check_accepts_real_addresses(email: str) -> None:
    assert email_problem(email) is None


@pytest.mark.parametrize(("email", "reason"), [
    ("", "empty"), ("alice", "no @"), ("a@b@example.com", "more than one @"),
    ("@example.com", "nothing before"), ("alice@", "nothing after"),
    ("al ice@example.com", "space"), (".alice@example.com", "dot"),
    ("al..ice@example.com", "dot"), ('"al"@example.com', "characters"),
    ("alice@localhost", "no dot"), ("alice@example..com", "empty part"),
    ("alice@-example.com", "not valid"), ("alice@example.c", "top-level"),
    ("alice@example.123", "top-level"), ("alice@exa_mple.com", "not valid"),
    ("a" * 65 + "@example.com", "64"), ("alice@" + "a" * 250 + ".com", "254"),
    ("jörg@example.com", "non-ASCII"),
])
def test_email_check_rejects_malformed_addresses(email: str, reason: str) -> None:
    problem = email_problem(email)
    assert problem is not None and reason in problem


# Each case: (kwargs for client.invite, expected error class, expected code, field, text).
def _cases(w: World, fresh: str) -> dict[str, tuple[dict[str, Any], type[E.InvitationError],
                                                  str, str]]:
    return {
        "unknown account": ({"account_id": 999, "by": w.admin, "email": fresh},
                            E.UnknownAccount, "account", "no business account with id 999"),
        "not an admin (member)": ({"account_id": w.org, "by": w.member, "email": fresh},
                                  E.NotAnAdmin, "by", "member@acme.test is not an owner or admin"),
        "not an admin (stranger)": ({"account_id": w.org, "by": "ceo@globex.test",
                                     "email": fresh}, E.NotAnAdmin, "by", "not an owner or admin"),
        "account not paid": ({"account_id": w.unpaid, "by": "owner@initech.test",
                              "email": fresh}, E.AccountNotPaid, "account", "not on a paid plan"),
        "malformed email": ({"account_id": w.org, "by": w.admin, "email": "alice@example"},
                            E.MalformedEmail, "email", "not a valid email address"),
        "already a member": ({"account_id": w.org, "by": w.admin, "email": " Member@Acme.test "},
                             E.AlreadyMember, "email", "already a member of this account"),
        "admin of another business": ({"account_id": w.org, "by": w.admin,
                                       "email": w.globex_admin},
                                      E.AdminOfAnotherAccount, "email", "admin of another"),
        "owner of another business": ({"account_id": w.org, "by": w.admin,
                                       "email": "ceo@globex.test"},
                                      E.AdminOfAnotherAccount, "email", "owner of another"),
        "bad user type": ({"account_id": w.org, "by": w.admin, "email": fresh,
                           "user_type": "admin"}, E.InvalidRow, "user_type", "basic or licensed"),
        "expiry out of range": ({"account_id": w.org, "by": w.admin, "email": fresh,
                                 "expires_in_days": 0},
                                E.InvalidRow, "expires_in_days", "1 to 365"),
    }


CASES = list(_cases(World(0, 0), "x").keys())


@pytest.mark.parametrize("case", CASES)
async def test_each_validation_error_starts_and_writes_nothing(
    case: str, client: InvitationsClient, world: World, engine: Engine,
) -> None:
    kwargs, error, field, text = _cases(world, unique("fresh"))[case]
    with pytest.raises(error) as raised:
        await client.invite(**kwargs)
    assert raised.value.field == field and raised.value.code == error.CODE  # type: ignore[attr-defined]
    assert text in raised.value.message
    wid = invitation_id(kwargs["account_id"], kwargs["email"])
    assert not await started(client.temporal, wid)
    assert count(engine, Invitation) == 0 and count(engine, AuditEvent) == 0


async def test_licensed_seats_count_members_pending_invitations_and_the_batch(
    client: InvitationsClient, engine: Engine, settings: Settings,
) -> None:
    w = make_world(engine, settings, seats=5)  # owner + admin hold 2 licensed seats
    pending = unique("pending")
    with Session(engine) as s:  # a pending licensed invitation holds a third
        now = datetime.now(UTC)
        upsert_invitation(s, invitation_id(w.org, pending), InvitationInput(
            account_id=w.org, invited_by=w.admin, email=pending, user_type=UserType.LICENSED),
            invited_by_user_id=1, invited_at=now, expires_at=now + timedelta(days=30))
        s.commit()
    a, b, c, d = (unique(n) for n in "abcd")
    rows = [InviteRequest(account_id=w.org, invited_by=w.admin, email=e, user_type=t, line=i)
            for i, (e, t) in enumerate([(a, "licensed"), (b, "licensed"), (c, "licensed"),
                                         (d, "basic")], start=2)]
    results = await client.invite_many(rows)
    assert [r.outcome for r in results] == [Outcome.STARTED, Outcome.STARTED, Outcome.ERROR,
                                            Outcome.STARTED]
    err = results[2].error
    assert err is not None and err.code == "seats_exhausted" and "5 seats, 5 taken" in err.message
    assert not await started(client.temporal, invitation_id(w.org, c))
    with pytest.raises(E.SeatsExhausted):
        await client.invite(w.org, w.admin, unique("e"), user_type="licensed")
    assert (await client.invite(w.org, w.admin, unique("f"))).outcome == Outcome.STARTED


# --------------------------------------------------------------------------- starting


async def test_invite_starts_one_workflow_and_records_the_row(
    client: InvitationsClient, world: World, engine: Engine,
) -> None:
    email = unique("Alice")
    before = datetime.now(UTC)
    result = await client.invite(world.org, world.admin, f"  {email.upper()} ",
                                 first_name="Alice", user_type=UserType.LICENSED,
                                 message="Welcome!", group="Sales", expires_in_days=14)
    wid = invitation_id(world.org, email)
    assert (result.invitation_id, result.email, result.outcome) == (wid, email.lower(),
                                                                    Outcome.STARTED)
    assert result.expires_at is not None
    assert timedelta(days=14) <= result.expires_at - before < timedelta(days=14, minutes=1)
    desc = await client.temporal.get_workflow_handle(wid).describe()
    assert desc.workflow_type == "InvitationWorkflow"
    assert await desc.static_summary() == f"Invite {email.lower()} to Acme as Licensed"
    details = await desc.static_details() or ""
    assert "admin@acme.test" in details and "Sales" in details and "14 days" in details
    attrs = desc.typed_search_attributes  # what operators filter on in the Web UI
    assert (attrs.get(sa.STATUS), attrs.get(sa.ACCOUNT_ID), attrs.get(sa.INVITEE_EMAIL),
            attrs.get(sa.USER_TYPE)) == ("pending", str(world.org), email.lower(), "licensed")
    with Session(engine) as s:
        row = s.get(Invitation, wid)
        assert row is not None
        assert (row.status, row.user_type, row.group_name, row.message, row.first_name) == (
            "pending", "licensed", "Sales", "Welcome!", "Alice")
        assert as_utc(row.expires_at) == result.expires_at

    again = await client.invite(world.org, world.admin, email)
    assert again.outcome == Outcome.ALREADY_PENDING and again.status == "pending"
    assert (await client.temporal.get_workflow_handle(wid).describe()).run_id == desc.run_id
    assert count(engine, Invitation) == 1


async def test_invite_many_keeps_concurrency_bounded(
    settings: Settings, engine: Engine, world: World,
) -> None:
    class CountingTemporal:
        """Stands in for the Temporal client: records how many starts overlap."""

        def __init__(self) -> None:
            self.in_flight = self.most = self.calls = 0

        async def start_workflow(self, *args: Any, **kwargs: Any) -> None:
            self.in_flight += 1
            self.calls += 1
            self.most = max(self.most, self.in_flight)
            for _ in range(3):
                await asyncio.sleep(0)  # yield: the other starters run meanwhile
            self.in_flight -= 1

    fake = CountingTemporal()
    client = InvitationsClient(fake, settings, engine)  # type: ignore[arg-type]
    rows = [InviteRequest(account_id=world.org, invited_by=world.admin, email=unique(f"p{i}"))
            for i in range(50)]
    results = await client.invite_many(rows, concurrency=8)
    assert fake.calls == 50 and fake.most == 8
    assert all(r.outcome == Outcome.STARTED for r in results)
    assert count(engine, Invitation) == 50


def write_csv(path: Path, emails: dict[str, str]) -> Path:
    path.write_text(
        "Email, First Name ,last_name,user_type\n"  # header: any case and spacing
        f"{emails['ok1']},Ann,One,licensed\n"  # line 2
        "not-an-email,Bad,Mail,basic\n"  # line 3
        f"{emails['ok2']},Ben,Two,\n"  # line 4: empty type -> the command's (basic)
        "\n"  # line 5: blank, skipped
        f"{emails['bad_type']},Cy,Three,superuser\n"  # line 6
        "member@acme.test,Mem,Ber,basic\n"  # line 7: already a member
        f"{emails['ok1'].upper()},Ann,Again,basic\n"  # line 8: duplicate of line 2
        f"{emails['extra']},Too,Many,basic,oops\n"  # line 9: five fields
        f'{emails["ok3"]},"Dee, Jr.",Four,basic\n'  # line 10: a quoted comma
        "boss@globex.test,Bo,Ss,basic\n"  # line 11: admin of another business account
    )
    return path


async def test_csv_of_mixed_rows_then_an_idempotent_rerun(
    client: InvitationsClient, world: World, engine: Engine, tmp_path: Path,
) -> None:
    emails = {k: unique(k) for k in ("ok1", "ok2", "ok3", "bad_type", "extra")}
    path = write_csv(tmp_path / "people.csv", emails)

    async def run() -> dict[int, Any]:
        parsed = read_invite_csv(path, account_id=world.org, invited_by=world.admin)
        seen: list[int] = []
        results = parsed.errors + await client.invite_many(
            parsed.requests, concurrency=4, progress=lambda r, done, total: seen.append(done))
        assert seen == list(range(1, len(parsed.requests) + 1))
        return {r.line: r for r in results}

    first = await run()
    assert sorted(first) == [2, 3, 4, 6, 7, 8, 9, 10, 11]
    outcomes = {line: (r.outcome, r.error.code if r.error else None) for line, r in first.items()}
    assert outcomes == {
        2: (Outcome.STARTED, None), 3: (Outcome.ERROR, "malformed_email"),
        4: (Outcome.STARTED, None), 6: (Outcome.ERROR, "invalid_row"),
        7: (Outcome.ERROR, "already_member"), 8: (Outcome.ERROR, "duplicate_row"),
        9: (Outcome.ERROR, "invalid_row"), 10: (Outcome.STARTED, None),
        11: (Outcome.ERROR, "admin_of_another_account"),
    }
    assert "'not-an-email' is not a valid email address" in first[3].error.message  # type: ignore[union-attr]
    assert "superuser" in first[6].error.message  # type: ignore[union-attr]
    assert "line 2" in first[8].error.message  # type: ignore[union-attr]
    assert "5 fields" in first[9].error.message  # type: ignore[union-attr]
    ok = [invitation_id(world.org, emails[k]) for k in ("ok1", "ok2", "ok3")]
    runs = await run_ids(client.temporal, ok)
    for key in ("bad_type", "extra"):
        assert not await started(client.temporal, invitation_id(world.org, emails[key]))
    with Session(engine) as s:
        rows = {r.id: r for r in s.exec(select(Invitation)).all()}
    assert sorted(rows) == sorted(ok)
    assert rows[ok[0]].user_type == "licensed" and rows[ok[1]].user_type == "basic"
    assert rows[ok[2]].first_name == "Dee, Jr."

    second = await run()
    assert {line: r.outcome for line, r in second.items() if line in (2, 4, 10)} == {
        2: Outcome.ALREADY_PENDING, 4: Outcome.ALREADY_PENDING, 10: Outcome.ALREADY_PENDING}
    assert {line: r.outcome for line, r in second.items() if line not in (2, 4, 10)} == {
        line: Outcome.ERROR for line in (3, 6, 7, 8, 9, 11)}
    assert await run_ids(client.temporal, ok) == runs  # no second run of any of them
    assert count(engine, Invitation) == 3


@pytest.mark.parametrize(("text", "message"), [
    ("", "is empty"),
    ("first_name,last_name\nA,B\n", "email required"),
    ("email,emial\na@example.com,x\n", "'emial'"),
    ("email,email\na@example.com,b@example.com\n", "each once"),
])
def test_unreadable_csv_is_refused_as_a_whole(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(E.CsvFormatError) as raised:
        read_invite_csv(path, account_id=1, invited_by="admin@acme.test")
    assert message in raised.value.message


def test_csv_not_utf8_or_missing(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("email\nj\xf6rg@example.com\n".encode("latin-1"))
    with pytest.raises(E.CsvFormatError, match="not UTF-8"):
        read_invite_csv(path, account_id=1, invited_by="a@b.co")
    with pytest.raises(E.CsvFormatError, match="cannot read"):
        read_invite_csv(tmp_path / "missing.csv", account_id=1, invited_by="a@b.co")


# --------------------------------------------------------------------------- pending list


async def test_pending_list_shows_open_invitations_with_their_state(
    client: InvitationsClient, world: World, engine: Engine,
) -> None:
    basic, licensed, blocked, refund, ended = (unique(n) for n in
                                               ("basic", "lic", "blocked", "refund", "ended"))
    await client.invite(world.org, world.admin, basic, first_name="Bea", expires_in_days=7)
    await client.invite(world.org, world.owner, licensed, user_type="licensed")
    for email in (blocked, refund, ended):
        await client.invite(world.org, world.admin, email)
    with Session(engine) as s:  # states the workflow would have written
        for email, status in ((blocked, "blocked"), (refund, "awaiting_refund_choice"),
                              (ended, "expired")):
            row = s.get(Invitation, invitation_id(world.org, email))
            assert row is not None
            row.status = status
            s.add(row)
        s.commit()

    rows = {r.email: r for r in await client.pending(world.org)}
    assert set(rows) == {basic, licensed, blocked, refund}
    assert (rows[basic].status, rows[basic].user_type, rows[basic].first_name,
            rows[basic].invited_by) == ("pending", "basic", "Bea", world.admin)
    assert rows[licensed].user_type == "licensed" and rows[licensed].invited_by == world.owner
    assert rows[blocked].status == "blocked"
    assert rows[refund].status == "awaiting_refund_choice"
    assert rows[basic].expires_at - rows[basic].invited_at == timedelta(days=7)
    assert rows[licensed].expires_at - rows[licensed].invited_at == timedelta(days=30)
    everything = {r.email: r.status for r in await client.pending(world.org, include_all=True)}
    assert everything[ended] == "expired" and len(everything) == 5
    assert await client.pending(world.unpaid) == []
    with pytest.raises(E.UnknownAccount):
        await client.pending(999)


# --------------------------------------------------------------------------- with a worker


async def test_resend_moves_the_expiry_and_mails_again(
    ts_env: WorkflowEnvironment, ts_client: InvitationsClient, world: World, engine: Engine,
    settings: Settings, smtp: Path,
) -> None:
    email = unique("late")
    async with new_worker(ts_env.client, settings, engine):
        result = await ts_client.invite(world.org, world.admin, email, expires_in_days=10)
        wid = result.invitation_id
        await eventually(lambda: kinds(engine, wid) == ["invitation"], "the invitation mail")
        invited_at = (await ts_client.status(wid)).invited_at

        await ts_env.sleep(timedelta(days=8))
        progress = await ts_client.resend(wid, expires_in_days=10)
        now = await ts_env.get_current_time()
        assert progress.status == InvitationStatus.PENDING
        assert abs(progress.expires_at - (now + timedelta(days=10))) < timedelta(minutes=5)
        assert progress.expires_at > invited_at + timedelta(days=17)
        with Session(engine) as s:
            row = s.get(Invitation, wid)
            assert row is not None and as_utc(row.expires_at) == progress.expires_at
        await eventually(lambda: kinds(engine, wid).count("invitation") == 2, "a new mail")

        await ts_env.sleep(timedelta(days=4))  # past the first expiry (day 10): still open
        assert (await ts_client.status(wid)).status == InvitationStatus.PENDING
        assert [r.email for r in await ts_client.pending(world.org)] == [email]

        result = await ended(ts_env, wid)
        assert result.status == InvitationStatus.EXPIRED
        assert result.progress.finished_at is not None
        assert result.progress.finished_at >= progress.expires_at
        default = await ts_client.invite(world.org, world.admin, unique("default"))
        resent = await ts_client.resend(default.invitation_id)  # default: 30 days from now
        now = await ts_env.get_current_time()
        assert abs(resent.expires_at - (now + timedelta(days=30))) < timedelta(minutes=5)
        await ts_client.revoke(default.invitation_id)
        await ended(ts_env, default.invitation_id)  # its ending mails sent before the worker stops


async def test_revoke_before_data_moves_ends_it_and_the_link(
    ts_env: WorkflowEnvironment, ts_client: InvitationsClient, world: World, engine: Engine,
    settings: Settings, smtp: Path,
) -> None:
    email = unique("changed.mind")
    async with new_worker(ts_env.client, settings, engine):
        wid = (await ts_client.invite(world.org, world.admin, email)).invitation_id
        assert (await ts_client.link(wid)).email == email
        progress = await ts_client.revoke(wid, by=world.admin, reason="wrong person")
        assert progress.status == InvitationStatus.REVOKED
        assert (await ended(ts_env, wid)).status == InvitationStatus.REVOKED
        assert await ts_client.pending(world.org) == []
        with pytest.raises(E.InvitationClosed, match="revoked"):
            await ts_client.link(wid)
        with pytest.raises(E.InvitationClosed, match="revoked"):
            await ts_client.revoke(wid)
        assert (await ts_client.status(wid)).status == InvitationStatus.REVOKED
        # Revoked is an end, not a ban: inviting again starts a new run.
        again = await ts_client.invite(world.org, world.admin, email)
        assert again.outcome == Outcome.STARTED
        await ts_client.revoke(wid)
        await ended(ts_env, wid)  # its ending mails sent before the worker stops
    with pytest.raises(E.InvitationNotFound):
        await ts_client.status("invitation-0-nobody@example.com")
    with pytest.raises(E.InvitationNotFound):
        await ts_client.revoke("invitation-0-nobody@example.com")


async def test_revoke_is_refused_once_data_moves(
    ts_env: WorkflowEnvironment, ts_client: InvitationsClient, world: World, engine: Engine,
    settings: Settings, smtp: Path,
) -> None:
    email = unique("mover")
    add_individual(engine, settings, email, chat=20)
    gate = asyncio.Event()
    async with new_worker(ts_env.client, settings, engine,
                          activities=gated_activities(settings, engine, gate)):
        wid = (await ts_client.invite(world.org, world.admin, email)).invitation_id
        outcome = await ts_client.accept(wid)
        assert outcome.outcome == "accepted"
        await eventually(lambda: _status_is(ts_client, wid, InvitationStatus.TRANSFERRING),
                         "the transfer to start")
        with pytest.raises(E.AlreadyMovingData) as raised:
            await ts_client.revoke(wid, by=world.admin)
        assert raised.value.code == "already_moving_data" and raised.value.type == \
            "AlreadyMovingData"
        assert "can no longer be revoked" in raised.value.message
        gate.set()
        assert (await ended(ts_env, wid)).status == InvitationStatus.COMPLETED
        with pytest.raises(E.InvitationClosed, match="completed"):
            await ts_client.revoke(wid)


async def _status_is(client: InvitationsClient, wid: str, status: InvitationStatus) -> bool:
    return (await client.status(wid)).status == status


async def test_pending_list_follows_blocked_and_refund_states(
    ts_env: WorkflowEnvironment, ts_client: InvitationsClient, world: World, engine: Engine,
    settings: Settings, smtp: Path,
) -> None:
    shared, paid = unique("shared"), unique("paid")
    add_individual(engine, settings, shared, other_users=(unique("colleague"),))
    now = await ts_env.get_current_time()  # days have passed on this server: its clock
    add_individual(engine, settings, paid, price_minor=1200, period_start=now - timedelta(days=5),
                   period_end=now + timedelta(days=25))
    async with new_worker(ts_env.client, settings, engine):
        ids = {e: (await ts_client.invite(world.org, world.admin, e)).invitation_id
               for e in (shared, paid)}
        assert (await ts_client.accept(ids[shared])).outcome == "blocked"
        assert (await ts_client.accept(ids[paid])).outcome == "refund_choice_needed"
        await eventually(lambda: {r.email: r.status for r in _pending_now(ts_client, world.org)}
                         == {shared: "blocked", paid: "awaiting_refund_choice"},
                         "the pending list to show both states")
        blocked = await ts_client.status(ids[shared])
        assert [b.kind for b in blocked.blocking] == ["other_user"]
        with pytest.raises(E.WorkflowRefused) as refused:  # no refund to choose when blocked
            await ts_client.choose_refund(ids[shared], RefundChoice(
                destination=RefundDestination.ACCOUNT_CREDIT))
        assert (refused.value.type, refused.value.code) == (
            "NotAwaitingRefundChoice", "not_awaiting_refund_choice")
        assert (await ts_client.decline(ids[shared])).status == InvitationStatus.DECLINED
        assert (await ts_client.revoke(ids[paid])).status == InvitationStatus.REVOKED
        for wid in ids.values():  # their ending mails sent before the worker stops
            await ended(ts_env, wid)


def _pending_now(client: InvitationsClient, account_id: int) -> list[Any]:
    return client._pending(account_id, include_all=False)


async def test_reminders_and_admin_notices_at_the_right_times(
    ts_env: WorkflowEnvironment, ts_client: InvitationsClient, world: World, engine: Engine,
    settings: Settings, smtp: Path,
) -> None:
    """Default schedule, 30-day expiry: a reminder 7 days after the invitation, another 3
    days before expiry with the admin's "expiring soon", then expiry mails to both."""
    email = unique("slow")
    async with new_worker(ts_env.client, settings, engine):
        wid = (await ts_client.invite(world.org, world.admin, email)).invitation_id
        await eventually(lambda: kinds(engine, wid) == ["invitation"], "the invitation mail")

        await ts_env.sleep(timedelta(days=6, hours=23))
        assert (await ts_client.status(wid)).reminders_sent == 0
        assert kinds(engine, wid) == ["invitation"]
        await ts_env.sleep(timedelta(hours=2))  # day 7 + 1 h
        await eventually(lambda: kinds(engine, wid) == ["invitation", "reminder"],
                         "the 7-day reminder")
        assert (await ts_client.status(wid)).reminders_sent == 1

        await ts_env.sleep(timedelta(days=19, hours=22))  # day 26 + 23 h
        assert kinds(engine, wid) == ["invitation", "reminder"]
        await ts_env.sleep(timedelta(hours=2))  # day 27 + 1 h: 3 days before expiry
        await eventually(lambda: sorted(kinds(engine, wid)[2:]) == [
            EmailKind.ADMIN_EXPIRING_SOON.value, EmailKind.REMINDER.value],
            "the second reminder and the admin's expiring-soon notice")

        assert (await ended(ts_env, wid)).status == InvitationStatus.EXPIRED
        await eventually(lambda: len(mails(engine, wid)) == 6, "the expiry mails")
    sent = [(m.kind, m.to) for m in mails(engine, wid)]
    assert sorted(sent) == sorted([
        ("invitation", email), ("reminder", email), ("reminder", email),
        ("admin_expiring_soon", world.admin), ("expired", email),
        ("admin_expired", world.admin),
    ])
    assert [r.email for r in await ts_client.pending(world.org)] == []
    assert {r.status for r in await ts_client.pending(world.org, include_all=True)} == {"expired"}
