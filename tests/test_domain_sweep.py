"""Domain sweeps (issue #14): DomainWorkflow over a seeded domain of individual accounts, on
the dev server (search attributes, updates) and the time-skipping server (days pass, long
histories continue as new). Every test ends the workflows it started before its worker
stops (see README "Tests")."""

from __future__ import annotations

import asyncio
import email
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select
from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.domain_sweep import DomainSweepActivities, grace
from config import Settings
from demo.seed import IndividualSpec, create_individual, create_org
from domains.sweep import SweepsClient, sweep_id
from domains.sweep_tables import DomainSweepPerson
from domains.tables import ClaimedDomain
from invitations import InvitationsClient
from invitations.errors import (
    DomainNotVerified,
    EmailInUse,
    InvalidDomain,
    InvalidRow,
    NotAnAdmin,
    StillOnDomain,
    SweepAlreadyRunning,
    WorkflowRefused,
)
from messages import search_attributes as sa
from messages.domain_sweep import (
    FindPeople,
    PeoplePage,
    RecordSignIn,
    SweepInput,
    SweepMode,
    SweepProgress,
    SweepResult,
    SweepStatus,
    Tally,
)
from messages.payloads import AcceptRequest, InvitationStatus, RefundDestination
from records.db import write_session
from records.ids import invitation_id
from records.tables import AuditEvent, Invitation, JoinClaim, SentEmail, User
from tests.conftest import new_worker
from tests.workflow_helpers import (
    ADMIN,
    activities_with,
    activity_name,
    eventually,
    real_activity,
)
from workflows.domain import DomainWorkflow

HISTORIES = Path(__file__).resolve().parent / "histories" / "domain"
S = InvitationStatus


@dataclass
class DomainWorld:
    org_id: int
    domain: str
    people: dict[str, str] = field(default_factory=dict)  # key -> email

    def wid(self, key: str) -> str:
        return invitation_id(self.org_id, self.people[key])


def domain_world(engine: Engine, settings: Settings, *, verified: bool = True,
                 **people: IndividualSpec | None) -> DomainWorld:
    """Acme with a claim on a fresh domain, one individual account per `people` key
    (email key@domain; None: a free plan), and people the sweep must not find: an
    individual off the domain, the owner of another business account on it, and the
    other user of an individual account on it (when "blocked" is among the people)."""
    domain = f"acme-{uuid.uuid4().hex[:8]}.com"
    with write_session(engine) as s:
        org = create_org(s)
        assert org.id is not None
        s.add(ClaimedDomain(account_id=org.id, name=domain, token="t", created_by=ADMIN,
                            status="verified" if verified else "pending_verification",
                            verified_at=datetime.now(UTC) if verified else None))
        world = DomainWorld(org.id, domain)
        for key, spec in people.items():
            spec = spec or IndividualSpec(email="")
            spec.email = f"{key}@{domain}"
            spec.first_name = key.title()
            create_individual(s, settings.recordings_dir, spec)
            world.people[key] = spec.email
        create_individual(s, settings.recordings_dir,
                          IndividualSpec(email=f"off.{uuid.uuid4().hex[:6]}@example.com"))
        create_org(s, "Globex", owner=f"boss@{domain}", admins=(), locks={}, unlocked={},
                   group_locks={})
        s.commit()
    return world


def blocked_spec() -> IndividualSpec:
    """Blocked by 1009 as in the demo: the account still has another user (on the domain
    too, but a member, not an owner: the sweep does not find them)."""
    return IndividualSpec(email="", other_users=(f"olga.{uuid.uuid4().hex[:6]}@x.example",))


def person(engine: Engine, world: DomainWorld, key: str) -> DomainSweepPerson:
    with Session(engine) as s:
        row = s.exec(select(DomainSweepPerson).where(
            DomainSweepPerson.domain == world.domain,
            DomainSweepPerson.email == world.people[key])).one()
        return row


def status_of(engine: Engine, wid: str) -> str | None:
    with Session(engine) as s:
        row = s.get(Invitation, wid)
        return row.status if row else None


