"""Faster analyst views, from bench/warehouse_queries.py (12 months x 1,000 entities, 8.76 M hourly rows).

* The views joined ``core.entities`` on ``e.tenant_id = r.tenant_id::citext``: the analyst's text filter
  on tenant never reached ``core.entities``, so every query scanned and hashed every tenant's entities.
  Joining on ``e.tenant_id::text = r.tenant_id`` with an index on ``(tenant_id::text, entity_id)`` makes
  it an index lookup (measured: one day of ``entity_daily`` 12.2 → 6.1 ms p50, a month of
  ``energy_daily`` 10.9 → 5.6 ms). Tenant ids are lowercase by the worker's and loader's rule, so the
  case-sensitive comparison finds the same rows.
* ``device_last_seen`` read every hourly row of each battery entity to find the newest (≈ 450 ms for
  250 devices): now the newest row per entity comes from the primary key, newest partition first, and
  a device's entities from an index on ``(tenant_id, device_id)`` (measured 23 ms p50).
* ``daily_rollup`` is filtered by tenant and day: its index leads with the tenant.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ENTITY_JOIN = "e.tenant_id::text = r.tenant_id AND e.entity_id = r.entity_id"

VIEW_SQL = {
    "entity_hourly": f"""
        CREATE OR REPLACE VIEW analytics.entity_hourly AS
        SELECT r.tenant_id, r.entity_id, e.friendly_name, e.device_id, r.quantity AS measurement,
               e.unit_canonical AS unit, r.kind, r.hour, r.mean, r.min, r.max, r.count, r.last,
               r.consumption, r.resets, round((100 * r.available_s / 3600)::numeric, 2) AS coverage_pct,
               r.last_seen
        FROM analytics.hourly_rollup r
        LEFT JOIN core.entities e ON {ENTITY_JOIN}""",
    "entity_daily": f"""
        CREATE OR REPLACE VIEW analytics.entity_daily AS
        SELECT r.tenant_id, r.entity_id, e.friendly_name, e.device_id, r.quantity AS measurement,
               e.unit_canonical AS unit, r.kind, r.day, r.mean, r.min, r.max, r.count, r.last,
               r.consumption, round((100 * r.available_s / 86400)::numeric, 2) AS coverage_pct, r.last_seen
        FROM analytics.daily_rollup r
        LEFT JOIN core.entities e ON {ENTITY_JOIN}""",
    "energy_daily": f"""
        CREATE OR REPLACE VIEW analytics.energy_daily AS
        SELECT r.tenant_id, r.entity_id, e.friendly_name, e.device_id, r.day, r.consumption AS kwh,
               r.resets AS meter_resets, r.count AS readings
        FROM analytics.daily_rollup r
        JOIN core.entities e ON {ENTITY_JOIN}
        WHERE r.kind = 'counter' AND e.unit_canonical = 'kWh'""",
    # Availability: share of the last 7 complete UTC days that the device's gauge entities (sensors,
    # binary sensors, battery) held an available state; days an entity sent nothing count as unavailable.
    "device_last_seen": """
        CREATE OR REPLACE VIEW analytics.device_last_seen AS
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
            SELECT b.last, b.hour
            FROM core.entities e
            CROSS JOIN LATERAL (
                SELECT r.last, r.hour FROM analytics.hourly_rollup r
                WHERE r.tenant_id = e.tenant_id::text AND r.entity_id = e.entity_id AND r.last IS NOT NULL
                ORDER BY r.hour DESC LIMIT 1) b
            WHERE e.tenant_id = d.tenant_id AND e.device_id = d.device_id AND e.measurement = 'battery'
            ORDER BY b.hour DESC LIMIT 1) battery ON true
        LEFT JOIN LATERAL (
            SELECT count(DISTINCT r.entity_id) AS entities, sum(r.available_s) AS available_s
            FROM core.entities e
            JOIN analytics.daily_rollup r ON r.tenant_id = e.tenant_id::text AND r.entity_id = e.entity_id
            WHERE e.tenant_id = d.tenant_id AND e.device_id = d.device_id AND r.kind = 'gauge'
              AND r.day >= (now() AT TIME ZONE 'UTC')::date - 7 AND r.day < (now() AT TIME ZONE 'UTC')::date
        ) avail ON true""",
}


def _revision_0003() -> ModuleType:
    path = next(Path(__file__).parent.glob("0003_*.py"))
    spec = importlib.util.spec_from_file_location("hats_migration_0003", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    op.execute("CREATE INDEX entities_tenant_text_entity_idx ON core.entities ((tenant_id::text), entity_id)")
    op.execute("CREATE INDEX entities_tenant_device_idx ON core.entities (tenant_id, device_id)")
    op.execute("DROP INDEX analytics.daily_rollup_day_idx")
    op.execute("CREATE INDEX daily_rollup_tenant_day_idx ON analytics.daily_rollup (tenant_id, day, kind)")
    for statement in VIEW_SQL.values():
        op.execute(statement)


def downgrade() -> None:
    for statement in _revision_0003().VIEW_SQL.values():
        op.execute(statement.replace("CREATE VIEW", "CREATE OR REPLACE VIEW"))
    op.execute("DROP INDEX analytics.daily_rollup_tenant_day_idx")
    op.execute("CREATE INDEX daily_rollup_day_idx ON analytics.daily_rollup (day, kind)")
    op.execute("DROP INDEX core.entities_tenant_device_idx")
    op.execute("DROP INDEX core.entities_tenant_text_entity_idx")
