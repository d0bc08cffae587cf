"""Unit tier: the system of record's constraints, the refund rule, signed links."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, update
from sqlalchemy.exc import IntegrityError, StatementError
from sqlmodel import Session, select

from demo.seed import create_org
from messages.payloads import InvitationInput
from records.tables import Account, AccountKind, RefundLedger, Subscription, User
from rules import links
from rules.money import format_minor, prorated_refund_minor


@pytest.mark.parametrize("spelling", ["owner@acme.test", "Owner@ACME.test"])
def test_user_emails_are_unique_whatever_their_case(engine: Engine, spelling: str) -> None:
    with Session(engine) as s:
        org = create_org(s)
        s.add(User(email=spelling, account_id=org.id))
        with pytest.raises(IntegrityError, match=r"user\.email|ix_user_email|uq_user_email_lower"):
            s.commit()


def test_a_mixed_case_email_written_raw_is_still_one_identity(engine: Engine) -> None:
    """A row stored before normalisation (raw SQL, mixed case) blocks its lower-case twin."""
    with Session(engine) as s:
        org = create_org(s)
        s.connection().exec_driver_sql(
            f"INSERT INTO \"user\" (email, account_id, role, user_type, first_name, last_name, "
            f"created_at) VALUES ('Legacy.Upper@Example.com', {org.id}, 'MEMBER', 'basic', "
            "'', '', '2026-01-01 00:00:00+00:00')")
        s.commit()
        s.add(User(email="legacy.upper@example.com", account_id=org.id))
        with pytest.raises(IntegrityError):
            s.commit()


def test_refund_idempotency_key_is_unique(engine: Engine) -> None:
    with Session(engine) as s:
        org = create_org(s)
        sub = Subscription(account_id=org.id, plan="pro", price_minor=1499, currency="USD",
                           period_start=datetime(2026, 11, 1, tzinfo=UTC),
                           period_end=datetime(2026, 12, 1, tzinfo=UTC))
        s.add(sub)
        s.flush()
        row = dict(idempotency_key="refund:invitation-1-a@b.c", invitation_id="invitation-1-a@b.c",
                   subscription_id=sub.id, kind="refund", amount_minor=700, currency="USD",
                   destination="original_payment_method")
        s.add(RefundLedger(**row))
        s.commit()
        s.add(RefundLedger(**row))
        with pytest.raises(IntegrityError, match="refundledger.idempotency_key"):
            s.commit()
        s.rollback()
        assert len(s.exec(select(RefundLedger)).all()) == 1


@pytest.mark.parametrize("bad", [12.5, "1499", 1499.0])
def test_money_is_integer_minor_units(bad: object) -> None:
    with pytest.raises(ValidationError, match="price_minor"):
        Subscription.model_validate(dict(
            account_id=1, plan="pro", price_minor=bad, currency="USD",
            period_start=datetime(2026, 11, 1, tzinfo=UTC),
            period_end=datetime(2026, 12, 1, tzinfo=UTC)))
    with pytest.raises(ValidationError, match="credit_balance_minor"):
        Account.model_validate(dict(name="x", kind=AccountKind.BUSINESS, credit_balance_minor=bad))
    with pytest.raises(TypeError, match="minor units"):
        prorated_refund_minor(price_minor=bad, period_start=datetime(2026, 11, 1, tzinfo=UTC),  # type: ignore[arg-type]
                              period_end=datetime(2026, 12, 1, tzinfo=UTC),
                              at=datetime(2026, 11, 16, tzinfo=UTC))


@pytest.mark.parametrize("bad", [12.5, Decimal("12.5"), "1250", True])
def test_money_that_is_not_an_int_never_reaches_the_database(engine: Engine, bad: object) -> None:
    """A table class does not validate in __init__: the column type refuses it on write."""
    with Session(engine) as s:
        s.add(Account(name="x", kind=AccountKind.BUSINESS, credit_balance_minor=bad))
        with pytest.raises(StatementError, match="minor units"):
            s.commit()
    with Session(engine) as s, pytest.raises(StatementError, match="minor units"):
        s.execute(update(Account).values(credit_balance_minor=bad))


def test_negative_price_rejected_by_the_database(engine: Engine) -> None:
    with Session(engine) as s:
        org = create_org(s)
        s.add(Subscription(account_id=org.id, plan="pro", price_minor=-1, currency="USD",
                           period_start=datetime(2026, 11, 1, tzinfo=UTC),
                           period_end=datetime(2026, 12, 1, tzinfo=UTC)))
        with pytest.raises(IntegrityError, match="ck_subscription_price"):
            s.commit()


def test_prorated_refund_follows_the_written_formula() -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    end = start + timedelta(days=30)
    at = start + timedelta(days=12, seconds=1)
    amount, left, period = prorated_refund_minor(price_minor=1499, period_start=start,
                                                 period_end=end, at=at)
    assert period == 30 * 86400
    assert left == 18 * 86400 - 1
    assert amount == (1499 * left) // period == 899  # floor, never rounded up
    assert prorated_refund_minor(price_minor=1499, period_start=start, period_end=end,
                                 at=end + timedelta(days=1))[0] == 0
    assert prorated_refund_minor(price_minor=1499, period_start=start, period_end=end,
                                 at=start - timedelta(days=1))[0] == 1499
    assert prorated_refund_minor(price_minor=0, period_start=start, period_end=end, at=at)[0] == 0
    assert format_minor(899, "USD") == "USD 8.99"
    assert format_minor(500, "JPY") == "JPY 500"


def test_invitation_input_normalises_and_validates() -> None:
    inp = InvitationInput(account_id=1, invited_by=" Admin@Acme.test ", email=" Alice@Example.COM ")
    assert inp.email == "alice@example.com" and inp.invited_by == "admin@acme.test"
    with pytest.raises(ValidationError, match="expires_in_days"):
        InvitationInput(account_id=1, invited_by="a@b.c", email="x@y.z", expires_in_days=0)
    with pytest.raises(ValidationError, match="account_id"):
        InvitationInput(account_id="1", invited_by="a@b.c", email="x@y.z")  # type: ignore[arg-type]


def test_signed_links_detect_tampering() -> None:
    issued = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    token = links.sign("secret", "invitation-1-alice@example.com", "alice@example.com", issued)
    claims = links.verify("secret", token)
    assert (claims.invitation_id, claims.email, claims.issued_at) == (
        "invitation-1-alice@example.com", "alice@example.com", issued)
    body, mac = token.split(".")
    forged_body = links._b64(links._unb64(body).replace(b"alice", b"mallo"))
    for bad in (f"{forged_body}.{mac}", token[:-2] + ("AA" if token[-2:] != "AA" else "BB"),
                "garbage", ""):
        with pytest.raises(links.InvalidLink):
            links.verify("secret", bad)
    with pytest.raises(links.InvalidLink, match="signature"):
        links.verify("another-secret", token)
