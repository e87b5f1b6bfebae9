"""Hours that hold raw points but were never rolled up are rolled up by the late-data sensor, on the real stack.

The story: the schedule rolled up every hour of the day on time and the warehouse loaded it, except one
hour five hours back whose run never happened; its points reach the worker only now (a broker queue
drained after an outage). The sensor asks for exactly that hour and the next (its carry-in), says why,
leaves out what it must (hours before the partitions, past raw retention, the hour still being written)
and says that too, waits while a run for the hour is pending; running its requests stores the rollups and
the watermarks, after which it asks for nothing; and the warehouse's automation condition reloads the day.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import psycopg
import pytest

from hats_assets.definitions import defs
from hats_assets.defs.rollups.assets import TRIGGER_TAG, rollups
from hats_assets.defs.rollups.schedules import late_data_sensor
from hats_assets.defs.warehouse.assets import daily_rollup, hourly_rollup
from hats_assets.partitions import hour_key
from tests.conftest import Tenant, WorkerProcess, wait_for
from tests.homeassistant import asset_resources, metadata_of, publish, state_changed

pytestmark = pytest.mark.integration

HOUR = timedelta(hours=1)
TEMP = {"device_class": "temperature", "state_class": "measurement", "unit_of_measurement": "°C"}
POINTS_PER_ENTITY = 12


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as ephemeral:
        yield ephemeral


def tick(instance: dg.DagsterInstance, resources: dict[str, object]) -> dg.SensorResult:
    result = late_data_sensor(dg.build_sensor_context(instance=instance, resources=resources, definitions=defs))
    assert isinstance(result, dg.SensorResult)
    return result


def skip_message(result: dg.SensorResult) -> str:
    assert not result.run_requests
    assert result.skip_reason is not None
    return result.skip_reason.skip_message or ""


def roll(instance: dg.DagsterInstance, resources: dict[str, object], first: datetime, last: datetime,
         **tags: str) -> dg.ExecuteInProcessResult:
    """One single-run backfill of the hours first … last, as the UI's backfill or the schedules would."""
    result = dg.materialize([rollups], instance=instance, resources=resources, tags={
        "dagster/asset_partition_range_start": hour_key(first), "dagster/asset_partition_range_end": hour_key(last),
        **tags})
    assert result.success
    return result


def ingest_hour(tenant: Tenant, hour: datetime) -> tuple[int, int] | None:
    with psycopg.connect(tenant.env["HATS_PG_DSN"]) as conn:
        row = conn.execute("SELECT points, version FROM ops.ingest_hours WHERE tenant_id = %s AND hour = %s",
                           (tenant.name, hour)).fetchone()
    return (int(row[0]), int(row[1])) if row else None


def watermarks(tenant: Tenant, hours: list[datetime]) -> dict[datetime, tuple[Any, ...]]:
    with psycopg.connect(tenant.env["HATS_PG_DSN"]) as conn:
        rows = conn.execute("SELECT hour, version, points FROM ops.rollup_watermarks WHERE tenant_id = %s "
                            "AND hour = ANY(%s)", (tenant.name, hours)).fetchall()
    return {row[0]: tuple(row[1:]) for row in rows}


def record_import(tenant: Tenant, hours: list[datetime]) -> None:
    """Ingest rows for hours InfluxDB would no longer accept points for (it drops points older than the raw
    policy): as a worker running before retention shrank, or an import, would have left them."""
    with psycopg.connect(tenant.env["HATS_PG_DSN"], autocommit=True) as conn:
        for hour in hours:
            conn.execute("INSERT INTO ops.ingest_hours (tenant_id, hour, points) VALUES (%s, %s, 5)",
                         (tenant.name, hour))


