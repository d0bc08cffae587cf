"""The refund and its reversal: money, once. A refund is keyed by the invitation and its
round (`records.ids.refund_idempotency_key`), a unique ledger key, and ends the
subscription with a conditional update: of two attempts at the same time one pays and
the other reports that payment. A reversal is keyed the same way and gives back exactly
what the refund took (subscription active again, credit taken back). Amounts are ints of
minor units. Called in a thread by `PlatformActivities.pay_refund` / `reverse_refund`.
Core statements built once, on one connection: no ORM Session on this path.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, Engine, Row, Table, bindparam, select, update
from sqlalchemy.exc import IntegrityError, NoResultFound
from sqlmodel import Session
from temporalio.exceptions import ApplicationError

from messages.activity_io import PayRefund, ReverseRefund
from messages.payloads import Payment, RefundDestination
from records.claims import connection_of
from records.db import as_utc, prepared, write_transaction
from records.ids import refund_idempotency_key, reversal_idempotency_key
from records.tables import Account, RefundLedger, Subscription
from rules.money import prorated_refund_minor
from rules.platform import subscription_row

ERR_CURRENCY_MISMATCH = "CurrencyMismatch"  # credit to an account billed in another currency

LEDGER: Table = RefundLedger.__table__  # type: ignore[attr-defined]
ACCOUNTS: Table = Account.__table__  # type: ignore[attr-defined]
SUBSCRIPTIONS: Table = Subscription.__table__  # type: ignore[attr-defined]
_COLUMNS = (LEDGER.c.idempotency_key, LEDGER.c.kind, LEDGER.c.amount_minor, LEDGER.c.currency,
            LEDGER.c.destination, LEDGER.c.destination_account_id, LEDGER.c.subscription_id)


class _Raced(Exception):
    """Another attempt got there first: roll back, then read what it wrote."""


def _payment(row: Any, status: str) -> Payment:
    return Payment(idempotency_key=row.idempotency_key, amount_minor=abs(row.amount_minor),
                   currency=row.currency, destination=RefundDestination(row.destination),
                   status=status)


def _ledger(conn: Connection, invitation_id: str) -> list[Row[Any]]:
    """This invitation's ledger rows (refunds and reversals), oldest first."""
    return list(conn.execute(prepared(conn, "refund_ledger_of", lambda: select(
        *_COLUMNS).where(LEDGER.c.invitation_id == bindparam("invitation"))
        .order_by(LEDGER.c.id)), {"invitation": invitation_id}).all())


def _by_key(conn: Connection, key: str) -> Row[Any] | None:
    return conn.execute(prepared(conn, "refund_by_key", lambda: select(*_COLUMNS).where(
        LEDGER.c.idempotency_key == bindparam("key"))), {"key": key}).first()


def _currency(conn: Connection, account_id: int) -> str:
    currency = conn.execute(prepared(conn, "refund_currency", lambda: select(
        ACCOUNTS.c.currency).where(ACCOUNTS.c.id == bindparam("account"))),
        {"account": account_id}).scalar()
    return currency if currency is not None else "USD"


def add_credit(session: Session | Connection, account_id: int, amount_minor: int) -> None:
    """One statement: concurrent credits to one account add up (no read-modify-write)."""
    conn = connection_of(session)
    conn.execute(prepared(conn, "refund_add_credit", lambda: update(ACCOUNTS).where(
        ACCOUNTS.c.id == bindparam("account")).values(
        credit_balance_minor=ACCOUNTS.c.credit_balance_minor + bindparam("amount"))),
        {"account": account_id, "amount": amount_minor})


def _insert(conn: Connection, row: dict[str, Any]) -> None:
    """The ledger row; its unique key refuses a second attempt's (then _Raced)."""
    try:
        conn.execute(prepared(conn, "refund_insert", LEDGER.insert), row)
    except IntegrityError as err:
        raise _Raced() from err


