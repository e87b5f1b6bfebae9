"""The PostgreSQL warehouse: hourly and daily per-entity rollups and the views analysts query.

Daily partitions: each run replaces exactly its UTC day(s) in one transaction. ``hourly_rollup`` copies
the InfluxDB 1 h rollup; ``daily_rollup`` re-aggregates those hours inside PostgreSQL (exact, see
``daily_from_hourly.sql``). The views are Alembic's (migrations/versions/0003): they appear here as
external assets so the lineage runs from the MQTT feed to what analysts read.
"""

import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
from psycopg import sql

from hats_assets.defs.common.resources import InfluxDBResource, PostgresResource, window_params
from hats_assets.defs.quality.results import failed_hours
from hats_assets.defs.rollups.contract import COUNTER_FIELDS, GAUGE_FIELDS, KINDS, Kind, measurement
from hats_assets.partitions import chunks, context_window, daily_partitions

HERE = Path(__file__).parent
ROLLUP_1H_QUERY = (HERE / "rollup_1h.influxql").read_text()
DELETE_PERIOD = (HERE / "delete_period.sql").read_text()
DAILY_FROM_HOURLY = (HERE / "daily_from_hourly.sql").read_text()
HOURLY_COLUMNS = ("tenant_id", "entity_id", "quantity", "kind", "hour", "mean", "min", "max", "count", "last",
                  "available_s", "value_s", "consumption", "resets", "last_seen")
# Late data re-rolls hours; the days they belong to are re-loaded when that happens within this window.
RELOAD_LOOKBACK = timedelta(days=31)
OWNERS = ["team:data-platform"]
WAREHOUSE_TAGS = {"layer": "warehouse"}

