"""Signing owners and admins in to the console: a one-time link by mail, then a session.

- Asking for a link (`issue_link`): only an owner or admin of a business account gets one,
  at most `admin_signin_per_hour` per address (counted under the user's row lock, so two
  requests at once cannot both take the last one). Whoever asks gets the same answer, so
  the form never tells whether an address exists.
- Using it: opening the link (`check_link`) only asks to confirm, so a mail scanner that
  fetches links does not spend it. Confirming (`use_link`) is one conditional `UPDATE ...
  WHERE used_at IS NULL AND expires_at > now`, its row count checked, in the transaction
  that opens the session: two clicks at once open one session (the other is told the link
  was used). AdminSession.link_id is unique besides.
- The session: a random id in an HttpOnly, SameSite=Lax cookie (Secure when the console is
  served over https); the database keeps its sha256 only, as it does for the link tokens.
  Every request re-reads it and checks the person is still an owner or admin of its account.
  Signing out ends the row.
- CSRF: every form carries an HMAC (keyed by the link secret) of the cookie it is posted
  with: the session id, or, before signing in, a random "form" cookie (double submit).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr

import aiosmtplib
from fastapi import Request, Response
from sqlalchemy import Engine, func, update
from sqlmodel import Session, col, select

from admin.principal import ADMIN_ROLES, Principal
from config import Settings
from records.console_auth import AdminSession, SignInLink
from records.db import write_session, write_transaction
from records.ids import normalise_email
from records.tables import Account, AccountKind, User

log = logging.getLogger(__name__)

SESSION_COOKIE = "console_session"
FORM_COOKIE = "console_form"  # before signing in: what the sign-in form's CSRF token signs
SIGNIN_PATH = "/signin"
SIGNIN_MAIL_KIND = "admin_signin"  # X-Email-Kind of the mail


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def now_utc() -> datetime:
    return datetime.now(UTC)


class SignInRefused(Exception):
    """A sign-in link that opens nothing: `reason` is "invalid", "expired" or "used"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MailUnavailable(Exception):
    """The SMTP server could not take the sign-in mail."""


@dataclass(frozen=True)
class IssuedLink:
    email: str
    account_name: str
    url: str
    expires_at: datetime


def _admin_row(session: Session, email: str) -> tuple[User, Account] | None:
    """The owner or admin of a business account with this email, row-locked (PostgreSQL;
    on SQLite the IMMEDIATE transaction holds the write lock already)."""
    found = session.exec(
        select(User, Account).join(Account, col(Account.id) == col(User.account_id))
        .where(func.lower(col(User.email)) == normalise_email(email),
               col(User.role).in_(ADMIN_ROLES), col(Account.kind) == AccountKind.BUSINESS)
        .with_for_update(of=User)).first()
    return (found[0], found[1]) if found is not None else None


def issue_link(engine: Engine, settings: Settings, email: str, *,
               rate_limited: bool = True) -> IssuedLink | None:
    """A new sign-in link for `email`; None (and nothing written) when it is not an owner
    or admin of a business account, or asked for too many links this hour (unless
    `rate_limited=False`: `make run` printing the demo admin's link on this machine)."""
    email = normalise_email(email)
    now = now_utc()
    with write_session(engine) as session:
        found = _admin_row(session, email)
        if found is None:
            return None
        user, account = found
        assert account.id is not None
        recent = session.exec(select(func.count()).select_from(SignInLink).where(
            col(SignInLink.email) == user.email,
            col(SignInLink.created_at) > now - timedelta(hours=1))).one()
        if rate_limited and recent >= settings.admin_signin_per_hour:
            log.warning("console sign-in: rate limit reached for an admin address of account "
                        "%s (%s links this hour): no mail sent", account.id, recent)
            return None
        token = secrets.token_urlsafe(32)
        expires = now + timedelta(minutes=settings.admin_signin_link_minutes)
        session.add(SignInLink(token_hash=digest(token), account_id=account.id,
                               email=user.email, created_at=now, expires_at=expires))
        session.commit()
        base = settings.admin_base_url.rstrip("/")
        return IssuedLink(user.email, account.name, f"{base}{SIGNIN_PATH}/{token}", expires)


def check_link(engine: Engine, token: str) -> IssuedLink:
    """What an unused, unexpired link would sign in to, spending nothing (the page that
    asks to confirm: mail scanners that open links must not use them up)."""
    with Session(engine) as session:
        found = session.exec(select(SignInLink, Account.name)
                             .join(Account, col(Account.id) == col(SignInLink.account_id))
                             .where(col(SignInLink.token_hash) == digest(token))).first()
    if found is None:
        raise SignInRefused("invalid")
    link, name = found
    if link.used_at is not None:
        raise SignInRefused("used")
    if link.expires_at <= now_utc():
        raise SignInRefused("expired")
    return IssuedLink(link.email, name, "", link.expires_at)


