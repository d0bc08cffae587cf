"""When the invitation wakes up on its own: reminders, "expiring soon", expiry.

Pure functions of (issue time, expiry, offsets), so a resend, which moves both, simply
yields a new schedule. Reminders after the invitation count from the latest (re)send;
reminders before expiry count back from the current expiry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

DueKind = Literal["reminder", "expiring_soon", "expiry"]


@dataclass(frozen=True)
class Due:
    at: datetime
    key: str  # unique within one schedule: "after-0", "before-1", "expiry"
    kind: DueKind
    summary: str  # the timer's summary in the Web UI


def _days(offset: timedelta) -> str:
    if offset % timedelta(days=1) == timedelta(0):
        days = offset // timedelta(days=1)
        return f"{days} day{'s' if days != 1 else ''}"
    return str(offset)


def wake_ups(
    issued_at: datetime, expires_at: datetime, remind_after: list[timedelta],
    remind_before_expiry: list[timedelta],
) -> list[Due]:
    """Every wake-up strictly between issue and expiry, then the expiry, in time order."""
    due: list[Due] = []
    for i, offset in enumerate(remind_after):
        at = issued_at + offset
        if issued_at < at < expires_at:
            due.append(Due(at, f"after-{i}", "reminder",
                           f"Reminder {_days(offset)} after the invitation"))
    for i, offset in enumerate(remind_before_expiry):
        at = expires_at - offset
        if issued_at < at < expires_at:
            due.append(Due(at, f"before-{i}", "expiring_soon",
                           f"Expiring-soon notice {_days(offset)} before expiry"))
    due.sort(key=lambda d: (d.at, d.key))
    due.append(Due(expires_at, "expiry", "expiry", "Invitation expires"))
    return due
