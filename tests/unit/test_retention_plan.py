"""Retention decisions, without stores: cutoffs, the raw-duration guard, partition expiry, settings."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from hats_assets.defs.retention.assets import RETENTION_ENV, RetentionSettings, retention_settings_from_env
from hats_assets.defs.retention.plan import (
    RAW_SHARD_GROUP,
    expired_partitions,
    influx_duration,
    month_partition_of,
    months_before,
    parse_influx_duration,
    raw_duration,
)

NOW = datetime(2026, 11, 26, 3, 30, tzinfo=UTC)
MARGIN = timedelta(hours=30)


@pytest.mark.parametrize(("moment", "months", "expected"), [
    (NOW, 24, datetime(2024, 11, 1, tzinfo=UTC)),
    (NOW, 12, datetime(2025, 11, 1, tzinfo=UTC)),
    (datetime(2026, 1, 15, tzinfo=UTC), 1, datetime(2025, 12, 1, tzinfo=UTC)),
    (datetime(2026, 3, 31, 23, tzinfo=UTC), 14, datetime(2025, 1, 1, tzinfo=UTC)),
])
def test_months_before_is_a_month_start(moment: datetime, months: int, expected: datetime) -> None:
    assert months_before(moment, months) == expected


def test_raw_duration_is_the_configured_one_when_everything_is_rolled_up() -> None:
    assert raw_duration(NOW, 30, None, MARGIN) == (timedelta(days=30), False)


def test_recent_unverified_hours_do_not_extend_raw_retention() -> None:
    assert raw_duration(NOW, 30, NOW - timedelta(days=3), MARGIN) == (timedelta(days=30), False)


@pytest.mark.parametrize("age_days", [29, 30, 35, 80])
def test_old_unverified_hours_keep_their_whole_shard_group(age_days: int) -> None:
    oldest = NOW - timedelta(days=age_days, hours=5)
    duration, extended = raw_duration(NOW, 30, oldest, MARGIN)
    assert duration >= timedelta(days=30)
    assert duration % timedelta(hours=1) == timedelta(0)
    shard_start = oldest.replace(hour=0, minute=0, second=0, microsecond=0)
    # InfluxDB drops a shard group once its end is older than the duration; this one stays until
    # now + margin at least, i.e. past the next daily retention run.
    shard_end = shard_start + RAW_SHARD_GROUP
    assert (NOW + MARGIN) - duration <= shard_start < shard_end
    assert extended == (NOW - shard_start + MARGIN > timedelta(days=30))


def test_durations_print_as_influxdb_shows_them() -> None:
    assert influx_duration(timedelta(days=30)) == "720h"
    assert parse_influx_duration("720h0m0s") == timedelta(days=30)
    assert parse_influx_duration("0s") == timedelta(0)
    with pytest.raises(ValueError, match="not an InfluxDB duration"):
        parse_influx_duration("30d")


def test_partition_names_and_expiry() -> None:
    partition = month_partition_of("hourly_rollup_p2024_12")
    assert partition is not None
    assert (partition.parent, partition.start, partition.end) == ("hourly_rollup", date(2024, 12, 1), date(2025, 1, 1))
    assert month_partition_of("hourly_rollup_p2024_13") is None
    assert month_partition_of("something_else") is None
    names = ["daily_rollup_p2024_10", "hourly_rollup_p2024_10", "hourly_rollup_p2024_11", "hourly_rollup_p2026_11",
             "stray_table"]
    cutoff = months_before(NOW, 24)  # 2024-11-01: October 2024 is wholly before it, November is not
    assert [p.name for p in expired_partitions(names, cutoff)] == ["daily_rollup_p2024_10", "hourly_rollup_p2024_10"]


def test_settings_defaults_and_ranges() -> None:
    assert retention_settings_from_env({}) == RetentionSettings(ops_months=12, margin_hours=30)
    assert retention_settings_from_env({"HATS_RETENTION_OPS_MONTHS": "24"}).ops_months == 24
    with pytest.raises(ValueError, match=r"HATS_RETENTION_MARGIN_HOURS: .*greater than or equal to 1"):
        retention_settings_from_env({"HATS_RETENTION_MARGIN_HOURS": "0"})
    # A home's raw days and rollup months are its tier in core.tenants, no longer one setting for all.
    assert "HATS_RETENTION_RAW_DAYS" not in RETENTION_ENV.values()
    with pytest.raises(ValueError, match="HATS_RETENTION_OPS_MONTHS='x' is not a whole number"):
        retention_settings_from_env({"HATS_RETENTION_OPS_MONTHS": "x"})
