"""How a warehouse run replaces its period, shared by every table the warehouse loads.

Each load (the numbers in ``assets.py``, the state durations in ``states.py``) follows one discipline:
refuse a day whose rollup hours failed a blocking check; per UTC day, take the day's advisory lock,
create the month partition, delete exactly the tenant's period and write it again, all in the run's one
transaction — so a re-run replaces, never duplicates, and an interrupted run leaves the old rows. The
local-day tables replace every local day (in the tenant's zone) that has an hour in the run's UTC window.
Kept here once so the tables cannot drift apart in how they are replaced.

A store gone in the middle (``common/faults.py``) stops the step and it is retried: a home's load is one
transaction, so the home being loaded keeps its previous rows, the homes before it are complete, and the
retry replaces every home's period again (a replacement, so no row twice).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
from psycopg import sql

from hats_assets.defs.common import tracing
from hats_assets.defs.common.faults import STEP_RETRY_POLICY, step_faults, store_addresses
from hats_assets.defs.common.months import month_start
from hats_assets.defs.common.resources import PostgresResource
from hats_assets.defs.common.tenants import Outcomes, Refused, TenantSelection, run_homes
from hats_assets.defs.quality.results import failed_hours
from hats_assets.partitions import context_window, daily_partitions

HERE = Path(__file__).parent
DELETE_PERIOD = (HERE / "delete_period.sql").read_text()
LOCAL_DAYS_RANGE = (HERE / "local_days_range.sql").read_text()
TENANT_ZONE = "SELECT time_zone FROM core.tenants WHERE tenant_id = %(tenant)s"
OWNERS = ["team:data-platform"]
WAREHOUSE_TAGS = {"layer": "warehouse"}
# Late data re-rolls hours; the days they belong to are re-loaded when that happens within this window.
RELOAD_LOOKBACK = timedelta(days=31)
# The imports' own loads are ha_history_import_sensor's requests: an observation of an import is no late data.
IMPORT_ASSET = dg.AssetSelection.assets("ha_history_import")
WAREHOUSE_MINUTE_OF_HOUR = 15  # after the rollup schedule's :05 run of the same hour
# The results that hold a home's hours out of the warehouse: the rollups' blocking checks and their storing,
# and for the daily tables also the hourly load's own check.
ROLLUP_GATE = ("rollup_1m", "rollup_1h")
DAILY_GATE = (*ROLLUP_GATE, "hourly_rollup")

reload_on_late_data = (
    dg.AutomationCondition.in_latest_time_window(RELOAD_LOOKBACK)
    & ~dg.AutomationCondition.missing()  # first loads are the schedule's; this only reloads
    & dg.AutomationCondition.any_deps_updated().ignore(IMPORT_ASSET).since_last_handled()
    & ~dg.AutomationCondition.any_deps_missing().ignore(IMPORT_ASSET)
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("reload a loaded day when its upstream partitions were updated (late data)")


def day_asset(deps: Sequence[Any]) -> Any:
    """The decorator of every warehouse table: UTC daily partitions, a backfill of any range as one run,
    the late-data reload, and the warehouse's group, kind, owners and tags."""
    return dg.asset(partitions_def=daily_partitions, backfill_policy=dg.BackfillPolicy.single_run(), deps=deps,
                    automation_condition=reload_on_late_data, group_name="warehouse", kinds={"postgres"},
                    owners=OWNERS, tags=WAREHOUSE_TAGS, retry_policy=STEP_RETRY_POLICY)


