"""Sending mail over SMTP (aiosmtplib), idempotent per message.

One template pair per EmailKind under content/templates/email: `<kind>.txt` (whose
`subject` variable is the subject) and `<kind>.html`. The SentEmail row (unique
message_key) is written after the SMTP server accepted the message, so a retried activity
finds it and sends nothing. The one gap: a worker that dies between the server's "250"
and the insert sends that message once more on retry. The Message-ID is derived from the
message key, so that duplicate is the same message to a mail client (which de-duplicates).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from email.utils import format_datetime, formataddr, parseaddr
from typing import Any

import aiosmtplib
from sqlalchemy import Engine, Table, bindparam, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from config import Settings
from content.mime import alternative, header_value
from content.present import make_environment
from messages.payloads import (
    Category,
    EmailBatch,
    EmailKind,
    EmailRequest,
    EmailResult,
    Progress,
)
from records.db import insert_for, prepared, write_transaction
from records.tables import SentEmail, utcnow
from rules.links import signed_acceptance_url

log = logging.getLogger(__name__)

# Only the invitee's own mails carry the signed link: it is a bearer credential, so it never
# goes to the admin, and after the end (expired, completion) it would only lead to a 410.
LINKED_KINDS = frozenset({EmailKind.INVITATION, EmailKind.REMINDER})

ERR_MAIL_REJECTED = "MailRejected"
ERR_BAD_EMAIL_REQUEST = "BadEmailRequest"
SENT: Table = SentEmail.__table__  # type: ignore[attr-defined]


# SMTP connections kept between activities, per event loop and server: connecting, the
# greeting, EHLO and QUIT cost more than a NOOP. One is reused only if idle for less than
# IDLE_SECONDS (servers close idle ones after minutes); at most POOL_SIZE are kept.
IDLE_SECONDS = 20.0
POOL_SIZE = 8
_Pool = dict[tuple[str, int], list[tuple[aiosmtplib.SMTP, float]]]
_POOLS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pool] = \
    weakref.WeakKeyDictionary()


class SmtpSession:
    """One SMTP connection for the messages of one activity: taken at the first message
    that is really sent (none when every key was sent before), from the connections kept
    by earlier activities (checked alive with a NOOP first) or new; kept for the next one
    if everything went well, else closed."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.smtp: aiosmtplib.SMTP | None = None
        self.key = (settings.smtp_host, settings.smtp_port)
        self.pool = _POOLS.setdefault(asyncio.get_running_loop(), {}).setdefault(self.key, [])

    async def connection(self) -> aiosmtplib.SMTP:
        if self.smtp is None:
            while self.pool:
                smtp, idle_since = self.pool.pop()
                if smtp.is_connected and time.monotonic() - idle_since < IDLE_SECONDS:
                    try:
                        await smtp.noop()  # closed by the server meanwhile? then a new one
                    except (aiosmtplib.SMTPException, ConnectionError, OSError):
                        smtp.close()
                        continue
                    self.smtp = smtp
                    return smtp
                smtp.close()
            self.smtp = aiosmtplib.SMTP(hostname=self.settings.smtp_host,
                                        port=self.settings.smtp_port, timeout=10)
            await self.smtp.connect()
        return self.smtp

    async def sendmail(self, sender: str, recipients: list[str], data: bytes) -> None:
        await (await self.connection()).sendmail(sender, recipients, data)

    async def __aenter__(self) -> SmtpSession:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        smtp, self.smtp = self.smtp, None
        if smtp is None:
            return
        if exc_type is None and smtp.is_connected and len(self.pool) < POOL_SIZE:
            self.pool.append((smtp, time.monotonic()))
            return
        if smtp.is_connected:
            try:
                await smtp.quit()
            except aiosmtplib.SMTPException:
                smtp.close()


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


class EmailRenderer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.env = make_environment(auto_reload=False)  # the templates of this release

    def link(self, req: EmailRequest) -> str | None:
        if req.kind not in LINKED_KINDS:
            return None
        issued_at = req.issued_at or datetime.now(UTC)
        return signed_acceptance_url(self.settings, req.invitation_id, req.progress.email,
                                     issued_at)

    def context(self, req: EmailRequest) -> dict[str, Any]:
        p = req.progress
        if req.kind == EmailKind.REFUND_RECEIPT and p.payment is None:
            raise ApplicationError("a refund receipt needs progress.payment",
                                   type=ERR_BAD_EMAIL_REQUEST, non_retryable=True)
        full_name = f"{p.first_name} {p.last_name}".strip()
        return {
            "p": p, "kind": req.kind.value, "link": self.link(req),
            "name": p.first_name or p.email,
            "invitee": f"{full_name} <{p.email}>" if full_name else p.email,
            "categories": ordered_categories(p),
            "expiry_days": self.settings.invitation_expiry_days,
        }

    def render(self, req: EmailRequest) -> RenderedEmail:
        ctx = self.context(req)
        module = self.env.get_template(f"email/{req.kind.value}.txt").make_module(ctx)
        subject = " ".join(str(getattr(module, "subject", "")).split())
        html = self.env.get_template(f"email/{req.kind.value}.html").render(ctx)
        return RenderedEmail(subject=subject, text=str(module).strip() + "\n", html=html)


