"""Tables of the REST API (issue #15): API tokens and idempotency keys.

Registered on SQLModel.metadata by the import at the end of records/tables.py, so
`init_db`, `create_all` and Alembic see them with every other table (revision 0005).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from records.tables import utcnow
from records.types import UTCDateTime


class ApiToken(SQLModel, table=True):
    """A bearer token for one account. Only `secret_hash` (sha256 of the whole token) is
    kept; `prefix` (its first, non-secret part, unique) finds the row and is what lists
    show. A revoked token (`revoked_at` set) never authenticates again."""

    __tablename__ = "apitoken"
    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="account.id", index=True)
    name: str
    prefix: str = Field(unique=True, index=True)
    secret_hash: str
    created_by_user_id: int = Field(foreign_key="user.id")
    created_by: str  # the owner/admin's email: the inviter of what the token starts
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_by: str | None = None


class IdempotencyRecord(SQLModel, table=True):
    """The first answer to a POST carrying an `Idempotency-Key`, per account. The unique
    (account_id, key) pair makes concurrent first requests race on one INSERT: one wins
    and runs, the others see its row (in progress, or done and replayed)."""

    __tablename__ = "idempotencyrecord"
    __table_args__ = (UniqueConstraint("account_id", "key", name="uq_idempotency_key"),)
    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="account.id")
    key: str
    request_hash: str  # sha256 of method, path and canonical body
    state: str = "in_progress"  # in_progress | done
    status_code: int | None = None
    response: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)
