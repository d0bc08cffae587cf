"""Races at the system of record: competitors in threads released by one barrier, each on
its own database connection, repeated enough to catch a 1-in-100 interleaving. Each test
asserts exactly one winner (or an exact sum) and a refusal for every loser.

On the first wave's code each of these fails: acceptances took no claim (both companies
linked the person), a seat was counted by a read that took no lock on SQLite, and a credit
was `balance += amount` in Python (two credits of 500 and 700 ended at 700).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, func
from sqlmodel import Session, select

from activities.platform import PlatformActivities
from config import Settings
from demo.seed import IndividualSpec, create_individual, create_org
from messages.activity_io import (
    AcceptanceCheck,
    LinkMember,
    PayRefund,
    RegisterInvitation,
    StatusChange,
)
from messages.payloads import InvitationInput, InvitationStatus, RefundDestination, UserType
from records.ids import invitation_id
from records.tables import Account, JoinClaim, RefundLedger, Subscription, User
from tests.concurrency_helpers import at_once, exceptions

ROUNDS = 100
NOW = datetime.now(UTC)


def _orgs(engine: Engine, n: int = 2, seats: int = 50) -> list[int]:
    with Session(engine) as session:
        ids = []
        for i in range(n):
            org = create_org(session, f"Org{i}", owner=f"owner@org{i}.test",
                             admins=(f"admin@org{i}.test",), seats=seats)
            ids.append(org.id)
        session.commit()
        return [i for i in ids if i is not None]


def _people(engine: Engine, settings: Settings, prefix: str, n: int,
            price_minor: int = 0) -> list[str]:
    with Session(engine) as session:
        emails = [f"{prefix}{i}@example.com" for i in range(n)]
        for email in emails:
            create_individual(session, settings.recordings_dir, IndividualSpec(
                email=email, price_minor=price_minor, chat=0, meetings=0, contacts=0,
                period_start=NOW - timedelta(days=10), period_end=NOW + timedelta(days=20)))
        session.commit()
        return emails


def _check(org: int, email: str, user_type: UserType = UserType.BASIC) -> AcceptanceCheck:
    return AcceptanceCheck(invitation_id=invitation_id(org, email), account_id=org,
                           email=email, user_type=user_type, group=None, at=NOW)


def test_two_companies_one_person_exactly_one_claim(engine: Engine, settings: Settings) -> None:
    acts = PlatformActivities(settings, engine)
    org_a, org_b = _orgs(engine)
    people = _people(engine, settings, "twice", ROUNDS)
    for email in people:
        results = at_once([lambda o=o, e=email: acts._check_acceptance(_check(o, e))
                           for o in (org_a, org_b)])
        assert exceptions(results) == []
        refusals = [r.refusal for r in results]  # type: ignore[union-attr]
        winners = [r for r in refusals if r is None]
        losers = [r for r in refusals if r is not None]
        assert len(winners) == 1 and len(losers) == 1, (email, refusals)
        assert losers[0].kind == "already_joining"
    with Session(engine) as session:
        claims = session.exec(select(JoinClaim)).all()
    assert sorted(c.email for c in claims) == sorted(people)
    # The loser cannot link: link_member insists on holding the claim.
    for claim in claims[:10]:
        loser = org_b if claim.org_account_id == org_a else org_a
        try:
            acts._link_member(LinkMember(invitation_id=invitation_id(loser, claim.email),
                                         account_id=loser, email=claim.email,
                                         user_type=UserType.BASIC, group=None))
        except Exception as exc:  # noqa: BLE001
            assert getattr(exc, "type", None) == "ClaimLost"
        else:
            raise AssertionError("the loser linked")


def test_last_licensed_seat_goes_to_exactly_one(engine: Engine, settings: Settings) -> None:
    acts = PlatformActivities(settings, engine)
    # Owner and admin hold two licensed seats; each round frees exactly one more.
    [org] = _orgs(engine, 1, seats=2)
    for round_ in range(ROUNDS // 4):
        with Session(engine) as session:
            account = session.get(Account, org)
            assert account is not None
            account.licensed_seats += 1
            session.add(account)
            session.commit()
        people = _people(engine, settings, f"seat{round_}-", 3)
        results = at_once([lambda e=e: acts._check_acceptance(
            _check(org, e, UserType.LICENSED)) for e in people])
        assert exceptions(results) == []
        refusals = [r.refusal for r in results]  # type: ignore[union-attr]
        assert sum(r is None for r in refusals) == 1, (round_, refusals)
        assert all(r.kind == "no_free_seat" for r in refusals if r is not None)
        winner = people[refusals.index(None)]
        acts._link_member(LinkMember(invitation_id=invitation_id(org, winner), account_id=org,
                                     email=winner, user_type=UserType.LICENSED, group=None))
    with Session(engine) as session:
        licensed = session.exec(select(func.count()).select_from(User).where(
            User.account_id == org, User.user_type == "licensed")).one()
        seats = session.get(Account, org).licensed_seats  # type: ignore[union-attr]
    assert licensed == seats


def test_two_credits_to_one_organisation_add_up(engine: Engine, settings: Settings) -> None:
    acts = PlatformActivities(settings, engine)
    [org] = _orgs(engine, 1)
    people = _people(engine, settings, "credit", 2 * ROUNDS, price_minor=1500)
    with Session(engine) as session:
        sources = {u.email: u.account_id for u in session.exec(select(User)).all()}
    expected = 0
    for a, b in zip(people[::2], people[1::2], strict=True):
        results = at_once([lambda e=e: acts._pay_refund(PayRefund(
            invitation_id=invitation_id(org, e), source_account_id=sources[e],
            org_account_id=org, destination=RefundDestination.ACCOUNT_CREDIT, at=NOW))
            for e in (a, b)])
        assert exceptions(results) == []
        expected += sum(r.amount_minor for r in results)  # type: ignore[union-attr]
    with Session(engine) as session:
        balance = session.get(Account, org).credit_balance_minor  # type: ignore[union-attr]
        ledger = session.exec(select(func.sum(RefundLedger.amount_minor))).one()
        ended = session.exec(select(func.count()).select_from(Subscription).where(
            Subscription.status == "ended")).one()
    assert expected > 0 and balance == expected == ledger
    assert ended == len(people)


def test_one_refund_however_many_attempts_overlap(engine: Engine, settings: Settings) -> None:
    """Overlapping attempts of one pay_refund (a timed-out attempt still running while its
    retry starts) pay once: the subscription ends once and one ledger row exists."""
    acts = PlatformActivities(settings, engine)
    [org] = _orgs(engine, 1)
    people = _people(engine, settings, "overlap", ROUNDS // 2, price_minor=999)
    with Session(engine) as session:
        sources = {u.email: u.account_id for u in session.exec(select(User)).all()}
    for email in people:
        req = PayRefund(invitation_id=invitation_id(org, email), source_account_id=sources[email],
                        org_account_id=org, destination=RefundDestination.ACCOUNT_CREDIT, at=NOW)
        results = at_once([lambda r=req: acts._pay_refund(r)] * 3)
        assert exceptions(results) == []
        assert len({r.idempotency_key for r in results}) == 1  # type: ignore[union-attr]
    with Session(engine) as session:
        rows = session.exec(select(RefundLedger)).all()
        balance = session.get(Account, org).credit_balance_minor  # type: ignore[union-attr]
    assert len(rows) == len(people)
    assert balance == sum(r.amount_minor for r in rows)


def test_mixed_case_email_is_the_same_person(engine: Engine, settings: Settings) -> None:
    [org] = _orgs(engine, 1)
    with Session(engine) as session:
        user = create_individual(session, settings.recordings_dir,
                                 IndividualSpec(email="legacy.upper@example.com"))
        session.commit()
        uid = user.id
        # A row written before emails were normalised: mixed case, as stored then.
        session.connection().exec_driver_sql(
            f"UPDATE \"user\" SET email = 'Legacy.Upper@Example.com' WHERE id = {uid}")
        session.commit()
    acts = PlatformActivities(settings, engine)
    facts = acts._check_acceptance(_check(org, "legacy.upper@example.com"))
    assert facts.user_id == uid and facts.refusal is None
    membership = acts._link_member(LinkMember(
        invitation_id=invitation_id(org, "legacy.upper@example.com"), account_id=org,
        email="legacy.upper@example.com", user_type=UserType.BASIC, group=None))
    assert membership.user_id == uid and not membership.created_user
    with Session(engine) as session:
        same = session.exec(select(func.count()).select_from(User).where(
            func.lower(User.email) == "legacy.upper@example.com")).one()
    assert same == 1


def test_an_invitation_ending_while_its_acceptance_is_checked_keeps_no_claim(
    engine: Engine, settings: Settings,
) -> None:
    """A decline (or revoke, expiry) recorded while the acceptance check runs: whichever
    commits first, the person is left free to join another account."""
    acts = PlatformActivities(settings, engine)
    [org] = _orgs(engine, 1)
    for email in _people(engine, settings, "ending", ROUNDS):
        inv = invitation_id(org, email)
        acts._register_invitation(RegisterInvitation(
            invitation_id=inv, invited_at=NOW, expires_at=NOW + timedelta(days=30),
            input=InvitationInput(account_id=org, invited_by="admin@org0.test", email=email)))
        ended = StatusChange(invitation_id=inv, status=InvitationStatus.DECLINED, at=NOW,
                             event="declined")
        results = at_once([lambda e=email: acts._check_acceptance(_check(org, e)),
                           lambda c=ended: acts._record_status(c)])
        assert exceptions(results) == []
    with Session(engine) as session:
        assert session.exec(select(JoinClaim)).all() == []


def test_an_audit_event_is_written_once_however_many_attempts_overlap(engine: Engine) -> None:
    """Attempts of one step at the same time (a local activity timed out while still
    running, then retried) write its event once: exactly one reports it written."""
    from records.changes import insert_event_once
    from records.db import write_transaction
    from records.tables import AuditEvent

    def attempt(n: int) -> bool:
        with write_transaction(engine) as conn:
            return insert_event_once(conn, invitation_id=f"inv-{n}", kind="accepted", at=NOW,
                                     account_id=None, detail={})

    for n in range(ROUNDS):
        results = at_once([lambda n=n: attempt(n) for _ in range(3)])
        assert exceptions(results) == [] and sorted(results) == [False, False, True], results
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(AuditEvent)).one() == ROUNDS
