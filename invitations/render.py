"""Readable tables (rich) for what `starter.py` prints when --json is not given."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rich.table import Table

from content.labels import (
    blocking_kind_label,
    category_label,
    destination_label,
    progress_state_label,
    status_label,
    user_type_label,
)
from invitations.models import Outcome, PendingInvitation, RowResult
from messages.payloads import Category, Progress
from rules.money import format_minor

OUTCOME_STYLES = {Outcome.STARTED: "green", Outcome.ALREADY_PENDING: "yellow",
                  Outcome.ERROR: "red"}


def when(dt: datetime | None) -> str:
    return f"{dt:%Y-%m-%d %H:%M} UTC" if dt else "-"


def results_table(results: Sequence[RowResult]) -> Table:
    table = Table(title="Invitations")
    with_lines = any(r.line is not None for r in results)
    if with_lines:
        table.add_column("Line", justify="right")
    for name in ("Email", "Result", "Detail"):
        table.add_column(name, overflow="fold")
    for r in results:
        if r.outcome == Outcome.ERROR and r.error is not None:
            detail = f"{r.error.code}: {r.error.message}"
        elif r.outcome == Outcome.ALREADY_PENDING:
            detail = f"already open ({status_label(r.status or '-')}); " \
                     "nothing started"
        else:
            detail = f"{r.invitation_id}, expires {when(r.expires_at)}"
        label = f"[{OUTCOME_STYLES[r.outcome]}]{r.outcome.value.replace('_', ' ')}[/]"
        cells = [r.email or "-", label, detail]
        table.add_row(*([str(r.line or "-")] if with_lines else []), *cells)
    return table


def pending_table(account_id: int, rows: Sequence[PendingInvitation]) -> Table:
    table = Table(title=f"Pending invitations of account {account_id}")
    for name in ("Email", "Name", "User type", "Invited at", "Expires at", "State"):
        table.add_column(name, overflow="fold")
    for r in rows:
        table.add_row(r.email, f"{r.first_name} {r.last_name}".strip() or "-",
                      user_type_label(r.user_type), when(r.invited_at), when(r.expires_at),
                      status_label(r.status))
    return table


def progress_tables(p: Progress) -> list[Table]:
    facts: list[tuple[str, Any]] = [
        ("Invitation", p.invitation_id),
        ("State", status_label(p.status)),
        ("Step", p.step or "-"),
        ("Account", f"{p.account_name} (id {p.account_id})" if p.account_name
         else str(p.account_id)),
        ("Invited by", p.invited_by or "-"),
        ("Invitee", f"{p.first_name} {p.last_name} <{p.email}>".strip()
         if p.first_name or p.last_name else p.email),
        ("User type", user_type_label(p.user_type)),
        ("Group", p.group or "-"),
        ("Invited at", when(p.invited_at)),
        ("Expires at", when(p.expires_at)),
        ("Reminders sent", p.reminders_sent),
    ]
    if p.accepted_at:
        facts.append(("Accepted at", when(p.accepted_at)))
    if p.finished_at:
        facts.append(("Finished at", when(p.finished_at)))
    for item in p.blocking:
        facts.append(("Blocked by", f"{blocking_kind_label(item.kind)} {item.name}: "
                                    f"{item.action}"))
    if p.quote:
        facts.append(("Refund quote", f"{format_minor(p.quote.amount_minor, p.quote.currency)} "
                                      f"({p.quote.formula})"))
    if p.payment:
        facts.append(("Refund", f"{format_minor(p.payment.amount_minor, p.payment.currency)} "
                                f"{p.payment.status} {destination_label(p.payment.destination)}"))
    for change in p.settings_changed:
        facts.append(("Setting changed", f"{change.key}: {change.old!r} -> {change.new!r} "
                                         f"({change.why})"))
    if p.reports_left_behind:
        facts.append(("Reports left behind", p.reports_left_behind))
    if p.failure_reason:
        facts.append(("Failure", p.failure_reason))
    if p.mail_problem:
        facts.append(("Mail", p.mail_problem))
    if p.alert:
        facts.append(("Needs an operator", p.alert.replace("_", " ")))
    for step in p.undo_left:
        facts.append(("Still to undo", step))
    main = Table(title=f"Invitation of {p.email}", show_header=False)
    main.add_column(style="bold")
    main.add_column(overflow="fold")
    for key, value in facts:
        main.add_row(key, str(value))
    tables = [main]
    if p.categories:
        cats = Table(title="Data transfer")
        for name in ("Category", "State", "Copied", "Bytes", "Attempts", "Error"):
            cats.add_column(name, overflow="fold")
        for category in Category:
            c = p.categories.get(category)
            if c is not None:
                cats.add_row(category_label(category), progress_state_label(c.state),
                             f"{c.copied}/{c.total}",
                             str(c.bytes_copied), str(c.attempts), c.error or "")
        tables.append(cats)
    return tables
