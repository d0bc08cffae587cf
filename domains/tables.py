"""The claimed-domain table (an account's claim on a DNS name and its verification state),
and the SSO logins' single-use nonces.

    pending_verification --(TXT record found)--> verified --(re-check misses it)--> lost
    lost --(TXT record found again)--> verified

`name` is stored lower-case and IDNA-encoded ("acme.com", "xn--bcher-kva.example"), see
domains.names.normalise_domain. Two unique indexes make the rules hold under races: one
claim per (account, name), and at most one *verified* claim per name across all accounts
(a partial index, PostgreSQL and SQLite alike), so two accounts verifying one name at once
end with one winner.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import Index, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from records.types import UTCDateTime


class DomainStatus(StrEnum):
    PENDING_VERIFICATION = "pending_verification"
    VERIFIED = "verified"
    LOST = "lost"


_VERIFIED_ONLY = text("status = 'verified'")


def utcnow() -> datetime:
    return datetime.now(UTC)


class ClaimedDomain(SQLModel, table=True):
    __tablename__ = "claimed_domain"
    __table_args__ = (
        UniqueConstraint("account_id", "name", name="uq_claimed_domain_account_name"),
        Index("uq_claimed_domain_verified_name", "name", unique=True,
              postgresql_where=_VERIFIED_ONLY, sqlite_where=_VERIFIED_ONLY),
    )

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="account.id", index=True)
    name: str = Field(index=True)
    status: str = DomainStatus.PENDING_VERIFICATION.value  # a DomainStatus
    token: str  # the TXT record's value, "invites-verification=<random>"
    created_by: str  # the admin's email
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    verified_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    checked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    lost_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class SsoLogin(SQLModel, table=True):
    """One SSO login started at `POST /sso/{account_id}/start`: the nonce the IdP must put
    in its ID token. Used once: the login that presents it sets `used_at` by a conditional
    UPDATE, so a replayed token (same nonce) finds it used and is refused."""

    __tablename__ = "sso_login"

    nonce: str = Field(primary_key=True)
    account_id: int = Field(foreign_key="account.id", index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    email: str | None = None  # who logged in with it