def month_partition(parent: str, moment: datetime | date) -> tuple[sql.Composed, str]:
    """DDL for the month partition of ``analytics.<parent>`` holding ``moment`` (range by month)."""
    start_day = month_start(moment if isinstance(moment, date) else moment.date())
    end_day = month_start(start_day, 1)
    bounds: tuple[Any, Any] = (start_day, end_day)
    if isinstance(moment, datetime):
        bounds = (datetime(start_day.year, start_day.month, 1, tzinfo=UTC),
                  datetime(end_day.year, end_day.month, 1, tzinfo=UTC))
    name = f"{parent}_p{start_day:%Y_%m}"
    ddl = sql.SQL("CREATE TABLE IF NOT EXISTS analytics.{} PARTITION OF analytics.{} "
                  "FOR VALUES FROM ({}) TO ({})").format(
        sql.Identifier(name), sql.Identifier(parent), sql.Literal(bounds[0]), sql.Literal(bounds[1]))
    return ddl, name


def months(first: date, last: date) -> list[date]:
    """The first day of each month from ``first``'s to ``last``'s."""
    out, month = [], month_start(first)
    while month <= last:
        out.append(month)
        month = month_start(month, 1)
    return out


def lock_day(cur: psycopg.Cursor[Any], table: str, tenant: str, day: datetime) -> None:
    """Serialise two loads of the same day (the schedule and a late-data reload may overlap): without it
    the second DELETE cannot see the first's uncommitted rows and its insert fails on the primary key."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{table}:{tenant}:{day:%Y-%m-%d}",))


def lock_tenant(cur: psycopg.Cursor[Any], table: str, tenant: str) -> None:
    """One lock per tenant for a local-day table: runs of adjacent UTC days share the local day between them."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{table}:{tenant}",))


def delete_period(table: str, period: str) -> sql.Composed:
    return sql.SQL(DELETE_PERIOD).format(table=sql.Identifier(table), period=sql.Identifier(period))


def refuse_failed_hours(postgres: PostgresResource, tenant: str, start: datetime, end: datetime,
                        assets: tuple[str, ...] = ROLLUP_GATE) -> None:
    """A home's day whose hours failed a blocking data-quality check (or whose rollup could not be stored)
    is not loaded for that home: its analysts keep the last good rows, the other homes load, and the home's
    outcome says which hours and what to do (``Refused``)."""
    failed = failed_hours(postgres, tenant, start, end, assets)
    if failed:
        listed = ", ".join(f"{hour:%Y-%m-%d-%H:00} {check}" for hour, check, _ in failed[:24])
        raise Refused(f"not loading: hours failed blocking checks ({listed}); fix the data or re-run those "
                      f"partitions for this home (tenant_selection.tenants: [{tenant}]), then this day loads",
                      failed_hours=[[f"{h:%Y-%m-%d-%H:00}", c, n] for h, c, n in failed[:24]])


def replace_hours(cur: psycopg.Cursor[Any], table: str, tenant: str, day_start: datetime, day_end: datetime,
                  columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> tuple[int, str]:
    """Replace ``analytics.<table>``'s hours of one UTC day (column ``hour``) with ``rows``; returns the
    number of rows replaced and the month partition written."""
    lock_day(cur, table, tenant, day_start)
    ddl, partition = month_partition(table, day_start)
    cur.execute(ddl)
    cur.execute(delete_period(table, "hour"), {"tenant": tenant, "start": day_start, "end": day_end})
    replaced = cur.rowcount
    with cur.copy(sql.SQL("COPY analytics.{} ({}) FROM STDIN").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns)))) as copy:
        for row in rows:
            copy.write_row(row)
    return replaced, partition


def tenant_time_zone(cur: psycopg.Cursor[Any], tenant: str) -> str:
    """The home's IANA zone (core.tenants.time_zone, checked against PostgreSQL's zone names by 0008),
    read at run time so a zone set by an import or an operator counts from the next run on."""
    row = cur.execute(TENANT_ZONE, {"tenant": tenant}).fetchone()
    if row is None:
        raise dg.Failure(description=f"tenant {tenant!r} is not in core.tenants: no time zone to count its local "
                                     "days in")
    return str(row[0])


