"""analytics.entity_hourly: per-entity hourly aggregates, natively partitioned by month.

Owned by hats_dagster because creating a partition requires owning its parent: the loader adds each
month's partition as data for it arrives (see hats_assets/defs/warehouse/), and retention drops them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""
        CREATE TABLE analytics.entity_hourly (
            tenant_id    text NOT NULL,
            entity_id    text NOT NULL,
            measurement  text NOT NULL,
            hour         timestamptz NOT NULL,
            mean         double precision,
            min          double precision,
            max          double precision,
            count        bigint NOT NULL,
            last         double precision,
            loaded_at    timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, entity_id, hour)
        ) PARTITION BY RANGE (hour)""")
    op.execute("COMMENT ON TABLE analytics.entity_hourly IS "
               "'One row per entity and UTC hour: mean/min/max/count/last of its numeric states, in the "
               "canonical unit of its measurement'")
    op.execute("ALTER TABLE analytics.entity_hourly OWNER TO hats_dagster")
    op.execute("GRANT SELECT ON analytics.entity_hourly TO hats_analyst")


def downgrade() -> None:
    op.execute("DROP TABLE analytics.entity_hourly")
