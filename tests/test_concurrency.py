"""What happens at once, end to end: two production worker processes on one task queue of
the dev server, every acceptance fired together. One person joins one account, the last
licensed seat goes to one invitee, a refund choice racing a revoke has one winner, and
every loser is refused at once, never told "accepted"."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment

from config import Settings
from demo.seed import IndividualSpec, create_individual, create_org
from invitations.client import InvitationsClient
from invitations.errors import InvitationError
from invitations.models import InviteRequest
from messages.payloads import (
    AcceptRequest,
    InvitationStatus,
    RefundChoice,
    RefundDestination,
)
from records.db import write_session
from records.tables import Account, ChatMessage, JoinClaim, RefundLedger, Subscription, User
from tests.concurrency_helpers import wait_for_pollers, worker_processes
from tests.workflow_helpers import eventually, mails, save_history

PAIRS = 40
NOW = datetime.now(UTC)
ORIGINAL = RefundDestination.ORIGINAL_PAYMENT_METHOD


def _address(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


def _org(session: Session, name: str, seats: int = 200) -> int:
    domain = name.lower()
    org = create_org(session, name, owner=f"owner@{domain}.test",
                     admins=(f"admin@{domain}.test",), seats=seats)
    assert org.id is not None
    return org.id


def _person(session: Session, settings: Settings, email: str, paid: bool) -> None:
    create_individual(session, settings.recordings_dir, IndividualSpec(
        email=email, price_minor=1500 if paid else 0, chat=20, meetings=1, contacts=1,
        period_start=NOW - timedelta(days=10), period_end=NOW + timedelta(days=20)))


async def _invite(client: InvitationsClient, org: int, by: str, emails: list[str],
                  user_type: str = "basic") -> dict[str, str]:
    rows = await client.invite_many([InviteRequest(account_id=org, invited_by=by, email=e,
                                                   user_type=user_type) for e in emails])
    assert all(r.error is None for r in rows), [r.error for r in rows if r.error]
    return {r.email: r.invitation_id for r in rows if r.invitation_id}


async def _status(client: InvitationsClient, inv: str) -> InvitationStatus:
    return (await client.status(inv)).status


@pytest.fixture
def tag() -> str:
    """Each test's invitees are new people: the [sqlite] and [postgresql] runs share one
    dev server, where an invitation id the other run left open would take the messages."""
    return uuid.uuid4().hex[:6]


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


async def test_two_companies_one_person_one_join(
    dev_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path, logs: Path,
    tag: str,
) -> None:
    emails = [f"pair{i}.{tag}@example.com" for i in range(PAIRS)]
    with Session(engine) as session:
        acme, globex = _org(session, "Acme"), _org(session, "Globex")
        for i, email in enumerate(emails):
            _person(session, settings, email, paid=i % 2 == 0)
        session.commit()
    client = InvitationsClient(dev_env.client, settings, engine)
    by_acme = await _invite(client, acme, "admin@acme.test", emails)
    by_globex = await _invite(client, globex, "admin@globex.test", emails)
    names = {acme: "Acme", globex: "Globex"}

    with worker_processes(settings, _address(dev_env), n=2, logs=logs):
        await wait_for_pollers(dev_env.client, settings.task_queue, 2)
        accepts = [(email, org, inv) for email in emails
                   for org, inv in ((acme, by_acme[email]), (globex, by_globex[email]))]
        go = asyncio.Event()

        async def accept(inv: str) -> Any:
            await go.wait()
            return await client.accept(inv, AcceptRequest(refund_destination=ORIGINAL))

        tasks = [asyncio.ensure_future(accept(inv)) for _, _, inv in accepts]
        go.set()
        outcomes = await asyncio.gather(*tasks)

        winners: dict[str, int] = {}
        for email in emails:
            mine = [(org, o) for (e, org, _), o in zip(accepts, outcomes, strict=True)
                    if e == email]
            accepted = [org for org, o in mine if o.outcome == "accepted"]
            refused = [o for _, o in mine if o.outcome != "accepted"]
            assert len(accepted) == 1 and len(refused) == 1, (email, mine)
            winners[email] = accepted[0]
            # Refused at once: joining elsewhere, or (when the winner finished first)
            # already joined elsewhere. Never "accepted".
            assert (refused[0].outcome, refused[0].error_code) in {
                ("already_joining", "already_joining_another_account"),
                ("joined_elsewhere", "joined_another_account")}, refused[0]
            assert refused[0].joining_account_name == names[accepted[0]]
            assert names[accepted[0]] in refused[0].message

        invs = {email: (by_acme if org == acme else by_globex)[email]
                for email, org in winners.items()}
        losers = {email: (by_globex if org == acme else by_acme)[email]
                  for email, org in winners.items()}

        async def all_completed() -> bool:
            done = await asyncio.gather(*[_status(client, i) for i in invs.values()])
            return all(s == InvitationStatus.COMPLETED for s in done)

        await eventually(all_completed, within=240, interval=1, what="every winner completed")
        for inv in losers.values():  # open (it can be accepted if the join fails)
            outcome = [o for (e, _, i), o in zip(accepts, outcomes, strict=True)
                       if i == inv][0]
            assert await _status(client, inv) == (
                InvitationStatus.PENDING if outcome.outcome == "already_joining"
                else InvitationStatus.JOINED_ELSEWHERE)

        with Session(engine) as session:
            for email, org in winners.items():
                users = session.exec(select(User).where(
                    func.lower(User.email) == email)).all()
                assert len(users) == 1 and users[0].account_id == org
                other = globex if org == acme else acme
                assert session.exec(select(func.count()).select_from(ChatMessage).where(
                    ChatMessage.user_id == users[0].id, ChatMessage.account_id == other,
                )).one() == 0
                assert session.exec(select(func.count()).select_from(ChatMessage).where(
                    ChatMessage.user_id == users[0].id, ChatMessage.account_id == org,
                )).one() == 20
                assert session.exec(select(func.count()).select_from(RefundLedger).where(
                    RefundLedger.invitation_id == losers[email])).one() == 0
                assert session.exec(select(func.count()).select_from(RefundLedger).where(
                    RefundLedger.invitation_id == invs[email])).one() <= 1
                claim = session.get(JoinClaim, email)
                assert claim is not None and claim.invitation_id == invs[email]

        # Accepting the loser now: the person has joined elsewhere, so it ends, clearly.
        some = [e for e in emails
                if await _status(client, losers[e]) == InvitationStatus.PENDING][:4]
        again = await asyncio.gather(*[client.accept(losers[e]) for e in some])
        for email, outcome in zip(some, again, strict=True):
            assert outcome.outcome == "joined_elsewhere"
            assert outcome.joining_account_name == names[winners[email]]
            assert await _status(client, losers[email]) == InvitationStatus.JOINED_ELSEWHERE
        for email in some:  # the admin is told too
            await eventually(lambda e=email: "admin_joined_elsewhere" in mails(engine, losers[e]),
                             what="the admin's joined-elsewhere mail")
        await save_history(dev_env.client.get_workflow_handle(losers[some[0]]),  # type: ignore[arg-type]
                           "refused_already_joining_then_joined_elsewhere")


async def test_last_licensed_seat_goes_to_one_invitee(
    dev_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path, logs: Path,
    tag: str,
) -> None:
    rounds, contenders = 3, 5
    with Session(engine) as session:
        org = _org(session, "Initech", seats=2)  # owner and admin hold both
        people = [[f"seat{r}-{i}.{tag}@example.com" for i in range(contenders)]
                  for r in range(rounds)]
        for group in people:
            for email in group:
                _person(session, settings, email, paid=False)
        session.commit()
    client = InvitationsClient(dev_env.client, settings, engine)
    with worker_processes(settings, _address(dev_env), n=2, logs=logs):
        await wait_for_pollers(dev_env.client, settings.task_queue, 2)
        for group in people:
            with write_session(engine) as session:  # one more seat, then everybody invited
                account = session.get(Account, org)
                assert account is not None
                account.licensed_seats += contenders
                session.add(account)
                session.commit()
            invs = await _invite(client, org, "admin@initech.test", group, "licensed")
            with write_session(engine) as session:  # ...and all but one seat taken back
                account = session.get(Account, org)
                assert account is not None
                account.licensed_seats -= contenders - 1
                session.add(account)
                session.commit()
            outcomes = await asyncio.gather(*[client.accept(invs[e]) for e in group])
            kinds = sorted(o.outcome for o in outcomes)
            assert kinds == ["accepted"] + ["no_free_seat"] * (contenders - 1), kinds
            winner = group[[o.outcome for o in outcomes].index("accepted")]
            await eventually(lambda i=invs[winner]: _is_completed(client, i), within=120,
                             interval=0.5, what="the seat's winner completed")
            for email in group:
                if email != winner:  # refused, still open; then withdrawn by the admin
                    assert await _status(client, invs[email]) == InvitationStatus.PENDING
                    await client.revoke(invs[email])
        with Session(engine) as session:
            licensed = session.exec(select(func.count()).select_from(User).where(
                User.account_id == org, User.user_type == "licensed")).one()
            assert licensed == session.get(Account, org).licensed_seats  # type: ignore[union-attr]


async def _is_completed(client: InvitationsClient, inv: str) -> bool:
    return await _status(client, inv) == InvitationStatus.COMPLETED


async def test_refund_choice_racing_a_revoke_has_one_winner(
    dev_env: WorkflowEnvironment, settings: Settings, engine: Engine, smtp: Path, logs: Path,
    tag: str,
) -> None:
    n = 12
    emails = [f"race{i}.{tag}@example.com" for i in range(n)]
    with Session(engine) as session:
        org = _org(session, "Umbrella")
        for email in emails:
            _person(session, settings, email, paid=True)
        session.commit()
    client = InvitationsClient(dev_env.client, settings, engine)
    invs = await _invite(client, org, "admin@umbrella.test", emails)
    with worker_processes(settings, _address(dev_env), n=2, logs=logs):
        await wait_for_pollers(dev_env.client, settings.task_queue, 2)
        first = await asyncio.gather(*[client.accept(invs[e]) for e in emails])
        assert {o.outcome for o in first} == {"refund_choice_needed"}

        async def attempt(call: Any) -> Any:
            try:
                return await call
            except InvitationError as exc:
                return exc

        calls = []
        for email in emails:
            calls.append(attempt(client.choose_refund(invs[email],
                                                      RefundChoice(destination=ORIGINAL))))
            calls.append(attempt(client.revoke(invs[email], by="admin@umbrella.test")))
        results = await asyncio.gather(*calls)
        for i, email in enumerate(emails):
            choice, revoke = results[2 * i], results[2 * i + 1]
            won = [not isinstance(r, InvitationError) for r in (choice, revoke)]
            assert sum(won) == 1, (email, choice, revoke)
            inv = invs[email]
            if won[1]:  # revoked: nothing paid, nothing moved, the claim released
                assert await _status(client, inv) == InvitationStatus.REVOKED
            else:
                await eventually(lambda i=inv: _is_completed(client, i), within=120,
                                 interval=0.5, what="the accepted one completed")
        with Session(engine) as session:
            for email in emails:
                refunds = session.exec(select(RefundLedger).where(
                    RefundLedger.invitation_id == invs[email])).all()
                user = session.exec(select(User).where(User.email == email)).one()
                sub = session.exec(select(Subscription).where(
                    Subscription.account_id == user.account_id)).first()
                if user.account_id == org:
                    assert len(refunds) == 1 and refunds[0].amount_minor > 0
                else:
                    assert refunds == [] and session.get(JoinClaim, email) is None
                    assert sub is not None and sub.status == "active"
