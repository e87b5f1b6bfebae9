"""Blocking data-quality checks on the real stores: a planted out-of-range value and a raw point the
rollup never saw each fail the right check with the rows to act on, are recorded in ops.dq_results,
and keep the day out of the warehouse; after the fix and a re-run, the checks pass and the day loads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import httpx
import psycopg
import pytest

from hats_assets.defs.core.assets import core_metadata
from hats_assets.defs.quality.feed_checks import feed_checks
from hats_assets.defs.quality.rollup_checks import plausible_ranges, raw_points_all_rolled_up, rollup_checks
from hats_assets.defs.quality.warehouse_checks import warehouse_rows_match_rollups
from hats_assets.defs.raw.assets import raw_points
from hats_assets.defs.rollups.assets import rollups
from hats_assets.defs.warehouse.assets import daily_rollup, hourly_rollup
from ingest_worker.tls import client_context
from tests.conftest import Tenant
from tests.homeassistant import asset_resources, metadata_of

pytestmark = pytest.mark.integration

HOUR = (datetime.now(UTC) - timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)
PARTITION = HOUR.strftime("%Y-%m-%d-%H:%M")
DAY = HOUR.strftime("%Y-%m-%d")


def write_raw(tenant: Tenant, lines: list[str]) -> None:
    response = httpx.post(f"{tenant.env['HATS_INFLUX_WRITE_URL']}/write", params={"db": tenant.database, "rp": "raw"},
                          content="\n".join(lines),
                          auth=(tenant.env["HATS_INFLUX_USERNAME"], tenant.env["HATS_INFLUX_PASSWORD"]),
                          verify=client_context(tenant.env["HATS_INFLUX_CA_FILE"]))
    assert response.status_code == 204, response.text


def at(minutes: float) -> int:
    return int((HOUR + timedelta(minutes=minutes)).timestamp() * 1e9)


def checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def listed(check: dg.AssetCheckEvaluation, key: str, tenant: Tenant) -> Any:
    """A check's metadata ``key`` for one home (checks list their rows per home)."""
    value: Any = check.metadata[key].value
    return value[tenant.name]


def dq_rows(tenant: Tenant) -> list[tuple[object, ...]]:
    with psycopg.connect(tenant.env["HATS_PG_DSN"]) as conn:
        return conn.execute("SELECT check_name, passed, failing, details FROM ops.dq_results WHERE tenant_id = %s "
                            "ORDER BY id", (tenant.name,)).fetchall()


