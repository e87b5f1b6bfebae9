"""The PostgreSQL warehouse: hourly, UTC-daily and local-daily per-entity rollups and the analysts' views.

Daily partitions: each run replaces exactly its UTC day(s) in one transaction. ``hourly_rollup`` copies
the InfluxDB 1 h rollup, and Home Assistant's imported statistics for the hours we have no rollup of;
``daily_rollup`` re-aggregates those hours inside PostgreSQL (exact, see ``daily_from_hourly.sql``) per
UTC day, ``local_daily_rollup`` per local calendar day of the home (``local_days.sql``). The views are
Alembic's (migrations/versions/0003, 0009): they appear here as external assets so the lineage runs from
the MQTT feed to what analysts read.
"""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg

from hats_assets.defs.common.faults import RUN_RETRY_TAGS
from hats_assets.defs.common.resources import (
    InfluxDBResource,
    PostgresResource,
    TenantInflux,
    quote_ident,
    window_params,
)
from hats_assets.defs.common.tenants import TenantSelection
from hats_assets.defs.rollups.contract import COUNTER_FIELDS, GAUGE_FIELDS, KINDS, Kind, measurement
from hats_assets.defs.warehouse.tables import (
    DAILY_GATE,
    OWNERS,
    WAREHOUSE_MINUTE_OF_HOUR,
    clear_local_days,
    day_asset,
    delete_period,
    load_every_home,
    lock_day,
    lock_tenant,
    month_partition,
    previous_hour_day,
    replace_hours,
    tenant_time_zone,
)
from hats_assets.partitions import chunks
from ingest_worker.contract import imported_measurement

HERE = Path(__file__).parent
ROLLUP_1H_QUERY = (HERE / "rollup_1h.influxql").read_text()
DAILY_FROM_HOURLY = (HERE / "daily_from_hourly.sql").read_text()
LOCAL_DAYS = (HERE / "local_days.sql").read_text()
OTHER_ZONE_DAYS = ("SELECT min(local_day), max(local_day), string_agg(DISTINCT time_zone, ', ') "
                   "FROM analytics.local_daily_rollup WHERE tenant_id = %(tenant)s AND time_zone <> %(zone)s")
HOURLY_COLUMNS = ("tenant_id", "entity_id", "quantity", "kind", "hour", "mean", "min", "max", "count", "last",
                  "available_s", "value_s", "consumption", "resets", "last_seen", "origin")
COMPUTED, IMPORTED = "computed", "imported"


def _hourly_rows(db: TenantInflux, kind: Kind, answer: list[dict[str, Any]], origin: str) -> list[tuple[Any, ...]]:
    """The 1 h rows of one kind: our rollup (``computed``) or Home Assistant's statistics (``imported``,
    the same fields; no ``last_seen_s``, ``count`` 0: they hold no raw points)."""
    rows: list[tuple[Any, ...]] = []
    fields = GAUGE_FIELDS if kind == "gauge" else COUNTER_FIELDS
    for series in answer:
        position = {name: i for i, name in enumerate(series["columns"])}
        for values in series["values"]:
            got = {name: values[position[name]] if name in position else None for name in fields}
            seen, mean = got["last_seen_s"], got.get("mean")
            rows.append((
                db.tenant, series["tags"]["entity_id"], series["tags"]["quantity"], kind,
                datetime.fromtimestamp(values[0] / 1e9, tz=UTC),
                got.get("mean"), got.get("min"), got.get("max"), got["count"], got["last"], got["available_s"],
                None if mean is None else mean * got["available_s"],  # value_s: what makes days exact sums
                got.get("consumption"), got.get("resets"),
                datetime.fromtimestamp(seen, tz=UTC) if seen is not None else None, origin,
            ))
    return rows


def merged_hourly_rows(db: TenantInflux, start: datetime, end: datetime) -> list[tuple[Any, ...]]:
    """Our rollups of ``[start, end)`` and, for each (entity, hour) we have none of, the imported row.

    Ours win: they come from every raw point with its availability, HA's statistics only from its
    5-minute samples. An imported hour is where we had no data (before the worker ran, an outage).
    The four reads (two kinds, computed and imported) travel in one request."""
    wanted = [(kind, origin) for origin in (COMPUTED, IMPORTED) for kind in KINDS]
    names = [measurement(kind, "1h") if origin == COMPUTED else imported_measurement(kind, "1h")
             for kind, origin in wanted]
    answers = db.queries([ROLLUP_1H_QUERY.format(measurement=quote_ident(name)) for name in names],
                         window_params(start, end))
    rows = {(kind, origin): _hourly_rows(db, kind, answer, origin)
            for (kind, origin), answer in zip(wanted, answers, strict=True)}
    computed = [row for kind in KINDS for row in rows[(kind, COMPUTED)]]
    covered = {(row[1], row[4]) for row in computed}
    imported = [row for kind in KINDS for row in rows[(kind, IMPORTED)] if (row[1], row[4]) not in covered]
    return computed + imported