def ordered_categories(p: Progress) -> list[Any]:
    return [p.categories[c] for c in Category if c in p.categories]


@functools.cache
def _sender(mail_from: str) -> tuple[str, str, str]:
    """(From header, envelope address, Message-ID domain) of the configured sender."""
    name, address = parseaddr(mail_from)
    return (formataddr((name, address), charset="utf-8"), address,
            address.rpartition("@")[2] or "invitations.local")


def message_id(message_key: str, mail_from: str) -> str:
    return f"<{hashlib.sha256(message_key.encode()).hexdigest()[:32]}@{_sender(mail_from)[2]}>"


def message_bytes(settings: Settings, req: EmailRequest, rendered: RenderedEmail,
                  now: datetime | None = None) -> bytes:
    """The message as sent (content.mime): text and HTML, under From, To, Subject, Date,
    Message-ID (from the message key), the invitation and the kind, and on the invitee's
    mails Reply-To the admin."""
    digest = hashlib.sha256(req.message_key.encode()).hexdigest()
    from_header, _, domain = _sender(settings.mail_from)
    headers: list[tuple[str, str | Header]] = [
        ("From", from_header), ("To", req.to), ("Subject", header_value(rendered.subject)),
        ("Date", format_datetime(now or datetime.now(UTC))),  # "... +0000"
        ("Message-ID", f"<{digest[:32]}@{domain}>"),  # = message_id(...)
        ("X-Invitation-Id", req.invitation_id), ("X-Email-Kind", req.kind.value)]
    if req.admin_email and not req.kind.value.startswith("admin_"):
        headers.append(("Reply-To", req.admin_email))
    # A boundary of our own, not a random one checked against the text with a regex.
    return alternative(headers, "=_" + digest[:40], rendered.text, rendered.html)


class MailActivities:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.renderer = EmailRenderer(settings)

    def _already_sent(self, message_keys: list[str]) -> dict[str, str]:
        """The subjects of the messages among these already sent, by key (one query)."""
        with self.engine.connect() as conn:
            return {row.message_key: row.subject for row in conn.execute(prepared(
                conn, "sent_subjects", lambda: select(SENT.c.message_key, SENT.c.subject)
                .where(SENT.c.message_key.in_(bindparam("keys", expanding=True)))),
                {"keys": message_keys})}

    def _record(self, delivered: list[tuple[EmailRequest, str]]) -> None:
        """Record messages sent (with their subjects), in one transaction. A concurrent
        attempt that recorded one first sent the same message: its row is kept."""
        now = utcnow()
        with write_transaction(self.engine) as conn:
            conn.execute(prepared(conn, "record_sent", lambda: insert_for(conn, SENT)
                                  .on_conflict_do_nothing(index_elements=["message_key"])), [{
                "message_key": req.message_key, "invitation_id": req.invitation_id,
                "kind": req.kind.value, "to": req.to, "subject": subject, "sent_at": now}
                for req, subject in delivered])

    @activity.defn(name="send_emails")
    async def send_emails(self, batch: EmailBatch) -> list[EmailResult]:
        """Each message in order over one SMTP session; a retry skips the ones already
        sent (their keys). What was sent is recorded once the batch ends, or fails: a
        retry after a failure at the third message sends only the third and after."""
        sent = await asyncio.to_thread(self._already_sent,
                                       [req.message_key for req in batch.messages])
        delivered: list[tuple[EmailRequest, str]] = []
        try:
            async with SmtpSession(self.settings) as session:
                results = []
                for req in batch.messages:
                    if req.message_key in sent:
                        results.append(EmailResult(message_key=req.message_key, sent=False,
                                                   subject=sent[req.message_key]))
                        continue
                    result = await self._deliver(req, session)
                    delivered.append((req, result.subject))
                    results.append(result)
                return results
        finally:
            if delivered:
                await asyncio.to_thread(self._record, delivered)

    @activity.defn(name="send_email")
    async def send_email(self, req: EmailRequest) -> EmailResult:
        sent = await asyncio.to_thread(self._already_sent, [req.message_key])
        if req.message_key in sent:
            return EmailResult(message_key=req.message_key, sent=False,
                               subject=sent[req.message_key])
        async with SmtpSession(self.settings) as session:
            result = await self._deliver(req, session)
        await asyncio.to_thread(self._record, [(req, result.subject)])
        return result

    async def _deliver(self, req: EmailRequest, session: SmtpSession) -> EmailResult:
        """Send one message not sent yet (the caller records it)."""
        rendered = self.renderer.render(req)
        # Sent as bytes to the addresses we know (send_message would copy a Message and
        # parse its headers back into addresses).
        data, sender = message_bytes(self.settings, req, rendered), _sender(
            self.settings.mail_from)[1]
        try:
            await session.sendmail(sender, [req.to], data)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            # The address itself is refused: retrying will not change that.
            raise ApplicationError(f"recipient refused: {req.to}", type=ERR_MAIL_REJECTED,
                                   non_retryable=True) from exc
        # The link is a credential: log the key and kind, never the body.
        log.info("sent %s mail %s to %s", req.kind.value, req.message_key, req.to)
        return EmailResult(message_key=req.message_key, sent=True, subject=rendered.subject)
