"""Local calendar days per home, and which warehouse hours were imported from Home Assistant's statistics.

* ``analytics.hourly_rollup.origin``: ``computed`` (our rollup of raw points) or ``imported`` (Home
  Assistant's long-term statistics, loaded only for hours without a computed rollup);
  ``analytics.daily_rollup.imported_hours``: how many of the UTC day's hours were imported.
* ``analytics.local_daily_rollup``: one row per entity, quantity and LOCAL calendar day in the tenant's
  ``core.tenants.time_zone``, re-aggregated exactly from ``hourly_rollup`` like the UTC days, with the
  zone, the day's length in hours (23 or 25 on DST days) and the hours loaded, so a reader sees whether
  the day is complete. An hour belongs to the local date of its start: Home Assistant's
  ``statistics_during_period(period="day")`` reduces hourly statistics the same way
  (``recorder/statistics.py``, ``reduce_day_ts_factory``: a day is the hours whose start lies between
  local midnight and the next). In a half-hour zone (Asia/Kolkata, UTC+05:30) the UTC hour 18:00-19:00
  starts at 23:30 local: it counts for the day it starts in, so such a "day" runs 00:30 to 00:30 local,
  as in Home Assistant's energy dashboard. Partitioned by month of the local day, owned by ``hats_dagster``.
* Views: ``entity_daily`` and ``energy_daily`` are now LOCAL days (column ``local_day``, with
  ``time_zone``, ``day_hours``, ``hours_loaded``, ``complete`` and ``imported_hours``); the UTC days stay
  as ``entity_daily_utc`` / ``energy_daily_utc`` with the column ``utc_day``. The day column changes its
  name on purpose: a query written for the UTC views fails loudly instead of silently changing meaning.
  New: ``energy_weekly`` (ISO weeks from local Monday) and ``energy_monthly`` (local months).
  ``entity_hourly`` gains ``origin``. The energy views gain ``area``. All keep 0004's join on
  ``e.tenant_id::text`` (index lookup) and run with their owner's rights.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

ENTITY_JOIN = "e.tenant_id::text = r.tenant_id AND e.entity_id = r.entity_id"
AREA_JOINS = """
        LEFT JOIN core.devices d ON d.tenant_id = e.tenant_id AND d.device_id = e.device_id
        LEFT JOIN core.areas a ON a.tenant_id = e.tenant_id AND a.area_id = coalesce(e.area_id, d.area_id)"""


def _local_hours(start: str, end: str, zone: str) -> str:
    """SQL for the number of UTC hour starts between two local midnights (``start``/``end`` are dates in
    ``zone``): the same count the local-day loader stores as ``day_hours`` (hours ceiled to the hour, so a
    half-hour zone's period still counts whole UTC hours)."""
    def ceil_hour(day: str) -> str:
        moment = f"(({day})::timestamp AT TIME ZONE {zone})"
        return f"date_trunc('hour', {moment} + interval '59 minutes 59.999999 seconds')"
    return f"(extract(epoch FROM {ceil_hour(end)} - {ceil_hour(start)}) / 3600)::integer"


def _energy_period(name: str, period: str, label: str, length: str) -> str:
    """energy_weekly / energy_monthly: local days summed per ISO week or month, with completeness."""
    start = f"date_trunc('{period}', r.local_day)::date"
    return f"""
        CREATE VIEW analytics.{name} AS
        SELECT r.tenant_id, r.entity_id, e.friendly_name, e.device_id, {start} AS {period}_start,
               to_char({start}, '{label}') AS {period}, r.time_zone,
               {_local_hours(start, f"({start} + interval '{length}')::date", "r.time_zone")} AS period_hours,
               sum(r.hours_loaded)::integer AS hours_loaded,
               sum(r.hours_loaded) = {_local_hours(start, f"({start} + interval '{length}')::date", "r.time_zone")}
                   AS complete,
               sum(r.imported_hours)::integer AS imported_hours,
               sum(r.consumption) AS kwh, sum(r.resets)::integer AS meter_resets, sum(r.count) AS readings,
               a.name AS area
        FROM analytics.local_daily_rollup r
        JOIN core.entities e ON {ENTITY_JOIN}{AREA_JOINS}
        WHERE r.kind = 'counter' AND e.unit_canonical = 'kWh'
        GROUP BY r.tenant_id, r.entity_id, e.friendly_name, e.device_id, {start}, r.time_zone, a.name"""


VIEW_SQL = {
    "entity_hourly": f"""
        CREATE OR REPLACE VIEW analytics.entity_hourly AS
        SELECT r.tenant_id, r.entity_id, e.friendly_name, e.device_id, r.quantity AS measurement,
               e.unit_canonical AS unit, r.kind, r.hour, r.mean, r.min, r.max, r.count, r.last,
               r.consumption, r.resets, round((100 * r.available_s / 3600)::numeric, 2) AS coverage_pct,
               r.last_seen, a.name AS area, r.origin
        FROM analytics.hourly_rollup r
        LEFT JOIN core.entities e ON {ENTITY_JOIN}{AREA_JOINS}""",
    "entity_daily_utc": f"""
        CREATE VIEW analytics.entity_daily_utc AS
        SELECT r.tenant_id, r.entity_id, e.friendly_name, e.device_id, r.quantity AS measurement,
               e.unit_canonical AS unit, r.kind, r.day AS utc_day, r.mean, r.min, r.max, r.count, r.last,
               r.consumption, round((100 * r.available_s / 86400)::numeric, 2) AS coverage_pct, r.last_seen,
               r.imported_hours, a.name AS area
        FROM analytics.daily_rollup r
        LEFT JOIN core.entities e ON {ENTITY_JOIN}{AREA_JOINS}""",
    "energy_daily_utc": f"""
        CREATE VIEW analytics.energy_daily_utc AS
        SELECT r.tenant_id, r.entity_id, e.friendly_name, e.device_id, r.day AS utc_day, r.consumption AS kwh,
               r.resets AS meter_resets, r.count AS readings, r.imported_hours, a.name AS area
        FROM analytics.daily_rollup r
        JOIN core.entities e ON {ENTITY_JOIN}{AREA_JOINS}
        WHERE r.kind = 'counter' AND e.unit_canonical = 'kWh'""",
    "entity_daily": f"""
        CREATE VIEW analytics.entity_daily AS
        SELECT r.tenant_id, r.entity_id, e.friendly_name, e.device_id, r.quantity AS measurement,
               e.unit_canonical AS unit, r.kind, r.local_day, r.time_zone, r.day_hours, r.hours_loaded,
               r.hours_loaded = r.day_hours AS complete, r.imported_hours, r.mean, r.min, r.max, r.count,
               r.last, r.consumption, round((100 * r.available_s / (3600 * r.day_hours))::numeric, 2)
                   AS coverage_pct, r.last_seen, a.name AS area
        FROM analytics.local_daily_rollup r
        LEFT JOIN core.entities e ON {ENTITY_JOIN}{AREA_JOINS}""",
    "energy_daily": f"""
        CREATE VIEW analytics.energy_daily AS
        SELECT r.tenant_id, r.entity_id, e.friendly_name, e.device_id, r.local_day, r.time_zone, r.day_hours,
               r.hours_loaded, r.hours_loaded = r.day_hours AS complete, r.imported_hours,
               r.consumption AS kwh, r.resets AS meter_resets, r.count AS readings, a.name AS area
        FROM analytics.local_daily_rollup r
        JOIN core.entities e ON {ENTITY_JOIN}{AREA_JOINS}
        WHERE r.kind = 'counter' AND e.unit_canonical = 'kWh'""",
    "energy_weekly": _energy_period("energy_weekly", "week", 'IYYY-"W"IW', "7 days"),
    "energy_monthly": _energy_period("energy_monthly", "month", "YYYY-MM", "1 month"),
}
COMMENTS = {
    "entity_hourly": "Per entity and UTC hour: time-weighted mean (unavailable time excluded), min, max, "
                     "point count, last value, consumption for counters, coverage % of the hour; origin "
                     "computed (our rollup) or imported (Home Assistant statistics)",
    "entity_daily_utc": "Per entity and UTC day (utc_day): time-weighted mean, min, max, count, coverage % of "
                        "the day, hours imported from Home Assistant statistics",
    "energy_daily_utc": "kWh consumed per energy counter and UTC day (utc_day), meter resets handled like Home "
                        "Assistant",
    "entity_daily": "Per entity and LOCAL day of the home (local_day, time_zone): time-weighted mean, min, max, "
                    "count, coverage % of the day; day_hours (23/24/25), hours_loaded, complete",
    "energy_daily": "kWh consumed per energy counter and LOCAL day of the home, as Home Assistant''s energy "
                    "dashboard counts days; day_hours, hours_loaded, complete, imported_hours",
    "energy_weekly": "kWh per energy counter and local ISO week (Monday to Monday in the home''s zone); "
                     "period_hours, hours_loaded, complete",
    "energy_monthly": "kWh per energy counter and local calendar month of the home; period_hours, hours_loaded, "
                      "complete",
}
# Created by this revision (dropped by its downgrade); entity_hourly is only replaced.
NEW_VIEWS = ("entity_daily_utc", "energy_daily_utc", "entity_daily", "energy_daily", "energy_weekly",
             "energy_monthly")


def _revision(number: str) -> ModuleType:
    path = next(Path(__file__).parent.glob(f"{number}_*.py"))
    spec = importlib.util.spec_from_file_location(f"hats_migration_{number}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    op.execute("ALTER TABLE analytics.hourly_rollup ADD COLUMN origin text NOT NULL DEFAULT 'computed' "
               "CONSTRAINT hourly_rollup_origin CHECK (origin IN ('computed', 'imported'))")
    op.execute("COMMENT ON COLUMN analytics.hourly_rollup.origin IS 'computed: our rollup of raw points; "
               "imported: Home Assistant long-term statistics, loaded only where no computed rollup exists'")
    op.execute("ALTER TABLE analytics.daily_rollup ADD COLUMN imported_hours integer NOT NULL DEFAULT 0")
    op.execute("COMMENT ON COLUMN analytics.daily_rollup.imported_hours IS "
               "'Hours of the day loaded from Home Assistant statistics (origin imported)'")
    op.execute("""
        CREATE TABLE analytics.local_daily_rollup (
            tenant_id       text NOT NULL,
            entity_id       text NOT NULL,
            quantity        text NOT NULL,
            kind            text NOT NULL CHECK (kind IN ('gauge', 'counter')),
            local_day       date NOT NULL,
            time_zone       text NOT NULL,
            day_hours       integer NOT NULL CHECK (day_hours > 0),
            hours_loaded    integer NOT NULL,
            imported_hours  integer NOT NULL DEFAULT 0,
            mean            double precision,
            min             double precision,
            max             double precision,
            count           bigint NOT NULL,
            last            double precision,
            available_s     double precision NOT NULL DEFAULT 0,
            value_s         double precision,
            consumption     double precision,
            resets          integer,
            last_seen       timestamptz,
            loaded_at       timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, entity_id, local_day, quantity)
        ) PARTITION BY RANGE (local_day)""")
    op.execute("CREATE INDEX local_daily_rollup_tenant_day_idx ON analytics.local_daily_rollup "
               "(tenant_id, local_day, kind)")
    op.execute("COMMENT ON TABLE analytics.local_daily_rollup IS 'One row per entity, quantity and local calendar "
               "day in the tenant''s time zone (an hour counts for the local date of its start, as in Home "
               "Assistant), re-aggregated exactly from hourly_rollup'")
    op.execute("COMMENT ON COLUMN analytics.local_daily_rollup.day_hours IS "
               "'UTC hours starting on this local date: 23 or 25 on DST change days, else 24'")
    op.execute("COMMENT ON COLUMN analytics.local_daily_rollup.hours_loaded IS "
               "'Hours of this day with a row in hourly_rollup; equal to day_hours: the day is complete'")
    op.execute("ALTER TABLE analytics.local_daily_rollup OWNER TO hats_dagster")

    # A view cannot rename a column by CREATE OR REPLACE: the daily views are dropped and made anew.
    op.execute("DROP VIEW analytics.energy_daily")
    op.execute("DROP VIEW analytics.entity_daily")
    for view, statement in VIEW_SQL.items():
        op.execute(statement)
        op.execute(f"COMMENT ON VIEW analytics.{view} IS '{COMMENTS[view]}'")
        op.execute(f"GRANT SELECT ON analytics.{view} TO hats_analyst")


def downgrade() -> None:
    for view in reversed(NEW_VIEWS):
        op.execute(f"DROP VIEW analytics.{view}")
    # entity_hourly loses origin: dropped and re-made as 0007 left it; the comments are 0003's.
    views_0007 = _revision("0007").VIEW_SQL
    op.execute("DROP VIEW analytics.entity_hourly")
    restored = {"entity_hourly": views_0007["entity_hourly"], "entity_daily": views_0007["entity_daily"],
                "energy_daily": _revision("0004").VIEW_SQL["energy_daily"]}
    old_comments = {
        "entity_hourly": "Per entity and UTC hour: time-weighted mean (unavailable time excluded), min, max, "
                         "point count, last value, consumption for counters, coverage % of the hour",
        "entity_daily": "Per entity and UTC day: time-weighted mean, min, max, count, coverage % of the day",
        "energy_daily": "kWh consumed per energy counter and UTC day (meter resets handled like Home Assistant)",
    }
    for view, statement in restored.items():
        op.execute(statement)
        op.execute(f"COMMENT ON VIEW analytics.{view} IS '{old_comments[view]}'")
        op.execute(f"GRANT SELECT ON analytics.{view} TO hats_analyst")
    op.execute("DROP TABLE analytics.local_daily_rollup")
    op.execute("ALTER TABLE analytics.daily_rollup DROP COLUMN imported_hours")
    op.execute("ALTER TABLE analytics.hourly_rollup DROP COLUMN origin")
