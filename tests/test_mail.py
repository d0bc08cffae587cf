"""The mail activity against a real SMTP server (the aiosmtpd catcher): every kind renders
a subject, a plain-text and an HTML body; a message key is sent once; the link is signed."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import Engine
from sqlmodel import Session, select
from temporalio.testing import ActivityEnvironment

from activities.mail import EmailRenderer, MailActivities, message_id
from config import Settings
from content.labels import BASIC_LIMITS
from mailcatcher import MaildirHandler, read_messages
from messages.payloads import (
    BlockingItem,
    Category,
    CategoryProgress,
    EmailBatch,
    EmailKind,
    EmailRequest,
    InvitationStatus,
    Payment,
    Progress,
    RefundQuote,
    SettingChange,
    UserType,
)
from records.tables import SentEmail
from rules.links import verify

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
LINK_RE = re.compile(r"http://127\.0\.0\.1:8000/i/([A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+)")


def progress(**overrides: object) -> Progress:
    quote = RefundQuote(
        amount_minor=899, currency="USD", price_minor=1499, plan="pro",
        period_start=NOW - timedelta(days=12), period_end=NOW + timedelta(days=18), at=NOW,
        seconds_left=1555200, period_seconds=2592000, formula="", payment_method="card 4242",
    )
    base = Progress(
        invitation_id="invitation-1-paula@example.com", status=InvitationStatus.COMPLETED,
        account_id=1, account_name="Acme & Co", invited_by="admin@acme.test",
        email="paula@example.com", first_name="Paula", last_name="Paid",
        user_type=UserType.BASIC, message="Welcome <b>aboard</b>!", invited_at=NOW,
        expires_at=NOW + timedelta(days=30), quote=quote,
        payment=Payment(idempotency_key="refund:invitation-1-paula@example.com",
                        amount_minor=899, currency="USD", destination="account_credit",
                        status="paid"),
        categories={c: CategoryProgress(category=c, state="live", total=4, copied=4,
                                        bytes_copied=3 * 1024 * 1024 if c == "recordings" else 0)
                    for c in Category},
        settings_changed=[SettingChange(key="cloud_recording", old=False, new=True,
                                        why="locked by account Acme & Co")],
        reports_left_behind=4,
        blocking=[BlockingItem(kind="room", name="Boardroom", action="Delete the room.")],
    )
    return base.model_copy(update=overrides)


def request(kind: EmailKind, key: str = "k1", **overrides: object) -> EmailRequest:
    admin = kind.value.startswith("admin_")
    return EmailRequest(message_key=key, kind=kind,
                        to="admin@acme.test" if admin else "paula@example.com",
                        invitation_id="invitation-1-paula@example.com",
                        progress=progress(**overrides), issued_at=NOW,
                        admin_email="admin@acme.test")


@pytest.mark.parametrize("kind", list(EmailKind))
def test_every_kind_renders_subject_text_and_html(settings: Settings, kind: EmailKind) -> None:
    out = EmailRenderer(settings).render(request(kind))
    assert out.subject and "\n" not in out.subject
    assert "Acme & Co" in out.text and "Acme &amp; Co" in out.html
    assert out.html.startswith("<!doctype html>")
    links = LINK_RE.findall(out.text)
    if kind in (EmailKind.INVITATION, EmailKind.REMINDER):
        claims = verify(settings.link_secret.get_secret_value(), links[0])
        assert (claims.invitation_id, claims.email, claims.issued_at) == (
            "invitation-1-paula@example.com", "paula@example.com", NOW)
        assert f'href="http://127.0.0.1:8000/i/{links[0]}"' in out.html
    else:  # the link is a credential: never to the admin, never once it is useless
        assert not links and "/i/" not in out.html


def test_invitation_says_who_where_what_basic_means_and_until_when(settings: Settings) -> None:
    out = EmailRenderer(settings).render(request(EmailKind.INVITATION))
    assert out.subject == "admin@acme.test invited you to join Acme & Co"
    for fact in ("admin@acme.test", "Basic user", BASIC_LIMITS, "Welcome <b>aboard</b>!",
                 "Reports do not move", "expires on 31 March 2025, 12:00 UTC"):
        assert fact in out.text, fact
    assert "Welcome &lt;b&gt;aboard&lt;/b&gt;!" in out.html and "<b>aboard" not in out.html
    licensed = EmailRenderer(settings).render(request(EmailKind.INVITATION,
                                                      user_type=UserType.LICENSED))
    assert BASIC_LIMITS not in licensed.text and "Licensed user" in licensed.text


def test_receipt_completion_and_admin_mails_carry_their_facts(settings: Settings) -> None:
    r = EmailRenderer(settings)
    receipt = r.render(request(EmailKind.REFUND_RECEIPT))
    assert receipt.subject == "Your refund: USD 8.99"
    assert "USD 8.99 = floor(1499 × 1555200 ÷ 2592000)" in receipt.text
    assert "USD 8.99, as credit to the organisation account." in receipt.text
    done = r.render(request(EmailKind.COMPLETION))
    assert "Cloud recording: off -> on (locked by account Acme & Co)" in done.text
    assert "4 reports stayed behind" in done.text and "3.0 MB" in done.text
    failed = r.render(request(EmailKind.COMPLETION, status=InvitationStatus.FAILED_COMPENSATED,
                              failure_reason="transfer chat failed"))
    assert "did not complete: transfer chat failed" in failed.text
    assert "Nothing was lost" in failed.text
    blocked = r.render(request(EmailKind.ADMIN_BLOCKED))
    assert "error 1009" in blocked.subject and "Boardroom: Delete the room." in blocked.text
    soon = r.render(request(EmailKind.ADMIN_EXPIRING_SOON))
    assert "31 March 2025" in soon.subject and "starter.py resend" in soon.text


async def _send(acts: MailActivities, req: EmailRequest):  # type: ignore[no-untyped-def]
    return await ActivityEnvironment().run(acts.send_email, req)


def _parts(msg: EmailMessage) -> tuple[str, str]:
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


async def test_send_over_smtp_once_per_message_key(
    settings: Settings, engine: Engine, smtp: Path,
) -> None:
    acts = MailActivities(settings, engine)
    first = await _send(acts, request(EmailKind.INVITATION, key="inv:1"))
    again = await _send(acts, request(EmailKind.INVITATION, key="inv:1"))
    other = await _send(acts, request(EmailKind.REMINDER, key="inv:reminder:1"))
    assert (first.sent, again.sent, other.sent) == (True, False, True)
    assert again.subject == first.subject
    msgs = read_messages(settings.maildir)
    assert len(msgs) == 2
    invitation = next(m for m in msgs if m["X-Email-Kind"] == "invitation")
    assert invitation["To"] == "paula@example.com"
    assert invitation["Subject"] == first.subject
    assert invitation["Reply-To"] == "admin@acme.test"
    assert invitation["Message-ID"].endswith("@meet.example>")
    text, html = _parts(invitation)
    token = LINK_RE.findall(text)[0]
    assert verify(settings.link_secret.get_secret_value(), token).email == "paula@example.com"
    assert token in html
    with Session(engine) as s:
        rows = s.exec(select(SentEmail)).all()
    assert sorted(r.message_key for r in rows) == ["inv:1", "inv:reminder:1"]


async def test_smtp_down_fails_the_attempt_and_records_nothing(
    settings: Settings, engine: Engine,
) -> None:
    acts = MailActivities(settings, engine)
    req = request(EmailKind.ADMIN_COMPLETED, key="done:1")
    with pytest.raises(OSError):  # nobody listens on settings.smtp_port: Temporal retries
        await _send(acts, req)
    with Session(engine) as s:
        assert s.exec(select(SentEmail)).all() == []
    from mailcatcher import start_catcher

    catcher = start_catcher("127.0.0.1", settings.smtp_port, settings.maildir)
    try:
        assert (await _send(acts, req)).sent is True  # the retry sends it
    finally:
        catcher.stop()
    assert [m["X-Email-Kind"] for m in read_messages(settings.maildir)] == ["admin_completed"]


async def test_a_kept_smtp_connection_is_reused_and_replaced_once_the_server_restarted(
    settings: Settings, engine: Engine,
) -> None:
    """Batches on one event loop share an SMTP connection; after the server restarted,
    the kept one is found closed and a new one carries the next batch."""
    from mailcatcher import start_catcher

    acts = MailActivities(settings, engine)
    sessions: list[object] = []

    class Counting(MaildirHandler):
        async def handle_EHLO(self, server, session, envelope, hostname, responses):  # type: ignore[no-untyped-def]
            sessions.append(session)
            session.host_name = hostname
            return responses

    def batch(*keys: str) -> EmailBatch:
        return EmailBatch(messages=[request(EmailKind.REMINDER, key=k) for k in keys])

    catcher = Controller(Counting(settings.maildir), hostname="127.0.0.1",
                         port=settings.smtp_port)
    catcher.start()
    try:
        await ActivityEnvironment().run(acts.send_emails, batch("r:1"))
        await ActivityEnvironment().run(acts.send_emails, batch("r:2", "r:3"))
        assert len(sessions) == 1  # one connection (one EHLO) for both batches
    finally:
        catcher.stop()
    restarted = start_catcher("127.0.0.1", settings.smtp_port, settings.maildir)
    try:
        done = await ActivityEnvironment().run(acts.send_emails, batch("r:4"))
    finally:
        restarted.stop()
    assert [r.sent for r in done] == [True]
    assert sorted(m["Message-ID"] for m in read_messages(settings.maildir)) == sorted(
        message_id(f"r:{n}", settings.mail_from) for n in range(1, 5))


async def test_refund_receipt_without_payment_is_a_non_retryable_error(
    settings: Settings, engine: Engine,
) -> None:
    from temporalio.exceptions import ApplicationError

    with pytest.raises(ApplicationError) as info:
        await _send(MailActivities(settings, engine),
                    request(EmailKind.REFUND_RECEIPT, payment=None))
    assert info.value.non_retryable and info.value.type == "BadEmailRequest"