def pay_refund(engine: Engine, req: PayRefund) -> Payment:
    at = as_utc(req.at)
    key = ""
    try:
        with write_transaction(engine) as conn:
            ledger = _ledger(conn, req.invitation_id)
            refunds = [r for r in ledger if r.kind == "refund"]
            if refunds and reversal_idempotency_key(req.invitation_id, len(refunds)) not in {
                    r.idempotency_key for r in ledger}:
                return _payment(refunds[-1], "paid")  # this round already paid
            key = refund_idempotency_key(req.invitation_id, len(refunds) + 1)
            sub = subscription_row(conn, req.source_account_id)
            if sub is None or sub.price_minor == 0:
                return Payment(idempotency_key=key, amount_minor=0,
                               currency=_currency(conn, req.source_account_id),
                               destination=req.destination, status="none")
            amount, _, _ = prorated_refund_minor(
                price_minor=sub.price_minor, period_start=as_utc(sub.period_start),
                period_end=as_utc(sub.period_end), at=at)
            # Ends the subscription only if it is still active: of two overlapping
            # attempts, the second matches no row and reports the first one's payment.
            ended = conn.execute(prepared(conn, "refund_end_subscription", lambda: update(
                SUBSCRIPTIONS).where(SUBSCRIPTIONS.c.id == bindparam("sub"),
                                     SUBSCRIPTIONS.c.status == "active",
                                     ).values(status="ended", ended_at=bindparam("at"))),
                {"sub": sub.id, "at": at})
            if ended.rowcount != 1:
                raise _Raced()
            credit_to = None
            if req.destination == RefundDestination.ACCOUNT_CREDIT:
                org = conn.execute(prepared(conn, "refund_org", lambda: select(
                    ACCOUNTS.c.id, ACCOUNTS.c.name, ACCOUNTS.c.currency).where(
                    ACCOUNTS.c.id == bindparam("account"))),
                    {"account": req.org_account_id}).first()
                assert org is not None
                if org.currency != sub.currency:
                    raise ApplicationError(
                        f"cannot credit {sub.currency} to {org.name}, billed in {org.currency}",
                        type=ERR_CURRENCY_MISMATCH, non_retryable=True)
                add_credit(conn, req.org_account_id, amount)
                credit_to = org.id
            row = {"idempotency_key": key, "invitation_id": req.invitation_id,
                   "subscription_id": sub.id, "kind": "refund", "amount_minor": amount,
                   "currency": sub.currency, "destination": req.destination.value,
                   "destination_account_id": credit_to, "created_at": at}
            _insert(conn, row)
            return _payment(SimpleNamespace(**row), "paid")
    except _Raced:  # rolled back: report the payment of the attempt that got there first
        pass
    with engine.connect() as conn:
        return _paid_by_another_attempt(conn, key)


def _paid_by_another_attempt(conn: Connection, key: str) -> Payment:
    row = _by_key(conn, key)
    if row is None:  # the subscription ended some other way: let the retry look again
        raise ApplicationError("the subscription changed while paying the refund; retrying",
                               type="RefundRaced")
    return _payment(row, "paid")


def reverse_refund(engine: Engine, req: ReverseRefund) -> Payment:
    try:
        with write_transaction(engine) as conn:
            ledger = _ledger(conn, req.invitation_id)
            refunds = [r for r in ledger if r.kind == "refund"]
            key = reversal_idempotency_key(req.invitation_id, max(1, len(refunds)))
            refund = refunds[-1] if refunds else None
            if refund is None:
                return Payment(idempotency_key=key, amount_minor=0,
                               currency=_currency(conn, req.source_account_id),
                               destination=RefundDestination.ORIGINAL_PAYMENT_METHOD,
                               status="none")
            done = _by_key(conn, key)
            if done is not None:
                return _payment(done, "reversed")
            conn.execute(prepared(conn, "refund_reactivate", lambda: update(
                SUBSCRIPTIONS).where(SUBSCRIPTIONS.c.id == bindparam("sub"),
                                     SUBSCRIPTIONS.c.status == "ended",
                                     ).values(status="active", ended_at=None)),
                {"sub": refund.subscription_id})
            if refund.destination_account_id is not None:
                add_credit(conn, refund.destination_account_id, -refund.amount_minor)
            row = {"idempotency_key": key, "invitation_id": req.invitation_id,
                   "subscription_id": refund.subscription_id, "kind": "reversal",
                   "amount_minor": -refund.amount_minor, "currency": refund.currency,
                   "destination": refund.destination,
                   "destination_account_id": refund.destination_account_id}
            _insert(conn, row)
            return _payment(SimpleNamespace(**row), "reversed")
    except _Raced:
        pass
    with engine.connect() as conn:
        raced = _by_key(conn, key)
        if raced is None:
            raise NoResultFound("No row was found when one was required")
        return _payment(raced, "reversed")