def notices(maildir: Path) -> list[email.message.Message]:
    found = []
    for sub in ("new", "cur"):
        for f in sorted((maildir / sub).glob("*")) if (maildir / sub).exists() else []:
            msg = email.message_from_bytes(f.read_bytes())
            if msg["X-Email-Kind"] == "domain_notice":
                found.append(msg)
    return found


async def progress(client: Client, world: DomainWorld) -> SweepProgress:
    return await client.get_workflow_handle(sweep_id(world.org_id, world.domain)).query(
        DomainWorkflow.progress)


async def until(client: Client, world: DomainWorld, check: Any, what: str,
                within: float = 40) -> SweepProgress:
    async def ok() -> SweepProgress | None:
        p = await progress(client, world)
        return p if check(p) else None
    return await eventually(ok, within=within, interval=0.1, what=what)  # type: ignore[no-any-return]


async def save_history(handle: WorkflowHandle[Any, Any], name: str) -> None:
    """With UPDATE_HISTORIES=1, commit this sweep's history (all its runs' last) for
    tests/test_replay_domain.py."""
    if os.environ.get("UPDATE_HISTORIES") != "1":
        return
    history = await handle.fetch_history()
    HISTORIES.mkdir(parents=True, exist_ok=True)
    (HISTORIES / f"{name}.json").write_text(history.to_json())


@pytest.fixture
async def dev_sweeps(dev_env: WorkflowEnvironment, settings: Settings, engine: Engine,
                     smtp: Path) -> AsyncIterator[SweepsClient]:
    async with new_worker(dev_env.client, settings, engine):
        yield SweepsClient(dev_env.client, settings, engine)
        await _end_leftovers(dev_env.client, engine)


async def _end_leftovers(client: Client, engine: Engine) -> None:
    """End whatever a failing test left running, before its worker stops."""
    with Session(engine) as s:
        ids = list(s.exec(select(Invitation.id)).all())
        ids += list({r.sweep_id for r in s.exec(select(DomainSweepPerson)).all()})
    for wid in ids:
        try:
            await client.get_workflow_handle(wid).terminate("test finished")
        except Exception:  # noqa: BLE001  (already ended)
            pass


# ------------------------------------------------------------------ refusals (no workflow)


async def test_a_sweep_needs_a_verified_domain_and_an_admin(
    dev_sweeps: SweepsClient, engine: Engine, settings: Settings,
) -> None:
    world = domain_world(engine, settings, verified=False, ann=None)
    with pytest.raises(DomainNotVerified) as err:
        await dev_sweeps.start(world.org_id, ADMIN, world.domain)
    assert err.value.field == "domain" and world.domain in err.value.message
    with pytest.raises(InvalidDomain) as bad:
        await dev_sweeps.start(world.org_id, ADMIN, "not a domain")
    assert bad.value.field == "domain"
    with write_session(engine) as s:
        claim = s.exec(select(ClaimedDomain)).one()
        claim.status = "verified"
        s.add(claim)
        s.commit()
    with pytest.raises(NotAnAdmin):
        await dev_sweeps.start(world.org_id, world.people["ann"], world.domain)
    with pytest.raises(InvalidRow) as grace_left:
        await dev_sweeps.start(world.org_id, ADMIN, world.domain, grace_sign_ins=-1)
    assert grace_left.value.field == "grace_sign_ins"
    with pytest.raises(InvalidRow) as mode:
        await dev_sweeps.start(world.org_id, ADMIN, world.domain, mode="everyone")
    assert mode.value.field == "mode"
    assert count_people(engine) == 0  # nothing started, nothing recorded


def count_people(engine: Engine) -> int:
    with Session(engine) as s:
        return len(s.exec(select(DomainSweepPerson)).all())


# ---------------------------------------------------------------------------- notify


