"""Column types shared by every table.

`UTCDateTime` is the only datetime column type: `timestamptz` on PostgreSQL, and on SQLite
(which has no time zone type) the UTC wall time as text. Either way a value reads back
timezone-aware in UTC, so billing periods and refunds do not move with a server's or a
session's `TimeZone`.

A naive datetime is refused when it is written (or compared with a column): it could be
local time or UTC, and guessing wrong shifts a subscription period by hours. Use
`datetime.now(UTC)` / `records.tables.utcnow()`, or `records.db.as_utc` for a value known to
be UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Integer
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class NaiveDatetimeError(ValueError):
    """A naive datetime reached the database."""


class UTCDateTime(TypeDecorator[datetime]):
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise NaiveDatetimeError(
                f"naive datetime {value.isoformat()} refused: give it a time zone "
                "(datetime.now(UTC), or records.db.as_utc for a value known to be UTC)")
        utc: datetime = value.astimezone(UTC)
        # SQLite's DATETIME keeps no offset: store the UTC wall time, read back as UTC.
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite: stored as UTC by process_bind_param
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


class MinorUnitsType(TypeDecorator[int]):
    """Money in minor units, refused unless an int when it is written, whether through the
    ORM (a table class takes `Account(credit_balance_minor=12.5)` without validating) or a
    Core statement: money never reaches the database as 12.5, a Decimal or "12"."""

    impl = Integer
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> int | None:
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        raise TypeError(f"money must be an int of minor units, got {value!r}")
