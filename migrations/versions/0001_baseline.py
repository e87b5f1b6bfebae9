"""Baseline: extensions, schemas core/ops/analytics, roles and their grants, metadata and ops tables.

Roles are cluster-wide while this migration runs per database, so creating them tolerates their
existence and dropping them happens only when no other database still depends on them.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ROLES = ("hats_ingest", "hats_dagster", "hats_analyst")


def upgrade() -> None:
    for extension in ("uuid-ossp", "pgcrypto", "citext"):
        op.execute(f'CREATE EXTENSION IF NOT EXISTS "{extension}" WITH SCHEMA public')
    for role in ROLES:
        op.execute(f"""
            DO $$ BEGIN
              IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
              END IF;
            END $$""")
    # Nobody but the roles reaches this database; the analyst cannot create anything anywhere.
    op.execute("""
        DO $$ BEGIN
          EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
          EXECUTE format('GRANT CONNECT ON DATABASE %I TO hats_ingest, hats_dagster, hats_analyst',
                         current_database());
        END $$""")
    op.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")

    op.execute("CREATE SCHEMA core")
    op.execute("CREATE SCHEMA ops")
    op.execute("CREATE SCHEMA analytics")
    op.execute("COMMENT ON SCHEMA core IS 'Tenants, devices and entities learnt from Home Assistant metadata'")
    op.execute("COMMENT ON SCHEMA ops IS 'Operations: dead letters, retention audit, watermarks'")
    op.execute("COMMENT ON SCHEMA analytics IS 'Aggregates and views for analysts (the only schema they read)'")

    op.execute("""
        CREATE TABLE core.tenants (
            tenant_id   citext PRIMARY KEY CHECK (tenant_id ~ '^[a-z0-9_]{1,32}$'),
            name        text NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now()
        )""")
    op.execute("INSERT INTO core.tenants (tenant_id, name) VALUES ('home', 'Default single-home tenant')")
    op.execute("""
        CREATE TABLE core.devices (
            tenant_id     citext NOT NULL REFERENCES core.tenants ON DELETE CASCADE,
            device_id     text NOT NULL,
            name          text,
            manufacturer  text,
            model         text,
            identifiers   jsonb NOT NULL DEFAULT '[]'::jsonb,
            first_seen    timestamptz NOT NULL DEFAULT now(),
            last_seen     timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, device_id)
        )""")
    op.execute("""
        CREATE TABLE core.entities (
            tenant_id       citext NOT NULL REFERENCES core.tenants ON DELETE CASCADE,
            entity_id       text NOT NULL,
            device_id       text,
            domain          text NOT NULL,
            measurement     text NOT NULL,
            device_class    text,
            state_class     text,
            unit_original   text,
            unit_canonical  text,
            conversion      text,
            friendly_name   text,
            source          text NOT NULL,
            first_seen      timestamptz NOT NULL DEFAULT now(),
            last_seen       timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, entity_id)
        )""")
    op.execute("COMMENT ON COLUMN core.entities.conversion IS "
               "'How values were converted to unit_canonical, e.g. degF->degC; NULL when none was needed'")

    op.execute("""
        CREATE TABLE ops.dead_letters (
            id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            received_at  timestamptz NOT NULL,
            tenant_id    text,
            topic        text NOT NULL,
            payload      bytea NOT NULL,
            reason       text NOT NULL,
            detail       text NOT NULL DEFAULT '',
            replayed_at  timestamptz
        )""")
    op.execute("CREATE INDEX dead_letters_reason_idx ON ops.dead_letters (reason, received_at)")
    op.execute("CREATE INDEX dead_letters_received_idx ON ops.dead_letters (received_at)")
    op.execute("""
        CREATE TABLE ops.retention_audit (
            id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            executed_at   timestamptz NOT NULL DEFAULT now(),
            run_id        text,
            store         text NOT NULL CHECK (store IN ('influxdb', 'postgresql')),
            action        text NOT NULL,
            target        text NOT NULL,
            range_start   timestamptz,
            range_end     timestamptz,
            affected      bigint,
            dry_run       boolean NOT NULL DEFAULT false,
            detail        text NOT NULL DEFAULT ''
        )""")

    op.execute("GRANT USAGE ON SCHEMA core, ops TO hats_ingest")
    op.execute("GRANT SELECT, INSERT, UPDATE ON core.tenants, core.devices, core.entities TO hats_ingest")
    op.execute("GRANT SELECT, INSERT ON ops.dead_letters TO hats_ingest")
    op.execute("GRANT UPDATE (replayed_at) ON ops.dead_letters TO hats_ingest")

    op.execute("GRANT USAGE ON SCHEMA core, ops TO hats_dagster")
    op.execute("GRANT USAGE, CREATE ON SCHEMA analytics TO hats_dagster")
    op.execute("GRANT SELECT ON ALL TABLES IN SCHEMA core TO hats_dagster")
    op.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ops TO hats_dagster")

    op.execute("GRANT USAGE ON SCHEMA analytics TO hats_analyst")
    # Whatever appears in analytics later (tables, views, partitions by either role) is readable.
    for owner in ("CURRENT_USER", "hats_dagster"):
        op.execute(f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA analytics "
                   "GRANT SELECT ON TABLES TO hats_analyst")


def downgrade() -> None:
    for owner in ("CURRENT_USER", "hats_dagster"):
        op.execute(f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA analytics "
                   "REVOKE SELECT ON TABLES FROM hats_analyst")
    op.execute("DROP SCHEMA analytics CASCADE")
    op.execute("DROP SCHEMA ops CASCADE")
    op.execute("DROP SCHEMA core CASCADE")
    op.execute("""
        DO $$ BEGIN
          EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM hats_ingest, hats_dagster, hats_analyst',
                         current_database());
          EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO PUBLIC', current_database());
        END $$""")
    for role in ROLES:
        # Everything this database granted the role is gone with the schemas and the REVOKE above (never
        # DROP OWNED: it also revokes the role's CONNECT on every other database). The role itself goes
        # only when no other database still depends on it.
        op.execute(f"""
            DO $$ BEGIN
              IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                IF NOT EXISTS (SELECT 1 FROM pg_shdepend d JOIN pg_roles r ON r.oid = d.refobjid
                               WHERE r.rolname = '{role}') THEN
                  DROP ROLE {role};
                END IF;
              END IF;
            END $$""")
    for extension in ("citext", "pgcrypto", "uuid-ossp"):
        op.execute(f'DROP EXTENSION IF EXISTS "{extension}"')
