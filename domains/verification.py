"""Claiming a domain and proving it: the one writer of `claimed_domain` rows.

    add     an owner/admin claims a name: a pending row with a random token, the TXT
            record to publish (idempotent: adding again returns the same record)
    verify  look the TXT record up now: found -> verified; missing -> a verified claim is
            lost, a pending one stays pending; the resolver not answering changes nothing
    recheck_all  every claim, as the schedule does (workflows/domain_check.py)
    remove  an owner/admin drops the claim

At most one account holds a name verified: the partial unique index refuses the second
(domains.tables), so two accounts verifying at once end with one winner whatever the
database; the loser gets `DomainVerifiedElsewhere` and its claim stays as it was.
Blocking database and DNS work: call these from a thread.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from config import Settings
from domains.dns import txt_values
from domains.errors import (
    DnsUnavailable,
    DomainNotClaimed,
    DomainVerifiedElsewhere,
    InvalidDomain,
    PublicMailDomain,
    TxtRecordNotFound,
)
from domains.names import PUBLIC_MAIL_DOMAINS, DomainNameError, normalise_domain
from domains.tables import ClaimedDomain, DomainStatus
from invitations.validation import check_inviter
from records.db import write_session

TOKEN_PREFIX = "invites-verification="


@dataclass(frozen=True)
class RecheckCounts:
    checked: int = 0
    verified: int = 0  # newly verified (pending or lost before)
    lost: int = 0  # newly lost
    unreachable: int = 0  # the resolver did not answer: left as they were
    refused: int = 0  # found, but another account holds the name verified


def claimable(raw: str) -> str:
    """The stored form of `raw`; InvalidDomain or PublicMailDomain otherwise."""
    try:
        name = normalise_domain(raw)
    except DomainNameError as exc:
        raise InvalidDomain(str(exc).removeprefix("domain: ")) from None
    if name in PUBLIC_MAIL_DOMAINS:
        raise PublicMailDomain(f"{name} is a public mail provider: anyone can have an address "
                               "there, so no account can claim it")
    return name


def txt_record(claim: ClaimedDomain) -> dict[str, str]:
    """What the admin publishes: a TXT record at the domain's apex."""
    return {"type": "TXT", "name": claim.name, "value": claim.token}


