"""Each home has a time zone; imports of Home Assistant's history are recorded and resumable.

* ``core.tenants.time_zone`` (an IANA name PostgreSQL knows, default ``UTC``) and where it came from
  (``time_zone_source``: ``default``, ``home_assistant`` — read from its ``get_config`` — or
  ``operator``). Local calendar days of the warehouse are counted in it. A name PostgreSQL does not know
  is refused by a CHECK, so no day is ever computed in a zone that silently falls back to UTC.
* ``ops.imports``: one row per ``hats import`` run (what it read, from where, what it wrote, how it
  ended); the Dagster code location reads it to show imports in the UI and load the days they filled.
* ``ops.import_progress``: per tenant, recorder and stream (``states``, ``statistics``,
  ``statistics_short_term``) the keyset position (``last_ts``, ``last_id``) up to which everything is
  durable; committed in the same transaction as the points' ingest hours, so an interrupted import
  continues exactly where it stopped and a second run with nothing new changes nothing.

``hats_ingest`` (the importer runs as the worker's role) reads, inserts and updates both ops tables and
a tenant's time zone; ``hats_dagster`` reads them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE FUNCTION core.is_time_zone(name text) RETURNS boolean
        LANGUAGE sql STABLE AS $$ SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE pg_timezone_names.name = $1) $$
        """)
    # A CHECK may only call immutable functions in principle; the zone database changes only with a
    # PostgreSQL upgrade, and a zone removed then would only fail a later UPDATE of that row.
    op.execute("ALTER FUNCTION core.is_time_zone(text) IMMUTABLE")
    op.execute("""
        ALTER TABLE core.tenants
            ADD COLUMN time_zone text NOT NULL DEFAULT 'UTC'
                CONSTRAINT tenants_time_zone_known CHECK (core.is_time_zone(time_zone)),
            ADD COLUMN time_zone_source text NOT NULL DEFAULT 'default'
                CONSTRAINT tenants_time_zone_source
                CHECK (time_zone_source IN ('default', 'home_assistant', 'operator'))
        """)
    op.execute("COMMENT ON COLUMN core.tenants.time_zone IS "
               "'IANA time zone of the home: the warehouse counts local days in it'")
    op.execute("""
        CREATE TABLE ops.imports (
            import_id       bigserial PRIMARY KEY,
            tenant_id       text NOT NULL,
            source_kind     text NOT NULL CHECK (source_kind IN ('sqlite', 'postgresql', 'mysql', 'websocket')),
            source          text NOT NULL,
            source_key      text NOT NULL,
            started_at      timestamptz NOT NULL DEFAULT now(),
            finished_at     timestamptz,
            status          text NOT NULL DEFAULT 'running'
                            CHECK (status IN ('running', 'complete', 'failed', 'interrupted')),
            states_read     bigint NOT NULL DEFAULT 0,
            points_written  bigint NOT NULL DEFAULT 0,
            dead_lettered   bigint NOT NULL DEFAULT 0,
            statistic_rows  bigint NOT NULL DEFAULT 0,
            first_at        timestamptz,
            last_at         timestamptz,
            hours_from      timestamptz,
            hours_to        timestamptz,
            detail          text
        )""")
    op.execute("CREATE INDEX imports_tenant_started ON ops.imports (tenant_id, started_at)")
    op.execute("COMMENT ON TABLE ops.imports IS 'One row per hats import run: source (without secrets), counts, "
               "the range of states (first_at..last_at) and of UTC hours filled from statistics (hours_from.."
               "hours_to, exclusive end), and how it ended'")
    op.execute("""
        CREATE TABLE ops.import_progress (
            tenant_id   text NOT NULL,
            source_key  text NOT NULL,
            stream      text NOT NULL CHECK (stream IN ('states', 'statistics', 'statistics_short_term')),
            last_ts     double precision NOT NULL,
            last_id     bigint NOT NULL,
            rows_done   bigint NOT NULL DEFAULT 0,
            updated_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, source_key, stream)
        )""")
    op.execute("COMMENT ON TABLE ops.import_progress IS 'Keyset position (last_ts, last_id) per recorder and "
               "stream up to which an import is durable; committed with the points it covers'")
    op.execute("GRANT SELECT, INSERT, UPDATE ON ops.imports, ops.import_progress TO hats_ingest")
    op.execute("GRANT USAGE ON SEQUENCE ops.imports_import_id_seq TO hats_ingest")
    op.execute("GRANT SELECT ON ops.imports, ops.import_progress TO hats_dagster")


def downgrade() -> None:
    op.execute("DROP TABLE ops.import_progress")
    op.execute("DROP TABLE ops.imports")
    op.execute("ALTER TABLE core.tenants DROP COLUMN time_zone_source, DROP COLUMN time_zone")
    op.execute("DROP FUNCTION core.is_time_zone(text)")
