"""SSO just-in-time (issue #14): the company IdP's OIDC ID token lets a person of a verified
domain in without an invitation email.

    POST /sso/{account}/start   -> a nonce (single use, INVITES_SSO_NONCE_TTL_SECONDS)
    POST /sso/{account}/login   id_token + nonce (form or JSON), domains/sso_routes.py

`domains.idtoken.IdTokenVerifier` checks the token (signature, RS256/ES256 only, `iss`,
`aud`, `exp`, and the `nonce` the login started with). `SsoLogins.consume` then spends the
nonce with one conditional UPDATE, so a replayed token is refused. `JustInTime.login`
decides by where the email is now:

- no user anywhere: a User in the organisation, role member, licensed if a seat is free
  else basic (the unique email index makes a second login find it, not add one);
- a member of this organisation already: nothing to do;
- an individual account (or any other account): an invitation from the account's owner
  (or INVITES_SSO_INVITER), accepted at once through `InvitationsClient`: the verified
  domain stands for the email confirmation, but the 1009 check, the refund choice and the
  transfer are the workflow's as for any invitation.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from config import Settings
from domains.claims import verified_domain
from domains.idtoken import IdTokenVerifier, SsoRefused
from domains.names import email_domain
from domains.tables import SsoLogin
from invitations.client import InvitationsClient
from invitations.errors import InvitationError, WorkflowRefused
from messages.payloads import AcceptRequest, UserType
from records.claims import lock_account, seats_taken
from records.db import write_session
from records.ids import normalise_email
from records.tables import Account, AccountKind, Role, User


@dataclass
class SsoAnswer:
    outcome: str  # provisioned | already_member | invitation
    email: str
    account_id: int
    message: str
    user_id: int | None = None
    user_type: str | None = None
    invitation_id: str | None = None
    invitation: dict[str, Any] = field(default_factory=dict)  # the accept outcome, status

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, {})}


def email_verified(value: Any) -> bool:
    """Only an IdP's explicit yes: the JSON true, or the string "true" some IdPs send.
    Missing, false, "false", 0, 1 and anything else are not a verified address."""
    if value is True:
        return True
    return isinstance(value, str) and value.strip().lower() == "true"


class SsoLogins:
    """The single-use nonces (domains.tables.SsoLogin)."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings, self.engine = settings, engine

    def start(self, account_id: int) -> SsoLogin:
        with write_session(self.engine) as session:
            account = session.get(Account, account_id)
            if account is None or account.kind != AccountKind.BUSINESS:
                raise SsoRefused(404, "unknown_account",
                                 f"there is no business account with id {account_id}", "account")
            now = datetime.now(UTC)
            # Spent or expired nonces prove nothing any more: the table holds only the
            # logins of the last TTL, however many starts anyone posts.
            session.exec(delete(SsoLogin).where(  # type: ignore[call-overload]
                col(SsoLogin.expires_at) < now))
            login = SsoLogin(nonce=secrets.token_urlsafe(32), account_id=account_id,
                             created_at=now, expires_at=now + timedelta(
                                 seconds=self.settings.sso_nonce_ttl_seconds))
            session.add(login)
            session.commit()
            session.refresh(login)
            return login

    def consume(self, account_id: int, nonce: str, email: str) -> None:
        """Spend the nonce, or SsoRefused(401): unknown, expired, or already used."""
        now = datetime.now(UTC)
        with write_session(self.engine) as session:
            spent = session.exec(update(SsoLogin).where(  # type: ignore[call-overload]
                col(SsoLogin.nonce) == nonce, col(SsoLogin.account_id) == account_id,
                col(SsoLogin.used_at).is_(None), col(SsoLogin.expires_at) > now,
            ).values(used_at=now, email=email))
            session.commit()
        if spent.rowcount != 1:
            raise SsoRefused(401, "nonce_used_or_unknown", "this login was already used, has "
                             "expired, or was not started here: start a new login", "nonce")


