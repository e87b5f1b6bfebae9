"""Imports in the Dagster UI: ha_history_import_sensor over ops.imports, with a real Dagster instance.

Rows of ``ops.imports`` as ``hats import`` writes them (one per run) and imported statistics in the
tenant's InfluxDB; the sensor records an observation per finished import, reports the rollup hours the
statistics filled as materialised (only those no run materialised), requests one warehouse run over the
import's days, and stops at an import still running. Its run loads the imported hours into the warehouse.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import psycopg
import pytest

from devstack.procs import free_port
from hats_assets.definitions import defs
from hats_assets.defs.common.resources import InfluxDBResource
from hats_assets.defs.imports.reload import URL_ENV, ReloadError
from hats_assets.defs.imports.sensors import import_sensor
from hats_assets.defs.warehouse.assets import daily_rollup, hourly_rollup, local_daily_rollup
from tests.conftest import Tenant
from tests.homeassistant import asset_resources

pytestmark = pytest.mark.integration

HOUR = timedelta(hours=1)
METER = "sensor.grid_energy"
FIRST = datetime(2026, 11, 20, 10, tzinfo=UTC)
HOURS = [FIRST + i * HOUR for i in range(5)]  # 10:00 … 14:00
ALREADY_ROLLED = "2026-11-20-12:00"  # a run materialised rollup_1h for this hour: the import must not re-report it


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as ephemeral:
        yield ephemeral


def add_import(tenant: Tenant, status: str, **columns: Any) -> int:
    names = ["tenant_id", "source_kind", "source", "source_key", "status", *columns]
    values = [tenant.name, "sqlite", "/config/home-assistant_v2.db", "sqlite:abc", status, *columns.values()]
    with psycopg.connect(tenant.env["HATS_PG_DSN"], autocommit=True) as conn:
        row = conn.execute(f"INSERT INTO ops.imports ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))}) "
                           "RETURNING import_id", values).fetchone()
    assert row is not None
    return int(row[0])


def tick(instance: dg.DagsterInstance, resources: dict[str, object], cursor: str | None) -> dg.SensorResult:
    result = import_sensor(dg.build_sensor_context(instance=instance, resources=resources, definitions=defs,
                                                   cursor=cursor))
    assert isinstance(result, dg.SensorResult)
    for event in result.asset_events:  # what the daemon does with a tick's runless events
        instance.report_runless_asset_event(event)
    return result


def test_finished_imports_are_observed_marked_and_loaded(tenant: Tenant, instance: dg.DagsterInstance,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    resources = asset_resources(tenant)
    influxdb = resources["influxdb"]
    assert isinstance(influxdb, InfluxDBResource)
    influxdb.for_tenant(tenant.name).write([
        f"imported_counter_1h,entity_id={METER},quantity=energy consumption={0.25 * (i + 1)},count=0i,"
        f"resets=0i,last={10 + i}.0,sum={i}.0,available_s=3600.0 {int(hour.timestamp()) * 10**9}"
        for i, hour in enumerate(HOURS)], "rollup")
    with psycopg.connect(tenant.env["HATS_PG_DSN"], autocommit=True) as conn:
        conn.execute("INSERT INTO core.entities (tenant_id, entity_id, domain, measurement, friendly_name, "
                     "unit_canonical, source) VALUES (%s, %s, 'sensor', 'energy', 'Grid', 'kWh', 'statestream')",
                     (tenant.name, METER))
    instance.report_runless_asset_event(dg.AssetMaterialization("rollup_1h", partition=ALREADY_ROLLED))
    statistics = add_import(tenant, "complete", statistic_rows=5, hours_from=HOURS[0], hours_to=HOURS[-1] + HOUR,
                            finished_at=datetime.now(UTC))
    running = add_import(tenant, "running", first_at=datetime(2026, 11, 21, 8, tzinfo=UTC))

    first = tick(instance, resources, None)
    assert first.cursor == str(statistics)  # stopped before the running import
    [observation] = [e for e in first.asset_events if isinstance(e, dg.AssetObservation)]
    assert observation.asset_key == dg.AssetKey("ha_history_import")
    meta = {k: v.value for k, v in observation.metadata.items()}
    assert (meta["import_id"], meta["tenant"], meta["status"], meta["statistic_rows"]) == (
        statistics, tenant.name, "complete", 5)
    assert (meta["statistics_hours_from"], meta["statistics_hours_to"]) == (
        HOURS[0].isoformat(), (HOURS[-1] + HOUR).isoformat())
    keys = [f"{hour:%Y-%m-%d-%H}:00" for hour in HOURS]
    marked = {(e.asset_key.to_user_string(), e.partition) for e in first.asset_events
              if isinstance(e, dg.AssetMaterialization)}
    assert marked == {("rollup_1h", k) for k in keys if k != ALREADY_ROLLED} | {("rollup_5m", k) for k in keys}
    assert all(e.metadata["origin"].value == "imported" for e in first.asset_events
               if isinstance(e, dg.AssetMaterialization))
    assert instance.get_materialized_partitions(dg.AssetKey("rollup_5m")) == set(keys)
    assert instance.fetch_observations(dg.AssetKey("ha_history_import"), limit=5).records
    [request] = first.run_requests or []
    assert request.run_key == f"import:{statistics}"
    assert (request.tags["dagster/asset_partition_range_start"], request.tags["dagster/asset_partition_range_end"]) == (
        "2026-11-20", "2026-11-20")

    # The requested run loads the imported hours (single-run backfill of the day range).
    assert dg.materialize([hourly_rollup, daily_rollup, local_daily_rollup], instance=instance, resources=resources,
                          tags=request.tags).success
    with psycopg.connect(tenant.env["HATS_ANALYST_DSN"]) as conn:
        assert conn.execute("SELECT hour, origin, consumption FROM analytics.entity_hourly WHERE tenant_id = %s "
                            "ORDER BY hour", (tenant.name,)).fetchall() == [
            (hour, "imported", 0.25 * (i + 1)) for i, hour in enumerate(HOURS)]
        assert conn.execute("SELECT local_day, kwh, imported_hours, hours_loaded FROM analytics.energy_daily "
                            "WHERE tenant_id = %s", (tenant.name,)).fetchall() == [
            (FIRST.date(), pytest.approx(0.25 * 15), 5, 5)]

    # Nothing new while the next import runs; once it finished (states only), its day is loaded.
    waiting = tick(instance, resources, first.cursor)
    assert (waiting.cursor, waiting.run_requests, waiting.asset_events) == (str(statistics), [], [])
    assert waiting.skip_reason is not None
    assert f"import {running} is still running" in (waiting.skip_reason.skip_message or "")
    with psycopg.connect(tenant.env["HATS_PG_DSN"], autocommit=True) as conn:
        conn.execute("UPDATE ops.imports SET status = 'interrupted', finished_at = now(), states_read = 7, "
                     "last_at = %s WHERE import_id = %s", (datetime(2026, 11, 22, 1, tzinfo=UTC), running))
    states = tick(instance, resources, waiting.cursor)
    assert states.cursor == str(running)
    assert [e.metadata["status"].value for e in states.asset_events] == ["interrupted"]  # no rollup hours
    [request] = states.run_requests or []
    assert (request.tags["dagster/asset_partition_range_start"], request.tags["dagster/asset_partition_range_end"]) == (
        "2026-11-21", "2026-11-22")

    # An import reaching before the first partition: the sensor asks the webserver to reload the code
    # location and stays on that import; a webserver that does not answer fails the tick, naming the setting.
    add_import(tenant, "complete", first_at=datetime(2025, 12, 30, tzinfo=UTC), last_at=FIRST)
    monkeypatch.setenv(URL_ENV, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ReloadError, match=f"{URL_ENV}.*Deployment → Reload"):
        tick(instance, resources, states.cursor)
