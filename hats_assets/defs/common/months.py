"""Calendar months, counted once: warehouse partitions are months, retention counts in months."""

from __future__ import annotations

from datetime import date


def month_start(day: date, months: int = 0) -> date:
    """The first day of the month ``months`` after (negative: before) ``day``'s month."""
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)