@day_asset(["rollup_1h", "ha_history_import"])
def hourly_rollup(
    context: dg.AssetExecutionContext, influxdb: InfluxDBResource, postgres: PostgresResource,
    tenant_selection: TenantSelection,
) -> dg.MaterializeResult:
    """analytics.hourly_rollup: the 1 h rollups of every entity of every home for the UTC day, in PostgreSQL
    for SQL users (partitioned by month); hours we have no rollup of come from Home Assistant's imported
    statistics (origin 'imported'). A home whose hours failed a blocking check keeps its last good rows
    (per_tenant: refused) while the other homes load. Read through the analytics.entity_hourly view."""
    def load(tenant: str, start: datetime, end: datetime) -> dict[str, Any]:
        db = influxdb.for_tenant(tenant)
        inserted = replaced = imported = 0
        partitions: set[str] = set()
        entities: set[str] = set()
        with postgres.connect() as conn, conn.cursor() as cur:
            for day_start, day_end in chunks(start, end, timedelta(days=1)):
                rows = merged_hourly_rows(db, day_start, day_end)
                day_replaced, partition = replace_hours(cur, "hourly_rollup", tenant, day_start, day_end,
                                                        HOURLY_COLUMNS, rows)
                replaced += day_replaced
                partitions.add(partition)
                inserted += len(rows)
                imported += sum(row[-1] == IMPORTED for row in rows)
                entities.update(row[1] for row in rows)
        return {"rows_upserted": inserted, "rows_imported": imported, "rows_replaced": replaced,
                "entities": len(entities),
                "pg_partitions": ", ".join(sorted(f"analytics.{p}" for p in partitions))}

    return load_every_home(context, postgres, tenant_selection, load, influxdb_url=influxdb.url)


@day_asset([hourly_rollup])
def daily_rollup(context: dg.AssetExecutionContext, postgres: PostgresResource,
                 tenant_selection: TenantSelection) -> dg.MaterializeResult:
    """analytics.daily_rollup: per entity and UTC day, re-aggregated exactly from the day's hours
    (time-weighted mean, min, max, count, last, available time; consumption for meters), per home; a home
    whose hours or hourly load failed a blocking check is skipped. Read through analytics.entity_daily_utc
    and analytics.energy_daily_utc."""
    def load(tenant: str, start: datetime, end: datetime) -> dict[str, Any]:
        inserted = replaced = 0
        with postgres.connect() as conn, conn.cursor() as cur:
            for day_start, day_end in chunks(start, end, timedelta(days=1)):
                lock_day(cur, "daily_rollup", tenant, day_start)
                ddl, _ = month_partition("daily_rollup", day_start.date())
                cur.execute(ddl)
                params = {"tenant": tenant, "start": day_start, "end": day_end}
                cur.execute(delete_period("daily_rollup", "day"),
                            {**params, "start": day_start.date(), "end": day_end.date()})
                replaced += cur.rowcount
                cur.execute(DAILY_FROM_HOURLY, params)
                inserted += cur.rowcount
        return {"rows_upserted": inserted, "rows_replaced": replaced}

    return load_every_home(context, postgres, tenant_selection, load, DAILY_GATE)


