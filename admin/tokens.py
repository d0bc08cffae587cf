"""API tokens: created by an owner or admin for one account, shown once, stored hashed.

A token reads `inv_<8 hex>_<43 base64url>`: the first part (`inv_1a2b3c4d`) is its prefix,
not secret, unique, what lists show and how a request finds the row; the rest is 256 bits
from `secrets`. Only sha256 of the whole token is stored, compared in constant time.
A token authenticates while it is not revoked and its creator is still an owner or admin
of the account; the requests it makes act as that creator (the inviter recorded).

`api_principal` is the FastAPI dependency of every `/api/v1` route: `Authorization: Bearer
<token>`, or a 401 problem (admin/problems.py) saying what is wrong with it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy import Engine, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from admin.principal import ADMIN_ROLES, Principal
from admin.problems import Problem
from invitations.errors import InvitationError, UnknownAccount
from invitations.validation import check_account_admin
from records.api_tables import ApiToken
from records.db import write_session
from records.tables import Account, AuditEvent, User

TOKEN_RE = re.compile(r"^(inv_[0-9a-f]{8})_([A-Za-z0-9_-]{43})$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")
# last_used_at is written at most this often per token: not one write per request.
LAST_USED_RESOLUTION = timedelta(seconds=60)


class TokenNotFound(InvitationError):
    def __init__(self, message: str) -> None:
        super().__init__("token_not_found", "token", message)


class InvalidTokenName(InvitationError):
    def __init__(self, message: str) -> None:
        super().__init__("invalid_token_name", "name", message)


class TokenInfo(BaseModel):
    """A token as lists show it: never the secret, never its hash."""

    id: int
    account_id: int
    name: str
    prefix: str
    created_by: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None


class CreatedToken(TokenInfo):
    token: str  # shown once, at creation


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _info(row: ApiToken) -> TokenInfo:
    return TokenInfo.model_validate(row, from_attributes=True)


def _admin(session: Session, account_id: int, by: str) -> User:
    """The same checks and errors as `starter.py invite --by` (invitations.validation)."""
    return check_account_admin(session, account_id, by, "manage its API tokens")[1]


def create_token(engine: Engine, account_id: int, by: str, name: str) -> CreatedToken:
    name = name.strip()
    if not NAME_RE.match(name):
        raise InvalidTokenName(f"token name {name!r}: 1 to 64 letters, digits, spaces, "
                               "dots, dashes or underscores, starting with a letter or digit")
    for _ in range(5):  # a prefix collision (32 bits) is retried with a new token
        prefix = f"inv_{secrets.token_hex(4)}"
        token = f"{prefix}_{secrets.token_urlsafe(32)}"
        try:
            with write_session(engine) as session:
                admin = _admin(session, account_id, by)
                assert admin.id is not None
                row = ApiToken(account_id=account_id, name=name, prefix=prefix,
                               secret_hash=_hash(token), created_by_user_id=admin.id,
                               created_by=admin.email)
                session.add(row)
                session.flush()
                session.add(AuditEvent(kind="api_token_created", account_id=account_id, detail={
                    "token_id": row.id, "name": name, "prefix": prefix, "by": admin.email}))
                session.commit()
                return CreatedToken(**_info(row).model_dump(), token=token)
        except IntegrityError:
            continue
    raise RuntimeError("could not draw an unused token prefix in 5 tries")


def list_tokens(engine: Engine, account_id: int, *, include_revoked: bool = False
                ) -> list[TokenInfo]:
    with Session(engine) as session:
        if session.get(Account, account_id) is None:
            raise UnknownAccount(f"there is no account with id {account_id}")
        query = select(ApiToken).where(ApiToken.account_id == account_id) \
            .order_by(col(ApiToken.id))
        if not include_revoked:
            query = query.where(col(ApiToken.revoked_at).is_(None))
        return [_info(r) for r in session.exec(query).all()]


def revoke_token(engine: Engine, account_id: int, by: str, token: str) -> TokenInfo:
    """Revoke by id or prefix. Revoking a revoked token changes nothing and says so."""
    with write_session(engine) as session:
        admin = _admin(session, account_id, by)
        query = select(ApiToken).where(ApiToken.account_id == account_id)
        query = query.where(col(ApiToken.id) == int(token)) if token.isdigit() \
            else query.where(col(ApiToken.prefix) == token.strip())
        row = session.exec(query).first()
        if row is None:
            raise TokenNotFound(f"account {account_id} has no API token {token!r} (give its "
                                "id or its prefix, as `token list` shows them)")
        if row.revoked_at is None:
            row.revoked_at, row.revoked_by = datetime.now(UTC), admin.email
            session.add(row)
            session.add(AuditEvent(kind="api_token_revoked", account_id=account_id, detail={
                "token_id": row.id, "prefix": row.prefix, "by": admin.email}))
            session.commit()
            session.refresh(row)
        return _info(row)


# --- authenticating a request -----------------------------------------------------------
@dataclass(frozen=True)
class Refusal:
    detail: str


def authenticate(engine: Engine, token: str) -> Principal | Refusal:
    """The principal a presented token stands for, or why it is refused."""
    match = TOKEN_RE.match(token)
    if match is None:
        return Refusal("the bearer token is malformed: API tokens look like "
                       "inv_<8 hex digits>_<43 characters>, as `starter.py token create` "
                       "prints them")
    with Session(engine) as session:
        found = session.exec(
            select(ApiToken, User)
            .join(User, col(User.id) == col(ApiToken.created_by_user_id))
            .where(ApiToken.prefix == match.group(1))).first()
    if found is None or not hmac.compare_digest(found[0].secret_hash, _hash(token)):
        return Refusal("unknown API token")
    row, creator = found
    if row.revoked_at is not None:
        return Refusal(f"API token {row.prefix} was revoked")
    if creator.account_id != row.account_id or creator.role not in ADMIN_ROLES:
        return Refusal(f"API token {row.prefix} was created by {row.created_by}, who is no "
                       "longer an owner or admin of the account")
    now = datetime.now(UTC)
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        with write_session(engine) as session:
            session.exec(update(ApiToken).where(col(ApiToken.id) == row.id)  # type: ignore[call-overload]
                         .values(last_used_at=now))
            session.commit()
    return Principal(account_id=row.account_id, email=creator.email, via="token",
                     token_id=row.id)


_bearer = HTTPBearer(auto_error=False, description="An API token: `starter.py token create`")


async def api_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The principal of an `/api/v1` request, or a 401 problem."""
    if credentials is None:
        if request.headers.get("authorization"):
            raise Problem(401, "unauthorized", "the Authorization header must be "
                          "`Bearer <API token>`", headers={"WWW-Authenticate": "Bearer"})
        raise Problem(401, "unauthorized", "no API token: send `Authorization: Bearer "
                      "<token>`", headers={"WWW-Authenticate": "Bearer"})
    result = await asyncio.to_thread(authenticate, request.app.state.engine,
                                     credentials.credentials)
    if isinstance(result, Refusal):
        raise Problem(401, "unauthorized", result.detail,
                      headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return result


ApiPrincipal = Annotated[Principal, Depends(api_principal)]
