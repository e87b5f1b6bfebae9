"""analytics.data_quality_daily: per entity and UTC day, how complete and plausible its data was.

Built from the latest result of each data-quality check per hour (``ops.dq_results``, a re-run's result
replaces the failed one) and the day's coverage from ``analytics.daily_rollup``. The view runs with its
owner's rights, so the analyst reads this summary without any access to ``ops``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE VIEW analytics.data_quality_daily AS
        WITH latest AS (
            SELECT DISTINCT ON (tenant_id, check_name, window_start) tenant_id, check_name, window_start, details
            FROM ops.dq_results
            ORDER BY tenant_id, check_name, window_start, checked_at DESC, id DESC
        ), issues AS (
            SELECT l.tenant_id, (l.window_start AT TIME ZONE 'UTC')::date AS day, d->>'entity_id' AS entity_id,
                   count(*) FILTER (WHERE l.check_name = 'plausible_ranges') AS out_of_range_hours,
                   count(*) FILTER (WHERE l.check_name = 'raw_points_all_rolled_up') AS incomplete_hours,
                   coalesce(sum(jsonb_array_length(d->'gaps')) FILTER (WHERE l.check_name = 'points_match_cadence'),
                            0) AS gaps,
                   coalesce(sum((d->>'count')::int) FILTER (WHERE l.check_name = 'meters_only_grow'), 0)
                       AS meter_dips
            FROM latest l
            CROSS JOIN LATERAL jsonb_array_elements(l.details) d
            GROUP BY 1, 2, 3
        )
        SELECT r.tenant_id, r.entity_id, r.quantity AS measurement, r.day,
               round((100 * r.available_s / 86400)::numeric, 2) AS coverage_pct, r.count AS points,
               coalesce(i.out_of_range_hours, 0) AS out_of_range_hours,
               coalesce(i.gaps, 0) AS gaps,
               coalesce(i.incomplete_hours, 0) AS incomplete_hours,
               coalesce(i.meter_dips, 0) AS meter_dips
        FROM analytics.daily_rollup r
        LEFT JOIN issues i ON i.tenant_id = r.tenant_id AND i.entity_id = r.entity_id AND i.day = r.day""")
    op.execute("COMMENT ON VIEW analytics.data_quality_daily IS 'Per entity and UTC day: coverage % of the day, "
               "points, hours out of plausible range, gaps against its usual cadence, hours not fully rolled up, "
               "meter dips'")
    op.execute("GRANT SELECT ON analytics.data_quality_daily TO hats_analyst")


def downgrade() -> None:
    op.execute("DROP VIEW analytics.data_quality_daily")
