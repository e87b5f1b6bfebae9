"""The late-data sensor's decisions, without a Dagster instance: which hours it asks for, with which run
key and reason, and what it leaves out and says why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hats_assets.defs.rollups.catch_up import (
    LeftOut,
    OwedHour,
    Request,
    covered_keys,
    parse_rows,
    plan,
    reason,
)

FIRST = "2026-01-01-00:00"
LAST = "2026-11-30-09:00"
H = datetime(2026, 11, 30, 4, tzinfo=UTC)
ROLLED = datetime(2026, 11, 30, 5, 5, 12, tzinfo=UTC)


def unrolled(hour: datetime = H, version: int = 7, points: int = 123) -> OwedHour:
    return OwedHour("unrolled", hour, version, points, None)


def late(hour: datetime = H, version: int = 9, points: int = 2) -> OwedHour:
    return OwedHour("late", hour, version, points, ROLLED)


def test_reasons_name_the_kind_the_points_and_the_hour() -> None:
    assert reason(unrolled()) == "unrolled: 123 point(s) for 2026-11-30-04:00, never rolled up (ingest version 7)"
    assert reason(late()) == ("late data: 2 point(s) for 2026-11-30-04:00 written after its rollup at "
                              "2026-11-30 05:05:12 UTC (ingest version 9)")


def test_an_unrolled_hour_is_requested_with_its_carry_in() -> None:
    decided = plan([unrolled()], [], FIRST, LAST, set(), 30)
    why = reason(unrolled())
    assert decided.requests == [Request("2026-11-30-04:00", "unrolled:2026-11-30-04:00:7", why),
                                Request("2026-11-30-05:00", "unrolled:2026-11-30-05:00:7", f"carry-in of {why}")]
    assert decided.waiting == decided.notes == []


def test_the_same_rows_give_the_same_run_keys_and_a_new_write_a_new_one() -> None:
    keys = [r.run_key for r in plan([unrolled()], [], FIRST, LAST, set(), 30).requests]
    assert keys == [r.run_key for r in plan([unrolled()], [], FIRST, LAST, set(), 30).requests]
    assert [r.run_key for r in plan([unrolled(version=8)], [], FIRST, LAST, set(), 30).requests] == [
        "unrolled:2026-11-30-04:00:8", "unrolled:2026-11-30-05:00:8"]


def test_late_and_unrolled_hours_together_each_key_once_oldest_first() -> None:
    # 04:00 never rolled, 05:00 rolled before its late points: 05:00 is 04:00's carry-in and owed itself.
    decided = plan([unrolled(), late(H + timedelta(hours=1))], [], FIRST, LAST, set(), 30)
    assert [(r.partition_key, r.run_key) for r in decided.requests] == [
        ("2026-11-30-04:00", "unrolled:2026-11-30-04:00:7"),
        ("2026-11-30-05:00", "unrolled:2026-11-30-05:00:7"),
        ("2026-11-30-06:00", "late:2026-11-30-06:00:9"),
    ]
    assert decided.requests[2].reason.startswith("carry-in of late data: 2 point(s) for 2026-11-30-05:00")


def test_a_carry_in_past_the_last_partition_is_left_to_the_schedule_and_said() -> None:
    decided = plan([unrolled(datetime(2026, 11, 30, 9, tzinfo=UTC))], [], FIRST, LAST, set(), 30)
    assert [r.partition_key for r in decided.requests] == ["2026-11-30-09:00"]
    assert decided.notes == ["2026-11-30-10:00 (carry-in of 2026-11-30-09:00) not requested: the hour has not "
                             "ended; the schedule rolls it up when it has"]


def test_nothing_before_the_partitions_start_is_requested() -> None:
    decided = plan([late(datetime(2025, 12, 31, 23, tzinfo=UTC))], [], FIRST, LAST, set(), 30)
    assert [r.partition_key for r in decided.requests] == [FIRST]


@pytest.mark.parametrize("pending", [{"2026-11-30-04:00"}, {"2026-11-30-05:00"}])
def test_an_hour_whose_own_or_carry_in_partition_has_a_run_pending_waits(pending: set[str]) -> None:
    later = unrolled(H + timedelta(hours=3), version=8)
    decided = plan([unrolled(), later], [], FIRST, LAST, pending, 30)
    assert decided.waiting == ["2026-11-30-04:00"]
    assert [r.partition_key for r in decided.requests] == ["2026-11-30-07:00", "2026-11-30-08:00"]


def test_left_out_hours_are_said_with_their_reason() -> None:
    left_out = [LeftOut("before_partitions", datetime(2025, 12, 31, 22, tzinfo=UTC),
                        datetime(2025, 12, 31, 23, tzinfo=UTC), 2, 40),
                LeftOut("past_retention", datetime(2026, 10, 30, 7, tzinfo=UTC),
                        datetime(2026, 10, 30, 7, tzinfo=UTC), 1, 5)]
    decided = plan([], left_out, FIRST, LAST, set(), 30)
    assert decided.requests == []
    assert decided.notes == [
        "2 never-rolled hour(s) with 40 point(s) left out (2025-12-31-22:00 … 2025-12-31-23:00): before the hourly "
        "partitions' start 2026-01-01-00:00",
        "1 never-rolled hour(s) with 5 point(s) left out (2026-10-30-07:00): older than the home's raw retention "
        "(30 d, core.tenants.raw_days): their raw points may be gone; backfill them by hand if InfluxDB still holds "
        "them",
    ]


def test_rows_of_the_query_become_owed_hours_and_summaries() -> None:
    rows = [("past_retention", H - timedelta(days=40), H - timedelta(days=35), 3, 12, None, 6),
            ("unrolled", H, H, 7, 123, None, 1),
            ("late", H + timedelta(hours=2), H + timedelta(hours=2), 9, 2, ROLLED, 1)]
    owed, left_out = parse_rows(rows)
    assert owed == [unrolled(), late(H + timedelta(hours=2))]
    assert left_out == [LeftOut("past_retention", H - timedelta(days=40), H - timedelta(days=35), 6, 12)]


def test_the_partitions_a_pending_run_covers() -> None:
    assert covered_keys({"dagster/partition": "2026-11-30-04:00"}) == ["2026-11-30-04:00"]
    assert covered_keys({"dagster/asset_partition_range_start": "2026-11-29-22:00",
                         "dagster/asset_partition_range_end": "2026-11-30-01:00"}) == [
        "2026-11-29-22:00", "2026-11-29-23:00", "2026-11-30-00:00", "2026-11-30-01:00"]
    assert covered_keys({"dagster/sensor_name": "late_data_sensor"}) == []
