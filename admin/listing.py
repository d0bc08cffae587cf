"""The API's invitation list: filters and keyset pagination over the Invitation table.

Newest first, ties broken by id: (invited_at, id) descending is a total order, so pages
neither repeat nor skip a row while invitations are added. The cursor is opaque to
clients (base64url JSON of the last row's key and a fingerprint of the filters): a cursor
used with other filters is refused instead of silently paging another list.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, and_, func, or_
from sqlmodel import Session, col, select

from admin.problems import FieldError, Problem
from invitations.models import PendingInvitation
from records.db import as_utc
from records.tables import Invitation, User


@dataclass(frozen=True)
class Filters:
    account_id: int
    statuses: tuple[str, ...] = ()
    email: str | None = None
    created_after: datetime | None = None  # inclusive
    created_before: datetime | None = None  # exclusive

    def fingerprint(self) -> str:
        parts = [self.account_id, sorted(self.statuses), self.email,
                 self.created_after and self.created_after.isoformat(),
                 self.created_before and self.created_before.isoformat()]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def encode_cursor(row: Invitation, filters: Filters) -> str:
    raw = json.dumps({"at": as_utc(row.invited_at).isoformat(), "id": row.id,
                      "f": filters.fingerprint()})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, filters: Filters) -> tuple[datetime, str]:
    bad = Problem(400, "invalid_cursor", "the cursor is not one this API gave out: pass "
                  "`next_cursor` from the previous page unchanged, with the same filters",
                  errors=[FieldError(field="cursor", code="invalid_cursor",
                                     detail="not a cursor of this list")])
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        at, last_id, fingerprint = datetime.fromisoformat(data["at"]), data["id"], data["f"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise bad from None
    if fingerprint != filters.fingerprint() or not isinstance(last_id, str):
        raise bad
    return as_utc(at), last_id


def page(engine: Engine, filters: Filters, limit: int, cursor: str | None
         ) -> tuple[list[PendingInvitation], str | None]:
    query = (select(Invitation, User.email)
             .join(User, col(User.id) == col(Invitation.invited_by_user_id))
             .where(Invitation.account_id == filters.account_id))
    if filters.statuses:
        query = query.where(col(Invitation.status).in_(filters.statuses))
    if filters.email:
        query = query.where(func.lower(col(Invitation.email)) == filters.email.strip().lower())
    if filters.created_after:
        query = query.where(col(Invitation.invited_at) >= filters.created_after)
    if filters.created_before:
        query = query.where(col(Invitation.invited_at) < filters.created_before)
    if cursor:
        at, last_id = decode_cursor(cursor, filters)
        query = query.where(or_(col(Invitation.invited_at) < at,
                                and_(col(Invitation.invited_at) == at,
                                     col(Invitation.id) < last_id)))
    query = query.order_by(col(Invitation.invited_at).desc(), col(Invitation.id).desc()) \
        .limit(limit + 1)
    with Session(engine) as session:
        rows = list(session.exec(query).all())
    more = len(rows) > limit
    rows = rows[:limit]
    items = [PendingInvitation(
        invitation_id=row.id, email=row.email, first_name=row.first_name,
        last_name=row.last_name, user_type=row.user_type, group=row.group_name,
        status=row.status, invited_by=by, invited_at=as_utc(row.invited_at),
        expires_at=as_utc(row.expires_at)) for row, by in rows]
    return items, (encode_cursor(rows[-1][0], filters) if more else None)