def test_failing_checks_name_the_rows_and_keep_the_day_out_of_the_warehouse(tenant: Tenant) -> None:
    write_raw(tenant, [
        *(f"temperature,entity_id=sensor.kitchen,source=t value={20 + i / 10} {at(i * 5)}" for i in range(12)),
        # …and again under the device id it had before being re-paired: same instants, counted once.
        *(f"temperature,device_id=old,entity_id=sensor.kitchen,source=t value={20 + i / 10} {at(i * 5)}"
          for i in range(12)),
        f"temperature,entity_id=sensor.oven_probe,source=t value=21.0 {at(1)}",
        f"temperature,entity_id=sensor.oven_probe,source=t value=95.5 {at(30)}",  # not a room: out of range
        *(f"humidity,entity_id=sensor.bath,source=t value={55 + i} {at(i * 10)}" for i in range(6)),
        *(f"energy,entity_id=sensor.meter,source=t value={100 + i / 4} {at(i * 15)}" for i in range(4)),
    ])
    resources = asset_resources(tenant)
    assets = [rollups, *rollup_checks]
    result = dg.materialize(assets, partition_key=PARTITION, resources=resources, raise_on_error=False)
    found = checks(result)
    assert found["plausible_ranges"].passed is False
    assert listed(found["plausible_ranges"], "entities", tenant) == [
        {"entity_id": "sensor.oven_probe", "quantity": "temperature", "min": 21.0, "max": 95.5,
         "allowed": [-60.0, 80.0]}]
    assert found["raw_points_all_rolled_up"].passed is True
    assert {(c, p, n) for c, p, n, _ in dq_rows(tenant)} == {
        ("plausible_ranges", False, 1), ("raw_points_all_rolled_up", True, 0),
        ("one_series_per_entity", True, 0), ("points_match_cadence", True, 0), ("meters_only_grow", True, 0),
        ("rollup_stored", True, 0)}  # the rollup's own per-home row: stored, so nothing holds the hour back

    # The warehouse refuses the home's day while an hour's latest blocking result failed (the run goes on
    # for any other home it serves; this one is listed as refused, with the hour and the check).
    loaded = dg.materialize([hourly_rollup, daily_rollup], partition_key=DAY, resources=resources)
    per_home: Any = metadata_of(loaded, "hourly_rollup")["per_tenant"].value
    refused = per_home[tenant.name]
    assert refused["status"] == "refused"
    assert f"{PARTITION[:13]}:00 plausible_ranges" in refused["error"]
    assert refused["failed_hours"] == [[f"{PARTITION[:13]}:00", "plausible_ranges", 1]]
    assert metadata_of(loaded, "daily_rollup")["tenants_refused"].value == [tenant.name]

    # A raw point the rollup never saw: the completeness check (run alone) names the entity.
    write_raw(tenant, [f"humidity,entity_id=sensor.bath,source=t value=70 {at(59)}"])
    alone = dg.materialize(assets, resources=resources, raise_on_error=False, tags={"dagster/partition": PARTITION},
                           selection=dg.AssetSelection.checks(raw_points_all_rolled_up))
    assert listed(checks(alone)["raw_points_all_rolled_up"], "incomplete_entities", tenant) == [
        {"entity_id": "sensor.bath", "raw_points": 7, "rolled_up": 6}]

    # Fix: the probe's reading was wrong (delete it); re-run the partition: both pass, the day loads.
    httpx.post(f"{tenant.env['HATS_INFLUX_URL']}/query", data={
        "q": f"DELETE FROM temperature WHERE entity_id = 'sensor.oven_probe' AND time = {at(30)}",
        "db": tenant.database}, auth=(tenant.env["HATS_INFLUX_ADMIN_USERNAME"],
                                      tenant.env["HATS_INFLUX_ADMIN_PASSWORD"]),
                                      verify=client_context(tenant.env["HATS_INFLUX_CA_FILE"])).raise_for_status()
    rerun = dg.materialize(assets, partition_key=PARTITION, resources=resources)
    assert {n: e.passed for n, e in checks(rerun).items() if not e.passed} == {}
    assert len(checks(rerun)) == len(rollup_checks)
    warehouse = [hourly_rollup, daily_rollup, warehouse_rows_match_rollups]
    loaded = dg.materialize(warehouse, partition_key=DAY, resources=resources)
    assert checks(loaded)["warehouse_rows_match_rollups"].passed

    # A row lost between InfluxDB and PostgreSQL: the warehouse check names the entity and the counts.
    with psycopg.connect(tenant.env["HATS_PG_DSN"], autocommit=True) as conn:
        conn.execute("DELETE FROM analytics.hourly_rollup WHERE tenant_id = %s AND entity_id = 'sensor.meter'",
                     (tenant.name,))
    lost = dg.materialize(warehouse, resources=resources, raise_on_error=False, tags={"dagster/partition": DAY},
                          selection=dg.AssetSelection.checks(warehouse_rows_match_rollups))
    assert listed(checks(lost)["warehouse_rows_match_rollups"], "mismatched_entities", tenant) == [
        {"entity_id": "sensor.meter", "rollup_rows": 1, "imported_rows": 0, "warehouse_computed_rows": 0,
         "warehouse_imported_rows": 0, "distinct_rows": 0}]
    blocking = {spec.name for check in rollup_checks for spec in check.check_specs if spec.blocking}
    assert blocking == {"plausible_ranges", "raw_points_all_rolled_up", "one_series_per_entity"}
    assert plausible_ranges in rollup_checks


