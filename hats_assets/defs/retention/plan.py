"""What retention may delete, decided without touching a store: pure, so it is tested hard.

Two promises: nothing inside its retention period is touched, and raw data whose rollups are not yet
materialised and verified is never left to expire. InfluxDB expires raw data by itself — a whole shard
group (a day, for the raw policy) once its END is older than the policy's duration — so protecting an
hour means keeping the duration longer than the age of the START of that hour's shard group, plus a
margin for the time until the next retention run.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final, Literal

from hats_assets.defs.common.months import month_start

RAW_SHARD_GROUP: Final = timedelta(days=1)  # InfluxDB's shard group for policies of 2 days to 6 months
PARTITION_NAME: Final = re.compile(r"^(?P<parent>[a-z_]+)_p(?P<year>\d{4})_(?P<month>\d{2})$")

Store = Literal["influxdb", "postgresql"]


@dataclass(frozen=True, slots=True)
class Action:
    """One thing retention does (or, in a dry run, would do); a row of ops.retention_audit."""

    store: Store
    action: str
    target: str
    range_start: datetime | None
    range_end: datetime | None
    affected: int | None
    detail: str


def months_before(moment: datetime, months: int) -> datetime:
    """The first instant of the month ``months`` before ``moment``'s month (UTC)."""
    first = month_start(moment.astimezone(UTC).date(), -months)
    return datetime(first.year, first.month, 1, tzinfo=UTC)


def raw_duration(now: datetime, configured_days: int, oldest_unverified: datetime | None,
                 margin: timedelta) -> tuple[timedelta, bool]:
    """The raw policy's duration, in whole hours, and whether it had to exceed the configured one.

    ``oldest_unverified`` is the oldest raw hour whose rollups are not materialised, current and checked. Its
    shard group starts at the day's 00:00; that day is kept while ``duration > now - day start``.
    """
    configured = timedelta(days=configured_days)
    if oldest_unverified is None:
        return configured, False
    day_start = oldest_unverified.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    needed = now - day_start + margin
    needed = timedelta(hours=math.ceil(needed / timedelta(hours=1)))
    return (needed, True) if needed > configured else (configured, False)


def influx_duration(duration: timedelta) -> str:
    """InfluxQL duration literal in whole hours (``720h``): what SHOW RETENTION POLICIES prints back."""
    return f"{int(duration / timedelta(hours=1))}h"


def parse_influx_duration(text: str) -> timedelta:
    """``720h0m0s`` / ``0s`` (infinite) as InfluxDB shows them."""
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
    if not match or not text:
        raise ValueError(f"not an InfluxDB duration: {text!r}")
    hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return timedelta(hours=hours, minutes=minutes, seconds=seconds)


@dataclass(frozen=True, slots=True)
class MonthPartition:
    name: str
    parent: str
    start: date
    end: date


def month_partition_of(name: str) -> MonthPartition | None:
    """``hourly_rollup_p2025_03`` → its parent and month; None for a name the loader did not make."""
    match = PARTITION_NAME.match(name)
    if not match:
        return None
    year, month = int(match["year"]), int(match["month"])
    if not 1 <= month <= 12:
        return None
    return MonthPartition(name, match["parent"], date(year, month, 1), month_start(date(year, month, 1), 1))


def expired_partitions(names: list[str], cutoff: datetime) -> list[MonthPartition]:
    """Month partitions whose whole month lies before ``cutoff`` (a partition straddling it stays)."""
    out = []
    for name in sorted(names):
        partition = month_partition_of(name)
        if partition is not None and partition.end <= cutoff.date():
            out.append(partition)
    return out