async def test_notify_mails_each_person_once_even_when_swept_again(
    dev_sweeps: SweepsClient, dev_env: WorkflowEnvironment, engine: Engine,
    settings: Settings, smtp: Path,
) -> None:
    world = domain_world(engine, settings, ann=None, bob=None, blocked=blocked_spec())
    wid = await dev_sweeps.start(world.org_id, ADMIN, world.domain, mode="notify",
                                 message="Please join us", page_size=2)
    handle = dev_env.client.get_workflow_handle(wid, result_type=SweepResult)
    result = await asyncio.wait_for(handle.result(), 40)
    assert result.status == SweepStatus.COMPLETED
    assert (result.progress.counts.found, result.progress.counts.notified) == (3, 3)
    mails = notices(smtp)
    assert sorted(m["To"] for m in mails) == sorted(world.people.values())
    assert all("Please join us" in m.as_string() for m in mails)
    assert person(engine, world, "ann").state == "notified"
    await save_history(handle, "notify_completed")

    again = await dev_sweeps.start(world.org_id, ADMIN, world.domain, mode="notify")
    second = await asyncio.wait_for(
        dev_env.client.get_workflow_handle(again, result_type=SweepResult).result(), 40)
    assert (second.progress.counts.found, second.progress.counts.skipped,
            second.progress.counts.notified) == (3, 3, 0)
    assert len(notices(smtp)) == 3  # exactly once per person
    with Session(engine) as s:
        assert len(s.exec(select(SentEmail).where(SentEmail.kind == "domain_notice")).all()) == 3


@pytest.mark.sqlite_only
async def test_an_invite_sweep_after_a_notify_sweep_invites_the_people_notified(
    dev_sweeps: SweepsClient, dev_env: WorkflowEnvironment, engine: Engine,
    settings: Settings, smtp: Path,
) -> None:
    world = domain_world(engine, settings, nia=None, ole=None)
    told = await dev_sweeps.start(world.org_id, ADMIN, world.domain, mode="notify")
    first = await asyncio.wait_for(
        dev_env.client.get_workflow_handle(told, result_type=SweepResult).result(), 40)
    assert (first.status, first.progress.counts.notified) == (SweepStatus.COMPLETED, 2)
    assert person(engine, world, "nia").state == "notified"

    await dev_sweeps.start(world.org_id, ADMIN, world.domain, mode="invite")
    p = await until(dev_env.client, world, lambda p: p.status in (
        SweepStatus.WATCHING, SweepStatus.COMPLETED), "fan-out")  # all skipped: completed
    assert (p.counts.found, p.counts.invited, p.counts.skipped) == (2, 2, 0)
    assert p.status == SweepStatus.WATCHING
    for who in ("nia", "ole"):
        row = person(engine, world, who)
        assert (row.state, row.invitation_id) == ("invited", world.wid(who))
    done = await dev_sweeps.cancel(world.org_id, world.domain, revoke_started=True)
    assert done.counts.open == 0


# ---------------------------------------------------------------------------- invite


