"""Least privilege inside the warehouse database and per role: ``hats_dagster`` trimmed to the statements its code
runs, the large-object functions closed to PUBLIC, and a connection limit and timeouts for every login role.

``hats_dagster``'s grants, from every statement ``hats_assets`` runs (grepped, including the SQL files and the
retention asset's composed purges):

- ``ops.dead_letters``: counted (billing) and purged by age (retention): SELECT, DELETE. It no longer UPDATEs
  (or INSERTs) dead letters: their payloads are the worker's evidence.
- ``ops.retention_audit``: written and purged after ``HATS_RETENTION_OPS_MONTHS``: SELECT, INSERT, DELETE; no
  UPDATE, so an audit row once written is never rewritten.
- ``ops.ingest_hours``: read (owed hours, billing) and purged with the raw data: SELECT, DELETE (the worker
  writes it).
- ``billing.usage_daily``: an upsert (INSERT … ON CONFLICT DO UPDATE): SELECT, INSERT, UPDATE; no DELETE.
- unchanged: ``ops.rollup_watermarks`` (upsert and forget a window: SELECT, INSERT, UPDATE, DELETE),
  ``ops.dq_results`` (SELECT, INSERT, DELETE), SELECT on ``core.*``, ``ops.imports``, ``ops.import_progress``.

Large objects (``lo_create``, ``lo_put``, ``lowrite``…) are executable by PUBLIC in a stock cluster: any role,
the analysts included, could store data in ``pg_largeobject`` outside every grant. Revoked from PUBLIC in this
database (they are owned by the bootstrap superuser: a migration role that is not one is told what to run).

Each login role gets a connection limit, ``statement_timeout`` and ``idle_in_transaction_session_timeout`` for
what it does (role settings are cluster-wide; the per-home analyst roles get theirs in
``tenancy/analyst_roles.py`` when made, and here for the ones that exist):

- ``hats_ingest`` (the workers: autocommit, short upserts of metadata, dead letters and ingest hours): 64
  connections (several per worker replica), 30 s per statement, 60 s idle in a transaction.
- ``hats_dagster`` (the code location's steps and runs, and Dagster's own storage on database ``dagster``):
  100 connections, 15 min per statement (the longest, a warehouse load or a retention purge of a large home,
  takes seconds to a minute here), 15 min idle in a transaction (a step's session holds one transaction while
  it reads InfluxDB).
- ``hats_analyst`` (the operator's cross-home analyst): 10 connections, 2 min per statement, 5 min idle.
- ``hats_analyst_<t>`` (a home's analyst): 5 connections, 2 min, 5 min.
- ``hats_exporter`` (the ops exporter: a few short counting reads per scrape): 4 connections, 30 s, 30 s.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

TRIMMED = {  # table: privileges revoked from hats_dagster (re-granted on downgrade)
    "ops.dead_letters": "INSERT, UPDATE",
    "ops.retention_audit": "UPDATE",
    "ops.ingest_hours": "INSERT, UPDATE",
    "billing.usage_daily": "DELETE",
}
# role: (connection limit, statement_timeout, idle_in_transaction_session_timeout)
LIMITS = {
    "hats_ingest": (64, "30s", "60s"),
    "hats_dagster": (100, "15min", "15min"),
    "hats_analyst": (10, "2min", "5min"),
    "hats_exporter": (4, "30s", "30s"),
}
HOME_ANALYST_LIMITS = (5, "2min", "5min")
HOME_ANALYSTS = "hats_home_analysts"
# The large-object functions of pg_catalog that PUBLIC may execute in a stock cluster.
LARGE_OBJECTS = """
    SELECT p.oid::regprocedure::text FROM pg_proc p
    WHERE p.pronamespace = 'pg_catalog'::regnamespace
      AND (p.proname LIKE 'lo\\_%' OR p.proname IN ('loread', 'lowrite'))
"""


def _limit_roles(limits: tuple[int, str, str], roles_sql: str) -> str:
    connections, statement, idle = limits
    return f"""
        DO $$ DECLARE r text; BEGIN
          FOR r IN {roles_sql} LOOP
            EXECUTE format('ALTER ROLE %I CONNECTION LIMIT {connections}', r);
            EXECUTE format('ALTER ROLE %I SET statement_timeout = %L', r, '{statement}');
            EXECUTE format('ALTER ROLE %I SET idle_in_transaction_session_timeout = %L', r, '{idle}');
          END LOOP;
        END $$"""


def _unlimit_roles(roles_sql: str) -> str:
    return f"""
        DO $$ DECLARE r text; BEGIN
          FOR r IN {roles_sql} LOOP
            EXECUTE format('ALTER ROLE %I CONNECTION LIMIT -1', r);
            EXECUTE format('ALTER ROLE %I RESET statement_timeout', r);
            EXECUTE format('ALTER ROLE %I RESET idle_in_transaction_session_timeout', r);
          END LOOP;
        END $$"""


def _home_analysts() -> str:
    """The homes' analyst roles (members of the group named hats_analyst_<t>; not the operator's hats_analyst)."""
    return (f"SELECT m.rolname FROM pg_auth_members a JOIN pg_roles g ON g.oid = a.roleid "
            f"JOIN pg_roles m ON m.oid = a.member WHERE g.rolname = '{HOME_ANALYSTS}' "
            f"AND m.rolname LIKE 'hats\\_analyst\\_%'")


def _large_objects(verb: str) -> str:
    preposition = "FROM" if verb == "REVOKE" else "TO"
    return f"""
        DO $$ DECLARE f text; BEGIN
          IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
            RAISE WARNING 'hats 0016: % is not a superuser, so PUBLIC keeps EXECUTE on the large-object '
                          'functions; as a superuser run, in this database: {verb} EXECUTE ON FUNCTION '
                          '<each lo_* function> {preposition} PUBLIC', current_user;
            RETURN;
          END IF;
          FOR f IN {LARGE_OBJECTS} LOOP
            EXECUTE format('{verb} EXECUTE ON FUNCTION %s {preposition} PUBLIC', f);
          END LOOP;
        END $$"""


def upgrade() -> None:
    for table, privileges in TRIMMED.items():
        op.execute(f"REVOKE {privileges} ON {table} FROM hats_dagster")
    op.execute(_large_objects("REVOKE"))
    for role, limits in LIMITS.items():
        op.execute(_limit_roles(limits, f"SELECT '{role}'"))
    op.execute(_limit_roles(HOME_ANALYST_LIMITS, _home_analysts()))


def downgrade() -> None:
    op.execute(_unlimit_roles(_home_analysts()))
    for role in LIMITS:
        op.execute(_unlimit_roles(f"SELECT '{role}'"))
    op.execute(_large_objects("GRANT"))
    for table, privileges in TRIMMED.items():
        op.execute(f"GRANT {privileges} ON {table} TO hats_dagster")
