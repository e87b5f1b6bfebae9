"""Every home in one code location, on the real stores: two homes in one run, one of them with data that
fails a blocking check — only its warehouse day is refused and the other's loads; late data in one home
re-rolls only its hours (the other's rollup rows, watermarks and warehouse rows keep their versions and
``loaded_at``); and a run restricted to one home touches only that home."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import httpx
import psycopg
import pytest

from hats_assets.definitions import defs
from hats_assets.defs.common.tenants import TENANTS_TAG, TenantSelection, tenants_run_config
from hats_assets.defs.quality.rollup_checks import rollup_checks
from hats_assets.defs.quality.warehouse_checks import warehouse_rows_match_rollups
from hats_assets.defs.rollups.assets import rollups
from hats_assets.defs.rollups.schedules import late_data_sensor
from hats_assets.defs.warehouse.assets import daily_rollup, hourly_rollup, local_daily_rollup
from ingest_worker.tls import client_context
from tests.conftest import Tenant
from tests.homeassistant import asset_resources, metadata_of

pytestmark = pytest.mark.integration

HOUR = (datetime.now(UTC) - timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)
PARTITION = HOUR.strftime("%Y-%m-%d-%H:%M")
DAY = HOUR.strftime("%Y-%m-%d")
WAREHOUSE = [hourly_rollup, daily_rollup, local_daily_rollup]


def both(first: Tenant, second: Tenant) -> dict[str, object]:
    """The code location's resources, its runs serving exactly these two homes of the shared stack."""
    return {**asset_resources(first), "tenant_selection": TenantSelection(tenants=[first.name, second.name])}


def write_raw(tenant: Tenant, lines: list[str]) -> None:
    response = httpx.post(f"{tenant.env['HATS_INFLUX_WRITE_URL']}/write", params={"db": tenant.database, "rp": "raw"},
                          content="\n".join(lines),
                          auth=(tenant.env["HATS_INFLUX_USERNAME"], tenant.env["HATS_INFLUX_PASSWORD"]),
                          verify=client_context(tenant.env["HATS_INFLUX_CA_FILE"]))
    assert response.status_code == 204, response.text


def ingested(tenant: Tenant, points: int, hour: datetime = HOUR) -> None:
    """What the worker records beside its writes (ops.ingest_hours, a new version per write)."""
    with psycopg.connect(tenant.env["HATS_PG_DSN"], autocommit=True) as conn:
        conn.execute("INSERT INTO ops.ingest_hours (tenant_id, hour, points) VALUES (%s, %s, %s) "
                     "ON CONFLICT (tenant_id, hour) DO UPDATE SET points = ops.ingest_hours.points + EXCLUDED.points, "
                     "version = nextval('ops.ingest_version'), last_written_at = now()", (tenant.name, hour, points))


def at(minutes: float, hour: datetime = HOUR) -> int:
    return int((hour + timedelta(minutes=minutes)).timestamp() * 1e9)


def temperatures(value: float, hour: datetime = HOUR) -> list[str]:
    return [f"temperature,entity_id=sensor.room,source=t value={value + i / 10} {at(i * 5, hour)}" for i in range(12)]


def hourly_rows(tenant: Tenant) -> list[tuple[Any, ...]]:
    with psycopg.connect(tenant.env["HATS_PG_DSN"]) as conn:
        return conn.execute("SELECT entity_id, hour, mean, count, loaded_at FROM analytics.hourly_rollup "
                            "WHERE tenant_id = %s ORDER BY entity_id, hour", (tenant.name,)).fetchall()


def watermarks(tenant: Tenant) -> list[tuple[Any, ...]]:
    with psycopg.connect(tenant.env["HATS_PG_DSN"]) as conn:
        return conn.execute("SELECT hour, version, rolled_at, run_id FROM ops.rollup_watermarks WHERE tenant_id = %s "
                            "ORDER BY hour", (tenant.name,)).fetchall()


def rollup_1h(tenant: Tenant) -> list[list[Any]]:
    return [row for series in tenant.influx('SELECT "mean", "count" FROM "rollup"."gauge_1h" GROUP BY "entity_id"')
            for row in series["values"]]


