"""Frozen with workflows/v1/invitation.py (see there).

Words the invitation shows people: the operator's summary in the Web UI (current
details, Temporal markdown) and the messages answering `accept`."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

with workflow.unsafe.imports_passed_through():
    from messages.payloads import BlockingItem, Progress, RefundQuote
    from rules.money import format_minor

CATEGORY_LABELS = {
    "profile": "Profile", "meetings": "Meetings and webinars", "recordings": "Cloud recordings",
    "chat": "Chat history", "contacts": "Contacts", "settings": "Settings",
}


def blocked_message(account_name: str, items: list[BlockingItem]) -> str:
    lines = [f"Error 1009: you cannot join {account_name} yet."]
    lines += [f"- {item.name}: {item.action}" for item in items]
    lines.append("Once this is done, accept again: the invitation stays open.")
    return "\n".join(lines)


def refund_message(quote: RefundQuote) -> str:
    return (
        f"Your {quote.plan} plan ends when you join. You get back "
        f"{format_minor(quote.amount_minor, quote.currency)} for the {quote.seconds_left} "
        f"seconds left of its {quote.period_seconds}-second period "
        f"({quote.formula} with price {quote.price_minor}). "
        "Choose where the refund goes: your original payment method, or credit moved to "
        "the account you join."
    )


def describe_failure(err: BaseException) -> str:
    """`message (Type)` of the root business cause of an activity failure."""
    cause: BaseException | None = err
    while isinstance(cause, ActivityError) and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, ApplicationError):
        return f"{cause.message} ({cause.type or 'ApplicationError'})"
    if isinstance(cause, TimeoutError):
        return f"timed out ({cause.type.name if cause.type else 'timeout'})"
    return str(cause) or type(cause).__name__


def current_details(p: Progress) -> str:
    """The readable summary an operator sees on the workflow page."""
    lines = [
        f"**{p.email}** invited to **{p.account_name or p.account_id}** by {p.invited_by}",
        f"Status: `{p.status.value}`, {p.step}",
        f"Expires: {p.expires_at:%Y-%m-%d %H:%M} UTC, reminders sent: {p.reminders_sent}",
    ]
    if p.blocking:
        lines.append("Blocked (error 1009):")
        lines += [f"- {b.kind.replace('_', ' ')} **{b.name}**: {b.action}" for b in p.blocking]
    if p.quote is not None:
        paid = f", {p.payment.status} to {p.payment.destination.value}" if p.payment else ""
        lines.append(
            f"Refund: {format_minor(p.quote.amount_minor, p.quote.currency)} "
            f"({p.quote.seconds_left}/{p.quote.period_seconds} s left{paid})"
        )
    if p.categories:
        lines += ["", "| Category | State | Copied | Total | Attempts |", "|---|---|---|---|---|"]
        for c in p.categories.values():
            error = f" {c.error}" if c.error else ""
            lines.append(f"| {CATEGORY_LABELS[c.category.value]} | {c.state}{error} | "
                         f"{c.copied} | {c.total} | {c.attempts} |")
    if p.settings_changed:
        lines.append("Settings changed to comply: "
                     + ", ".join(f"{s.key} ({s.why})" for s in p.settings_changed))
    if p.failure_reason:
        lines.append(f"Failure: {p.failure_reason}")
    return "\n".join(lines)
