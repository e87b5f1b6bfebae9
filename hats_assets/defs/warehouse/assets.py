"""The PostgreSQL warehouse: per-entity hourly aggregates that analysts query.

Each hourly partition reads its hour of raw points from InfluxDB (the aggregation is pushed down to
InfluxQL) and replaces exactly that hour in `analytics.entity_hourly`, in one transaction.
"""


import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
from psycopg import sql

from hats_assets.defs.common.resources import InfluxDBResource, PostgresResource
from hats_assets.partitions import hour_window, hourly_partitions

HERE = Path(__file__).parent
AGGREGATE_QUERY = (HERE / "entity_hourly.influxql").read_text()
REPLACE_SQL = (HERE / "entity_hourly_replace.sql").read_text()
INSERT_SQL = (
    "INSERT INTO analytics.entity_hourly "
    "(tenant_id, entity_id, measurement, hour, mean, min, max, count, last) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


def month_partition(parent: str, moment: datetime) -> tuple[sql.Composed, str]:
    """DDL for the month partition holding `moment` (native partitioning by month)."""
    start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    end = datetime(start.year + (start.month == 12), start.month % 12 + 1, 1, tzinfo=UTC)
    name = f"{parent}_p{start:%Y_%m}"
    ddl = sql.SQL("CREATE TABLE IF NOT EXISTS analytics.{} PARTITION OF analytics.{} "
                  "FOR VALUES FROM ({}) TO ({})").format(
        sql.Identifier(name), sql.Identifier(parent), sql.Literal(start), sql.Literal(end))
    return ddl, name


@dg.asset(
    partitions_def=hourly_partitions,
    deps=["raw_points"],
    group_name="warehouse",
    kinds={"postgres"},
    owners=["team:data-platform"],
    tags={"layer": "warehouse"},
)
def entity_hourly(
    context: dg.AssetExecutionContext, influxdb: InfluxDBResource, postgres: PostgresResource
) -> dg.MaterializeResult:
    """Per entity and UTC hour: mean, min, max, count and last of its numeric states, in canonical
    units (°C, W, kWh…). Non-numeric and unavailable states are not counted. Analysts read it as
    `analytics.entity_hourly`."""
    started = time.monotonic()
    start, end = hour_window(context.partition_key)
    series = influxdb.query(AGGREGATE_QUERY, {"start": start.isoformat(), "end": end.isoformat()})
    rows = [
        (influxdb.tenant, s["tags"]["entity_id"], s["name"], start, *s["values"][0][1:])
        for s in series
        if s["values"][0][4]  # count: an entity with only non-numeric states has no numeric aggregate
    ]
    ddl, partition = month_partition("entity_hourly", start)
    with postgres.connect() as conn, conn.cursor() as cur:
        cur.execute(ddl)
        cur.execute(REPLACE_SQL, {"tenant": influxdb.tenant, "start": start, "end": end})
        replaced = cur.rowcount
        cur.executemany(INSERT_SQL, rows)
    points = sum(int(row[7]) for row in rows)
    context.log.info("%s: %d points of %d entities -> %d rows (%d replaced)", context.partition_key, points,
                     len(rows), len(rows), replaced)
    return dg.MaterializeResult(metadata={
        "window_start": dg.MetadataValue.timestamp(start),
        "window_end": dg.MetadataValue.timestamp(end),
        "points_read": points,
        "entities": len(rows),
        "rows_upserted": len(rows),
        "rows_replaced": replaced,
        "pg_partition": f"analytics.{partition}",
        "duration_s": round(time.monotonic() - started, 3),
    })


entity_hourly_job = dg.define_asset_job("entity_hourly_job", selection=[entity_hourly])
entity_hourly_schedule = dg.build_schedule_from_partitioned_job(
    entity_hourly_job, minute_of_hour=5, default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Each hour at :05, aggregate the hour that just ended.",
)
