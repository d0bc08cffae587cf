"""Unit tier: every ending has its mails (issue #12, "every ending is told"). Each new kind
renders a subject, a text and an HTML body from `Progress`, and a failed join says in
plain words what was undone: the refund reversed and the plan continuing, the copies
removed, the invitee's own data kept."""

from __future__ import annotations

import pytest

from activities.mail import EmailRenderer
from config import Settings
from messages.payloads import (
    Category,
    CategoryProgress,
    EmailKind,
    InvitationStatus,
    Payment,
    RefundDestination,
)
from tests.test_mail import NOW, progress, request

ENDINGS = [EmailKind.FAILED, EmailKind.ADMIN_FAILED, EmailKind.REVOKED, EmailKind.ADMIN_REVOKED,
           EmailKind.DECLINED, EmailKind.ADMIN_DECLINED, EmailKind.ADMIN_MAIL_UNDELIVERED]
REVERSED = Payment(idempotency_key="refund:invitation-1-paula@example.com", amount_minor=3163,
                   currency="USD", destination=RefundDestination.ORIGINAL_PAYMENT_METHOD,
                   status="reversed")
# Chat and contacts had been copied and were removed again; the rest never started.
UNDONE = {c: CategoryProgress(category=c, state="compensated" if c in ("chat", "contacts")
                              else "pending") for c in Category}


def failed(**overrides: object) -> dict[str, object]:
    return {"status": InvitationStatus.FAILED_COMPENSATED,
            "failure_reason": "Moving chat messages failed",
            "payment": REVERSED, "categories": UNDONE, "finished_at": NOW, **overrides}


@pytest.mark.parametrize("kind", ENDINGS)
def test_each_ending_renders_subject_text_and_html_without_a_link(
    settings: Settings, kind: EmailKind,
) -> None:
    extra = failed() if "failed" in kind.value else {"finished_at": NOW}
    out = EmailRenderer(settings).render(request(kind, **extra))
    assert out.subject and "\n" not in out.subject and "Acme & Co" in out.subject
    assert "Acme & Co" in out.text and "Acme &amp; Co" in out.html
    assert out.html.startswith("<!doctype html>") and "/i/" not in out.html + out.text


@pytest.mark.parametrize("kind", [EmailKind.FAILED, EmailKind.ADMIN_FAILED,
                                  EmailKind.COMPLETION])
def test_a_failed_join_says_what_was_undone(settings: Settings, kind: EmailKind) -> None:
    out = EmailRenderer(settings).render(request(kind, **failed()))
    whose = "Their" if kind == EmailKind.ADMIN_FAILED else "Your"
    said = f"{whose} refund of USD 31.63 was reversed; {whose.lower()} Pro plan continues."
    assert said in out.text and "USD 31.63</strong> was reversed" in out.html
    assert "Moving chat messages failed" in out.text
    assert "removed again: Chat history, Contacts." in out.text
    assert f"Nothing was lost: {whose.lower()} own account keeps all" in out.text
    assert "Profile" not in out.text  # never copied: not claimed as undone
    if kind != EmailKind.COMPLETION:
        assert "did not go through" in out.text


def test_a_failed_join_without_a_refund_and_with_a_step_left_says_so(
    settings: Settings,
) -> None:
    left = {**UNDONE, Category.RECORDINGS: CategoryProgress(category=Category.RECORDINGS,
                                                            state="failed")}
    out = EmailRenderer(settings).render(request(EmailKind.FAILED, **failed(
        payment=None, categories=left)))
    assert "No money moved" in out.text and "reversed" not in out.text
    assert "Still to be undone: Cloud recordings." in out.text


def test_revoked_declined_and_undelivered_say_what_happened(settings: Settings) -> None:
    r = EmailRenderer(settings)
    revoked = r.render(request(EmailKind.REVOKED, status=InvitationStatus.REVOKED,
                               finished_at=NOW))
    assert "was withdrawn on 1 March 2025" in revoked.text
    assert "Nothing changed on your account" in revoked.text
    admin_revoked = r.render(request(EmailKind.ADMIN_REVOKED, status=InvitationStatus.REVOKED))
    assert "starter.py invite --account 1" in admin_revoked.text
    declined = r.render(request(EmailKind.DECLINED, status=InvitationStatus.DECLINED))
    assert declined.subject == "You declined the invitation to join Acme & Co"
    admin_declined = r.render(request(EmailKind.ADMIN_DECLINED, status=InvitationStatus.DECLINED))
    assert admin_declined.subject.startswith("Paula Paid <paula@example.com> declined")
    undelivered = r.render(request(EmailKind.ADMIN_MAIL_UNDELIVERED,
                                   status=InvitationStatus.PENDING,
                                   mail_problem="550 5.1.1 mailbox unavailable"))
    assert undelivered.subject == \
        "The invitation email to paula@example.com (Acme & Co) could not be delivered"
    assert "delivered: 550 5.1.1 mailbox unavailable." in undelivered.text
    assert "starter.py resend invitation-1-paula@example.com" in undelivered.text
    assert "550 5.1.1 mailbox unavailable" in undelivered.html


def test_new_kinds_and_fields_are_on_the_contract() -> None:
    assert {k.value for k in ENDINGS} <= {k.value for k in EmailKind}
    p = progress(mail_problem="connection refused", link_issued_at=NOW)
    assert p.model_dump(mode="json")["mail_problem"] == "connection refused"
    assert p.link_issued_at == NOW
