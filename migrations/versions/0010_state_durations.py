"""Time in each state: per entity and UTC hour, per LOCAL day, and the analysts' view of it.

"Door open 2 h 13 min, 14 openings": two-state entities (binary sensors, switches, covers… named with
their own words: on/off, open/closed) and text-state entities (enum sensors, input_select, climate
modes), from the rollup ``state_1h`` in InfluxDB (``hats_assets/defs/rollups/state_durations.py``).

* ``analytics.state_hourly``: one row per entity, quantity, UTC hour and state: ``duration_s`` (exact
  decimal seconds, nanosecond digits: sums of days are exact too) and ``entries`` (changes into the state
  from another; the state carried into the hour is not one, nor the first point ever recorded).
  ``unavailable``/``unknown`` are states here, so an hour's durations sum to the time it was covered.
  At most 10 states per entity and hour, the rest as one ``(other)`` row.
* ``analytics.state_local_daily``: the same per LOCAL calendar day of the home
  (``core.tenants.time_zone``), re-aggregated from the hours as ``local_daily_rollup`` is (an hour counts
  for the local date of its start), bounded again to 10 states + ``(other)``, with the zone, the day's
  length (``day_hours``: 23/24/25) and the hours loaded.
* ``analytics.state_daily``: the analysts' view: friendly name, device, area, duration as seconds and as
  an interval, entries, share of the day and whether the day is complete.

Both tables partitioned by month and owned by ``hats_dagster``, like ``hourly_rollup``.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

ENTITY_JOIN = "e.tenant_id::text = r.tenant_id AND e.entity_id = r.entity_id"
AREA_JOINS = """
        LEFT JOIN core.devices d ON d.tenant_id = e.tenant_id AND d.device_id = e.device_id
        LEFT JOIN core.areas a ON a.tenant_id = e.tenant_id AND a.area_id = coalesce(e.area_id, d.area_id)"""
STATE_DAILY = f"""
        CREATE VIEW analytics.state_daily AS
        SELECT r.tenant_id, r.entity_id, e.friendly_name, e.device_id, r.quantity AS measurement, r.local_day,
               r.time_zone, r.day_hours, r.hours_loaded, r.hours_loaded = r.day_hours AS complete, r.state,
               r.duration_s, r.duration_s * interval '1 second' AS duration, r.entries,
               round(100 * r.duration_s / (3600 * r.day_hours), 2) AS share_pct, a.name AS area
        FROM analytics.state_local_daily r
        LEFT JOIN core.entities e ON {ENTITY_JOIN}{AREA_JOINS}"""


def upgrade() -> None:
    op.execute("""
        CREATE TABLE analytics.state_hourly (
            tenant_id    text NOT NULL,
            entity_id    text NOT NULL,
            quantity     text NOT NULL,
            hour         timestamptz NOT NULL,
            state        text NOT NULL,
            duration_s   numeric NOT NULL CHECK (duration_s > 0 AND duration_s <= 3600),
            entries      integer NOT NULL CHECK (entries >= 0),
            loaded_at    timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, entity_id, hour, quantity, state)
        ) PARTITION BY RANGE (hour)""")
    op.execute("""
        CREATE TABLE analytics.state_local_daily (
            tenant_id     text NOT NULL,
            entity_id     text NOT NULL,
            quantity      text NOT NULL,
            local_day     date NOT NULL,
            state         text NOT NULL,
            duration_s    numeric NOT NULL CHECK (duration_s > 0),
            entries       bigint NOT NULL CHECK (entries >= 0),
            time_zone     text NOT NULL,
            day_hours     integer NOT NULL CHECK (day_hours > 0),
            hours_loaded  integer NOT NULL,
            loaded_at     timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, entity_id, local_day, quantity, state)
        ) PARTITION BY RANGE (local_day)""")
    op.execute("CREATE INDEX state_local_daily_tenant_day_idx ON analytics.state_local_daily (tenant_id, local_day)")
    op.execute("COMMENT ON TABLE analytics.state_hourly IS 'Per entity, quantity, UTC hour and state of two-state "
               "and text-state entities: seconds held and entries into it, from InfluxDB rollup state_1h; at most "
               "10 states an hour, the rest as (other)'")
    op.execute("COMMENT ON COLUMN analytics.state_hourly.duration_s IS 'Seconds in the state within the hour, exact "
               "to the nanosecond; unavailable/unknown are states, so an hour sums to its covered time'")
    op.execute("COMMENT ON COLUMN analytics.state_hourly.entries IS 'Changes into the state from another state "
               "(not the state carried into the hour, not the first point ever recorded, not a repeat)'")
    op.execute("COMMENT ON TABLE analytics.state_local_daily IS 'Per entity, quantity, LOCAL day of the home and "
               "state: state_hourly summed over the hours starting on that local date, at most 10 states, the rest "
               "as (other)'")
    op.execute("COMMENT ON COLUMN analytics.state_local_daily.day_hours IS "
               "'UTC hours starting on this local date: 23 or 25 on DST change days, else 24'")
    op.execute("COMMENT ON COLUMN analytics.state_local_daily.hours_loaded IS "
               "'Hours of this day the entity has rows for in state_hourly; equal to day_hours: complete'")
    for table in ("state_hourly", "state_local_daily"):
        op.execute(f"ALTER TABLE analytics.{table} OWNER TO hats_dagster")
    op.execute(STATE_DAILY)
    op.execute("COMMENT ON VIEW analytics.state_daily IS 'Per entity, LOCAL day of the home and state: time in the "
               "state (seconds and interval), entries into it, share of the day, whether the day is complete'")
    op.execute("GRANT SELECT ON analytics.state_daily TO hats_analyst")


def downgrade() -> None:
    op.execute("DROP VIEW analytics.state_daily")
    op.execute("DROP TABLE analytics.state_local_daily")
    op.execute("DROP TABLE analytics.state_hourly")
