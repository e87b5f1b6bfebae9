"""The rollup warehouse: hourly and daily rollup tables, the analyst views, the late-data watermark.

* ``analytics.hourly_rollup`` / ``analytics.daily_rollup``: one row per entity, quantity and UTC
  hour/day, natively partitioned by month, owned by ``hats_dagster`` (it adds month partitions as data
  arrives; retention drops them). Gauges carry the time-weighted mean and its exact re-aggregation
  weights (``value_s`` = mean x ``available_s``); counters carry consumption and meter resets.
* Views (owned here, by the migration role) are the analysts' whole interface: ``entity_hourly``,
  ``entity_daily``, ``energy_daily``, ``device_last_seen``. They join ``core`` metadata, which the
  analyst cannot read directly: a view runs with its owner's rights.
* The analyst role reads those views and nothing else: no SELECT on the base tables, and the default
  privileges that made every future analytics table readable are withdrawn.
* ``ops.ingest_hours``: per tenant and UTC hour of the points' own timestamps, how many points the
  worker wrote and a version taken from a sequence on every write. ``ops.rollup_watermarks`` keeps
  the version each hour had when its rollup read it; a higher version since means late data for that
  hour (the late-data sensor's signal). In PostgreSQL rather than in Dagster metadata because a
  single-run backfill records one metadata set for many partitions, and operators can query it.
* The foundation's skeleton table ``analytics.entity_hourly`` (arithmetic means) is replaced by the
  view of the same name over time-weighted rollups; its rows are not carried over (re-materialise).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ROLLUP_COLUMNS = """
            tenant_id    text NOT NULL,
            entity_id    text NOT NULL,
            quantity     text NOT NULL,
            kind         text NOT NULL CHECK (kind IN ('gauge', 'counter')),
            {period}     {period_type} NOT NULL,
            mean         double precision,
            min          double precision,
            max          double precision,
            count        bigint NOT NULL,
            last         double precision,
            available_s  double precision NOT NULL DEFAULT 0,
            value_s      double precision,
            consumption  double precision,
            resets       integer,
            last_seen    timestamptz,
            loaded_at    timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, entity_id, {period}, quantity)