async def test_invite_sweep_brings_everyone_to_the_right_state(
    dev_sweeps: SweepsClient, dev_env: WorkflowEnvironment, engine: Engine,
    settings: Settings,
) -> None:
    """The issue's bar: paid, free, blocked by 1009, and one already invited (skipped)."""
    now = datetime.now(UTC)
    world = domain_world(
        engine, settings, paula=IndividualSpec(email="", price_minor=1500,
                                               period_start=now - timedelta(days=10),
                                               period_end=now + timedelta(days=20)),
        fran=None, blocked=blocked_spec(), early=None)
    invitations = InvitationsClient(dev_env.client, settings, engine)
    await invitations.invite(world.org_id, ADMIN, world.people["early"])  # by another path
    wid = await dev_sweeps.start(world.org_id, ADMIN, world.domain, mode="invite", window=2,
                                 tally_every=timedelta(seconds=1))
    p = await until(dev_env.client, world, lambda p: p.status == SweepStatus.WATCHING,
                    "the fan-out to end")
    assert (p.counts.found, p.counts.invited, p.counts.skipped) == (4, 3, 1)
    early = person(engine, world, "early")  # followed (tally, change-email), not started
    assert (early.state, early.invitation_id, early.reason) == (
        "invited", world.wid("early"), "already invited: an invitation is open")

    async def listed() -> set[str] | None:  # visibility is eventually consistent
        ids = {w.id async for w in dev_env.client.list_workflows(
            f'{sa.DOMAIN.name}="{world.domain}" AND WorkflowType="InvitationWorkflow"')}
        return ids if len(ids) == 3 else None
    assert await eventually(listed, within=20, what="children by InvitationDomain") == {
        world.wid("paula"), world.wid("fran"), world.wid("blocked")}

    paid = await invitations.accept(world.wid("paula"), AcceptRequest(
        refund_destination=RefundDestination.ORIGINAL_PAYMENT_METHOD))
    assert paid.outcome == "accepted"
    assert (await invitations.accept(world.wid("fran"))).outcome == "accepted"
    blocked = await invitations.accept(world.wid("blocked"))
    assert (blocked.outcome, blocked.error_code) == ("blocked", 1009)
    p = await until(dev_env.client, world, lambda p: p.counts.completed == 2,
                    "two joins to complete", within=60)
    # Open: the blocked one and early's (the tally follows the invitation it did not start).
    assert (p.counts.blocked, p.counts.open, p.status) == (1, 2, SweepStatus.WATCHING)
    with Session(engine) as s:
        paula = s.exec(select(User).where(User.email == world.people["paula"])).one()
        assert paula.account_id == world.org_id

    # Cancel, revoking what it started: the blocked invitation ends, the skipped one (not
    # the sweep's) stays open.
    handle = dev_env.client.get_workflow_handle(wid, result_type=SweepResult)
    done = await dev_sweeps.cancel(world.org_id, world.domain, revoke_started=True)
    assert done.status == SweepStatus.CANCELLED and done.counts.open == 1  # early's
    assert status_of(engine, world.wid("blocked")) == S.REVOKED.value
    assert status_of(engine, world.wid("early")) == S.PENDING.value
    assert (await handle.result()).status == SweepStatus.CANCELLED
    await save_history(handle, "invite_then_cancel_revoking")
    await invitations.revoke(world.wid("early"))


async def test_pause_worker_restart_resume_then_cancel_leaves_invitations_open(
    dev_env: WorkflowEnvironment, engine: Engine, settings: Settings, smtp: Path,
) -> None:
    world = domain_world(engine, settings, a=None, b=None, c=None, d=None)
    gate, entered = asyncio.Event(), asyncio.Event()
    real = real_activity(settings, engine, "find_domain_people")

    @activity.defn(name=activity_name(real))
    async def gated(req: FindPeople) -> PeoplePage:
        page: PeoplePage = await real(req)
        if req.after_user_id:
            entered.set()
        while req.after_user_id and not gate.is_set():  # the second page waits
            activity.heartbeat()
            await asyncio.sleep(0.05)
        return page

    sweeps = SweepsClient(dev_env.client, settings, engine)
    try:
        async with new_worker(dev_env.client, settings, engine,
                              activities=activities_with(settings, engine, gated)):
            wid = await sweeps.start(world.org_id, ADMIN, world.domain, mode="invite",
                                     page_size=2, window=1)
            await asyncio.wait_for(entered.wait(), 30)  # page one done, page two being read
            paused = await sweeps.pause(world.org_id, world.domain)
            assert paused.status == SweepStatus.PAUSED
            with pytest.raises(WorkflowRefused) as twice:
                await sweeps.pause(world.org_id, world.domain)
            assert twice.value.code == "sweep_already_paused"
            gate.set()
            # Page two arrived (found 4) and its starts are held by the pause.
            p = await until(dev_env.client, world, lambda p: p.counts.found == 4, "page two")
            assert p.counts.invited == 2 and p.status == SweepStatus.PAUSED
        # That worker is gone; a new one (no cache: it replays the history) takes over.
        async with new_worker(dev_env.client, settings, engine):
            await sweeps.resume(world.org_id, world.domain)
            await until(dev_env.client, world, lambda p: p.counts.invited == 4, "resumed")
            with pytest.raises(SweepAlreadyRunning):
                await sweeps.start(world.org_id, ADMIN, world.domain, mode="invite")
            done = await sweeps.cancel(world.org_id, world.domain)
            assert done.status == SweepStatus.CANCELLED
            assert "left open" in (done.reason or "")
            assert (done.counts.invited, done.counts.skipped) == (4, 0)  # nobody twice
            for key in world.people:  # started invitations go on
                assert status_of(engine, world.wid(key)) == S.PENDING.value
            status = await sweeps.status(world.org_id, world.domain)
            assert status.status == SweepStatus.CANCELLED
            await save_history(dev_env.client.get_workflow_handle(wid), "paused_resumed_cancelled")
    finally:
        await _end_leftovers(dev_env.client, engine)


