"""Billing: what each home used per UTC day, in ``billing.usage_daily``, so an operator can meter homes.

Per home and day: ``points_ingested`` (points InfluxDB accepted, the worker's ``ops.ingest_hours``),
``series`` (entities with a raw point that day, numeric or text), ``dead_letters`` (payloads refused into
``ops.dead_letters`` that day) and ``raw_bytes``/``rollup_bytes`` (the day's share of its InfluxDB shards,
``storage.py`` says exactly what that is). Daily partitions like the warehouse; a re-run replaces the day's
row with a fresh measurement. The shard listing and statistics are read once per run for every home.
"""

import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg

from hats_assets.defs.billing.storage import day_bytes, disk_bytes, shards_of
from hats_assets.defs.common import tracing
from hats_assets.defs.common.faults import RUN_RETRY_TAGS, STEP_RETRY_POLICY, step_faults, store_addresses
from hats_assets.defs.common.influx_retention import InfluxRetentionResource
from hats_assets.defs.common.resources import InfluxDBResource, PostgresResource, TenantInflux, window_params
from hats_assets.defs.common.tenants import Outcomes, TenantSelection, run_homes
from hats_assets.defs.warehouse.tables import OWNERS, previous_hour_day, window_metadata
from hats_assets.partitions import chunks, context_window, daily_partitions
from ingest_worker.contract import RAW_RP, ROLLUP_RP, database_for

HERE = Path(__file__).parent
USAGE_DAY = (HERE / "usage_day.sql").read_text()
USAGE_UPSERT = (HERE / "usage_upsert.sql").read_text()
# Entities with a point in the day: numeric values and text states are separate fields.
SEEN_QUERIES = tuple(f'SELECT count("{field}") FROM "raw"./.*/ WHERE time >= $start AND time < $end GROUP BY '
                     '"entity_id"' for field in ("value", "state"))
BILLING_MINUTE_OF_HOUR = 45


def entities_seen(db: TenantInflux, start: datetime, end: datetime) -> int:
    return len({series["tags"]["entity_id"] for query in SEEN_QUERIES
                for series in db.query(query, window_params(start, end))})


@dg.asset(
    partitions_def=daily_partitions, deps=["raw_points", "rollup_1h"], group_name="billing",
    kinds={"postgres", "influxdb"}, owners=OWNERS, tags={"layer": "meter"}, retry_policy=STEP_RETRY_POLICY,
)
def usage_daily(
    context: dg.AssetExecutionContext, influxdb: InfluxDBResource, influxdb_retention: InfluxRetentionResource,
    postgres: PostgresResource, tenant_selection: TenantSelection,
) -> dg.MaterializeResult:
    """billing.usage_daily: per home and UTC day, points ingested, entities seen, dead letters, and the raw
    and rollup storage of the day in InfluxDB (each shard's diskBytes times the share of its time range the
    day covers), so an operator can meter and bill homes."""
    began = time.monotonic()
    start, end = context_window(context)
    outcomes = Outcomes(context.log)
    with (step_faults(context, "metering (billing.usage_daily)", store_addresses(influxdb.url, postgres.dsn))
          as progress, tracing.step(context), postgres.session()):  # one connection for every home of the step
        progress.at("reading InfluxDB's shards and their sizes", "nothing was written by this step")
        # SHOW SHARDS / SHOW STATS are server-wide (admin only): the write gate's retention endpoint answers them.
        admin = influxdb_retention.for_tenant("home")
        shards = shards_of(admin.query("SHOW SHARDS"))
        sizes = disk_bytes(admin.query("SHOW STATS FOR 'shard'"))
        for home, outcome in outcomes.each(run_homes(context, postgres, tenant_selection)):
            progress.at(f"home {home.tenant_id}, UTC {start:%Y-%m-%d} to {end:%Y-%m-%d}",
                        "the home's usage rows are left as they were (one transaction, rolled back) and are "
                        "metered again by the retry; homes before it are metered")

            def meter(tenant: str = home.tenant_id) -> dict[str, Any]:
                db = influxdb.for_tenant(tenant)
                database = database_for(tenant)
                unmeasured: list[str] = []
                totals = {"points_ingested": 0, "series": 0, "dead_letters": 0, "raw_bytes": 0, "rollup_bytes": 0}
                with postgres.connect() as conn:
                    for day_start, day_end in chunks(start, end, timedelta(days=1)):
                        row = conn.execute(USAGE_DAY, {"tenant": tenant, "start": day_start, "end": day_end}).fetchone()
                        points, dead = (int(row[0]), int(row[1])) if row else (0, 0)
                        raw, raw_missing = day_bytes(shards, sizes, database, RAW_RP, day_start, day_end)
                        rollup, rollup_missing = day_bytes(shards, sizes, database, ROLLUP_RP, day_start, day_end)
                        usage = {"points_ingested": points, "series": entities_seen(db, day_start, day_end),
                                 "dead_letters": dead, "raw_bytes": raw, "rollup_bytes": rollup}
                        conn.execute(USAGE_UPSERT, {"tenant": tenant, "day": day_start.date(), **usage})
                        unmeasured += raw_missing + rollup_missing
                        totals = {key: totals[key] + value for key, value in usage.items()}
                return {**totals, "days": int((end - start) / timedelta(days=1)),
                        "shards_unmeasured": ", ".join(unmeasured)}

            outcomes.guard(home, outcome, meter)
    return dg.MaterializeResult(metadata=window_metadata(start, end, began, outcomes))


billing_job = dg.define_asset_job(
    "billing_daily_job", selection=[usage_daily], executor_def=dg.in_process_executor, tags=RUN_RETRY_TAGS,
    description="Meter every home's usage of one UTC day into billing.usage_daily.",
)


@dg.schedule(
    name="billing_daily_job_schedule", job=billing_job, cron_schedule=f"{BILLING_MINUTE_OF_HOUR} * * * *",
    execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly at :45 UTC, meter the UTC day holding the hour that just ended: today's usage grows "
                "through the day and the 00:45 run makes yesterday's final.",
)
def billing_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return previous_hour_day(context)
