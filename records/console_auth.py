"""The admin console's sign-in (issue #15): one-time links mailed to an owner or admin, and
the sessions they open. Only hashes (sha256) of the link tokens and session ids are stored:
a copy of the database signs nobody in. See admin/sessions.py for the rules."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from records.tables import utcnow
from records.types import UTCDateTime


class SignInLink(SQLModel, table=True):
    """A mailed sign-in link: used once (`used_at`, set by one conditional UPDATE), until
    `expires_at`. Rows also count the links an address asked for (the rate limit)."""

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(unique=True, min_length=64, max_length=64)
    account_id: int = Field(foreign_key="account.id", index=True)
    email: str = Field(index=True)  # normalised
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class AdminSession(SQLModel, table=True):
    """A signed-in console session, server-side: the cookie holds the id, this row its hash.
    Signing out (or expiry) ends it for good."""

    id: int | None = Field(default=None, primary_key=True)
    session_hash: str = Field(unique=True, min_length=64, max_length=64)
    account_id: int = Field(foreign_key="account.id", index=True)
    email: str
    link_id: int = Field(foreign_key="signinlink.id", unique=True)  # one session per link
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
