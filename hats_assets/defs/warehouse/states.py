"""Time in each state in PostgreSQL: per UTC hour, per LOCAL day of the home, and the analysts' view.

``state_hourly`` copies the InfluxDB rollup ``state_1h`` (``rollups/state_durations.py``) for a UTC day,
``state_local_daily`` re-aggregates the hours into local days (``state_local_days.sql``) as
``local_daily_rollup`` does for the numbers: an hour counts for the local date of its start, and a run
for UTC day D re-computes every local day with an hour in D. Durations travel as integer nanoseconds and
land as exact decimal seconds, so a day is the exact sum of its hours. Same daily partitions, failed-check
gate and late-data reload as the sibling warehouse assets (``assets.py``); the view is Alembic's (0010).
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
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
from hats_assets.defs.rollups.contract import MAX_STATES_PER_HOUR, OTHER_STATE, STATE_MEASUREMENT
from hats_assets.defs.warehouse.assets import ROLLUP_1H_QUERY
from hats_assets.defs.warehouse.tables import (
    OWNERS,
    WAREHOUSE_MINUTE_OF_HOUR,
    clear_local_days,
    day_asset,
    load_every_home,
    lock_tenant,
    previous_hour_day,
    replace_hours,
    tenant_time_zone,
)
from hats_assets.partitions import chunks

HERE = Path(__file__).parent
STATE_LOCAL_DAYS = (HERE / "state_local_days.sql").read_text()
STATE_HOURLY_COLUMNS = ("tenant_id", "entity_id", "quantity", "hour", "state", "duration_s", "entries")
NS_DIGITS = -9  # duration_ns → seconds, exactly


def _state_rows(db: TenantInflux, start: datetime, end: datetime) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for series in db.query(ROLLUP_1H_QUERY.format(measurement=quote_ident(STATE_MEASUREMENT)),
                           window_params(start, end)):
        position = {name: i for i, name in enumerate(series["columns"])}
        for values in series["values"]:
            rows.append((
                db.tenant, series["tags"]["entity_id"], series["tags"]["quantity"],
                datetime.fromtimestamp(values[0] // 1_000_000_000, tz=UTC), values[position["state"]],
                Decimal(int(values[position["duration_ns"]])).scaleb(NS_DIGITS), int(values[position["entries"]]),
            ))
    return rows


@day_asset(["rollup_states_1h"])
def state_hourly(
    context: dg.AssetExecutionContext, influxdb: InfluxDBResource, postgres: PostgresResource,
    tenant_selection: TenantSelection,
) -> dg.MaterializeResult:
    """analytics.state_hourly: per entity, UTC hour and state of two-state and text-state entities (a door,
    a switch, an HVAC mode, an enum sensor), the seconds held and the entries into it, for the UTC day, per
    home (a home whose hours failed a blocking check keeps its last good rows)."""
    def load(tenant: str, start: datetime, end: datetime) -> dict[str, Any]:
        db = influxdb.for_tenant(tenant)
        inserted = replaced = 0
        entities: set[str] = set()
        with postgres.connect() as conn, conn.cursor() as cur:
            for day_start, day_end in chunks(start, end, timedelta(days=1)):
                rows = _state_rows(db, day_start, day_end)
                replaced += replace_hours(cur, "state_hourly", tenant, day_start, day_end,
                                          STATE_HOURLY_COLUMNS, rows)[0]
                inserted += len(rows)
                entities.update(row[1] for row in rows)
        return {"rows_upserted": inserted, "rows_replaced": replaced, "entities": len(entities)}

    return load_every_home(context, postgres, tenant_selection, load, influxdb_url=influxdb.url)


@day_asset([state_hourly])
def state_local_daily(context: dg.AssetExecutionContext, postgres: PostgresResource,
                      tenant_selection: TenantSelection) -> dg.MaterializeResult:
    """analytics.state_local_daily: time in each state per entity and LOCAL day of each home, with the day's
    length and the hours loaded ("door open 2 h 13 min, 14 openings"). Read through analytics.state_daily."""
    def load(tenant: str, start: datetime, end: datetime) -> dict[str, Any]:
        with postgres.connect() as conn, conn.cursor() as cur:
            lock_tenant(cur, "state_local_daily", tenant)
            zone = tenant_time_zone(cur, tenant)
            days = clear_local_days(cur, "state_local_daily", tenant, zone, start, end)
            cur.execute(STATE_LOCAL_DAYS, {**days.params(tenant, zone),
                                           "max_states": MAX_STATES_PER_HOUR, "other": OTHER_STATE})
            inserted = cur.rowcount
        return {"time_zone": zone, "local_days": f"{days.first_day} … {days.last_day}",
                "rows_upserted": inserted, "rows_replaced": days.replaced}

    return load_every_home(context, postgres, tenant_selection, load)


state_daily_view = dg.AssetSpec(
    "state_daily", deps=[state_local_daily, "core_metadata"], group_name="analyst_views",
    kinds={"postgres", "view"}, owners=OWNERS, tags={"layer": "serve"},
    metadata={"relation": "analytics.state_daily", "owned_by": "alembic (migrations/versions/0010)"},
    description="Per entity, local day of the home and state: time in the state (seconds and interval), entries "
                "into it, share of the day, whether the day is complete — with friendly name, device and area.",
)

state_job = dg.define_asset_job(
    "warehouse_states_job", selection=[state_hourly, state_local_daily],
    description="Load one UTC day of hourly state durations into PostgreSQL and re-aggregate the local days "
                "it touches.",
    executor_def=dg.in_process_executor,
    tags=RUN_RETRY_TAGS,
)
state_reload_sensor = dg.AutomationConditionSensorDefinition(
    "warehouse_states_late_data_reload", target=[state_hourly, state_local_daily],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Reloads a day of state durations whose rollup hours were re-materialised (late data).",
)


@dg.schedule(
    name="warehouse_states_job_schedule", job=state_job, cron_schedule=f"{WAREHOUSE_MINUTE_OF_HOUR} * * * *",
    execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly with the warehouse, (re)load the UTC day holding the hour that just ended.",
)
def state_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    return previous_hour_day(context)
