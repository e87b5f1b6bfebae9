"""Partitions, defined once: UTC hours for rollups and hourly aggregates."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

PARTITIONS_START = "2026-01-01-00:00"
hourly_partitions = dg.HourlyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")


def hour_window(partition_key: str) -> tuple[datetime, datetime]:
    window = hourly_partitions.time_window_for_partition_key(partition_key)
    return window.start.astimezone(UTC), window.end.astimezone(UTC)
