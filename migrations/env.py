"""Alembic environment: online migrations only, against HATS_PG_DSN.

The URL is a secret, so it comes from the environment (or `-x dsn=...`), never from alembic.ini.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool

DSN_SETTING = "HATS_PG_DSN"


def _url() -> str:
    dsn = context.get_x_argument(as_dictionary=True).get("dsn") or os.environ.get(DSN_SETTING)
    if not dsn:
        raise SystemExit(
            f"{DSN_SETTING} is not set: export it (e.g. `. .hats/env`) or pass `-x dsn=postgresql://...`"
        )
    # psycopg 3 explicitly: SQLAlchemy 2.0 would otherwise pick psycopg2 for a bare postgresql:// URL.
    return dsn.replace("postgresql://", "postgresql+psycopg://", 1)


def run_migrations_online() -> None:
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("hats migrations run online only: they create roles and check the live catalogue")
run_migrations_online()
