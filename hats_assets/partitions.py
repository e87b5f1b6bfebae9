"""Partitions, defined once: UTC hours for the rollups, UTC days for the warehouse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

PARTITIONS_START = "2026-01-01-00:00"
hourly_partitions = dg.HourlyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")
# end_offset=1: today is a partition too, loaded hourly as its hours are rolled up, so the warehouse
# is never more than an hour behind; it is final once the day is over.
daily_partitions = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START[:10], timezone="UTC", end_offset=1)


def hour_window(partition_key: str) -> tuple[datetime, datetime]:
    window = hourly_partitions.time_window_for_partition_key(partition_key)
    return window.start.astimezone(UTC), window.end.astimezone(UTC)


def day_window(partition_key: str) -> tuple[datetime, datetime]:
    window = daily_partitions.time_window_for_partition_key(partition_key)
    return window.start.astimezone(UTC), window.end.astimezone(UTC)


def context_window(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> tuple[datetime, datetime]:
    """The run's whole UTC window: one partition, or a range under a single-run backfill."""
    window = context.partition_time_window
    return window.start.astimezone(UTC), window.end.astimezone(UTC)


def epoch_ns(moment: datetime) -> int:
    """A whole-second instant (partition bounds) as InfluxDB's epoch nanoseconds."""
    return int(moment.timestamp()) * 1_000_000_000


def hour_key(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d-%H:00")


def chunks(start: datetime, end: datetime, size: timedelta) -> list[tuple[datetime, datetime]]:
    """``[start, end)`` cut at multiples of ``size`` so a long backfill never holds it all in memory."""
    out = []
    while start < end:
        stop = min(end, start + size)
        out.append((start, stop))
        start = stop
    return out