"""

VIEWS = ("entity_hourly", "entity_daily", "energy_daily", "device_last_seen")

# The analyst views as 0003 created them (0004 re-creates them faster; its downgrade restores these).
VIEW_SQL = {
    "entity_hourly": """
        CREATE VIEW analytics.entity_hourly AS
        SELECT r.tenant_id, r.entity_id, e.friendly_name, e.device_id, r.quantity AS measurement,
               e.unit_canonical AS unit, r.kind, r.hour, r.mean, r.min, r.max, r.count, r.last,
               r.consumption, r.resets, round((100 * r.available_s / 3600)::numeric, 2) AS coverage_pct,
               r.last_seen
        FROM analytics.hourly_rollup r
        LEFT JOIN core.entities e ON e.tenant_id = r.tenant_id::citext AND e.entity_id = r.entity_id""",
    "entity_daily": """
        CREATE VIEW analytics.entity_daily AS
        SELECT r.tenant_id, r.entity_id, e.friendly_name, e.device_id, r.quantity AS measurement,
               e.unit_canonical AS unit, r.kind, r.day, r.mean, r.min, r.max, r.count, r.last,
               r.consumption, round((100 * r.available_s / 86400)::numeric, 2) AS coverage_pct, r.last_seen
        FROM analytics.daily_rollup r
        LEFT JOIN core.entities e ON e.tenant_id = r.tenant_id::citext AND e.entity_id = r.entity_id""",
    "energy_daily": """
        CREATE VIEW analytics.energy_daily AS
        SELECT r.tenant_id, r.entity_id, e.friendly_name, e.device_id, r.day, r.consumption AS kwh,
               r.resets AS meter_resets, r.count AS readings
        FROM analytics.daily_rollup r
        JOIN core.entities e ON e.tenant_id = r.tenant_id::citext AND e.entity_id = r.entity_id
        WHERE r.kind = 'counter' AND e.unit_canonical = 'kWh'""",
    "device_last_seen": """
        CREATE VIEW analytics.device_last_seen AS
        SELECT d.tenant_id::text AS tenant_id, d.device_id, d.name, d.manufacturer, d.model,
               seen.last_seen, battery.last AS battery_pct, battery.hour AS battery_at,
               round((100 * avail.available_s / nullif(avail.entities * 7 * 86400, 0))::numeric, 2)
                   AS availability_pct_7d
        FROM core.devices d
        LEFT JOIN LATERAL (
            SELECT max(h.last_seen) AS last_seen
            FROM core.entities e
            CROSS JOIN LATERAL (
                SELECT r.last_seen FROM analytics.hourly_rollup r
                WHERE r.tenant_id = e.tenant_id::text AND r.entity_id = e.entity_id AND r.last_seen IS NOT NULL
                ORDER BY r.hour DESC LIMIT 1) h
            WHERE e.tenant_id = d.tenant_id AND e.device_id = d.device_id) seen ON true
        LEFT JOIN LATERAL (
            SELECT r.last, r.hour
            FROM core.entities e
            JOIN analytics.hourly_rollup r ON r.tenant_id = e.tenant_id::text AND r.entity_id = e.entity_id
            WHERE e.tenant_id = d.tenant_id AND e.device_id = d.device_id AND e.measurement = 'battery'
              AND r.last IS NOT NULL
            ORDER BY r.hour DESC LIMIT 1) battery ON true
        LEFT JOIN LATERAL (
            SELECT count(DISTINCT r.entity_id) AS entities, sum(r.available_s) AS available_s
            FROM core.entities e
            JOIN analytics.daily_rollup r ON r.tenant_id = e.tenant_id::text AND r.entity_id = e.entity_id
            WHERE e.tenant_id = d.tenant_id AND e.device_id = d.device_id AND r.kind = 'gauge'
              AND r.day >= (now() AT TIME ZONE 'UTC')::date - 7 AND r.day < (now() AT TIME ZONE 'UTC')::date
        ) avail ON true""",
}


def upgrade() -> None:
    op.execute("DROP TABLE analytics.entity_hourly")
    for owner in ("CURRENT_USER", "hats_dagster"):
        op.execute(f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA analytics "
                   "REVOKE SELECT ON TABLES FROM hats_analyst")

    for table, period, period_type in (("hourly_rollup", "hour", "timestamptz"), ("daily_rollup", "day", "date")):
        columns = _ROLLUP_COLUMNS.format(period=period, period_type=period_type)
        op.execute(f"CREATE TABLE analytics.{table} ({columns}) PARTITION BY RANGE ({period})")
    op.execute("CREATE INDEX daily_rollup_day_idx ON analytics.daily_rollup (day, kind)")
    for table, text in (
        ("hourly_rollup", "One row per entity, quantity and UTC hour, from InfluxDB rollup gauge_1h/counter_1h"),
        ("daily_rollup", "One row per entity, quantity and UTC day, re-aggregated exactly from hourly_rollup"),
    ):
        op.execute(f"COMMENT ON TABLE analytics.{table} IS '{text}'")
        op.execute(f"ALTER TABLE analytics.{table} OWNER TO hats_dagster")
    op.execute("COMMENT ON COLUMN analytics.hourly_rollup.value_s IS "
               "'mean x available_s: sums of it over sums of available_s give exact coarser means'")

    for view_sql in VIEW_SQL.values():
        op.execute(view_sql)
    comments = {
        "entity_hourly": "Per entity and UTC hour: time-weighted mean (unavailable time excluded), min, max, "
                         "point count, last value, consumption for counters, coverage % of the hour",
        "entity_daily": "Per entity and UTC day: time-weighted mean, min, max, count, coverage % of the day",
        "energy_daily": "kWh consumed per energy counter and UTC day (meter resets handled like Home Assistant)",
        "device_last_seen": "Per device: last point received, latest battery %, availability % over 7 full days",
    }
    for view in VIEWS:
        op.execute(f"COMMENT ON VIEW analytics.{view} IS '{comments[view]}'")
        op.execute(f"GRANT SELECT ON analytics.{view} TO hats_analyst")

    op.execute("CREATE SEQUENCE ops.ingest_version")
    op.execute("""
        CREATE TABLE ops.ingest_hours (
            tenant_id         text NOT NULL,
            hour              timestamptz NOT NULL,
            points            bigint NOT NULL,
            first_written_at  timestamptz NOT NULL DEFAULT now(),
            last_written_at   timestamptz NOT NULL DEFAULT now(),
            version           bigint NOT NULL DEFAULT nextval('ops.ingest_version'),
            PRIMARY KEY (tenant_id, hour)
        )""")
    op.execute("CREATE INDEX ingest_hours_version_idx ON ops.ingest_hours (version)")
    op.execute("COMMENT ON TABLE ops.ingest_hours IS 'Points written to InfluxDB per UTC hour of their timestamps; "
               "version rises on every write, so a rollup that read an older version missed late data'")
    op.execute("GRANT SELECT, INSERT, UPDATE ON ops.ingest_hours TO hats_ingest")
    op.execute("GRANT USAGE ON SEQUENCE ops.ingest_version TO hats_ingest")
    op.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON ops.ingest_hours TO hats_dagster")
    op.execute("GRANT SELECT ON SEQUENCE ops.ingest_version TO hats_dagster")
    op.execute("""
        CREATE TABLE ops.rollup_watermarks (
            tenant_id  text NOT NULL,
            hour       timestamptz NOT NULL,
            version    bigint NOT NULL,
            points     bigint NOT NULL,
            rolled_at  timestamptz NOT NULL DEFAULT now(),
            run_id     text,
            PRIMARY KEY (tenant_id, hour)
        )""")
    op.execute("COMMENT ON TABLE ops.rollup_watermarks IS 'The ops.ingest_hours version each raw hour had when its "
               "1 min rollup read it; ingest_hours.version > this means late data to re-roll'")
    op.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON ops.rollup_watermarks TO hats_dagster")


def downgrade() -> None:
    op.execute("DROP TABLE ops.rollup_watermarks")
    op.execute("DROP TABLE ops.ingest_hours")
    op.execute("DROP SEQUENCE ops.ingest_version")
    for view in reversed(VIEWS):
        op.execute(f"DROP VIEW analytics.{view}")
    op.execute("DROP TABLE analytics.daily_rollup")
    op.execute("DROP TABLE analytics.hourly_rollup")
    for owner in ("CURRENT_USER", "hats_dagster"):
        op.execute(f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA analytics "
                   "GRANT SELECT ON TABLES TO hats_analyst")
    op.execute("""
        CREATE TABLE analytics.entity_hourly (
            tenant_id    text NOT NULL,
            entity_id    text NOT NULL,
            measurement  text NOT NULL,
            hour         timestamptz NOT NULL,
            mean         double precision,
            min          double precision,
            max          double precision,
            count        bigint NOT NULL,
            last         double precision,
            loaded_at    timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, entity_id, hour)
        ) PARTITION BY RANGE (hour)""")
    op.execute("ALTER TABLE analytics.entity_hourly OWNER TO hats_dagster")
    op.execute("GRANT SELECT ON analytics.entity_hourly TO hats_analyst")
