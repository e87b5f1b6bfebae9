"""Tenants are data: a home is a row with everything a worker and the code location need to serve it.

* ``core.tenants`` gains what serves a home: its ``topic_prefix`` on the platform's broker (``NULL``: it
  has none there, e.g. a home reached only over its own broker account or Home Assistant's WebSocket
  API), its own broker account (``broker_url``/``broker_username``; the password is a secret, never a
  column), its Home Assistant ``ha_url`` (the token likewise), its ``series_budget`` and retention tier
  (``raw_days``, ``rollup_months``), and ``status`` (``active``/``disabled``, with ``disabled_at``).
  Secrets live in the tenant secrets directory (``HATS_TENANT_SECRETS_DIR``, a Kubernetes Secret
  volume in a cluster), named ``<tenant>/<secret>``.
* Two homes' prefixes may never overlap (one a prefix of the other, or equal): a message would belong
  to both. A trigger refuses it under an advisory lock (two concurrent adds cannot both pass) with an
  error naming ``topic_prefix`` and the other tenant.
* Every change of a tenant row is announced on ``NOTIFY hats_tenants`` (payload: the tenant id), so
  running workers start or stop serving a home without a restart.
* ``iam.accounts``: every per-tenant account the platform made, in PostgreSQL, MQTT or InfluxDB, and
  what it is for; ``billing.usage_daily``: per home and UTC day, points ingested, series, dead letters,
  raw and rollup storage, so an operator can meter homes (kept when a home is removed: invoices outlive
  it); ``ops.tenant_audit``: who added, changed, disabled or removed which home, with what.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

PREFIX_PATTERN = r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*/$"


def upgrade() -> None:
    op.execute(f"""
        ALTER TABLE core.tenants
            ADD COLUMN topic_prefix    text UNIQUE
                CONSTRAINT tenants_topic_prefix_plain CHECK (topic_prefix ~ '{PREFIX_PATTERN}'),
            ADD COLUMN broker_url      text
                CONSTRAINT tenants_broker_url_mqtt CHECK (broker_url ~ '^mqtts?://[^/@]+(:[0-9]{{1,5}})?$'),
            ADD COLUMN broker_username text UNIQUE,
            ADD COLUMN ha_url          text
                CONSTRAINT tenants_ha_url_http CHECK (ha_url ~ '^(https?|wss?)://[^/@]+'),
            ADD COLUMN series_budget   integer NOT NULL DEFAULT 10000
                CONSTRAINT tenants_series_budget_positive CHECK (series_budget BETWEEN 1 AND 1000000),
            ADD COLUMN raw_days        integer NOT NULL DEFAULT 30
                CONSTRAINT tenants_raw_days_range CHECK (raw_days BETWEEN 1 AND 365),
            ADD COLUMN rollup_months   integer NOT NULL DEFAULT 24
                CONSTRAINT tenants_rollup_months_range CHECK (rollup_months BETWEEN 1 AND 240),
            ADD COLUMN status          text NOT NULL DEFAULT 'active'
                CONSTRAINT tenants_status_known CHECK (status IN ('active', 'disabled')),
            ADD COLUMN disabled_at     timestamptz,
            ADD COLUMN updated_at      timestamptz NOT NULL DEFAULT now(),
            ADD CONSTRAINT tenants_disabled_when CHECK ((status = 'disabled') = (disabled_at IS NOT NULL)),
            ADD CONSTRAINT tenants_broker_account CHECK ((broker_url IS NULL) OR (broker_username IS NOT NULL))
        """)
    for column, text in (
            ("topic_prefix", "Prefix of every topic of this home on the platform broker (NULL = none there)"),
            ("broker_url", "The own broker of the home, mqtt or mqtts URL; NULL = the platform broker"),
            ("broker_username", "Account the worker reads this home with (password in the tenant secrets)"),
            ("ha_url", "Home Assistant base URL for the WebSocket source (token in the tenant secrets)"),
            ("series_budget", "Entities this home may have; new ones beyond are dead letters"),
            ("raw_days", "Days raw points are kept (InfluxDB RP raw)"),
            ("rollup_months", "Months rollups are kept (InfluxDB RP rollup)")):
        op.execute(f"COMMENT ON COLUMN core.tenants.{column} IS '{text}'")
    op.execute("""
        CREATE FUNCTION core.refuse_overlapping_prefix() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE other text;
        BEGIN
            IF NEW.topic_prefix IS NULL THEN
                RETURN NEW;
            END IF;
            PERFORM pg_advisory_xact_lock(hashtext('core.tenants.topic_prefix'));
            SELECT tenant_id INTO other FROM core.tenants
             WHERE tenant_id <> NEW.tenant_id AND topic_prefix IS NOT NULL
               AND (starts_with(NEW.topic_prefix, topic_prefix) OR starts_with(topic_prefix, NEW.topic_prefix))
             LIMIT 1;
            IF other IS NOT NULL THEN
                RAISE EXCEPTION 'topic_prefix % overlaps the prefix of tenant %', NEW.topic_prefix, other
                    USING ERRCODE = 'exclusion_violation', COLUMN = 'topic_prefix';
            END IF;
            RETURN NEW;
        END $$""")
    op.execute("""
        CREATE TRIGGER tenants_prefixes_disjoint BEFORE INSERT OR UPDATE OF topic_prefix ON core.tenants
            FOR EACH ROW EXECUTE FUNCTION core.refuse_overlapping_prefix()""")
    op.execute("""
        CREATE FUNCTION core.announce_tenant() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('hats_tenants', coalesce(NEW.tenant_id, OLD.tenant_id)::text);
            RETURN NULL;
        END $$""")
    op.execute("""
        CREATE TRIGGER tenants_announce AFTER INSERT OR UPDATE OR DELETE ON core.tenants
            FOR EACH ROW EXECUTE FUNCTION core.announce_tenant()""")

    op.execute("CREATE SCHEMA iam")
    op.execute("COMMENT ON SCHEMA iam IS 'Accounts the platform made per tenant, in every system'")
    op.execute("""
        CREATE TABLE iam.accounts (
            system       text NOT NULL CHECK (system IN ('postgresql', 'mqtt', 'influxdb')),
            name         text NOT NULL,
            tenant_id    citext REFERENCES core.tenants ON DELETE CASCADE,
            purpose      text NOT NULL,
            created_at   timestamptz NOT NULL DEFAULT now(),
            disabled_at  timestamptz,
            PRIMARY KEY (system, name)
        )""")
    op.execute("CREATE INDEX accounts_tenant_idx ON iam.accounts (tenant_id)")
    op.execute("COMMENT ON COLUMN iam.accounts.tenant_id IS 'The home it belongs to (NULL = platform-wide)'")

    op.execute("CREATE SCHEMA billing")
    op.execute("COMMENT ON SCHEMA billing IS 'Usage per home and day, for metering'")
    op.execute("""
        CREATE TABLE billing.usage_daily (
            tenant_id        text NOT NULL,
            day              date NOT NULL,
            points_ingested  bigint NOT NULL CHECK (points_ingested >= 0),
            series           integer NOT NULL CHECK (series >= 0),
            dead_letters     bigint NOT NULL CHECK (dead_letters >= 0),
            raw_bytes        bigint NOT NULL CHECK (raw_bytes >= 0),
            rollup_bytes     bigint NOT NULL CHECK (rollup_bytes >= 0),
            measured_at      timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, day)
        )""")
    op.execute("COMMENT ON TABLE billing.usage_daily IS "
               "'Per home and UTC day, points InfluxDB accepted, entities seen, dead letters, and the storage "
               "of its raw and rollup data when measured (InfluxDB shards overlapping the day)'")
    op.execute("""
        CREATE TABLE ops.tenant_audit (
            audit_id   bigserial PRIMARY KEY,
            tenant_id  text NOT NULL,
            action     text NOT NULL CHECK (action IN ('add', 'change', 'disable', 'enable', 'remove')),
            actor      text NOT NULL DEFAULT session_user,
            at         timestamptz NOT NULL DEFAULT now(),
            details    jsonb NOT NULL DEFAULT '{}'
        )""")
    op.execute("CREATE INDEX tenant_audit_tenant_idx ON ops.tenant_audit (tenant_id, at)")

    op.execute("GRANT USAGE ON SCHEMA billing TO hats_dagster, hats_analyst")
    op.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON billing.usage_daily TO hats_dagster")
    op.execute("GRANT SELECT ON billing.usage_daily TO hats_analyst")


def downgrade() -> None:
    op.execute("DROP TABLE ops.tenant_audit")
    op.execute("DROP SCHEMA billing CASCADE")
    op.execute("DROP SCHEMA iam CASCADE")
    op.execute("DROP TRIGGER tenants_announce ON core.tenants")
    op.execute("DROP FUNCTION core.announce_tenant()")
    op.execute("DROP TRIGGER tenants_prefixes_disjoint ON core.tenants")
    op.execute("DROP FUNCTION core.refuse_overlapping_prefix()")
    op.execute("""
        ALTER TABLE core.tenants
            DROP CONSTRAINT tenants_broker_account, DROP CONSTRAINT tenants_disabled_when,
            DROP COLUMN updated_at, DROP COLUMN disabled_at, DROP COLUMN status, DROP COLUMN rollup_months,
            DROP COLUMN raw_days, DROP COLUMN series_budget, DROP COLUMN ha_url, DROP COLUMN broker_username,
            DROP COLUMN broker_url, DROP COLUMN topic_prefix""")