def test_one_homes_failed_check_refuses_only_its_day(two_homes: tuple[Tenant, Tenant]) -> None:
    good, bad = two_homes
    write_raw(good, temperatures(20.0))
    write_raw(bad, [*temperatures(21.0), f"temperature,entity_id=sensor.oven,source=t value=95.5 {at(30)}"])
    ingested(good, 12)
    ingested(bad, 13)
    resources = both(good, bad)
    rolled = dg.materialize([rollups, *rollup_checks], partition_key=PARTITION, resources=resources,
                            raise_on_error=False)  # a blocking check failed (for one home)
    ranges = next(e for e in rolled.get_asset_check_evaluations() if e.check_name == "plausible_ranges")
    assert ranges.passed is False
    assert ranges.metadata["tenants_failing"].value == [bad.name]
    assert list(ranges.metadata["entities"].value) == [bad.name]  # type: ignore[arg-type]
    per_home: Any = metadata_of(rolled, "rollup_1m")["per_tenant"].value
    assert {name: (row["status"], row["points_read"]) for name, row in per_home.items()} == {
        good.name: ("ok", 12), bad.name: ("ok", 13)}

    loaded = dg.materialize([*WAREHOUSE, warehouse_rows_match_rollups], partition_key=DAY, resources=resources)
    hourly: Any = metadata_of(loaded, "hourly_rollup")["per_tenant"].value
    assert (hourly[good.name]["status"], hourly[good.name]["rows_upserted"]) == ("ok", 1)
    assert hourly[bad.name]["status"] == "refused"
    assert hourly[bad.name]["failed_hours"] == [[f"{PARTITION[:13]}:00", "plausible_ranges", 1]]
    assert metadata_of(loaded, "daily_rollup")["tenants_refused"].value == [bad.name]
    assert [(e, h, c) for e, h, _, c, _ in hourly_rows(good)] == [("sensor.room", HOUR, 12)]
    assert hourly_rows(bad) == []  # its analysts keep what they had (nothing yet)
    with psycopg.connect(good.env["HATS_PG_DSN"]) as conn:
        days = conn.execute("SELECT tenant_id, count(*) FROM analytics.daily_rollup WHERE tenant_id = ANY(%s) "
                            "GROUP BY tenant_id", ([good.name, bad.name],)).fetchall()
    assert days == [(good.name, 1)]

    # "Is home X's day complete?" in SQL (the operator's analyst here; a home's analyst sees its own row).
    with psycopg.connect(good.env["HATS_ANALYST_DSN"]) as conn:
        status = conn.execute("SELECT tenant_id, local_day, day_hours, hours_with_data, hours_rolled_up, "
                              "hours_failing_checks, hours_loaded, complete FROM analytics.home_day_status "
                              "WHERE tenant_id = ANY(%s) ORDER BY tenant_id = %s DESC",
                              ([good.name, bad.name], good.name)).fetchall()
    assert status == [(good.name, HOUR.date(), 24, 1, 1, 0, 1, True), (bad.name, HOUR.date(), 24, 1, 1, 1, 0, False)]


def test_late_data_in_one_home_re_rolls_only_its_hours(two_homes: tuple[Tenant, Tenant]) -> None:
    late, quiet = two_homes
    instance = dg.DagsterInstance.ephemeral()
    for home, value in ((late, 20.0), (quiet, 25.0)):
        write_raw(home, temperatures(value))
        ingested(home, 12)
    resources = both(late, quiet)
    assert dg.materialize([rollups], instance=instance, partition_key=PARTITION, resources=resources).success
    assert dg.materialize(WAREHOUSE, instance=instance, partition_key=DAY, resources=resources).success
    quiet_before = (watermarks(quiet), rollup_1h(quiet), hourly_rows(quiet))
    late_before = hourly_rows(late)

    write_raw(late, [f"temperature,entity_id=sensor.room,source=t value=30 {at(59)}"])
    ingested(late, 1)
    sensed = late_data_sensor(dg.build_sensor_context(instance=instance, resources=resources, definitions=defs))
    assert isinstance(sensed, dg.SensorResult)
    next_hour = (HOUR + timedelta(hours=1)).strftime("%Y-%m-%d-%H:%M")
    requests = sensed.run_requests or []
    assert sorted(r.partition_key or "" for r in requests) == [PARTITION, next_hour]
    for request in requests:
        assert request.tags[TENANTS_TAG] == late.name
        assert request.run_config == tenants_run_config([late.name])
        assert dg.materialize([rollups], instance=instance, partition_key=request.partition_key, tags=request.tags,
                              resources={**resources, "tenant_selection": TenantSelection(tenants=[late.name])}).success
    assert dg.materialize(WAREHOUSE, instance=instance, partition_key=DAY, tags={TENANTS_TAG: late.name},
                          resources={**resources, "tenant_selection": TenantSelection()}).success

    assert (watermarks(quiet), rollup_1h(quiet), hourly_rows(quiet)) == quiet_before  # untouched
    [(_, _, mean_before, count_before, loaded_before)] = [row for row in late_before if row[1] == HOUR]
    [(_, _, mean_after, count_after, loaded_after)] = [row for row in hourly_rows(late) if row[1] == HOUR]
    assert (count_before, count_after) == (12, 13)
    assert mean_after != mean_before
    assert loaded_after > loaded_before


def test_a_run_for_one_home_touches_only_that_home(two_homes: tuple[Tenant, Tenant]) -> None:
    named, other = two_homes
    for home in two_homes:
        write_raw(home, temperatures(19.0))
    # As the UI or `dagster job launch` would: the code location's (empty) selection, the home in run config.
    unbound = {**asset_resources(named), "tenant_selection": TenantSelection()}
    rolled = dg.materialize([rollups], partition_key=PARTITION, resources=unbound, tags={TENANTS_TAG: named.name},
                            run_config=tenants_run_config([named.name]))
    per_home: Any = metadata_of(rolled, "rollup_1m")["per_tenant"].value
    assert list(per_home) == [named.name]
    assert dg.materialize(WAREHOUSE, partition_key=DAY, resources=asset_resources(named)).success
    assert [row[2] for row in rollup_1h(named)] == [12]
    assert (rollup_1h(other), watermarks(other), hourly_rows(other)) == ([], [], [])
    # Config and tag naming different homes is refused before anything is written.
    clash = dg.materialize([rollups], partition_key=PARTITION, resources=unbound, raise_on_error=False,
                           tags={TENANTS_TAG: other.name}, run_config=tenants_run_config([named.name]))
    assert not clash.success
    assert rollup_1h(other) == []
