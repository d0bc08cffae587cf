"""How invitation facts read in words: one Jinja2 environment shared by the mails, the
invitee's pages and the admin console, so that an amount, a date, a label or the Basic
warning reads the same everywhere. The labels themselves are `content.labels`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from content import labels
from messages.payloads import RefundQuote, UserType
from rules.money import format_minor

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"  # email/, pages/ (link handler), console/ (admin console)
STATIC = HERE / "static"  # served at /static by the link handler and the admin app


def money(amount_minor: int, currency: str) -> str:
    return format_minor(amount_minor, currency)


def refund_formula(quote: RefundQuote) -> str:
    """"USD 8.99 = floor(1499 × 1555200 ÷ 2592000)": the rule of rules.money, with numbers."""
    return (f"{format_minor(quote.amount_minor, quote.currency)} = "
            f"floor({quote.price_minor} × {quote.seconds_left} ÷ {quote.period_seconds})")


def date(value: datetime | None) -> str:
    if value is None:
        return ""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return f"{value.day} {value:%B %Y}"


def datetime_utc(value: datetime | None) -> str:
    if value is None:
        return ""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return f"{value.day} {value:%B %Y, %H:%M} UTC"


def days(seconds: int) -> str:
    d = seconds / 86400
    return f"{d:.0f} day{'s' if round(d) != 1 else ''}" if d >= 1 else f"{seconds // 3600} hours"


def size(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} bytes"  # pragma: no cover


def setting_value(value: Any) -> str:
    if value is True:
        return "on"
    if value is False:
        return "off"
    return "—" if value is None else str(value)


def setting_name(key: str) -> str:
    return key.replace("_", " ").capitalize()


def make_environment(*, auto_reload: bool = True) -> Environment:
    """Autoescaping for .html only: the plain-text mail bodies are not HTML.
    `auto_reload=False`: each template is read once, never checked again (Jinja's check
    is a stat of the file and of each template it extends or includes, at every use)."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES), auto_reload=auto_reload,
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    env.filters.update(
        money=money, formula=refund_formula, date=date, datetime=datetime_utc, days=days,
        size=size, setting_value=setting_value, setting_name=setting_name,
        # content.labels, one filter each: `{{ c.category|category }}`, `{{ s|status }}`...
        category=labels.category_label, category_in_full=labels.category_in_full,
        status=labels.status_label, progress_state=labels.progress_state_label,
        destination=labels.destination_label, user_type=labels.user_type_label,
        blocking_kind=labels.blocking_kind_label,
    )
    env.globals.update(BASIC_LIMITS=labels.BASIC_LIMITS, UserType=UserType,
                       categories_in_words=labels.categories_in_words)
    return env