def test_gaps_and_meter_dips_are_warnings_summarised_for_analysts(tenant: Tenant) -> None:
    day_before = [f"temperature,entity_id=sensor.kitchen,source=t value=20.5 {at(-24 * 60 + i * 5)}"
                  for i in range(288)]  # the usual cadence: every 5 minutes
    write_raw(tenant, [
        *day_before,
        *(f"temperature,entity_id=sensor.kitchen,source=t value=21.0 {at(i * 5)}" for i in range(4)),  # then silent
        *(f"energy,entity_id=sensor.meter,source=t value={v} {at(m)}"
          for m, v in ((1, 100.0), (10, 100.5), (20, 100.3), (30, 101.0), (40, 5.0))),  # a dip, then a reset
    ])
    with psycopg.connect(tenant.env["HATS_PG_DSN"], autocommit=True) as conn:
        conn.execute("INSERT INTO core.entities (tenant_id, entity_id, domain, measurement, state_class, "
                     "unit_canonical, source) VALUES (%s, 'sensor.meter', 'sensor', 'energy', 'total_increasing', "
                     "'kWh', 'test')", (tenant.name,))
    resources = asset_resources(tenant)
    result = dg.materialize([rollups, *rollup_checks], partition_key=PARTITION, resources=resources)
    found = checks(result)
    assert {name: e.passed for name, e in found.items()} == {
        "plausible_ranges": True, "raw_points_all_rolled_up": True, "one_series_per_entity": True,
        "points_match_cadence": False, "meters_only_grow": False}
    assert found["points_match_cadence"].severity == dg.AssetCheckSeverity.WARN
    assert listed(found["points_match_cadence"], "gaps", tenant) == [
        {"entity_id": "sensor.kitchen", "points": 4, "expected": 12,
         "gaps": [[(HOUR + timedelta(minutes=15)).isoformat(), 45 * 60]]}]
    assert listed(found["meters_only_grow"], "meters_with_dips", tenant) == [
        {"entity_id": "sensor.meter", "count": 1,
         "dips": [[(HOUR + timedelta(minutes=20)).isoformat(), 100.5, 100.3]]}]

    # WARN results do not hold the warehouse back; analysts see them per entity and day.
    assert dg.materialize([hourly_rollup, daily_rollup], partition_key=DAY, resources=resources).success
    with psycopg.connect(tenant.env["HATS_ANALYST_DSN"]) as conn:
        summary = conn.execute(
            "SELECT entity_id, day, out_of_range_hours, gaps, incomplete_hours, meter_dips, points "
            "FROM analytics.data_quality_daily WHERE tenant_id = %s ORDER BY entity_id", (tenant.name,)).fetchall()
    day = HOUR.date()
    assert summary == [("sensor.kitchen", day, 0, 1, 0, 0, 4), ("sensor.meter", day, 0, 0, 0, 1, 5)]  # 09:00 only


def test_an_entity_in_two_quantities_fails_the_blocking_uniqueness_check(tenant: Tenant) -> None:
    write_raw(tenant, [f"temperature,entity_id=sensor.dual,source=t value=20 {at(3)}",
                       f"humidity,entity_id=sensor.dual,source=t value=50 {at(3.5)}"])
    result = dg.materialize([rollups, *rollup_checks], partition_key=PARTITION, resources=asset_resources(tenant),
                            raise_on_error=False)
    found = checks(result)
    assert {n for n, e in found.items() if not e.passed} == {"one_series_per_entity"}
    assert listed(found["one_series_per_entity"], "ambiguous_entities", tenant) == [
        {"entity_id": "sensor.dual", "quantities": ["humidity", "temperature"]}]
    assert ("one_series_per_entity", False, 1) in {(c, p, n) for c, p, n, _ in dq_rows(tenant)}