@pytest.mark.sqlite_only
async def test_revoke_started_leaves_the_invitations_of_an_earlier_sweep_open(
    dev_sweeps: SweepsClient, dev_env: WorkflowEnvironment, engine: Engine,
    settings: Settings,
) -> None:
    """A first sweep is cancelled leaving its invitations open; a second sweep of the same
    domain (same workflow id) invites only the newcomer, and its cancel with
    --revoke-started revokes that one only."""
    world = domain_world(engine, settings, ann=None, bob=None)
    await dev_sweeps.start(world.org_id, ADMIN, world.domain, mode="invite")
    await until(dev_env.client, world, lambda p: p.status == SweepStatus.WATCHING, "fan-out")
    first = await dev_sweeps.cancel(world.org_id, world.domain)
    assert "left open" in (first.reason or "")
    with write_session(engine) as s:  # a newcomer after the first sweep
        create_individual(s, settings.recordings_dir, IndividualSpec(
            email=f"cal@{world.domain}", first_name="Cal"))
        s.commit()
    world.people["cal"] = f"cal@{world.domain}"
    await dev_sweeps.start(world.org_id, ADMIN, world.domain, mode="invite")
    p = await until(dev_env.client, world, lambda p: p.status == SweepStatus.WATCHING,
                    "second fan-out")
    assert (p.counts.found, p.counts.invited, p.counts.skipped) == (3, 1, 2)
    done = await dev_sweeps.cancel(world.org_id, world.domain, revoke_started=True)
    assert status_of(engine, world.wid("cal")) == S.REVOKED.value
    for key in ("ann", "bob"):  # the first sweep's: still open
        assert status_of(engine, world.wid(key)) == S.PENDING.value
    assert done.counts.open == 2
    for key in ("ann", "bob"):
        await InvitationsClient(dev_env.client, settings, engine).revoke(world.wid(key))


# ------------------------------------------------------------------- consolidation grace


@pytest.mark.sqlite_only
async def test_an_invitation_open_before_the_sweep_is_followed_and_revoked_on_email_change(
    dev_sweeps: SweepsClient, dev_env: WorkflowEnvironment, engine: Engine,
    settings: Settings,
) -> None:
    """Bob was invited by hand before the consolidation: the sweep does not start a second
    invitation, but records his (invited, its id), so the tally counts it and his email
    change revokes it."""
    world = domain_world(engine, settings, bob=None, amy=None)
    invitations = InvitationsClient(dev_env.client, settings, engine)
    await invitations.invite(world.org_id, ADMIN, world.people["bob"])
    await dev_sweeps.start(world.org_id, ADMIN, world.domain, mode="consolidate")
    p = await until(dev_env.client, world, lambda p: p.status == SweepStatus.WATCHING and
                    p.counts.open == 2, "fan-out and the count")
    assert (p.counts.found, p.counts.invited, p.counts.skipped) == (2, 1, 1)  # not twice
    bob = person(engine, world, "bob")
    assert (bob.state, bob.invitation_id, bob.reason) == (
        "invited", world.wid("bob"), "already invited: an invitation is open")
    new = f"bob.{uuid.uuid4().hex[:6]}@elsewhere.example"
    changed = await dev_sweeps.change_email(world.people["bob"], new)
    assert changed["revoked"] == [world.wid("bob")]
    assert status_of(engine, world.wid("bob")) == S.REVOKED.value
    row = person(engine, world, "bob")
    assert (row.state, row.invitation_id, row.new_email) == (
        "email_changed", world.wid("bob"), new)
    p = await until(dev_env.client, world, lambda p: p.counts.email_changed == 1,
                    "the email change counted")
    assert p.counts.open == 1  # amy's
    done = await dev_sweeps.cancel(world.org_id, world.domain, revoke_started=True)
    assert done.counts.open == 0