@dataclass(frozen=True, slots=True)
class LocalDays:
    """The local days a run replaces and the UTC hours they span (``hours_to`` exclusive)."""

    first_day: date
    last_day: date
    hours_from: datetime
    hours_to: datetime
    replaced: int

    def params(self, tenant: str, zone: str) -> dict[str, Any]:
        return {"tenant": tenant, "zone": zone, "first_day": self.first_day, "last_day": self.last_day,
                "hours_from": self.hours_from, "hours_to": self.hours_to}


def clear_local_days(cur: psycopg.Cursor[Any], table: str, tenant: str, zone: str, start: datetime,
                     end: datetime) -> LocalDays:
    """Delete ``analytics.<table>``'s local days (in ``zone``) holding an hour of the UTC window, after
    making their month partitions; the caller inserts them again in the same transaction."""
    span = cur.execute(LOCAL_DAYS_RANGE, {"zone": zone, "start": start, "end": end}).fetchone()
    assert span is not None  # one row, always: the query selects from constants
    first_day, last_day, hours_from, hours_to = span
    for month in months(first_day, last_day):
        cur.execute(month_partition(table, month)[0])
    cur.execute(delete_period(table, "local_day"),
                {"tenant": tenant, "start": first_day, "end": last_day + timedelta(days=1)})
    return LocalDays(first_day, last_day, hours_from, hours_to, cur.rowcount)


def window_metadata(start: datetime, end: datetime, began: float, outcomes: Outcomes) -> dict[str, Any]:
    """A warehouse materialisation's metadata: its UTC window, per home what was loaded, the totals."""
    return {"window_start": dg.MetadataValue.timestamp(start), "window_end": dg.MetadataValue.timestamp(end),
            **outcomes.metadata(), "duration_s": round(time.monotonic() - began, 3)}


HomeLoad = Callable[[str, datetime, datetime], dict[str, Any]]


def load_every_home(context: dg.AssetExecutionContext, postgres: PostgresResource, tenant_selection: TenantSelection,
                    load: HomeLoad, gate: tuple[str, ...] = ROLLUP_GATE,
                    influxdb_url: str | None = None) -> dg.MaterializeResult:
    """One warehouse step for every home of the run, on one PostgreSQL connection: a home whose hours failed
    a blocking check (`gate`) is refused, a home whose load fails is recorded, and neither stops the others;
    `load(tenant, start, end)` returns what the home's metadata shows. A store outage stops the step
    (``faults.step_faults``; `influxdb_url`: the load reads InfluxDB too)."""
    began = time.monotonic()
    start, end = context_window(context)
    outcomes = Outcomes(context.log)
    table = context.asset_key.to_user_string()
    with (step_faults(context, f"the warehouse load of analytics.{table}",
                      store_addresses(influxdb_url, postgres.dsn)) as progress,
          tracing.step(context), postgres.session()):  # one connection for every home of the step
        for home, outcome in outcomes.each(run_homes(context, postgres, tenant_selection)):
            progress.at(f"home {home.tenant_id}, UTC {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M}",
                        f"the home's rows of analytics.{table} are left as they were (its load is one "
                        "transaction, rolled back) and are loaded again by the retry; homes before it are loaded")

            def work(tenant: str = home.tenant_id) -> dict[str, Any]:
                refuse_failed_hours(postgres, tenant, start, end, gate)
                return load(tenant, start, end)

            outcomes.guard(home, outcome, work)
    context.log.info("%s → %s: %d homes (%d failed, %d refused)", start, end, len(outcomes.by_home),
                     len(outcomes.failed()), len(outcomes.refused()))
    return dg.MaterializeResult(metadata=window_metadata(start, end, began, outcomes))


def previous_hour_day(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """The warehouse schedules' request: the UTC day holding the hour that just ended."""
    hour = context.scheduled_execution_time.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    day = (hour - timedelta(hours=1)).strftime("%Y-%m-%d")
    return dg.RunRequest(run_key=f"{day}@{hour:%H}", partition_key=day)
