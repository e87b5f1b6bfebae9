"""``hats_backup``: the role `hats backup` logs in as, with the least it needs and nothing more.

A base backup streams the whole cluster over the replication protocol, which takes the REPLICATION
attribute and no privilege on any table; `hats restore` (latest) asks the source to close its current
WAL segment so that every commit so far reaches the archive, which takes EXECUTE on ``pg_switch_wal``
(superuser-only by default). It is not a superuser, owns nothing, cannot create anything, and may hold
two connections (a base backup's and its WAL stream's) plus one for the switch.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

ROLE = "hats_backup"
CONNECTION_LIMIT = 3


def upgrade() -> None:
    op.execute(f"""
        DO $$ BEGIN
          IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
            CREATE ROLE {ROLE} LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT
              CONNECTION LIMIT {CONNECTION_LIMIT};
          END IF;
        END $$""")
    op.execute(f"""
        DO $$ BEGIN
          EXECUTE format('GRANT CONNECT ON DATABASE %I TO {ROLE}', current_database());
        END $$""")
    op.execute(f"GRANT EXECUTE ON FUNCTION pg_catalog.pg_switch_wal() TO {ROLE}")


def downgrade() -> None:
    op.execute(f"REVOKE EXECUTE ON FUNCTION pg_catalog.pg_switch_wal() FROM {ROLE}")
    op.execute(f"""
        DO $$ BEGIN
          EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM {ROLE}', current_database());
        END $$""")
    # The role is cluster-wide: it goes only when no other database still grants it anything (as 0001's roles).
    op.execute(f"""
        DO $$ BEGIN
          IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
            IF NOT EXISTS (SELECT 1 FROM pg_shdepend d JOIN pg_roles r ON r.oid = d.refobjid
                           WHERE r.rolname = '{ROLE}') THEN
              DROP ROLE {ROLE};
            END IF;
          END IF;
        END $$""")
