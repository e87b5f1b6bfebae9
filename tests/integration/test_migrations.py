"""Alembic owns every PostgreSQL object: upgrade, downgrade and upgrade again on a fresh database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import errors, sql

from devstack import postgres
from devstack.profile import Profile
from devstack.stack import migrate

pytestmark = pytest.mark.integration


@pytest.fixture
def fresh_database(profile: Profile, secrets: dict[str, str]) -> Iterator[str]:
    name = f"migrations_{uuid.uuid4().hex[:8]}"
    postgres.ensure_database(profile, secrets, name)
    yield postgres.superuser_dsn(profile, secrets, name)
    with psycopg.connect(postgres.superuser_dsn(profile, secrets, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _catalogue(dsn: str) -> dict[str, set[str]]:
    with psycopg.connect(dsn) as conn:
        schemas = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname IN "
                                              "('core', 'ops', 'analytics')")}
        tables = {f"{r[0]}.{r[1]}" for r in conn.execute(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname IN ('core', 'ops', 'analytics')")}
        extensions = {r[0] for r in conn.execute("SELECT extname FROM pg_extension")}
        roles = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'hats\\_%'")}
    return {"schemas": schemas, "tables": tables, "extensions": extensions, "roles": roles}


def test_upgrade_downgrade_upgrade(fresh_database: str, stack_env: dict[str, str]) -> None:
    migrate(fresh_database)
    at_head = _catalogue(fresh_database)
    assert at_head["schemas"] == {"core", "ops", "analytics"}
    assert {"core.tenants", "core.devices", "core.entities", "ops.dead_letters", "ops.retention_audit",
            "analytics.entity_hourly"} <= at_head["tables"]
    assert {"uuid-ossp", "pgcrypto", "citext"} <= at_head["extensions"]
    assert at_head["roles"] == {"hats_ingest", "hats_dagster", "hats_analyst"}
    with psycopg.connect(fresh_database) as conn:
        assert conn.execute("SELECT uuid_generate_v4() IS NOT NULL, gen_random_uuid() IS NOT NULL, "
                            "'A'::citext = 'a'").fetchone() == (True, True, True)

    migrate(fresh_database, "base", downgrade=True)
    at_base = _catalogue(fresh_database)
    assert at_base["schemas"] == set()
    assert at_base["tables"] == set()
    assert not {"uuid-ossp", "pgcrypto", "citext"} & at_base["extensions"]
    # The roles are cluster-wide and the stack's own database still uses them: they must survive.
    assert at_base["roles"] == {"hats_ingest", "hats_dagster", "hats_analyst"}
    with psycopg.connect(stack_env["HATS_ANALYST_DSN"]) as conn:
        conn.execute("SELECT count(*) FROM analytics.entity_hourly")

    migrate(fresh_database)
    assert _catalogue(fresh_database) == at_head


def test_each_step_downgrades_cleanly(fresh_database: str) -> None:
    migrate(fresh_database)
    migrate(fresh_database, "0001", downgrade=True)
    tables = _catalogue(fresh_database)["tables"]
    assert "analytics.entity_hourly" not in tables
    assert "core.entities" in tables
    migrate(fresh_database, "0002")
    assert "analytics.entity_hourly" in _catalogue(fresh_database)["tables"]


def test_analyst_privileges_hold_in_a_migrated_database(fresh_database: str, stack_env: dict[str, str]) -> None:
    migrate(fresh_database)
    analyst = stack_env["HATS_ANALYST_DSN"].rsplit("/", 1)[0] + "/" + fresh_database.rsplit("/", 1)[1]
    with psycopg.connect(analyst) as conn:
        conn.execute("SELECT count(*) FROM analytics.entity_hourly")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM core.entities")
