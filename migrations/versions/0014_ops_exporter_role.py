"""The ops exporter's role, ``hats_exporter``: it reads exactly what ``ops_exporter`` turns into metrics.

Prometheus cannot ask Dagster how far behind the rollups are; ``ops_exporter`` answers from what the assets
write. Its login reads, and only reads, the rows it counts (every home's: the exporter is the operator's):

* ``core.tenants`` ``tenant_id`` and ``status`` (which homes to report; no names, URLs or accounts);
* ``ops.ingest_hours``, ``ops.rollup_watermarks`` (hours written vs rolled up);
* ``ops.dq_results`` (failing checks, refused warehouse days);
* ``ops.retention_audit`` (raw retention extended).

The tables under row-level security since 0012/0013 get a policy letting the exporter read every row. Dagster's
run storage (database ``dagster``, made by Dagster, not Alembic) is granted by the stack once its tables exist
(``devstack/run_storage.py``).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

ROLE = "hats_exporter"
POLICY = "exporter_reads_every_home"
GRANTS = {"core.tenants": "SELECT (tenant_id, status)", "ops.ingest_hours": "SELECT",
          "ops.rollup_watermarks": "SELECT", "ops.dq_results": "SELECT", "ops.retention_audit": "SELECT"}
UNDER_RLS = ("core.tenants", "ops.ingest_hours", "ops.rollup_watermarks", "ops.dq_results")


def upgrade() -> None:
    op.execute(f"""
        DO $$ BEGIN
          IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
            CREATE ROLE {ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
          END IF;
          EXECUTE format('GRANT CONNECT ON DATABASE %I TO {ROLE}', current_database());
        END $$""")
    op.execute(f"GRANT USAGE ON SCHEMA core, ops TO {ROLE}")
    for table, grant in GRANTS.items():
        op.execute(f"GRANT {grant} ON {table} TO {ROLE}")
    for table in UNDER_RLS:
        op.execute(f"CREATE POLICY {POLICY} ON {table} FOR SELECT TO {ROLE} USING (true)")


def downgrade() -> None:
    for table in UNDER_RLS:
        op.execute(f"DROP POLICY {POLICY} ON {table}")
    for table in GRANTS:
        op.execute(f"REVOKE ALL ON {table} FROM {ROLE}")
    op.execute(f"REVOKE ALL ON SCHEMA core, ops FROM {ROLE}")
    # Cluster-wide, like 0001's roles: dropped only when no other database (dagster's grant) still uses it.
    op.execute(f"""
        DO $$ BEGIN
          EXECUTE format('REVOKE ALL ON DATABASE %I FROM {ROLE}', current_database());
          IF NOT EXISTS (SELECT 1 FROM pg_shdepend d JOIN pg_roles r ON r.oid = d.refobjid
                         WHERE r.rolname = '{ROLE}') THEN
            DROP ROLE {ROLE};
          END IF;
        END $$""")