@day_asset([hourly_rollup])
def local_daily_rollup(context: dg.AssetExecutionContext, postgres: PostgresResource,
                       tenant_selection: TenantSelection) -> dg.MaterializeResult:
    """analytics.local_daily_rollup: per entity and LOCAL calendar day of each home (core.tenants.time_zone),
    re-aggregated exactly from analytics.hourly_rollup, with the day's length (23/24/25 h) and the hours
    loaded. A run for UTC day D re-computes every local day that has an hour in D, in the zone the home
    has now; after a zone change the first run also re-computes every day still counted in another zone
    (once: a year of 1,000 entities is one INSERT … SELECT over its hours), so no two zones are mixed. A home
    whose hours or hourly load failed a blocking check is skipped. Read through analytics.entity_daily,
    energy_daily, energy_weekly and energy_monthly."""
    def load(tenant: str, start: datetime, end: datetime) -> dict[str, Any]:
        with postgres.connect() as conn, conn.cursor() as cur:
            lock_tenant(cur, "local_daily_rollup", tenant)
            zone = tenant_time_zone(cur, tenant)
            window = (start, end)
            other_first, other_last, other_zones = cur.execute(
                OTHER_ZONE_DAYS, {"tenant": tenant, "zone": zone}).fetchone() or (None, None, None)
            if other_first is not None:
                # Local days of any zone lie within a day of their UTC date: this window holds all their
                # hours.
                first = datetime.combine(other_first, datetime.min.time(), UTC)
                last = datetime.combine(other_last, datetime.min.time(), UTC)
                window = (min(start, first - timedelta(days=1)), max(end, last + timedelta(days=2)))
                context.log.info("%s: time zone now %s: re-computing the local days %s … %s counted in %s",
                                 tenant, zone, other_first, other_last, other_zones)
            days = clear_local_days(cur, "local_daily_rollup", tenant, zone, *window)
            cur.execute(LOCAL_DAYS, days.params(tenant, zone))
            inserted = cur.rowcount
            incomplete = cur.execute(
                "SELECT count(*) FROM analytics.local_daily_rollup WHERE tenant_id = %s AND local_day "
                "BETWEEN %s AND %s AND hours_loaded < day_hours",
                (tenant, days.first_day, days.last_day)).fetchone()
        return {"time_zone": zone, "local_days": f"{days.first_day} … {days.last_day}",
                "recomputed_from_zone": other_zones or "", "rows_upserted": inserted,
                "rows_replaced": days.replaced, "incomplete_rows": int(incomplete[0]) if incomplete else 0}

    return load_every_home(context, postgres, tenant_selection, load, DAILY_GATE)


def _view(name: str, deps: list[Any], description: str) -> dg.AssetSpec:
    return dg.AssetSpec(name, deps=deps, description=description, group_name="analyst_views",
                        kinds={"postgres", "view"}, owners=OWNERS, tags={"layer": "serve"},
                        metadata={"relation": f"analytics.{name}",
                                  "owned_by": "alembic (migrations/versions/0003, 0009)"})


analyst_views = [
    _view("entity_hourly", [hourly_rollup, "core_metadata"],
          "Per entity and UTC hour: time-weighted mean (unavailable time excluded), min, max, count, last, "
          "consumption for meters, coverage % — with friendly name, device and unit."),
    _view("entity_daily", [local_daily_rollup, "core_metadata"],
          "Per entity and local day of the home (local_day, time_zone): time-weighted mean, min, max, count, "
          "last, coverage % of the day, day_hours (23/24/25), hours_loaded, complete, imported_hours."),
    _view("energy_daily", [local_daily_rollup, "core_metadata"],
          "kWh per energy meter and local day of the home, counted like Home Assistant's energy dashboard; "
          "whether the day is complete."),
    _view("energy_weekly", [local_daily_rollup, "core_metadata"],
          "kWh per energy meter and local ISO week (from Monday in the home's zone), with completeness."),
    _view("energy_monthly", [local_daily_rollup, "core_metadata"],
          "kWh per energy meter and local calendar month of the home, with completeness."),
    _view("entity_daily_utc", [daily_rollup, "core_metadata"],
          "Per entity and UTC day (utc_day): time-weighted mean, min, max, count, last, coverage % of the day."),
    _view("energy_daily_utc", [daily_rollup, "core_metadata"],
          "kWh per energy meter and UTC day (utc_day), meter resets handled like Home Assistant's statistics."),
    _view("device_last_seen", [hourly_rollup, daily_rollup, "core_metadata"],
          "Per device: when it last sent a point, its latest battery %, availability % over 7 full days."),
]

warehouse_job = dg.define_asset_job(
    "warehouse_daily_job", selection=[hourly_rollup, daily_rollup, local_daily_rollup],
    description="Load one UTC day of 1 h rollups into PostgreSQL and re-aggregate it into the UTC and local "
                "daily tables.",
    executor_def=dg.in_process_executor,
    tags=RUN_RETRY_TAGS,
)
# Dagster's automatic automation-condition sensor starts STOPPED; this one runs the reload by default.
warehouse_reload_sensor = dg.AutomationConditionSensorDefinition(
    "warehouse_late_data_reload", target=[hourly_rollup, daily_rollup, local_daily_rollup],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Reloads a warehouse day whose rollup hours were re-materialised (late data).",
)


@dg.schedule(
    name="warehouse_daily_job_schedule", job=warehouse_job, cron_schedule=f"{WAREHOUSE_MINUTE_OF_HOUR} * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly at :15 UTC, (re)load the UTC day holding the hour that just ended: today's rows "
                "follow within the hour, and the 00:15 run makes yesterday final.",
)
def warehouse_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return previous_hour_day(context)