reload_on_late_data = (
    dg.AutomationCondition.in_latest_time_window(RELOAD_LOOKBACK)
    & ~dg.AutomationCondition.missing()  # first loads are the schedule's; this only reloads
    & dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("reload a loaded day when its upstream partitions were updated (late data)")


def month_partition(parent: str, moment: datetime | date) -> tuple[sql.Composed, str]:
    """DDL for the month partition of ``analytics.<parent>`` holding ``moment`` (range by month)."""
    start_day = date(moment.year, moment.month, 1)
    end_day = date(start_day.year + (start_day.month == 12), start_day.month % 12 + 1, 1)
    bounds: tuple[Any, Any] = (start_day, end_day)
    if isinstance(moment, datetime):
        bounds = (datetime(start_day.year, start_day.month, 1, tzinfo=UTC),
                  datetime(end_day.year, end_day.month, 1, tzinfo=UTC))
    name = f"{parent}_p{start_day:%Y_%m}"
    ddl = sql.SQL("CREATE TABLE IF NOT EXISTS analytics.{} PARTITION OF analytics.{} "
                  "FOR VALUES FROM ({}) TO ({})").format(
        sql.Identifier(name), sql.Identifier(parent), sql.Literal(bounds[0]), sql.Literal(bounds[1]))
    return ddl, name


def _lock_day(cur: psycopg.Cursor[Any], table: str, tenant: str, day: datetime) -> None:
    """Serialise two loads of the same day (the schedule and a late-data reload may overlap): without it
    the second DELETE cannot see the first's uncommitted rows and its insert fails on the primary key."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{table}:{tenant}:{day:%Y-%m-%d}",))


def _delete(table: str, period: str) -> sql.Composed:
    return sql.SQL(DELETE_PERIOD).format(table=sql.Identifier(table), period=sql.Identifier(period))


def _hourly_rows(influxdb: InfluxDBResource, kind: Kind, start: datetime, end: datetime) -> list[tuple[Any, ...]]:
    query = ROLLUP_1H_QUERY.format(measurement=f'"{measurement(kind, "1h")}"')
    rows: list[tuple[Any, ...]] = []
    fields = GAUGE_FIELDS if kind == "gauge" else COUNTER_FIELDS
    for series in influxdb.query(query, window_params(start, end)):
        position = {name: i for i, name in enumerate(series["columns"])}
        for values in series["values"]:
            got = {name: values[position[name]] if name in position else None for name in fields}
            seen, mean = got["last_seen_s"], got.get("mean")
            rows.append((
                influxdb.tenant, series["tags"]["entity_id"], series["tags"]["quantity"], kind,
                datetime.fromtimestamp(values[0] / 1e9, tz=UTC),
                got.get("mean"), got.get("min"), got.get("max"), got["count"], got["last"], got["available_s"],
                None if mean is None else mean * got["available_s"],  # value_s: what makes days exact sums
                got.get("consumption"), got.get("resets"),
                datetime.fromtimestamp(seen, tz=UTC) if seen is not None else None,
            ))
    return rows


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["rollup_1h"],
    automation_condition=reload_on_late_data,
    group_name="warehouse",
    kinds={"postgres"},
    owners=OWNERS,
    tags=WAREHOUSE_TAGS,
)
def hourly_rollup(
    context: dg.AssetExecutionContext, influxdb: InfluxDBResource, postgres: PostgresResource
) -> dg.MaterializeResult:
    """analytics.hourly_rollup: the 1 h rollups of every entity for the UTC day, in PostgreSQL for SQL
    users (partitioned by month). Read through the analytics.entity_hourly view."""
    began = time.monotonic()
    start, end = context_window(context)
    failed = failed_hours(postgres, influxdb.tenant, start, end)
    if failed:
        listed = ", ".join(f"{hour:%Y-%m-%d-%H:00} {check}" for hour, check, _ in failed[:24])
        raise dg.Failure(
            description=f"not loading: rollup hours failed blocking data-quality checks ({listed}); fix the data "
                        "or re-run those rollup partitions, then this day loads",
            metadata={"failed_hours": dg.MetadataValue.json([[f"{h:%Y-%m-%d-%H:00}", c, n] for h, c, n in failed])},
        )
    inserted = replaced = 0
    partitions: set[str] = set()
    entities: set[str] = set()
    with postgres.connect() as conn, conn.cursor() as cur:
        for day_start, day_end in chunks(start, end, timedelta(days=1)):
            _lock_day(cur, "hourly_rollup", influxdb.tenant, day_start)
            ddl, partition = month_partition("hourly_rollup", day_start)
            cur.execute(ddl)
            partitions.add(partition)
            cur.execute(_delete("hourly_rollup", "hour"), {"tenant": influxdb.tenant, "start": day_start,
                                                           "end": day_end})
            replaced += cur.rowcount
            for kind in KINDS:
                rows = _hourly_rows(influxdb, kind, day_start, day_end)
                with cur.copy(sql.SQL("COPY analytics.hourly_rollup ({}) FROM STDIN").format(
                        sql.SQL(", ").join(map(sql.Identifier, HOURLY_COLUMNS)))) as copy:
                    for row in rows:
                        copy.write_row(row)
                inserted += len(rows)
                entities.update(row[1] for row in rows)
    context.log.info("%s → %s: %d hourly rows of %d entities (%d replaced)", start, end, inserted, len(entities),
                     replaced)
    return dg.MaterializeResult(metadata={
        "window_start": dg.MetadataValue.timestamp(start),
        "window_end": dg.MetadataValue.timestamp(end),
        "rows_upserted": inserted,
        "rows_replaced": replaced,
        "entities": len(entities),
        "pg_partitions": ", ".join(sorted(f"analytics.{p}" for p in partitions)),
        "duration_s": round(time.monotonic() - began, 3),
    })


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[hourly_rollup],
    automation_condition=reload_on_late_data,
    group_name="warehouse",
    kinds={"postgres"},
    owners=OWNERS,
    tags=WAREHOUSE_TAGS,
)
def daily_rollup(context: dg.AssetExecutionContext, postgres: PostgresResource,
                 influxdb: InfluxDBResource) -> dg.MaterializeResult:
    """analytics.daily_rollup: per entity and UTC day, re-aggregated exactly from the day's hours
    (time-weighted mean, min, max, count, last, available time; consumption for meters). Read through
    analytics.entity_daily and analytics.energy_daily."""
    began = time.monotonic()
    start, end = context_window(context)
    inserted = replaced = 0
    with postgres.connect() as conn, conn.cursor() as cur:
        for day_start, day_end in chunks(start, end, timedelta(days=1)):
            _lock_day(cur, "daily_rollup", influxdb.tenant, day_start)
            ddl, _ = month_partition("daily_rollup", day_start.date())
            cur.execute(ddl)
            params = {"tenant": influxdb.tenant, "start": day_start, "end": day_end}
            cur.execute(_delete("daily_rollup", "day"), {**params, "start": day_start.date(), "end": day_end.date()})
            replaced += cur.rowcount
            cur.execute(DAILY_FROM_HOURLY, params)
            inserted += cur.rowcount
    return dg.MaterializeResult(metadata={
        "window_start": dg.MetadataValue.timestamp(start),
        "window_end": dg.MetadataValue.timestamp(end),
        "rows_upserted": inserted,
        "rows_replaced": replaced,
        "duration_s": round(time.monotonic() - began, 3),
    })


def _view(name: str, deps: list[Any], description: str) -> dg.AssetSpec:
    return dg.AssetSpec(name, deps=deps, description=description, group_name="analyst_views",
                        kinds={"postgres", "view"}, owners=OWNERS, tags={"layer": "serve"},
                        metadata={"relation": f"analytics.{name}", "owned_by": "alembic (migrations/versions/0003)"})


analyst_views = [
    _view("entity_hourly", [hourly_rollup, "core_metadata"],
          "Per entity and UTC hour: time-weighted mean (unavailable time excluded), min, max, count, last, "
          "consumption for meters, coverage % — with friendly name, device and unit."),
    _view("entity_daily", [daily_rollup, "core_metadata"],
          "Per entity and UTC day: time-weighted mean, min, max, count, last, coverage % of the day."),
    _view("energy_daily", [daily_rollup, "core_metadata"],
          "kWh per energy meter and UTC day, meter resets handled like Home Assistant's statistics."),
    _view("device_last_seen", [hourly_rollup, daily_rollup, "core_metadata"],
          "Per device: when it last sent a point, its latest battery %, availability % over 7 full days."),
]

warehouse_job = dg.define_asset_job(
    "warehouse_daily_job", selection=[hourly_rollup, daily_rollup],
    description="Load one UTC day of 1 h rollups into PostgreSQL and re-aggregate it into the daily table.",
    executor_def=dg.in_process_executor,
)
# Dagster's automatic automation-condition sensor starts STOPPED; this one runs the reload by default.
warehouse_reload_sensor = dg.AutomationConditionSensorDefinition(
    "warehouse_late_data_reload", target=[hourly_rollup, daily_rollup],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Reloads a warehouse day whose rollup hours were re-materialised (late data).",
)
WAREHOUSE_MINUTE_OF_HOUR = 15  # after the rollup schedule's :05 run of the same hour


@dg.schedule(
    name="warehouse_daily_job_schedule", job=warehouse_job, cron_schedule=f"{WAREHOUSE_MINUTE_OF_HOUR} * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly at :15 UTC, (re)load the UTC day holding the hour that just ended: today's rows "
                "follow within the hour, and the 00:15 run makes yesterday final.",
)
def warehouse_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    hour = context.scheduled_execution_time.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    day = (hour - timedelta(hours=1)).strftime("%Y-%m-%d")
    return dg.RunRequest(run_key=f"{day}@{hour:%H}", partition_key=day)