@pytest.mark.sqlite_only
async def test_consolidation_grace_then_email_change(
    dev_sweeps: SweepsClient, dev_env: WorkflowEnvironment, engine: Engine,
    settings: Settings,
) -> None:
    now = datetime.now(UTC)
    world = domain_world(engine, settings, cara=None, eve=None, dan=IndividualSpec(
        email="", price_minor=900, period_start=now - timedelta(days=5),
        period_end=now + timedelta(days=25)))
    wid = await dev_sweeps.start(world.org_id, ADMIN, world.domain, mode="consolidate",
                                 grace_sign_ins=1)
    await until(dev_env.client, world, lambda p: p.status == SweepStatus.WATCHING, "fan-out")
    cara = world.people["cara"]
    # The first sign-in tells them and leaves 1 more; the third must choose.
    first = await dev_sweeps.sign_in(cara.upper())
    assert (first.in_consolidation, first.grace_left, first.must_choose) == (True, 1, False)
    second = await dev_sweeps.sign_in(cara)
    assert (second.sign_ins, second.grace_left, second.must_choose) == (2, 0, False)
    assert "0 more time(s)" in second.message
    third = await dev_sweeps.sign_in(cara)
    assert (third.sign_ins, third.grace_left, third.must_choose) == (3, 0, True)
    assert "must choose" in third.message
    await until(dev_env.client, world, lambda p: p.counts.must_choose == 1, "must choose")
    stranger = await dev_sweeps.sign_in(f"x.{uuid.uuid4().hex[:6]}@example.com")
    assert stranger.in_consolidation is False and stranger.grace_left is None

    # The email change: refused (nothing changed) while still on the domain or taken.
    dan, new = world.people["dan"], f"dan.{uuid.uuid4().hex[:6]}@elsewhere.example"
    with pytest.raises(StillOnDomain) as same:
        await dev_sweeps.change_email(dan, f"daniel@{world.domain}")
    assert same.value.field == "new_email"
    with pytest.raises(EmailInUse):
        await dev_sweeps.change_email(dan, "owner@acme.test")
    assert status_of(engine, world.wid("dan")) == S.PENDING.value
    # Dan accepted (his claim is taken) and has not chosen where his refund goes yet.
    invitations = InvitationsClient(dev_env.client, settings, engine)
    assert (await invitations.accept(world.wid("dan"))).outcome == "refund_choice_needed"
    with Session(engine) as s:
        assert s.get(JoinClaim, dan) is not None
    changed = await dev_sweeps.change_email(dan, new)
    assert changed["revoked"] == [world.wid("dan")]
    assert status_of(engine, world.wid("dan")) == S.REVOKED.value
    row = person(engine, world, "dan")
    assert (row.state, row.new_email) == ("email_changed", new)
    assert row.reason == f"changed their email to {new}, off {world.domain}"
    with Session(engine) as s:
        assert s.exec(select(User).where(User.email == new)).one()
        assert s.get(JoinClaim, dan) is None  # released
        revoked = s.exec(select(AuditEvent).where(AuditEvent.invitation_id == world.wid("dan"),
                                                  AuditEvent.kind == "revoked")).one()
        assert revoked.detail["reason"] == row.reason
    p = await until(dev_env.client, world, lambda p: p.counts.email_changed == 1,
                    "the email change counted")
    assert (p.counts.open, p.counts.ended) == (2, 0)  # counted as an email change

    done = await dev_sweeps.cancel(world.org_id, world.domain, revoke_started=True)
    assert done.counts.open == 0
    await save_history(dev_env.client.get_workflow_handle(wid), "consolidate_grace_email_changed")