def test_an_hour_never_rolled_up_is_rolled_up_with_its_next_and_its_day_reloads(
    tenant: Tenant, start_worker: Callable[[dict[str, str]], WorkerProcess], instance: dg.DagsterInstance
) -> None:
    now = datetime.now(UTC)
    current = now.replace(minute=0, second=0, microsecond=0)
    hour = current - 5 * HOUR  # the hour whose points arrive late, before any rollup of it
    carry_in = hour + HOUR
    days = sorted({hour.replace(hour=0), carry_in.replace(hour=0)})
    resources = asset_resources(tenant)

    # What the schedules did on time: every other complete hour of those days rolled up (no points yet),
    # the days loaded into the warehouse.
    after = current - HOUR
    if hour > days[0]:
        roll(instance, resources, days[0], hour - HOUR)
    if carry_in + HOUR <= after:
        roll(instance, resources, carry_in + HOUR, after)
    for day in days:
        assert dg.materialize([hourly_rollup, daily_rollup], instance=instance, resources=resources,
                              partition_key=f"{day:%Y-%m-%d}").success
    evaluated = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert evaluated.total_requested == 0

    too_old = [datetime(2025, 12, 31, 23, tzinfo=UTC),  # before the hourly partitions' start
               current - timedelta(days=31)]  # older than raw retention (30 d)
    record_import(tenant, too_old)
    assert "left out" in skip_message(tick(instance, resources))  # left-out hours alone: nothing requested

    # The queued points reach the worker now: five hours back, and one of the hour still being written.
    entities = ["sensor.attic_temp", "sensor.cellar_temp"]
    stamps = [hour + timedelta(minutes=2 + 4 * i, seconds=17) for i in range(POINTS_PER_ENTITY)]
    messages = [state_changed(entity, f"{18 + i / 10:.1f}", when, **TEMP)
                for i, when in enumerate(stamps) for entity in entities]
    messages.append(state_changed("sensor.attic_temp", "21.0", now, **TEMP))
    worker = start_worker(tenant.env)
    publish(tenant, messages)
    points = POINTS_PER_ENTITY * len(entities)

    def recorded() -> tuple[int, int] | None:
        row = ingest_hour(tenant, hour)
        return row if row is not None and row[0] == points else None

    _, version = wait_for(recorded, f"{points} points recorded for {hour_key(hour)}")
    wait_for(lambda: ingest_hour(tenant, current), "the current hour's point recorded")
    assert worker.stop() == 0

    first = tick(instance, resources)
    requests = first.run_requests or []
    assert [(r.partition_key, r.run_key) for r in requests] == [
        (hour_key(hour), f"{hour_key(hour)}:{tenant.name}=unrolled:{hour_key(hour)}:{version}"),
        (hour_key(carry_in), f"{hour_key(carry_in)}:{tenant.name}=unrolled:{hour_key(carry_in)}:{version}"),
    ]  # not the current hour (not ended), not the hours left out
    reason = f"unrolled: {points} point(s) for {hour_key(hour)}, never rolled up (ingest version {version})"
    assert [r.tags[TRIGGER_TAG] for r in requests] == [f"{tenant.name}: {reason}",
                                                       f"{tenant.name}: carry-in of {reason}"]
    # A tick repeated before the runs: the same run keys, so the daemon launches nothing twice.
    assert [r.run_key for r in tick(instance, resources).run_requests or []] == [r.run_key for r in requests]

    # While a run for the hour is in progress (the schedule's, a backfill's), the sensor waits for it.
    running = instance.add_run(dg.DagsterRun("rollup_hourly_job", status=dg.DagsterRunStatus.STARTED,
                                             tags={"dagster/partition": hour_key(hour)}))
    waiting = skip_message(tick(instance, resources))
    assert waiting.startswith(f"{tenant.name}: 1 owed hour(s) wait for a pending rollup run: {hour_key(hour)};")
    instance.delete_run(running.run_id)

    for request in requests:
        run = dg.materialize([rollups], instance=instance, resources=resources, partition_key=request.partition_key,
                             tags=request.tags)
        assert run.success
        meta = metadata_of(run, "rollup_1m")
        assert meta["trigger"].value == request.tags[TRIGGER_TAG]
        assert meta["points_read"].value == (points if request.partition_key == hour_key(hour) else 0)
        assert meta["series_gauges"].value == len(entities)  # the carry-in hour holds their last state
    assert watermarks(tenant, [hour, carry_in]) == {hour: (version, points), carry_in: (0, 0)}
    rows = tenant.influx(f'SELECT count("count") FROM "rollup"."gauge_1m" WHERE time >= {_ns(hour)} '
                         f'AND time < {_ns(carry_in)} GROUP BY "entity_id"')
    assert {s["tags"]["entity_id"] for s in rows} == set(entities)

    skipped = skip_message(tick(instance, resources))  # the watermarks caught up: no loop
    assert "nothing to roll up" in skipped
    assert (f"{tenant.name}: 1 never-rolled hour(s) with 5 point(s) left out (2025-12-31-23:00): before the "
            "hourly partitions' start 2026-01-01-00:00") in skipped
    assert (f"{tenant.name}: 1 never-rolled hour(s) with 5 point(s) left out ({hour_key(too_old[1])}): older than "
            "the home's raw retention (30 d, core.tenants.raw_days)") in skipped

    evaluated = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=evaluated.cursor)
    requested = sorted(str(k) for k in evaluated.get_requested_partitions(dg.AssetKey("hourly_rollup")))
    assert requested == [f"{day:%Y-%m-%d}" for day in days]


def _ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000
