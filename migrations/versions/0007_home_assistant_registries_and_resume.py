"""Home Assistant's registries and the WebSocket source's resume point; areas reach the analyst views.

* ``core.areas``: Home Assistant's areas per tenant (``config/area_registry/list``), written by the worker.
* ``core.devices.area_id``, ``core.entities.area_id`` (the entity's own area; NULL means it follows its
  device's, as in Home Assistant) and ``core.entities.registry_name`` (the entity registry's name).
* ``ops.websocket_resume``: per tenant, the ``last_updated`` up to which every Home Assistant state is
  durable; after a disconnect or a restart the worker fetches the recorder's history from there.
* ``analytics.entity_hourly``, ``entity_daily`` and ``device_last_seen`` gain ``area`` (the area's name),
  as their last column: ``CREATE OR REPLACE VIEW`` keeps the analyst's grant and the comments. Unused,
  the two extra LEFT JOINs on primary keys are removed by the planner (join removal), so queries that do
  not select ``area`` cost what they did.

``hats_ingest`` may read, insert and update ``core.areas`` and ``ops.websocket_resume`` (nothing is
deleted); ``hats_dagster`` reads ``core.areas`` like the rest of ``core``.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ENTITY_JOIN = "e.tenant_id::text = r.tenant_id AND e.entity_id = r.entity_id"
AREA_JOINS = """
        LEFT JOIN core.devices d ON d.tenant_id = e.tenant_id AND d.device_id = e.device_id
        LEFT JOIN core.areas a ON a.tenant_id = e.tenant_id AND a.area_id = coalesce(e.area_id, d.area_id)"""

VIEW_SQL = {
    "entity_hourly": f"""
        CREATE OR REPLACE VIEW analytics.entity_hourly AS
        SELECT r.tenant_id, r.entity_id, e.friendly_name, e.device_id, r.quantity AS measurement,
               e.unit_canonical AS unit, r.kind, r.hour, r.mean, r.min, r.max, r.count, r.last,
               r.consumption, r.resets, round((100 * r.available_s / 3600)::numeric, 2) AS coverage_pct,
               r.last_seen, a.name AS area
        FROM analytics.hourly_rollup r
        LEFT JOIN core.entities e ON {ENTITY_JOIN}{AREA_JOINS}""",
    "entity_daily": f"""
        CREATE OR REPLACE VIEW analytics.entity_daily AS
        SELECT r.tenant_id, r.entity_id, e.friendly_name, e.device_id, r.quantity AS measurement,
               e.unit_canonical AS unit, r.kind, r.day, r.mean, r.min, r.max, r.count, r.last,
               r.consumption, round((100 * r.available_s / 86400)::numeric, 2) AS coverage_pct, r.last_seen,
               a.name AS area
        FROM analytics.daily_rollup r
        LEFT JOIN core.entities e ON {ENTITY_JOIN}{AREA_JOINS}""",
}
CHANGED_VIEWS = ("entity_hourly", "entity_daily", "device_last_seen")


def _revision_0004() -> ModuleType:
    path = next(Path(__file__).parent.glob("0004_*.py"))
    spec = importlib.util.spec_from_file_location("hats_migration_0004", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _device_last_seen_sql(sql_0004: str) -> str:
    """0004's device_last_seen with the device's area appended (the rest is unchanged)."""
    select_end = "AS availability_pct_7d\n        FROM core.devices d\n"
    assert sql_0004.count(select_end) == 1
    return sql_0004.replace(select_end, "AS availability_pct_7d, a.name AS area\n        FROM core.devices d\n"
                            "        LEFT JOIN core.areas a ON a.tenant_id = d.tenant_id AND a.area_id = d.area_id\n")


def upgrade() -> None:
    op.execute("""
        CREATE TABLE core.areas (
            tenant_id   citext NOT NULL REFERENCES core.tenants ON DELETE CASCADE,
            area_id     text NOT NULL,
            name        text NOT NULL,
            floor_id    text,
            first_seen  timestamptz NOT NULL DEFAULT now(),
            last_seen   timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, area_id)
        )""")
    op.execute("COMMENT ON TABLE core.areas IS 'Home Assistant areas (area registry), from the WebSocket source'")
    op.execute("ALTER TABLE core.devices ADD COLUMN area_id text")
    op.execute("ALTER TABLE core.entities ADD COLUMN area_id text, ADD COLUMN registry_name text")
    op.execute("COMMENT ON COLUMN core.entities.area_id IS "
               "'The entity''s own area in Home Assistant; NULL: the area of its device'")
    op.execute("COMMENT ON COLUMN core.entities.registry_name IS "
               "'Name in Home Assistant''s entity registry (the user''s, else the integration''s)'")
    op.execute("""
        CREATE TABLE ops.websocket_resume (
            tenant_id   text PRIMARY KEY,
            resume_at   timestamptz NOT NULL,
            updated_at  timestamptz NOT NULL DEFAULT now()
        )""")
    op.execute("COMMENT ON TABLE ops.websocket_resume IS 'Per tenant, the last_updated up to which every Home "
               "Assistant state is durable; the WebSocket source fills gaps from the recorder from here'")
    op.execute("GRANT SELECT, INSERT, UPDATE ON core.areas, ops.websocket_resume TO hats_ingest")
    op.execute("GRANT SELECT ON core.areas TO hats_dagster")

    for statement in VIEW_SQL.values():
        op.execute(statement)
    op.execute(_device_last_seen_sql(_revision_0004().VIEW_SQL["device_last_seen"]))


def downgrade() -> None:
    # A view cannot lose a column by CREATE OR REPLACE: drop and re-create 0004's, keeping comment and grant.
    bind = op.get_bind()
    views_0004 = _revision_0004().VIEW_SQL
    for view in CHANGED_VIEWS:
        comment = bind.execute(sa.text("SELECT obj_description(CAST(:v AS regclass), 'pg_class')"),
                               {"v": f"analytics.{view}"}).scalar()
        op.execute(f"DROP VIEW analytics.{view}")
        op.execute(views_0004[view])
        op.execute(f"GRANT SELECT ON analytics.{view} TO hats_analyst")
        if comment is not None:
            quoted = str(comment).replace("'", "''")
            op.execute(f"COMMENT ON VIEW analytics.{view} IS '{quoted}'")
    op.execute("DROP TABLE ops.websocket_resume")
    op.execute("ALTER TABLE core.entities DROP COLUMN registry_name, DROP COLUMN area_id")
    op.execute("ALTER TABLE core.devices DROP COLUMN area_id")
    op.execute("DROP TABLE core.areas")
