"""Is home X's day complete? ``analytics.home_day_status``: per home and LOCAL day, its hours with data,
rolled up, failing a blocking check, and loaded into the warehouse.

One code location serves every home and a failure in one home's data holds back only its own hours, so
"is my day done?" is a per-home question. Per home (``tenant_id``) and local day in the home's zone
(``core.tenants.time_zone``; an hour counts for the local date of its start, as the warehouse's local days):

* ``day_hours`` the day's UTC hours (23/24/25 when the clocks change); ``hours_with_data`` the hours the
  worker wrote points for (``ops.ingest_hours``);
* ``hours_rolled_up`` those whose rollup read every point written (watermark version ≥ ingest version);
* ``hours_failing_checks`` those whose latest result of some blocking check (the rollups' checks, their
  storing, the hourly load's check: ``ops.dq_results``, ERROR) failed;
* ``hours_loaded`` those whose latest warehouse check (``warehouse_rows_match_rollups``: every 1 h rollup
  row of the day is in ``analytics.hourly_rollup``, once) passed after their latest rollup;
* ``complete``: the day is over, and every hour with data is rolled up, passing and loaded.

Like every analyst view since 0012 it is ``security_invoker`` and ``security_barrier``: a home's analyst
reads its own rows through the tables' row-level security, which this revision extends to the tables the
view reads that analysts could not (``ops.ingest_hours``, ``ops.rollup_watermarks``, and of
``core.tenants`` only ``tenant_id`` and ``time_zone``), with 0012's three policies (the home's analyst, the
operator's cross-home analyst, the services unfiltered).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

GROUP = "hats_home_analysts"
OPERATOR = "hats_analyst"
SERVICES = ("hats_ingest", "hats_dagster")
HOME_POLICY = "home_analyst_reads_its_home"
OPERATOR_POLICY = "operator_analyst_reads_every_home"
SERVICE_POLICY = "services_unfiltered"
# Tables the view reads that analysts had no grant on (0012 covers ops.dq_results).
NEW_TABLES = {"ops.ingest_hours": "SELECT", "ops.rollup_watermarks": "SELECT",
              "core.tenants": "SELECT (tenant_id, time_zone)"}
GATE_ASSETS = ("rollup_1m", "rollup_1h", "hourly_rollup")  # hats_assets/defs/warehouse/tables.py: DAILY_GATE
LOAD_CHECK = "warehouse_rows_match_rollups"  # hats_assets/defs/quality/warehouse_checks.py: CHECK_NAME


def upgrade() -> None:
    for table, grant in NEW_TABLES.items():
        op.execute(f"GRANT {grant} ON {table} TO {GROUP}")
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY {HOME_POLICY} ON {table} FOR SELECT TO {GROUP} "
                   "USING (tenant_id::text = (SELECT iam.analyst_tenant(current_user)))")
        op.execute(f"CREATE POLICY {OPERATOR_POLICY} ON {table} FOR SELECT TO {OPERATOR} USING (true)")
        op.execute(f"CREATE POLICY {SERVICE_POLICY} ON {table} FOR ALL TO {', '.join(SERVICES)} "
                   "USING (true) WITH CHECK (true)")
    assets = ", ".join(f"'{asset}'" for asset in GATE_ASSETS)
    op.execute(f"""
        CREATE VIEW analytics.home_day_status WITH (security_barrier = true, security_invoker = true) AS
        WITH up AS (SELECT interval '59 minutes 59.999999 seconds' AS to_hour),
        hours AS (
            SELECT i.tenant_id::text AS tenant_id, i.hour, t.time_zone,
                   (i.hour AT TIME ZONE t.time_zone)::date AS local_day,
                   (w.hour IS NOT NULL AND w.version >= i.version) AS rolled_up, w.rolled_at
            FROM ops.ingest_hours i
            JOIN core.tenants t ON t.tenant_id::text = i.tenant_id::text
            LEFT JOIN ops.rollup_watermarks w ON w.tenant_id = i.tenant_id AND w.hour = i.hour
        ), judged AS (
            SELECT h.*,
                   EXISTS (SELECT 1 FROM (
                       SELECT DISTINCT ON (r.check_name) r.passed
                       FROM ops.dq_results r
                       WHERE r.tenant_id = h.tenant_id AND r.severity = 'ERROR' AND r.asset IN ({assets})
                         AND r.window_start <= h.hour AND r.window_end > h.hour
                       ORDER BY r.check_name, r.checked_at DESC, r.id DESC) latest
                     WHERE NOT latest.passed) AS failing,
                   coalesce((SELECT r.passed AND r.checked_at >= h.rolled_at
                             FROM ops.dq_results r
                             WHERE r.tenant_id = h.tenant_id AND r.asset = 'hourly_rollup'
                               AND r.check_name = '{LOAD_CHECK}'
                               AND r.window_start <= h.hour AND r.window_end > h.hour
                             ORDER BY r.checked_at DESC, r.id DESC LIMIT 1), false) AS loaded
            FROM hours h
        )
        SELECT j.tenant_id, j.local_day, j.time_zone,
               (extract(epoch FROM date_trunc('hour', ((j.local_day + 1)::timestamp AT TIME ZONE j.time_zone)
                                                      + up.to_hour)
                                   - date_trunc('hour', (j.local_day::timestamp AT TIME ZONE j.time_zone)
                                                        + up.to_hour)) / 3600)::integer AS day_hours,
               count(*)::integer AS hours_with_data,
               (count(*) FILTER (WHERE j.rolled_up))::integer AS hours_rolled_up,
               (count(*) FILTER (WHERE j.failing))::integer AS hours_failing_checks,
               (count(*) FILTER (WHERE j.loaded))::integer AS hours_loaded,
               ((j.local_day + 1)::timestamp AT TIME ZONE j.time_zone) <= now()
                 AND bool_and(j.rolled_up AND NOT j.failing AND j.loaded) AS complete
        FROM judged j, up
        GROUP BY j.tenant_id, j.local_day, j.time_zone, up.to_hour""")
    op.execute("COMMENT ON VIEW analytics.home_day_status IS 'Per home and local day: hours with data, rolled "
               "up, failing a blocking check, loaded (the warehouse check passed after the rollup); complete when "
               "the day is over and every hour with data is all three'")
    op.execute(f"GRANT SELECT ON analytics.home_day_status TO {GROUP}, hats_dagster")


def downgrade() -> None:
    op.execute("DROP VIEW analytics.home_day_status")
    for table in NEW_TABLES:
        for policy in (SERVICE_POLICY, OPERATOR_POLICY, HOME_POLICY):
            op.execute(f"DROP POLICY {policy} ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
        op.execute(f"REVOKE ALL ON {table} FROM {GROUP}")