@pytest.mark.sqlite_only
async def test_a_sign_in_retried_with_the_same_key_counts_once_and_tally_waits_for_rows(
    engine: Engine, settings: Settings,
) -> None:
    world = domain_world(engine, settings, gus=None)
    acts = DomainSweepActivities(settings, engine)
    env = ActivityEnvironment()
    await env.run(acts.find_people, FindPeople(
        account_id=world.org_id, domain=world.domain, sweep_id="s", mode=SweepMode.CONSOLIDATE,
        after_user_id=0, limit=10))
    with write_session(engine) as s:  # invited; the invitation has not registered yet
        row = s.exec(select(DomainSweepPerson)).one()
        row.state, row.invitation_id = "invited", world.wid("gus")
        s.add(row)
        s.commit()
    tally = Tally(account_id=world.org_id, domain=world.domain, grace_sign_ins=3)
    assert (await env.run(acts.tally, tally)).open == 1  # still open: the sweep watches on
    with write_session(engine) as s:
        s.add(Invitation(id=world.wid("gus"), account_id=world.org_id, invited_by_user_id=1,
                         email=world.people["gus"], expires_at=datetime.now(UTC)))
        s.commit()
    req = RecordSignIn(account_id=world.org_id, domain=world.domain, email=world.people["gus"],
                       key="k1", grace_sign_ins=3, consolidating=True)
    assert (await env.run(acts.record_sign_in, req)).sign_ins == 1
    assert (await env.run(acts.record_sign_in, req)).sign_ins == 1  # the retry
    again = await env.run(acts.record_sign_in, req.model_copy(update={"key": "k2"}))
    assert (again.sign_ins, again.grace_left) == (2, 2)  # the first told them, 3 more
    # The first sign-in tells them and leaves 3 more; the fifth must choose.
    assert [grace(n, 3) for n in range(1, 7)] == [(3, False), (2, False), (1, False),
                                                  (0, False), (0, True), (0, True)]
    assert [grace(n, 0) for n in range(1, 3)] == [(0, False), (0, True)]
    for k in range(3, 6):  # to the 5th sign-in: only then does the tally count them
        assert (await env.run(acts.tally, tally)).must_choose == 0
        last = await env.run(acts.record_sign_in, req.model_copy(update={"key": f"k{k}"}))
        assert (last.sign_ins, last.grace_left, last.must_choose) == (k, max(0, 4 - k), k == 5)
    assert (await env.run(acts.tally, tally)).must_choose == 1


# --------------------------------------------- long sweeps: continue-as-new, days passing


@pytest.mark.sqlite_only
async def test_continue_as_new_carries_cursor_and_counts(  # the dev server: no days pass
    dev_env: WorkflowEnvironment, engine: Engine, settings: Settings, smtp: Path,
) -> None:
    world = domain_world(engine, settings, **{f"p{i}": None for i in range(5)})  # type: ignore[arg-type]
    sweeps = SweepsClient(dev_env.client, settings, engine)
    async with new_worker(dev_env.client, settings, engine):
        wid = await sweeps.start(world.org_id, ADMIN, world.domain, mode="notify",
                                 page_size=1, history_limit=20)
        handle = dev_env.client.get_workflow_handle(wid, result_type=SweepResult)
        result = await asyncio.wait_for(handle.result(), 60)
    assert result.status == SweepStatus.COMPLETED
    assert result.progress.runs >= 3  # each run handled a page or two
    assert (result.progress.counts.found, result.progress.counts.notified) == (5, 5)
    assert sorted(m["To"] for m in notices(smtp)) == sorted(world.people.values())
    await save_history(handle, "notify_continued_as_new")


@pytest.mark.sqlite_only
async def test_invite_sweep_watches_until_every_invitation_ended(
    dev_sweeps: SweepsClient, dev_env: WorkflowEnvironment, engine: Engine,
    settings: Settings,
) -> None:
    """One declines, one is revoked: the sweep's count sees every invitation ended and the
    sweep completes by itself."""
    world = domain_world(engine, settings, hal=None, ida=None)
    invitations = InvitationsClient(dev_env.client, settings, engine)
    wid = await dev_sweeps.start(world.org_id, ADMIN, world.domain, mode="invite",
                                 tally_every=timedelta(seconds=1))
    await until(dev_env.client, world, lambda p: p.status == SweepStatus.WATCHING, "fan-out")
    await invitations.decline(world.wid("hal"))
    await invitations.revoke(world.wid("ida"), reason="changed our mind")
    handle = dev_env.client.get_workflow_handle(wid, result_type=SweepResult)
    result = await asyncio.wait_for(handle.result(), 30)
    assert result.status == SweepStatus.COMPLETED
    c = result.progress.counts
    assert (c.invited, c.open, c.ended) == (2, 0, 2)
    assert (status_of(engine, world.wid("hal")), status_of(engine, world.wid("ida"))) == (
        S.DECLINED.value, S.REVOKED.value)
    await save_history(handle, "invite_watched_until_all_ended")


