"""Unit tier: `activities.mail.message_bytes` (written by `content.mime`) is, byte for
byte, what the classic email API wrote for the same message (`reference` below: the
builder it replaced, a MIMEMultipart of two quoted-printable MIMEText flattened by
`as_bytes()`), for every kind and for the awkward cases: non-ASCII and over-long headers,
CR/LF in bodies, trailing spaces, long lines. And each header line is what compat32 folds."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime, parsedate_to_datetime

import pytest

from activities.mail import EmailRenderer, RenderedEmail, _sender, message_bytes, message_id
from config import Settings
from content.mime import UTF8_QP, alternative, header_line, header_value
from messages.payloads import EmailKind, EmailRequest
from tests.test_mail import NOW, request

# No database is used here (`settings` only): once is enough.
pytestmark = pytest.mark.sqlite_only


def reference(settings: Settings, req: EmailRequest, rendered: RenderedEmail) -> bytes:
    """The message as activities.mail built it before message_bytes (Date: NOW)."""
    import hashlib

    boundary = "=_" + hashlib.sha256(req.message_key.encode()).hexdigest()[:40]
    msg: Message = MIMEMultipart("alternative", boundary=boundary)
    msg["From"] = _sender(settings.mail_from)[0]
    msg["To"] = req.to
    msg["Subject"] = header_value(rendered.subject)  # type: ignore[assignment]
    msg["Date"] = format_datetime(NOW)
    msg["Message-ID"] = message_id(req.message_key, settings.mail_from)
    msg["X-Invitation-Id"] = req.invitation_id
    msg["X-Email-Kind"] = req.kind.value
    if req.admin_email and not req.kind.value.startswith("admin_"):
        msg["Reply-To"] = req.admin_email
    msg.attach(MIMEText(rendered.text, "plain", UTF8_QP))  # type: ignore[arg-type]
    msg.attach(MIMEText(rendered.html, "html", UTF8_QP))  # type: ignore[arg-type]
    return msg.as_bytes()


@pytest.mark.parametrize("kind", list(EmailKind))
def test_every_kind_is_written_as_the_email_api_wrote_it(
    settings: Settings, kind: EmailKind,
) -> None:
    req = request(kind, key=f"inv-1:run:{kind.value}:1")
    rendered = EmailRenderer(settings).render(req)
    assert message_bytes(settings, req, rendered, NOW) == reference(settings, req, rendered)


AWKWARD = [
    ("k", "paula@example.com", "Ünïcode ≠ ascii: Café & Co", "Grüße\r\nline\rtwo\n", "<p>é</p>"),
    ("k" * 300, "p" * 70 + "@example.com", "A subject " * 12, " lead\ttab \n.dot\nFrom x\n", ""),
    ("é:ключ", "Paula Paid <paula@example.com>", "tab\tin  two  spaces ", "x" * 500, "=_ " * 90),
    ("k2", "paula@example.com", "", "trailing space \ntrailing tab\t\n\n", "a\r\n"),
    ("k3", "pâula@exämple.com", "Subject: with; separators, and = signs?", "=3D\n", "…\x85"),
]


@pytest.mark.parametrize(("key", "to", "subject", "text", "html"), AWKWARD)
@pytest.mark.parametrize("admin_email", [None, "admin@acme.test"])
def test_awkward_headers_and_bodies_too(
    settings: Settings, key: str, to: str, subject: str, text: str, html: str,
    admin_email: str | None,
) -> None:
    req = request(EmailKind.COMPLETION, key=key).model_copy(
        update={"to": to, "admin_email": admin_email, "invitation_id": f"invitation-1-{to}"})
    rendered = RenderedEmail(subject=subject, text=text, html=html)
    assert message_bytes(settings, req, rendered, NOW) == reference(settings, req, rendered)


def test_a_sender_with_a_non_ascii_name(settings: Settings) -> None:
    odd = settings.model_copy(update={"mail_from": "Einladungen Müller <noreply@mueller.test>"})
    req = request(EmailKind.INVITATION)
    rendered = EmailRenderer(odd).render(req)
    assert message_bytes(odd, req, rendered, NOW) == reference(odd, req, rendered)


def test_header_lines_are_folded_as_compat32_folds_them() -> None:
    rng = random.Random(7)
    alphabet = "ab  \t;,=<>@.\"é\r\n" + "x" * 10
    words = ["x", "a;b", "c,", "=?utf-8?q?x?=", "<a@b.c>", '"q"', "(c)", "y" * 30]
    for n in range(6000):
        name = rng.choice(["To", "Subject", "X-Invitation-Id", "Message-ID"])
        if n % 2:  # plain words, around the 78 columns
            value = " ".join(rng.choice(words) for _ in range(rng.randrange(1, 25)))
        else:
            value = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 120)))
        try:
            expected = compat32.fold_binary(name, value)
        except Exception as exc:  # e.g. an embedded header: the same error either way
            with pytest.raises(type(exc)):
                header_line(name, value)
            continue
        assert header_line(name, value) == expected, (name, value)
    subject = Header("Grüße aus Köln " * 6, "utf-8")
    assert header_line("Subject", subject) == compat32.fold_binary(
        "Subject", subject)  # type: ignore[arg-type]


def test_the_date_is_now_unless_given(settings: Settings) -> None:
    req = request(EmailKind.ADMIN_ACCEPTED)
    rendered = EmailRenderer(settings).render(req)
    before = datetime.now(UTC).replace(microsecond=0)
    data = message_bytes(settings, req, rendered)
    date = next(line for line in data.split(b"\n") if line.startswith(b"Date: "))
    assert before <= parsedate_to_datetime(date.decode()[6:]) <= datetime.now(UTC)


def test_a_boundary_of_another_shape_is_refused() -> None:
    """Its Content-Type line is written from one folded once: any other shape could fold
    differently, or occur in the quoted-printable text."""
    for boundary in ("=_" + "0" * 39, "=_" + "A" * 40, "x" * 42, "=_" + "0" * 39 + " "):
        with pytest.raises(ValueError):
            alternative([], boundary, "text", "html")


def test_quoted_printable_is_the_email_packages() -> None:
    """content.mime writes it itself: the same as email.quoprimime for any text, lines of
    75-78 columns with "=" escapes or a space or tab at the cut among them."""
    from content.mime import _quoted_printable

    rng = random.Random(11)
    alphabet = ["x", "y", " ", "\t", "=", "é", "€", "\r", "\n", "\r\n", "\x85", "\u2028",
                "\x0b", "\x7f", ".", "From "]
    texts = ["", "\n", "x", " ", "=", "\r", "é\n", "a \n", "a\t"]
    for width in range(72, 82):
        for end in (" ", "\t", "=", "é", "x", " \n", "=\n"):
            texts += ["x" * width + end, "x" * (width - 1) + "=" + end, "y" * 200 + end * 2]
    for _ in range(4000):
        texts.append("".join(rng.choice(alphabet) * rng.choice((1, 1, 1, 30))
                             for _ in range(rng.randrange(0, 60))))
    for text in texts:
        assert _quoted_printable(text) == UTF8_QP.body_encode(text).encode("ascii"), text
