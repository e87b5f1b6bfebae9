"""ops.dq_results: every data-quality check result, per check, asset and partition window.

Dagster keeps check results in its own event log; this table is where operators and SQL (and the
analysts' data-quality summary to come) can read them without Dagster, with the entities and hours a
person needs to act on.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE ops.dq_results (
            id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            checked_at      timestamptz NOT NULL DEFAULT now(),
            run_id          text,
            tenant_id       text NOT NULL,
            asset           text NOT NULL,
            check_name      text NOT NULL,
            window_start    timestamptz NOT NULL,
            window_end      timestamptz NOT NULL,
            passed          boolean NOT NULL,
            severity        text NOT NULL CHECK (severity IN ('ERROR', 'WARN')),
            failing         bigint NOT NULL DEFAULT 0,
            checked         bigint NOT NULL DEFAULT 0,
            details         jsonb NOT NULL DEFAULT '[]'::jsonb
        )""")
    op.execute("CREATE INDEX dq_results_window_idx ON ops.dq_results (tenant_id, check_name, window_start)")
    op.execute("COMMENT ON COLUMN ops.dq_results.details IS "
               "'The failing rows a person can act on: entity, window, observed value, expected range'")
    op.execute("GRANT SELECT, INSERT, DELETE ON ops.dq_results TO hats_dagster")


def downgrade() -> None:
    op.execute("DROP TABLE ops.dq_results")
