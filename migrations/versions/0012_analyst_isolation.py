"""An analyst of one home reads only that home: per-home analyst roles, row-level security, invoker views.

* ``hats_home_analysts`` (NOLOGIN) holds every analyst grant. Each home's analyst is a LOGIN role
  ``hats_analyst_<tenant>`` (``tenancy.analyst_roles``) that inherits from it but may not ``SET ROLE``
  to it; the operator's cross-home ``hats_analyst`` is a member too.
* Row-level security on every table an analyst reads: the warehouse tables the views read, the
  ``core`` metadata they join, ``ops.dq_results`` (``data_quality_daily``) and ``billing.usage_daily``.
  A home's analyst sees the rows of the tenant its role is recorded for in ``iam.accounts`` (found by
  ``iam.analyst_tenant``); ``hats_analyst`` sees every row; the services (``hats_ingest``,
  ``hats_dagster``) keep exactly what their grants give them (a policy that filters nothing), and the
  owners (``hats_dagster`` for ``analytics``, the migration role elsewhere) are not subject to it.
* The views become ``security_invoker`` (the reader's privileges and policies apply to the tables they
  read, so a home's analyst sees its own rows through them) and ``security_barrier`` (a predicate of the
  reader that is not leakproof, e.g. a cast that fails, runs only on rows the view returns). Before
  this revision they ran with their owner's rights, and ``WHERE friendly_name::int = 0`` reported
  another home's entity names in its cast error.
* Only the partitioned parents are granted: reading a month partition directly is refused, and no
  default privilege grants anything of a future partition (``hats_dagster`` makes them) to an analyst.

``iam.analyst_tenant(role)`` is ``SECURITY DEFINER`` (analysts cannot read ``iam.accounts``), ``STABLE``
with a fixed ``search_path``, and evaluated once per table a query reads (an InitPlan over
``current_user``, ~0.2-0.6 ms), never per row. It answers only for a role the calling session may act
as, so an analyst cannot look up another role's home. It is not ``LEAKPROOF``: it never sees row values,
so nothing would be gained, and it does read a table the caller cannot.

Cost, measured on bench/warehouse_queries.py's data (8.76 M hourly rows, 1,000 entities, 250 devices),
EXPLAIN ANALYZE p50 of 60 interleaved runs, 0011's views against these as the home's analyst: one day of
``entity_daily_utc`` 10.1 -> 12.8 ms, 30 days of one entity in ``entity_hourly`` 1.2 -> 1.7 ms, a month of
``energy_daily_utc`` 29.5 -> 33.6 ms, ``device_last_seen`` 86.5 -> 108.5 ms; ``hats_analyst`` (every home,
``USING (true)``) costs what it did. EXPLAIN ANALYZE shows a reader how many rows a policy removed (other
homes' row counts, never their values).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

GROUP = "hats_home_analysts"
OPERATOR = "hats_analyst"
SERVICES = ("hats_ingest", "hats_dagster")

# Every table an analyst reads.
ANALYST_TABLES = ("analytics.hourly_rollup", "analytics.daily_rollup", "analytics.local_daily_rollup",
                  "analytics.state_local_daily", "core.entities", "core.devices", "core.areas", "ops.dq_results",
                  "billing.usage_daily")
SCHEMAS = ("analytics", "core", "ops", "billing", "iam")
HOME_POLICY = "home_analyst_reads_its_home"
OPERATOR_POLICY = "operator_analyst_reads_every_home"
SERVICE_POLICY = "services_unfiltered"
# A device's entities for device_last_seen: citext's equality is not leakproof, so under row-level security
# the view's `e.tenant_id = d.tenant_id` can no longer lead an index scan (measured: 115 ms p50 before this
# revision, 920 ms for a home's analyst without this index, 90 ms with it; 1,000 entities, 250 devices).
DEVICE_INDEX = "entities_tenant_text_device_idx"


def _views() -> list[str]:
    rows = op.get_bind().execute(sa.text(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'analytics' AND c.relkind = 'v' ORDER BY c.relname")).all()
    return [f"analytics.{row[0]}" for row in rows]


def upgrade() -> None:
    op.execute(f"""
        DO $$ BEGIN
          IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{GROUP}') THEN
            CREATE ROLE {GROUP} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
          END IF;
        END $$""")
    op.execute(f"COMMENT ON ROLE {GROUP} IS 'Holds the analysts'' grants; each home''s analyst "
               "(hats_analyst_<tenant>) inherits them and row-level security keeps it to its home'")
    # Inherit the grants, never act as the group itself.
    op.execute(f"GRANT {GROUP} TO {OPERATOR} WITH INHERIT TRUE, SET FALSE")
    op.execute(f"""
        DO $$ BEGIN
          EXECUTE format('GRANT CONNECT ON DATABASE %I TO {GROUP}', current_database());
        END $$""")
    op.execute(f"GRANT USAGE ON SCHEMA {', '.join(SCHEMAS)} TO {GROUP}")

    op.execute(f"""
        CREATE FUNCTION iam.analyst_tenant(role_name name) RETURNS text
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
            SELECT a.tenant_id::text FROM iam.accounts a
             WHERE a.system = 'postgresql' AND a.name = role_name::text AND a.disabled_at IS NULL
               AND pg_catalog.pg_has_role(session_user, role_name, 'USAGE')
               AND pg_catalog.pg_has_role(role_name, '{GROUP}', 'MEMBER')
        $$""")
    op.execute("COMMENT ON FUNCTION iam.analyst_tenant(name) IS 'The home whose rows this analyst role reads "
               "(iam.accounts, system postgresql, not disabled); NULL for any role the session cannot act as'")
    op.execute("REVOKE ALL ON FUNCTION iam.analyst_tenant(name) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION iam.analyst_tenant(name) TO {GROUP}")

    for table in ANALYST_TABLES:
        op.execute(f"GRANT SELECT ON {table} TO {GROUP}")
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        # text equality (core's citext compared as text): leakproof, so the planner may still combine the
        # view's own join conditions with it in one index scan.
        op.execute(f"CREATE POLICY {HOME_POLICY} ON {table} FOR SELECT TO {GROUP} "
                   "USING (tenant_id::text = (SELECT iam.analyst_tenant(current_user)))")
        op.execute(f"CREATE POLICY {OPERATOR_POLICY} ON {table} FOR SELECT TO {OPERATOR} USING (true)")
        op.execute(f"CREATE POLICY {SERVICE_POLICY} ON {table} FOR ALL TO {', '.join(SERVICES)} "
                   "USING (true) WITH CHECK (true)")
    # Month partitions are read through their parent only (where the policies are).
    op.execute(f"""
        DO $$ DECLARE part regclass;
        BEGIN
          FOR part IN SELECT i.inhrelid::regclass FROM pg_inherits i
                       WHERE i.inhparent = ANY (ARRAY[{", ".join(f"'{t}'::regclass" for t in ANALYST_TABLES)}])
          LOOP
            EXECUTE format('REVOKE ALL ON %s FROM PUBLIC, {GROUP}, {OPERATOR}', part);
          END LOOP;
        END $$""")
    for view in _views():
        op.execute(f"ALTER VIEW {view} SET (security_barrier = true, security_invoker = true)")
        op.execute(f"GRANT SELECT ON {view} TO {GROUP}")
    op.execute(f"CREATE INDEX {DEVICE_INDEX} ON core.entities ((tenant_id::text), device_id)")


def downgrade() -> None:
    op.execute(f"DROP INDEX core.{DEVICE_INDEX}")
    for view in _views():
        op.execute(f"REVOKE ALL ON {view} FROM {GROUP}")
        op.execute(f"ALTER VIEW {view} RESET (security_barrier, security_invoker)")
    for table in ANALYST_TABLES:
        for policy in (SERVICE_POLICY, OPERATOR_POLICY, HOME_POLICY):
            op.execute(f"DROP POLICY {policy} ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
        op.execute(f"REVOKE ALL ON {table} FROM {GROUP}")
    op.execute("DROP FUNCTION iam.analyst_tenant(name)")
    op.execute(f"REVOKE ALL ON SCHEMA {', '.join(SCHEMAS)} FROM {GROUP}")
    # The role is cluster-wide: it goes (with its memberships) only when no other database still uses it.
    op.execute(f"""
        DO $$ BEGIN
          EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM {GROUP}', current_database());
          IF NOT EXISTS (SELECT 1 FROM pg_shdepend d JOIN pg_roles r ON r.oid = d.refobjid
                         WHERE r.rolname = '{GROUP}') THEN
            DROP ROLE {GROUP};
          END IF;
        END $$""")