class JustInTime:
    def __init__(self, settings: Settings, engine: Engine, invitations: InvitationsClient) -> None:
        self.settings, self.engine, self.invitations = settings, engine, invitations
        self.logins = SsoLogins(settings, engine)

    async def login(self, account_id: int, id_token: str, nonce: str) -> SsoAnswer:
        claims = IdTokenVerifier(self.settings).verify(id_token, nonce)
        email = normalise_email(str(claims["email"]))
        await asyncio.to_thread(self.logins.consume, account_id, nonce, email)
        if not email_verified(claims.get("email_verified")):
            raise SsoRefused(403, "email_not_verified", "the IdP has not marked this email "
                             "address verified (email_verified must be true)", "email")
        domain = email_domain(email)
        if domain is None or await asyncio.to_thread(
                verified_domain, self.engine, account_id, domain) is None:
            raise SsoRefused(403, "domain_not_verified", f"{email} is not on a verified domain "
                             f"of account {account_id}: only people of its verified domains "
                             "join by single sign-on", "email")
        names = (str(claims.get("given_name") or ""), str(claims.get("family_name") or ""))
        answer = await asyncio.to_thread(self._provision, account_id, email, *names)
        if answer is not None:
            return answer
        return await self._invite_and_accept(account_id, email, *names)

    def _provision(self, account_id: int, email: str, first: str, last: str) -> SsoAnswer | None:
        """A new user in the organisation, or the member found; None: they have an account
        elsewhere (the invitation path)."""
        with write_session(self.engine) as session:
            if lock_account(session, account_id) is None:
                raise SsoRefused(404, "unknown_account", f"no account {account_id}", "account")
            user = self._user(session, email)
            if user is None:
                account = session.get(Account, account_id)
                assert account is not None
                kind = "licensed" if seats_taken(session, account_id) < account.licensed_seats \
                    else "basic"
                user = User(email=email, account_id=account_id, role=Role.MEMBER,
                            user_type=kind, first_name=first, last_name=last)
                session.add(user)
                try:
                    session.commit()
                except IntegrityError:  # the same person's other login won the insert
                    session.rollback()
                    user = self._user(session, email)
                    assert user is not None
                else:
                    return SsoAnswer("provisioned", email, account_id,
                                     f"Welcome: {email} joined as a {kind} member.",
                                     user_id=user.id, user_type=kind)
            if user.account_id == account_id:
                return SsoAnswer("already_member", email, account_id,
                                 f"{email} is a member already.", user_id=user.id,
                                 user_type=user.user_type)
            return None

    async def _invite_and_accept(self, account_id: int, email: str, first: str,
                                 last: str) -> SsoAnswer:
        inviter, licensed = await asyncio.to_thread(self._inviter_and_seat, account_id)
        try:
            started = await self.invitations.invite(
                account_id, inviter, email, first_name=first, last_name=last,
                user_type=UserType.LICENSED if licensed else UserType.BASIC)
            invitation = started.invitation_id
            try:
                outcome = (await self.invitations.accept(invitation, AcceptRequest())).model_dump(
                    mode="json")
            except WorkflowRefused as refused:
                if refused.type != "NotAwaitingAcceptance":
                    raise
                outcome = {"outcome": "already_accepted", "message": refused.message}
            status = (await self.invitations.status(invitation)).status.value
        except InvitationError as exc:
            raise SsoRefused(409, exc.code, exc.message, exc.field) from exc
        return SsoAnswer("invitation", email, account_id, str(outcome.get("message", "")),
                         invitation_id=invitation,
                         invitation={"accept": outcome, "status": status})

    def _inviter_and_seat(self, account_id: int) -> tuple[str, bool]:
        with Session(self.engine) as session:
            account = session.get(Account, account_id)
            if account is None:
                raise SsoRefused(404, "unknown_account", f"no account {account_id}", "account")
            inviter = self.settings.sso_inviter or session.exec(
                select(User.email).where(User.account_id == account_id, User.role == Role.OWNER)
                .order_by(col(User.id))).first()
            if not inviter:
                raise SsoRefused(409, "no_inviter", f"account {account_id} has no owner to "
                                 "invite SSO users: set INVITES_SSO_INVITER", "account")
            return inviter, seats_taken(session, account_id) < account.licensed_seats

    @staticmethod
    def _user(session: Session, email: str) -> User | None:
        return session.exec(select(User).where(func.lower(User.email) == email)).first()
