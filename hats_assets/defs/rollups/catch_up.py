"""Which hours the late-data sensor asks the rollup job for: pure, so it is tested without a Dagster instance.

An hour owes a rollup in two ways. **Late**: it was rolled up, then the worker wrote more points for it
(its ingest version is newer than the rollup's watermark). **Unrolled**: it holds raw points and was
never rolled up at all — points stamped before the hour's first rollup (a broker queue drained after a
long outage, an outbox replayed the next day, history sent by a device that was offline, an import, or
the schedule's run for the hour failed). Either way the hour is requested with the next one, whose
carried-in state it may change. The SQL (``owed_hours.sql``) finds them; this module turns them into run
requests and says what it left out and why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from hats_assets.partitions import chunks, hour_key, hour_window

HOUR: Final = timedelta(hours=1)
# The run tags that say which hourly partitions a run covers: one partition, or a single-run backfill's range.
PARTITION_TAG: Final = "dagster/partition"
RANGE_START_TAG: Final = "dagster/asset_partition_range_start"
RANGE_END_TAG: Final = "dagster/asset_partition_range_end"

OwedKind = Literal["late", "unrolled"]
LeftOutKind = Literal["before_partitions", "past_retention"]
LEFT_OUT_KINDS: Final[frozenset[str]] = frozenset({"before_partitions", "past_retention"})


@dataclass(frozen=True, slots=True)
class OwedHour:
    """An hour whose rollup is missing (unrolled) or older than its raw points (late)."""

    kind: OwedKind
    hour: datetime
    version: int  # the hour's ingest version: a new write gives a new run key
    points: int  # late: points written after the rollup read the hour; unrolled: all its points
    rolled_at: datetime | None  # late only: when its rollup read it


@dataclass(frozen=True, slots=True)
class LeftOut:
    """Never-rolled hours the sensor does not request, summarised per reason."""

    kind: LeftOutKind
    first: datetime
    last: datetime
    hours: int
    points: int


@dataclass(frozen=True, slots=True)
class Request:
    partition_key: str
    run_key: str
    reason: str  # the run's hats/trigger tag, shown on the run and in the materialisation's metadata


@dataclass(slots=True)
class Plan:
    requests: list[Request] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # owed hours whose own or carry-in partition has a run pending
    notes: list[str] = field(default_factory=list)  # what was left out, and why


def parse_rows(rows: Iterable[Sequence[Any]]) -> tuple[list[OwedHour], list[LeftOut]]:
    """``owed_hours.sql``'s rows: (kind, hour, last_hour, version, points, rolled_at, hours)."""
    owed: list[OwedHour] = []
    left_out: list[LeftOut] = []
    for kind, hour, last_hour, version, points, rolled_at, hours in rows:
        if kind in LEFT_OUT_KINDS:
            left_out.append(LeftOut(kind, hour, last_hour, int(hours), int(points)))
        else:
            owed.append(OwedHour(kind, hour, int(version), int(points), rolled_at))
    return owed, left_out


def reason(owed: OwedHour) -> str:
    key = hour_key(owed.hour)
    if owed.kind == "late":
        rolled = f"{owed.rolled_at:%Y-%m-%d %H:%M:%S} UTC" if owed.rolled_at else "an earlier run"
        return (f"late data: {owed.points} point(s) for {key} written after its rollup at {rolled} "
                f"(ingest version {owed.version})")
    return f"unrolled: {owed.points} point(s) for {key}, never rolled up (ingest version {owed.version})"


def covered_keys(tags: Mapping[str, str]) -> list[str]:
    """The hourly partition keys a run of the rollup job covers, from its tags."""
    if PARTITION_TAG in tags:
        return [tags[PARTITION_TAG]]
    if RANGE_START_TAG in tags and RANGE_END_TAG in tags:
        start, end = hour_window(tags[RANGE_START_TAG])[0], hour_window(tags[RANGE_END_TAG])[1]
        return [hour_key(hour) for hour, _ in chunks(start, end, HOUR)]
    return []


def describe_left_out(left_out: LeftOut, partitions_start: str, raw_days: int) -> str:
    span = hour_key(left_out.first)
    if left_out.hours > 1:
        span += f" … {hour_key(left_out.last)}"
    why = (f"before the hourly partitions' start {partitions_start}" if left_out.kind == "before_partitions"
           else f"older than the home's raw retention ({raw_days} d, core.tenants.raw_days): their raw points may "
                "be gone; backfill them by hand if InfluxDB still holds them")
    return f"{left_out.hours} never-rolled hour(s) with {left_out.points} point(s) left out ({span}): {why}"


def plan(owed: Iterable[OwedHour], left_out: Iterable[LeftOut], first_key: str, last_key: str | None,
         pending: set[str], raw_days: int) -> Plan:
    """Run requests for the owed hours (given oldest first) and each one's next hour.

    A key outside ``[first_key, last_key]`` is never requested: before the partitions there is nothing to
    run, and an hour past the last key has not ended (the schedule rolls it up when it does, reading the
    carried-in state then). An hour whose own or carry-in partition already has a run queued or in progress
    (``pending``: the :05 schedule's, a backfill's, an earlier tick's) waits for it: that run may already
    read its points, and if not, the hour is still owed on a later tick. Run keys carry the hour's ingest
    version, so a repeated tick asks for nothing new until the worker writes to the hour again.
    """
    out = Plan()
    for hour in owed:
        why = reason(hour)
        keys = [(hour_key(hour.hour), why), (hour_key(hour.hour + HOUR), f"carry-in of {why}")]
        if any(key in pending for key, _ in keys):
            out.waiting.append(keys[0][0])
            continue
        for key, tag in keys:
            if key < first_key or any(r.partition_key == key for r in out.requests):
                continue
            if last_key is None or key > last_key:
                out.notes.append(f"{key} (carry-in of {keys[0][0]}) not requested: the hour has not ended; "
                                 "the schedule rolls it up when it has")
                continue
            out.requests.append(Request(key, f"{hour.kind}:{key}:{hour.version}", tag))
    out.notes.extend(describe_left_out(item, first_key, raw_days) for item in left_out)
    return out
