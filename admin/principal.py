"""Who is asking: the one account an admin request acts for, and who stands behind it.

A console session (an owner or admin signed in by a mailed link) and an API token (created by
an owner or admin, scoped to one account) both resolve to a `Principal`. Every route reads
and changes only what belongs to `principal.account_id`: another account's invitation is
"not found" (404), never "forbidden", so ids of other accounts are not confirmed to exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from models.tables import Role, User

ADMIN_ROLES = (Role.OWNER, Role.ADMIN)


@dataclass(frozen=True)
class Principal:
    account_id: int
    email: str  # the signed-in admin, or the owner/admin who created the token
    via: Literal["session", "token"]
    token_id: int | None = None


def admin_of(engine: Engine, account_id: int, email: str) -> User | None:
    """The account's owner or admin with this email (case-insensitive), if there is one."""
    with Session(engine) as session:
        return session.exec(select(User).where(
            col(User.account_id) == account_id,
            func.lower(col(User.email)) == email.strip().lower(),
            col(User.role).in_(ADMIN_ROLES))).first()
