"""Reading claims on domains: which account holds a verified name. Writers live in
domains.verification (one writer per fact)."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlmodel import Session, select

from domains.names import DomainNameError, normalise_domain
from domains.tables import ClaimedDomain, DomainStatus


def verified_domain(engine: Engine, account_id: int, name: str) -> ClaimedDomain | None:
    """The account's claim on `name` if it is verified now, else None (also for a name
    that is not a domain name)."""
    try:
        name = normalise_domain(name)
    except DomainNameError:
        return None
    with Session(engine) as session:
        return session.exec(select(ClaimedDomain).where(
            ClaimedDomain.account_id == account_id, ClaimedDomain.name == name,
            ClaimedDomain.status == DomainStatus.VERIFIED.value)).first()


def account_domains(engine: Engine, account_id: int) -> list[ClaimedDomain]:
    """Every claim of the account, by name."""
    with Session(engine) as session:
        return list(session.exec(select(ClaimedDomain)
                                 .where(ClaimedDomain.account_id == account_id)
                                 .order_by(ClaimedDomain.name)).all())
