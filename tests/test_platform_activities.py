"""Unit tier: the platform activities (record, link, refund) against a real
SQLite database, run outside a worker with ActivityEnvironment. Each is run twice where
a retry could happen, to prove it is idempotent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.platform import PlatformActivities
from config import Settings
from demo.seed import IndividualSpec, create_individual, create_org
from messages.activity_io import (
    ERR_CLAIM_LOST,
    ERR_SEATS_EXHAUSTED,
    AcceptanceCheck,
    LinkMember,
    PayRefund,
    RegisterInvitation,
    ReverseRefund,
    StatusChange,
)
from messages.payloads import (
    InvitationInput,
    InvitationStatus,
    RefundDestination,
    UserType,
)
from records.ids import invitation_id
from records.tables import (
    Account,
    AuditEvent,
    Invitation,
    JoinClaim,
    RefundLedger,
    Role,
    Subscription,
    User,
)
from rules.money import prorated_refund_minor
from tests.test_transfers import World

EMAIL = "paula@example.com"
INVITATION = "invitation-1-paula@example.com"  # what tests.test_transfers stages under
NOW = datetime(2025, 3, 11, 12, 0, tzinfo=UTC)
START, END = NOW - timedelta(days=10), NOW + timedelta(days=20)


def make_world(engine: Engine, settings: Settings, /, seats: int = 10, **spec: Any) -> World:
    with Session(engine) as session:
        org = create_org(session, seats=seats)
        spec.setdefault("price_minor", 1499)
        user = create_individual(session, settings.recordings_dir, IndividualSpec(
            email=EMAIL, period_start=START, period_end=END, **spec))
        session.commit()
        assert org.id and user.id
        return World(org.id, user.id, user.account_id)


def rows(engine: Engine, table: Any, *where: Any) -> list[Any]:
    with Session(engine) as session:
        return list(session.exec(select(table).where(*where)).all())


@pytest.fixture
def acts(settings: Settings, engine: Engine) -> PlatformActivities:
    return PlatformActivities(settings, engine)


@pytest.fixture
def env() -> ActivityEnvironment:
    return ActivityEnvironment()


def link(w: World, user_type: UserType = UserType.LICENSED, group: str | None = "Sales",
         email: str = EMAIL) -> LinkMember:
    return LinkMember(invitation_id=INVITATION, account_id=w.org_id, email=email,
                      first_name="New", last_name="Person", user_type=user_type, group=group)


async def claim(env: ActivityEnvironment, acts: PlatformActivities, w: World,
                user_type: UserType = UserType.LICENSED, email: str = EMAIL) -> None:
    """The acceptance check takes the person's join claim, which link_member requires."""
    facts = await env.run(acts.check_acceptance, AcceptanceCheck(
        invitation_id=INVITATION, account_id=w.org_id, email=email, user_type=user_type,
        group="Sales", at=NOW))
    assert facts.refusal is None and facts.blocking == []


def pay(w: World, destination: RefundDestination) -> PayRefund:
    return PayRefund(invitation_id=INVITATION, source_account_id=w.source_id,
                     org_account_id=w.org_id, destination=destination, at=NOW)


async def test_register_and_record_status(acts, env, engine, settings):
    w = make_world(engine, settings)
    inp = InvitationInput(account_id=w.org_id, invited_by="Admin@Acme.test", email=EMAIL)
    inv = invitation_id(w.org_id, EMAIL)
    reg = RegisterInvitation(invitation_id=inv, input=inp, invited_at=NOW,
                             expires_at=NOW + timedelta(days=30))
    first = await env.run(acts.register_invitation, reg)
    assert first == await env.run(acts.register_invitation, reg)
    assert first.account_name == "Acme" and first.invited_by_name == "Acme Admin"
    for status, event in [(InvitationStatus.ACCEPTED, "accepted"),
                          (InvitationStatus.COMPLETED, "completed"),
                          (InvitationStatus.COMPLETED, "completed"),  # a retry
                          (InvitationStatus.TRANSFERRING, "late")]:  # stale: ignored
        await env.run(acts.record_status, StatusChange(
            invitation_id=inv, status=status, at=NOW + timedelta(minutes=len(event)),
            source_account_id=w.source_id, event=event, detail={"n": 1}))
    row = rows(engine, Invitation)[0]
    assert row.status == "completed" and row.source_account_id == w.source_id
    kinds = [e.kind for e in rows(engine, AuditEvent, AuditEvent.invitation_id == inv)]
    assert sorted(kinds) == ["accepted", "completed", "invited", "late"]


