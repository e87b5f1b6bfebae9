"""Partitions, defined once: UTC hours for the rollups, UTC days for the warehouse.

They start on the first UTC day any home has data (``first_data_day``), resolved when the code location
loads: the earliest hour the worker ingested (``ops.ingest_hours``), rolled up (``ops.rollup_watermarks``)
or an import brought (``ops.imports``: states from ``first_at``, statistics from ``hours_from``); with no
data yet, today. ``HATS_PARTITIONS_START`` (YYYY-MM-DD) overrides it. An import reaching further back
needs the code location reloaded for the older partitions to exist: the import sensor asks the Dagster
webserver for that (``hats_assets/defs/imports/reload.py``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import psycopg

PARTITIONS_START_ENV = "HATS_PARTITIONS_START"
DSN_ENV = "HATS_DAGSTER_DSN"
CONNECT_TIMEOUT_S = 10
# Every home's hours share the partitions, so they start at the earliest of any home (a disabled one too:
# its data is still rolled up when re-run by name): a scan of three small ops tables once per code load.
FIRST_DATA_SQL = """
SELECT least((SELECT min(hour) FROM ops.ingest_hours),
             (SELECT min(hour) FROM ops.rollup_watermarks),
             (SELECT min(least(first_at, hours_from)) FROM ops.imports))
"""


class PartitionsStartError(RuntimeError):
    """The partitions' first day cannot be known: the code location must not load with a guessed one."""


def first_data_day(dsn: str, today: date) -> date:
    """The first UTC day with data of any home (``today`` with none yet)."""
    try:
        with psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            row = conn.execute(FIRST_DATA_SQL).fetchone()
    except psycopg.Error as exc:
        raise PartitionsStartError(
            f"cannot read the first day with data from PostgreSQL ({DSN_ENV}): {exc}; the partitions would start "
            f"on a wrong day. Start PostgreSQL or set {PARTITIONS_START_ENV}=YYYY-MM-DD") from exc
    first = row[0] if row else None
    return min(today, first.astimezone(UTC).date()) if first is not None else today


def partitions_start(environ: Mapping[str, str], today: date | None = None) -> date:
    """``HATS_PARTITIONS_START`` if set (a date not after today), else the first day any home has data."""
    today = today or datetime.now(UTC).date()
    explicit = environ.get(PARTITIONS_START_ENV, "").strip()
    if explicit:
        try:
            start = date.fromisoformat(explicit)
        except ValueError as exc:
            raise PartitionsStartError(f"{PARTITIONS_START_ENV}={explicit!r} is not a date (YYYY-MM-DD)") from exc
        if start > today:
            raise PartitionsStartError(f"{PARTITIONS_START_ENV}={explicit} is after today ({today}): the partitions "
                                       "would not include the day the data arrives")
        return start
    if not environ.get(DSN_ENV):
        raise PartitionsStartError(f"{DSN_ENV} not set: the partitions start on the first day with data, read "
                                   f"from PostgreSQL; set it, or {PARTITIONS_START_ENV}=YYYY-MM-DD")
    return first_data_day(environ[DSN_ENV], today)


FIRST_DAY = partitions_start(os.environ)
PARTITIONS_START = f"{FIRST_DAY:%Y-%m-%d}-00:00"  # the first hourly partition key
hourly_partitions = dg.HourlyPartitionsDefinition(start_date=PARTITIONS_START, timezone="UTC")
# end_offset=1: today is a partition too, loaded hourly as its hours are rolled up, so the warehouse
# is never more than an hour behind; it is final once the day is over.
daily_partitions = dg.DailyPartitionsDefinition(start_date=f"{FIRST_DAY:%Y-%m-%d}", timezone="UTC", end_offset=1)


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