class DomainClaims:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings, self.engine = settings, engine

    # --- admins' commands ---------------------------------------------------------------
    def add(self, account_id: int, by: str, raw_name: str) -> ClaimedDomain:
        name = claimable(raw_name)
        with write_session(self.engine) as session:
            check_inviter(session, account_id, by)  # owner/admin of a paid business account
            mine = self._claim(session, account_id, name)
            if mine is not None:
                return mine
            holder = self._verified_holder(session, name)
            if holder is not None:
                raise DomainVerifiedElsewhere(
                    f"{name} is already verified by another account; ask its admins to "
                    "remove it first")
            claim = ClaimedDomain(account_id=account_id, name=name, created_by=by.strip().lower(),
                                  token=TOKEN_PREFIX + secrets.token_urlsafe(24))
            session.add(claim)
            try:
                session.commit()
            except IntegrityError:  # the same account adding it at the same moment
                session.rollback()
                mine = self._claim(session, account_id, name)
                if mine is None:
                    raise
                return mine
            session.refresh(claim)
            return claim

    def remove(self, account_id: int, by: str, raw_name: str) -> ClaimedDomain:
        name = self._name(raw_name)
        with write_session(self.engine) as session:
            check_inviter(session, account_id, by)
            claim = self._require(session, account_id, name)
            session.delete(claim)
            session.commit()
            return claim

    def list(self, account_id: int) -> list[ClaimedDomain]:
        with Session(self.engine) as session:
            return list(session.exec(select(ClaimedDomain)
                                     .where(ClaimedDomain.account_id == account_id)
                                     .order_by(col(ClaimedDomain.name))).all())

    def verify(self, account_id: int, raw_name: str) -> ClaimedDomain:
        """Check now. Returns the verified claim, or raises: TxtRecordNotFound (record not
        found; the check is recorded, a verified claim becomes lost), DnsUnavailable
        (nothing written), DomainVerifiedElsewhere (nothing written)."""
        name = self._name(raw_name)
        with Session(self.engine) as session:
            self._require(session, account_id, name)
        claim = self._check(account_id, name)
        if claim.status != DomainStatus.VERIFIED:
            raise TxtRecordNotFound(
                f"no TXT record {claim.token!r} at {name} (status: {claim.status}); publish "
                "it, wait for DNS to pick it up, and verify again")
        return claim

    # --- the schedule -------------------------------------------------------------------
    def recheck_all(self) -> RecheckCounts:
        with Session(self.engine) as session:
            claims = [(c.account_id, c.name, c.status) for c in session.exec(
                select(ClaimedDomain).order_by(col(ClaimedDomain.id))).all()]
        counts = {"checked": 0, "verified": 0, "lost": 0, "unreachable": 0, "refused": 0}
        for account_id, name, before in claims:
            try:
                after = self._check(account_id, name).status
            except DnsUnavailable:
                counts["unreachable"] += 1
                continue
            except DomainVerifiedElsewhere:
                counts["refused"] += 1
                continue
            except DomainNotClaimed:
                continue  # removed meanwhile
            counts["checked"] += 1
            if after != before and after == DomainStatus.VERIFIED:
                counts["verified"] += 1
            elif after != before and after == DomainStatus.LOST:
                counts["lost"] += 1
        return RecheckCounts(**counts)

    # --- one check: DNS first (no transaction held open on the network), then one write --
    def _check(self, account_id: int, name: str) -> ClaimedDomain:
        with Session(self.engine) as session:
            token = self._require(session, account_id, name).token
        found = token in txt_values(self.settings, name)  # DnsUnavailable: nothing written
        now = datetime.now(UTC)
        with write_session(self.engine) as session:
            claim = self._require(session, account_id, name, lock=True)
            claim.checked_at = now
            if found and claim.status != DomainStatus.VERIFIED:
                claim.status, claim.verified_at, claim.lost_at = \
                    DomainStatus.VERIFIED.value, now, None
            elif not found and claim.status == DomainStatus.VERIFIED:
                claim.status, claim.lost_at = DomainStatus.LOST.value, now
            session.add(claim)
            try:
                session.commit()
            except IntegrityError:  # the partial unique index: another account won
                session.rollback()
                raise DomainVerifiedElsewhere(
                    f"{name} is already verified by another account; one account per "
                    "domain") from None
            session.refresh(claim)
            return claim

    @staticmethod
    def _name(raw: str) -> str:
        try:
            return normalise_domain(raw)
        except DomainNameError as exc:
            raise InvalidDomain(str(exc).removeprefix("domain: ")) from None

    @staticmethod
    def _claim(session: Session, account_id: int, name: str, *,
               lock: bool = False) -> ClaimedDomain | None:
        query = select(ClaimedDomain).where(ClaimedDomain.account_id == account_id,
                                            ClaimedDomain.name == name)
        return session.exec(query.with_for_update() if lock else query).first()

    def _require(self, session: Session, account_id: int, name: str, *,
                 lock: bool = False) -> ClaimedDomain:
        claim = self._claim(session, account_id, name, lock=lock)
        if claim is None:
            raise DomainNotClaimed(f"account {account_id} has no claim on {name}: "
                                   f"`starter.py domain add --account {account_id} ... {name}`")
        return claim

    @staticmethod
    def _verified_holder(session: Session, name: str) -> ClaimedDomain | None:
        return session.exec(select(ClaimedDomain).where(
            ClaimedDomain.name == name,
            ClaimedDomain.status == DomainStatus.VERIFIED.value)).first()