def test_feed_checks_find_clocks_ahead_silent_devices_and_a_full_budget(tenant: Tenant) -> None:
    now = datetime.now(UTC)

    def ns_at(moment: datetime) -> int:
        return int(moment.timestamp() * 1e9)

    write_raw(tenant, [
        f"temperature,entity_id=sensor.ahead,source=t value=20 {ns_at(now + timedelta(hours=1))}",
        *(f"temperature,entity_id=sensor.silent,source=t value=20 {ns_at(now - timedelta(hours=2, minutes=5 * i))}"
          for i in range(264)),  # every 5 minutes until 2 hours ago
        *(f"temperature,entity_id=sensor.fine,source=t value=20 {ns_at(now - timedelta(minutes=1 + 5 * i))}"
          for i in range(288)),
    ])
    with psycopg.connect(tenant.env["HATS_PG_DSN"], autocommit=True) as conn:
        for entity in ("sensor.silent", "sensor.fine"):
            conn.execute("INSERT INTO core.entities (tenant_id, entity_id, domain, measurement, source) "
                         "VALUES (%s, %s, 'sensor', 'temperature', 'test')", (tenant.name, entity))
    with psycopg.connect(tenant.env["HATS_PG_DSN"], autocommit=True) as conn:  # the home's own budget
        conn.execute("UPDATE core.tenants SET series_budget = 2 WHERE tenant_id = %s", (tenant.name,))
    result = dg.materialize([raw_points, core_metadata, *feed_checks], resources=asset_resources(tenant),
                            selection=dg.AssetSelection.checks(*feed_checks), raise_on_error=False)
    found = checks(result)
    assert {name: (e.passed, e.severity) for name, e in found.items()} == {
        "no_future_points": (False, dg.AssetCheckSeverity.ERROR),
        "entities_fresh": (False, dg.AssetCheckSeverity.WARN),
        "series_within_budget": (False, dg.AssetCheckSeverity.ERROR),
    }
    assert listed(found["no_future_points"], "entities_ahead", tenant) == [
        {"entity_id": "sensor.ahead", "points": 1}]
    stale: Any = listed(found["entities_fresh"], "stale_entities", tenant)
    assert [s["entity_id"] for s in stale] == ["sensor.silent"]
    assert 7200 <= stale[0]["silent_for_s"] < 7300
    budget = listed(found["series_within_budget"], "per_tenant", tenant)
    assert (budget["entities"], budget["budget"], budget["used_pct"]) == (2, 2, 100.0)
    assert listed(found["series_within_budget"], "over_budget", tenant) == [{"entities": 2, "budget": 2}]


def test_the_latest_result_covering_an_hour_decides_whether_the_warehouse_takes_it(tenant: Tenant) -> None:
    """A backfill's checks write one result for its whole range; it supersedes older per-hour results."""
    from hats_assets.defs.common.resources import PostgresResource
    from hats_assets.defs.quality.results import failed_hours

    postgres = PostgresResource(dsn=tenant.env["HATS_DAGSTER_DSN"])

    def result(start: datetime, hours: int, passed: bool) -> None:
        with psycopg.connect(tenant.env["HATS_DAGSTER_DSN"], autocommit=True) as conn:
            conn.execute("INSERT INTO ops.dq_results (tenant_id, asset, check_name, window_start, window_end, passed, "
                         "severity, failing) VALUES (%s, 'rollup_1m', 'raw_points_all_rolled_up', %s, %s, %s, "
                         "'ERROR', %s)",
                         (tenant.name, start, start + timedelta(hours=hours), passed, 0 if passed else 3))

    day = HOUR.replace(hour=0)
    result(HOUR, 1, passed=False)
    assert [(h, c) for h, c, _ in failed_hours(postgres, tenant.name, day, day + timedelta(days=1))] == [
        (HOUR, "raw_points_all_rolled_up")]
    result(day, 24, passed=True)  # a re-run of the whole day passed
    assert failed_hours(postgres, tenant.name, day, day + timedelta(days=1)) == []
    result(day + timedelta(hours=2), 3, passed=False)  # a later range run failed: each of its hours is held
    assert [h for h, _, _ in failed_hours(postgres, tenant.name, day, day + timedelta(days=1))] == [
        day + timedelta(hours=h) for h in (2, 3, 4)]


def test_a_backfill_range_is_checked_a_day_at_a_time(tenant: Tenant) -> None:
    """A single-run backfill of two days: the raw points are read per day (as the rollup read them), so a
    long range never sits in memory whole, and every day is checked."""
    first = HOUR.replace(hour=0) - timedelta(days=1)
    write_raw(tenant, [f"temperature,entity_id=sensor.steady,source=t value=20.5 "
                       f"{int((first - timedelta(days=1) + timedelta(minutes=5 * i)).timestamp() * 1e9)}"
                       for i in range(3 * 288)])  # every 5 minutes: the day before, then both days
    tags = {"dagster/asset_partition_range_start": f"{first:%Y-%m-%d}-00:00",
            "dagster/asset_partition_range_end": f"{first + timedelta(days=1):%Y-%m-%d}-23:00"}
    result = dg.materialize([rollups, *rollup_checks], resources=asset_resources(tenant), tags=tags)
    found = checks(result)
    assert all(e.passed for e in found.values())
    cadence = listed(found["points_match_cadence"], "per_tenant", tenant)
    assert cadence["entities_checked"] == 2  # one entity, two day chunks