async def test_register_refuses_a_non_admin(acts, env, engine, settings):
    w = make_world(engine, settings)
    inp = InvitationInput(account_id=w.org_id, invited_by=EMAIL, email="x@example.com")
    with pytest.raises(ApplicationError) as err:
        await env.run(acts.register_invitation, RegisterInvitation(
            invitation_id="i", input=inp, invited_at=NOW, expires_at=NOW))
    assert err.value.non_retryable


async def test_check_acceptance(acts, env, engine, settings):
    w = make_world(engine, settings, reports=3, other_users=("olga@example.com",))
    check = AcceptanceCheck(invitation_id=INVITATION, account_id=w.org_id, email=EMAIL,
                            user_type=UserType.LICENSED, group="Sales", at=NOW)
    facts = await env.run(acts.check_acceptance, check)
    assert [(b.kind, b.name) for b in facts.blocking] == [("other_user", "olga@example.com")]
    assert facts.quote is not None and facts.quote.amount_minor == 1499 * 20 // 30
    assert [c.key for c in facts.settings_changes] == ["cloud_recording"]
    assert facts.reports_left_behind == 3
    assert (facts.user_id, facts.source_account_id) == (w.user_id, w.source_id)
    nobody = await env.run(acts.check_acceptance, check.model_copy(update={"email": "n@x.io"}))
    assert nobody.user_id is None and nobody.quote is None and nobody.blocking == []


async def test_link_and_unlink_restore_the_invitee(acts, env, engine, settings):
    w = make_world(engine, settings)
    await claim(env, acts, w)
    membership = await env.run(acts.link_member, link(w))
    assert membership == await env.run(acts.link_member, link(w))  # a retry: same previous_*
    assert (membership.source_account_id, membership.previous_role,
            membership.previous_user_type) == (w.source_id, "owner", "licensed")
    user = rows(engine, User, User.id == w.user_id)[0]
    assert (user.account_id, user.role, user.group_name) == (w.org_id, Role.MEMBER, "Sales")
    await env.run(acts.unlink_member, membership)
    await env.run(acts.unlink_member, membership)
    user = rows(engine, User, User.id == w.user_id)[0]
    assert (user.account_id, user.role, user.user_type, user.group_name) == (
        w.source_id, Role.OWNER, "licensed", None)


async def test_link_creates_and_unlink_deletes_a_new_user(acts, env, engine, settings):
    w = make_world(engine, settings)
    await claim(env, acts, w, email="new@example.com")
    membership = await env.run(acts.link_member, link(w, email="new@example.com"))
    assert membership.created_user and membership.source_account_id is None
    assert rows(engine, User, User.email == "new@example.com")[0].account_id == w.org_id
    await env.run(acts.unlink_member, membership)
    assert rows(engine, User, User.email == "new@example.com") == []


async def test_licensed_seats_exhausted(acts, env, engine, settings):
    w = make_world(engine, settings, seats=2)  # owner and admin hold both
    check = AcceptanceCheck(invitation_id=INVITATION, account_id=w.org_id, email=EMAIL,
                            user_type=UserType.LICENSED, group=None, at=NOW)
    facts = await env.run(acts.check_acceptance, check)
    assert facts.refusal is not None and facts.refusal.kind == "no_free_seat"
    assert rows(engine, JoinClaim) == []  # refused: nothing held
    with pytest.raises(ApplicationError) as err:  # no claim, no link
        await env.run(acts.link_member, link(w))
    assert err.value.type == ERR_CLAIM_LOST and err.value.non_retryable
    await claim(env, acts, w, user_type=UserType.BASIC)
    basic = await env.run(acts.link_member, link(w, user_type=UserType.BASIC))
    assert basic.user_id == w.user_id  # a basic user needs no seat


async def test_a_seat_taken_away_after_the_claim_fails_the_link(acts, env, engine, settings):
    w = make_world(engine, settings, seats=3)
    await claim(env, acts, w)
    with Session(engine) as session:  # the admin lowers the seats meanwhile
        org = session.get(Account, w.org_id)
        assert org is not None
        org.licensed_seats = 2
        session.add(org)
        session.commit()
    with pytest.raises(ApplicationError) as err:
        await env.run(acts.link_member, link(w))
    assert err.value.type == ERR_SEATS_EXHAUSTED and err.value.non_retryable
    assert rows(engine, User, User.id == w.user_id)[0].account_id == w.source_id


