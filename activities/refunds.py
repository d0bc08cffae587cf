"""The refund and its reversal: money, once. A refund is keyed by the invitation and its
round (`records.ids.refund_idempotency_key`), a unique ledger key, and ends the
subscription with a conditional update: of two attempts at the same time one pays and
the other reports that payment. A reversal is keyed the same way and gives back exactly
what the refund took (subscription active again, credit taken back). Amounts are ints of
minor units. Called in a thread by `PlatformActivities.pay_refund` / `reverse_refund`.
"""

from __future__ import annotations

from sqlalchemy import Engine, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from temporalio.exceptions import ApplicationError

from messages.activity_io import PayRefund, ReverseRefund
from messages.payloads import Payment, RefundDestination
from records.db import as_utc, write_session
from records.ids import refund_idempotency_key, reversal_idempotency_key
from records.tables import Account, RefundLedger, Subscription
from rules.money import prorated_refund_minor
from rules.platform import active_subscription

ERR_CURRENCY_MISMATCH = "CurrencyMismatch"  # credit to an account billed in another currency


def _payment(row: RefundLedger, status: str) -> Payment:
    return Payment(idempotency_key=row.idempotency_key, amount_minor=abs(row.amount_minor),
                   currency=row.currency, destination=RefundDestination(row.destination),
                   status=status)


def _refunds(session: Session, invitation_id: str) -> list[RefundLedger]:
    """The refunds paid for this invitation, one per round, oldest first."""
    return list(session.exec(select(RefundLedger).where(
        RefundLedger.invitation_id == invitation_id, RefundLedger.kind == "refund",
    ).order_by(col(RefundLedger.id))).all())


def _reversed(session: Session, invitation_id: str, round: int) -> bool:
    key = reversal_idempotency_key(invitation_id, round)
    return session.exec(select(RefundLedger).where(
        RefundLedger.idempotency_key == key)).first() is not None


def add_credit(session: Session, account_id: int, amount_minor: int) -> None:
    """One statement: concurrent credits to one account add up (no read-modify-write)."""
    session.connection().execute(update(Account).where(col(Account.id) == account_id)
                 .values(credit_balance_minor=Account.credit_balance_minor + amount_minor))


def pay_refund(engine: Engine, req: PayRefund) -> Payment:
    at = as_utc(req.at)
    with write_session(engine) as session:
        refunds = _refunds(session, req.invitation_id)
        if refunds and not _reversed(session, req.invitation_id, len(refunds)):
            return _payment(refunds[-1], "paid")  # this round already paid
        key = refund_idempotency_key(req.invitation_id, len(refunds) + 1)
        sub = active_subscription(session, req.source_account_id)
        if sub is None or sub.price_minor == 0:
            source = session.get(Account, req.source_account_id)
            return Payment(idempotency_key=key, amount_minor=0,
                           currency=source.currency if source else "USD",
                           destination=req.destination, status="none")
        assert sub.id is not None
        amount, _, _ = prorated_refund_minor(
            price_minor=sub.price_minor, period_start=as_utc(sub.period_start),
            period_end=as_utc(sub.period_end), at=at)
        # Ends the subscription only if it is still active: of two overlapping
        # attempts, the second matches no row and reports the first one's payment.
        ended = session.connection().execute(update(Subscription).where(
            col(Subscription.id) == sub.id, col(Subscription.status) == "active",
        ).values(status="ended", ended_at=at))
        if ended.rowcount != 1:
            session.rollback()
            return _paid_by_another_attempt(session, key)
        credit_to = None
        if req.destination == RefundDestination.ACCOUNT_CREDIT:
            org = session.get(Account, req.org_account_id)
            assert org is not None
            if org.currency != sub.currency:
                raise ApplicationError(
                    f"cannot credit {sub.currency} to {org.name}, billed in {org.currency}",
                    type=ERR_CURRENCY_MISMATCH, non_retryable=True)
            add_credit(session, req.org_account_id, amount)
            credit_to = org.id
        row = RefundLedger(idempotency_key=key, invitation_id=req.invitation_id,
                           subscription_id=sub.id, kind="refund", amount_minor=amount,
                           currency=sub.currency, destination=req.destination.value,
                           destination_account_id=credit_to, created_at=at)
        paid = _payment(row, "paid")  # before the commit expires `row`
        session.add(row)
        try:
            session.commit()
        except IntegrityError:  # a concurrent attempt paid first: report its payment
            session.rollback()
            return _paid_by_another_attempt(session, key)
        return paid


def _paid_by_another_attempt(session: Session, key: str) -> Payment:
    row = session.exec(select(RefundLedger).where(RefundLedger.idempotency_key == key)).first()
    if row is None:  # the subscription ended some other way: let the retry look again
        raise ApplicationError("the subscription changed while paying the refund; retrying",
                               type="RefundRaced")
    return _payment(row, "paid")


def reverse_refund(engine: Engine, req: ReverseRefund) -> Payment:
    with write_session(engine) as session:
        refunds = _refunds(session, req.invitation_id)
        key = reversal_idempotency_key(req.invitation_id, max(1, len(refunds)))
        refund = refunds[-1] if refunds else None
        if refund is None:
            source = session.get(Account, req.source_account_id)
            return Payment(idempotency_key=key, amount_minor=0,
                           currency=source.currency if source else "USD",
                           destination=RefundDestination.ORIGINAL_PAYMENT_METHOD,
                           status="none")
        done = session.exec(select(RefundLedger).where(
            RefundLedger.idempotency_key == key)).first()
        if done is not None:
            return _payment(done, "reversed")
        session.connection().execute(update(Subscription).where(
            col(Subscription.id) == refund.subscription_id,
            col(Subscription.status) == "ended",
        ).values(status="active", ended_at=None))
        if refund.destination_account_id is not None:
            add_credit(session, refund.destination_account_id, -refund.amount_minor)
        row = RefundLedger(idempotency_key=key, invitation_id=req.invitation_id,
                           subscription_id=refund.subscription_id, kind="reversal",
                           amount_minor=-refund.amount_minor, currency=refund.currency,
                           destination=refund.destination,
                           destination_account_id=refund.destination_account_id)
        reversed_ = _payment(row, "reversed")  # before the commit expires `row`
        session.add(row)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            row = session.exec(select(RefundLedger).where(
                RefundLedger.idempotency_key == key)).one()
            return _payment(row, "reversed")
        return reversed_