@pytest.mark.sqlite_only
async def test_the_workflow_itself_refuses_an_unverified_domain(
    ts_env: WorkflowEnvironment, engine: Engine, settings: Settings,
) -> None:
    """Started without the client's checks (or after the claim was lost)."""
    world = domain_world(engine, settings, verified=False, jo=None)
    async with new_worker(ts_env.client, settings, engine):
        handle = await ts_env.client.start_workflow(
            DomainWorkflow.run, SweepInput(account_id=world.org_id, domain=world.domain,
                                           started_by=ADMIN, mode=SweepMode.INVITE),
            id=sweep_id(world.org_id, world.domain), task_queue=settings.task_queue)
        result = await handle.result()
        await save_history(handle, "refused_unverified")
    assert result.status == SweepStatus.REFUSED
    assert result.progress.reason == (f"{world.domain} is not a verified domain of account "
                                      f"{world.org_id}: verify it first")
    assert count_people(engine) == 0


# ---------------------------------------------------------------------- the command line


@pytest.mark.sqlite_only
async def test_starter_domain_commands(
    dev_sweeps: SweepsClient, dev_env: WorkflowEnvironment, engine: Engine,
    settings: Settings,
) -> None:
    from tests.test_starter import Starter

    run = Starter(settings, dev_env.client.service_client.config.target_host)
    world = domain_world(engine, settings, kim=None)
    which = ["--account", str(world.org_id), world.domain]
    started = await run("domain", "sweep", *which, "--by", ADMIN, "--mode", "consolidate",
                        "--grace", "0", "--json")
    assert started.code == 0, started.err
    assert started.json["sweep_id"] == sweep_id(world.org_id, world.domain)
    await until(dev_env.client, world, lambda p: p.status == SweepStatus.WATCHING, "fan-out")
    status = await run("domain", "status", *which, "--json")
    assert status.code == 0, status.err
    assert (status.json["status"], status.json["counts"]["invited"]) == ("watching", 1)
    for must in (False, True):  # --grace 0: the first sign-in tells them, the next must choose
        signed = await run("--json", "domain", "sign-in", world.people["kim"])
        assert signed.code == 0, signed.err
        assert (signed.json["grace_left"], signed.json["must_choose"]) == (0, must)
    refused = await run("domain", "change-email", world.people["kim"],
                        f"kimberly@{world.domain}", "--json")
    assert refused.code == 1
    assert refused.json["error"]["code"] == "still_on_domain"
    assert refused.json["error"]["field"] == "new_email"
    cancelled = await run("domain", "cancel", *which, "--revoke-started")
    assert cancelled.code == 0, cancelled.err
    assert "Cancelled." in cancelled.out and "cancelled" in cancelled.out
    assert status_of(engine, world.wid("kim")) == S.REVOKED.value


@pytest.mark.sqlite_only
def test_demo_domain_seed_is_idempotent_and_found_by_the_sweep(
    engine: Engine, settings: Settings,
) -> None:
    from domains.sweep_demo import DEMO_DOMAIN, DEMO_PEOPLE, seed_domain_demo

    first = seed_domain_demo(engine, settings.recordings_dir)
    second = seed_domain_demo(engine, settings.recordings_dir)
    assert (first["created"], second["created"]) == (True, False)
    page = DomainSweepActivities(settings, engine)._find(FindPeople(
        account_id=first["account_id"], domain=DEMO_DOMAIN, sweep_id="s",
        mode=SweepMode.INVITE, after_user_id=0, limit=10))
    # The owners of the three individual accounts; not the other user of Otto's account.
    assert sorted(p.email for p in page.people) == sorted(DEMO_PEOPLE.values())
    assert page.last
