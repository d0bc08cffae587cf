"""Who is asking: the one account an admin request acts for, and who stands behind it.

A console session (an owner or admin signed in by a mailed link) and an API token (created by
an owner or admin, scoped to one account) both resolve to a `Principal`. Every route reads
and changes only what belongs to `principal.account_id`: another account's invitation is
"not found" (404), never "forbidden", so ids of other accounts are not confirmed to exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from records.tables import Role

ADMIN_ROLES = (Role.OWNER, Role.ADMIN)


@dataclass(frozen=True)
class Principal:
    account_id: int
    email: str  # the signed-in admin, or the owner/admin who created the token
    via: Literal["session", "token"]
    token_id: int | None = None

