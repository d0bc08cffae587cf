"""The refund rule, written once (the README quotes it).

    refund = floor(price_minor * seconds_left / period_seconds)

where seconds_left = period_end - accepted_at, clamped to [0, period_seconds]. Nothing is
refunded for a free plan (price 0) or a subscription that is not active. Amounts are
integers in the currency's minor unit; zero-decimal currencies (JPY) simply have none.
"""

from __future__ import annotations

from datetime import datetime

# ISO 4217 minor-unit exponents for the currencies we bill in.
MINOR_UNIT_EXPONENT = {"USD": 2, "EUR": 2, "GBP": 2, "CHF": 2, "AUD": 2, "CAD": 2, "JPY": 0}

FORMULA = "floor(price_minor × seconds_left ÷ period_seconds)"


def prorated_refund_minor(
    *, price_minor: int, period_start: datetime, period_end: datetime, at: datetime,
    active: bool = True,
) -> tuple[int, int, int]:
    """Return (refund_minor, seconds_left, period_seconds) for acceptance at `at`."""
    if type(price_minor) is not int:
        raise TypeError(f"price_minor must be an int in minor units, got {price_minor!r}")
    if price_minor < 0:
        raise ValueError(f"price_minor must not be negative, got {price_minor}")
    if period_end <= period_start:
        raise ValueError("period_end must be after period_start")
    period_seconds = int((period_end - period_start).total_seconds())
    seconds_left = max(0, min(period_seconds, int((period_end - at).total_seconds())))
    if not active or price_minor == 0:
        return 0, seconds_left, period_seconds
    # Integer arithmetic only: floor division rounds down, never negative.
    return price_minor * seconds_left // period_seconds, seconds_left, period_seconds


def format_minor(amount_minor: int, currency: str) -> str:
    """12345, "USD" -> "USD 123.45"; 500, "JPY" -> "JPY 500"."""
    exp = MINOR_UNIT_EXPONENT.get(currency.upper(), 2)
    if exp == 0:
        return f"{currency.upper()} {amount_minor:,}"
    sign = "-" if amount_minor < 0 else ""
    whole, frac = divmod(abs(amount_minor), 10**exp)
    return f"{currency.upper()} {sign}{whole:,}.{frac:0{exp}d}"