def use_link(engine: Engine, settings: Settings, token: str) -> tuple[str, Principal]:
    """Spend the link: (the new session's cookie value, who signed in), or SignInRefused."""
    token_hash, now = digest(token), now_utc()
    links = SignInLink.__table__  # type: ignore[attr-defined]
    with write_transaction(engine) as conn:
        spent = conn.execute(update(links).where(
            links.c.token_hash == token_hash, links.c.used_at.is_(None),
            links.c.expires_at > now).values(used_at=now))
        if spent.rowcount != 1:
            row = conn.execute(select(links.c.used_at).where(
                links.c.token_hash == token_hash)).first()
            raise SignInRefused("invalid" if row is None else
                                "used" if row.used_at is not None else "expired")
        link = conn.execute(select(links.c.id, links.c.account_id, links.c.email).where(
            links.c.token_hash == token_hash)).one()
        still_admin = conn.execute(select(User.id).where(
            col(User.account_id) == link.account_id,
            func.lower(col(User.email)) == link.email, col(User.role).in_(ADMIN_ROLES))).first()
        if still_admin is None:  # demoted since the mail: the link is spent, opens nothing
            raise SignInRefused("invalid")
        session_id = secrets.token_urlsafe(32)
        conn.execute(AdminSession.__table__.insert().values(  # type: ignore[attr-defined]
            session_hash=digest(session_id), account_id=link.account_id, email=link.email,
            link_id=link.id, created_at=now,
            expires_at=now + timedelta(hours=settings.admin_session_hours)))
    return session_id, Principal(link.account_id, link.email, "session")


def session_principal(engine: Engine, session_id: str) -> Principal | None:
    """Who this session cookie signs in, if it is open and they are still an admin."""
    with Session(engine) as session:
        row = session.exec(
            select(AdminSession.account_id, AdminSession.email)
            .join(User, (func.lower(col(User.email)) == col(AdminSession.email))
                  & (col(User.account_id) == col(AdminSession.account_id)))
            .where(col(AdminSession.session_hash) == digest(session_id),
                   col(AdminSession.ended_at).is_(None),
                   col(AdminSession.expires_at) > now_utc(),
                   col(User.role).in_(ADMIN_ROLES))).first()
    return Principal(row[0], row[1], "session") if row is not None else None


def end_session(engine: Engine, session_id: str) -> bool:
    with write_transaction(engine) as conn:
        ended = conn.execute(update(AdminSession).where(
            col(AdminSession.session_hash) == digest(session_id),
            col(AdminSession.ended_at).is_(None)).values(ended_at=now_utc()))
    return bool(ended.rowcount == 1)


# --- CSRF -----------------------------------------------------------------------------
def csrf_token(settings: Settings, cookie_value: str) -> str:
    key = settings.link_secret.get_secret_value().encode()
    return hmac.new(key, b"console-csrf:" + cookie_value.encode(), hashlib.sha256).hexdigest()


def csrf_ok(settings: Settings, cookie_value: str | None, given: str | None) -> bool:
    if not cookie_value or not given:
        return False
    return hmac.compare_digest(csrf_token(settings, cookie_value), given)


def new_form_cookie() -> str:
    return secrets.token_urlsafe(24)


def set_cookie(response: Response, settings: Settings, name: str, value: str,
               max_age: int | None = None) -> None:
    """HttpOnly, SameSite=Lax, whole site; Secure when the console is served over https."""
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True,
                        samesite="lax",
                        secure=settings.admin_base_url.lower().startswith("https://"))


async def signed_in(request: Request) -> Principal | None:
    """The session's principal, or None (the console sends such a browser to sign in)."""
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id:
        return None
    return await asyncio.to_thread(session_principal, request.app.state.engine, session_id)


# --- the mail ---------------------------------------------------------------------------
def signin_message(settings: Settings, link: IssuedLink) -> EmailMessage:
    minutes = settings.admin_signin_link_minutes
    msg = EmailMessage()
    msg["From"] = settings.mail_from
    msg["To"] = link.email
    msg["Subject"] = f"Sign in to the {link.account_name} admin console"
    msg["Date"] = format_datetime(now_utc())
    msg["Message-ID"] = make_msgid(domain=parseaddr(settings.mail_from)[1].rpartition("@")[2]
                                   or "invitations.local")
    msg["X-Email-Kind"] = SIGNIN_MAIL_KIND
    msg.set_content(
        f"Someone (we hope you) asked to sign in to the {link.account_name} admin console "
        f"as {link.email}.\n\nSign in: {link.url}\n\nThe link works once, for {minutes} "
        "minutes. If you did not ask for it, ignore this mail: nothing happens without "
        "the link.\n")
    return msg


async def send_signin_mail(settings: Settings, link: IssuedLink | None) -> None:
    """Send the link; with no link (unknown address, rate limit) only check the server is
    there, so both answers fail alike when it is down. MailUnavailable if it is."""
    try:
        if link is not None:
            await aiosmtplib.send(signin_message(settings, link), hostname=settings.smtp_host,
                                  port=settings.smtp_port, timeout=10)
            return
        smtp = aiosmtplib.SMTP(hostname=settings.smtp_host, port=settings.smtp_port,
                               timeout=10)
        await smtp.connect()
        await smtp.quit()
    except (aiosmtplib.SMTPException, OSError) as exc:
        log.warning("console sign-in mail: SMTP %s:%s unavailable: %s", settings.smtp_host,
                    settings.smtp_port, exc)
        raise MailUnavailable(str(exc)) from exc