async def test_refund_is_paid_once(acts, env, engine, settings):
    w = make_world(engine, settings)
    first = await env.run(acts.pay_refund, pay(w, RefundDestination.ORIGINAL_PAYMENT_METHOD))
    second = await env.run(acts.pay_refund, pay(w, RefundDestination.ORIGINAL_PAYMENT_METHOD))
    expected, _, _ = prorated_refund_minor(price_minor=1499, period_start=START,
                                           period_end=END, at=NOW)
    assert first == second
    assert (first.status, first.amount_minor, first.currency) == ("paid", expected, "USD")
    assert len(rows(engine, RefundLedger)) == 1
    sub = rows(engine, Subscription)[0]
    assert sub.status == "ended" and sub.ended_at is not None
    assert rows(engine, Account, Account.id == w.org_id)[0].credit_balance_minor == 0


async def test_refund_as_credit_and_its_reversal(acts, env, engine, settings):
    w = make_world(engine, settings)
    paid = await env.run(acts.pay_refund, pay(w, RefundDestination.ACCOUNT_CREDIT))
    await env.run(acts.pay_refund, pay(w, RefundDestination.ACCOUNT_CREDIT))
    org = rows(engine, Account, Account.id == w.org_id)[0]
    assert paid.amount_minor > 0 and org.credit_balance_minor == paid.amount_minor
    ledger = rows(engine, RefundLedger)[0]
    assert ledger.destination_account_id == w.org_id
    reverse = ReverseRefund(invitation_id=INVITATION, source_account_id=w.source_id,
                            org_account_id=w.org_id)
    first = await env.run(acts.reverse_refund, reverse)
    assert first == await env.run(acts.reverse_refund, reverse)
    assert (first.status, first.amount_minor) == ("reversed", paid.amount_minor)
    amounts = sorted(r.amount_minor for r in rows(engine, RefundLedger))
    assert amounts == [-paid.amount_minor, paid.amount_minor]
    assert rows(engine, Account, Account.id == w.org_id)[0].credit_balance_minor == 0
    sub = rows(engine, Subscription)[0]
    assert sub.status == "active" and sub.ended_at is None


async def test_a_new_round_after_a_reversed_refund_pays_again_once(acts, env, engine, settings):
    """A re-invitation after a failed (reversed) join pays under round 2, exactly once."""
    w = make_world(engine, settings)
    first = await env.run(acts.pay_refund, pay(w, RefundDestination.ORIGINAL_PAYMENT_METHOD))
    reverse = ReverseRefund(invitation_id=INVITATION, source_account_id=w.source_id,
                            org_account_id=w.org_id)
    await env.run(acts.reverse_refund, reverse)
    again = await env.run(acts.pay_refund, pay(w, RefundDestination.ORIGINAL_PAYMENT_METHOD))
    assert again == await env.run(
        acts.pay_refund, pay(w, RefundDestination.ORIGINAL_PAYMENT_METHOD))
    assert first.idempotency_key == f"refund:{INVITATION}"
    assert again.idempotency_key == f"refund:{INVITATION}:2"
    assert again.amount_minor == first.amount_minor
    kinds = sorted((r.kind, r.amount_minor) for r in rows(engine, RefundLedger))
    assert kinds == [("refund", first.amount_minor), ("refund", first.amount_minor),
                     ("reversal", -first.amount_minor)]
    assert rows(engine, Subscription)[0].status == "ended"


async def test_nothing_to_refund_or_reverse(acts, env, engine, settings):
    w = make_world(engine, settings, price_minor=0)
    none = await env.run(acts.pay_refund, pay(w, RefundDestination.ORIGINAL_PAYMENT_METHOD))
    assert (none.status, none.amount_minor) == ("none", 0)
    reverse = ReverseRefund(invitation_id=INVITATION, source_account_id=w.source_id,
                            org_account_id=w.org_id)
    assert (await env.run(acts.reverse_refund, reverse)).status == "none"
    assert rows(engine, RefundLedger) == []
