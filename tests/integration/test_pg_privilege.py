"""PostgreSQL's privilege findings of issue 12 on the real test cluster: PUBLIC's reach into `postgres` and
`template1` and the large-object functions, `hats_dagster` trimmed to its code's statements, and per-role
connection limits and timeouts that hold."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import errors
from psycopg.conninfo import make_conninfo

from devstack import postgres
from devstack.profile import Profile
from tenancy import analyst_roles
from tenancy import secrets as tenant_secrets
from tests.conftest import Tenant, registry_for

pytestmark = pytest.mark.integration

SERVICE_DSNS = ("HATS_INGEST_DSN", "HATS_DAGSTER_DSN", "HATS_ANALYST_DSN", "HATS_EXPORTER_DSN")
# role: (connection limit, statement_timeout, idle_in_transaction_session_timeout) as PostgreSQL shows them
LIMITS = {
    "hats_ingest": (64, "30s", "1min"),
    "hats_dagster": (100, "15min", "15min"),
    "hats_analyst": (10, "2min", "5min"),
    "hats_exporter": (4, "30s", "30s"),
}


def _on(dsn: str, database: str) -> str:
    """The same connection to another database (the DSN carries sslmode/sslrootcert: edit it as conninfo)."""
    return make_conninfo(dsn, dbname=database)


def _home_analyst_dsn(profile: Profile, stack_env: dict[str, str], tenant: Tenant) -> str:
    password = registry_for(profile, stack_env).secrets.read(tenant.name, tenant_secrets.PG_ANALYST)
    assert password is not None
    return make_conninfo(stack_env["HATS_ANALYST_DSN"], user=analyst_roles.analyst_role_name(tenant.name),
                         password=password)


@pytest.mark.parametrize("key", SERVICE_DSNS)
@pytest.mark.parametrize("database", postgres.SYSTEM_DBS)
def test_no_platform_role_connects_to_postgres_or_template1(stack_env: dict[str, str], key: str,
                                                            database: str) -> None:
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(_on(stack_env[key], database), connect_timeout=10).close()


def test_public_has_no_connect_or_temp_on_postgres_and_template1(stack_env: dict[str, str]) -> None:
    with psycopg.connect(_on(stack_env["HATS_PG_DSN"], "postgres")) as conn:
        for database in postgres.SYSTEM_DBS:
            for privilege in ("CONNECT", "TEMPORARY"):
                [(granted,)] = conn.execute("SELECT has_database_privilege('public', %s, %s)",
                                            (database, privilege)).fetchall()
                assert granted is False, (database, privilege)


@pytest.mark.parametrize("statement", [
    "SELECT lo_create(0)",
    "SELECT lo_from_bytea(0, '\\x01'::bytea)",
    "SELECT lo_put(1, 0, '\\x01'::bytea)",
    "SELECT lo_unlink(1)",
    "SELECT loread(0, 1)",
])
@pytest.mark.parametrize(("key", "database"), [("HATS_ANALYST_DSN", "hats"), ("HATS_INGEST_DSN", "hats"),
                                               ("HATS_DAGSTER_DSN", "hats"), ("HATS_DAGSTER_PG_URL", "dagster"),
                                               ("HATS_EXPORTER_DSN", "hats"), ("HATS_EXPORTER_DAGSTER_DSN", "dagster")])
def test_large_object_functions_are_refused(stack_env: dict[str, str], statement: str, key: str,
                                            database: str) -> None:
    with psycopg.connect(_on(stack_env[key], database)) as conn, \
            pytest.raises(errors.InsufficientPrivilege, match="permission denied for function"):
        conn.execute(statement)


def test_a_home_analyst_cannot_use_large_objects(profile: Profile, stack_env: dict[str, str], tenant: Tenant) -> None:
    with psycopg.connect(_home_analyst_dsn(profile, stack_env, tenant)) as conn, \
            pytest.raises(errors.InsufficientPrivilege, match="permission denied for function lo_create"):
        conn.execute("SELECT lo_create(0)")


@pytest.mark.parametrize("statement", [
    "UPDATE ops.dead_letters SET payload = '\\x00'::bytea",
    "UPDATE ops.dead_letters SET reason = 'rewritten'",
    "INSERT INTO ops.dead_letters (received_at, topic, payload, reason) VALUES (now(), 't', '\\x00', 'forged')",
    "UPDATE ops.retention_audit SET detail = 'rewritten'",
    "INSERT INTO ops.ingest_hours (tenant_id, hour, version, points) VALUES ('home', now(), 1, 1)",
    "UPDATE ops.ingest_hours SET points = 0",
    "DELETE FROM billing.usage_daily",
    "DELETE FROM core.tenants",
    "UPDATE core.entities SET friendly_name = 'x'",
])
def test_hats_dagster_runs_nothing_its_code_does_not(stack_env: dict[str, str], statement: str) -> None:
    with psycopg.connect(stack_env["HATS_DAGSTER_DSN"]) as conn, \
            pytest.raises(errors.InsufficientPrivilege, match="permission denied"):
        conn.execute(statement)


def test_hats_dagster_keeps_every_privilege_its_code_uses(stack_env: dict[str, str]) -> None:
    """The statements hats_assets runs, table by table (migration 0016's list), are still granted."""
    used = {
        "ops.dead_letters": ("SELECT", "DELETE"),
        "ops.retention_audit": ("SELECT", "INSERT", "DELETE"),
        "ops.ingest_hours": ("SELECT", "DELETE"),
        "ops.rollup_watermarks": ("SELECT", "INSERT", "UPDATE", "DELETE"),
        "ops.dq_results": ("SELECT", "INSERT", "DELETE"),
        "billing.usage_daily": ("SELECT", "INSERT", "UPDATE"),
        "core.tenants": ("SELECT",), "core.entities": ("SELECT",), "core.devices": ("SELECT",),
        "ops.imports": ("SELECT",), "ops.import_progress": ("SELECT",),
    }
    with psycopg.connect(stack_env["HATS_PG_DSN"]) as conn:
        for table, privileges in used.items():
            granted = {p for p in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")
                       if conn.execute("SELECT has_table_privilege('hats_dagster', %s, %s)",
                                       (table, p)).fetchone() == (True,)}
            assert granted == set(privileges), table


@pytest.mark.parametrize("role", sorted(LIMITS))
def test_each_service_role_has_its_limits(stack_env: dict[str, str], role: str) -> None:
    limit, statement, idle = LIMITS[role]
    key = {"hats_ingest": "HATS_INGEST_DSN", "hats_dagster": "HATS_DAGSTER_DSN", "hats_analyst": "HATS_ANALYST_DSN",
           "hats_exporter": "HATS_EXPORTER_DSN"}
    with psycopg.connect(stack_env["HATS_PG_DSN"]) as conn:
        assert conn.execute("SELECT rolconnlimit FROM pg_roles WHERE rolname = %s", (role,)).fetchone() == (limit,)
    with psycopg.connect(stack_env[key[role]]) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == (statement,)
        assert conn.execute("SHOW idle_in_transaction_session_timeout").fetchone() == (idle,)


def test_the_ingest_roles_statement_timeout_cancels_a_longer_query(stack_env: dict[str, str]) -> None:
    with psycopg.connect(stack_env["HATS_INGEST_DSN"]) as conn, \
            pytest.raises(errors.QueryCanceled, match="statement timeout"):
        conn.execute("SELECT pg_sleep(31)")


@contextlib.contextmanager
def _sessions(dsn: str, count: int) -> Iterator[list[psycopg.Connection[tuple[object, ...]]]]:
    opened: list[psycopg.Connection[tuple[object, ...]]] = []
    try:
        for _ in range(count):
            opened.append(psycopg.connect(dsn, connect_timeout=10))
        yield opened
    finally:
        for conn in opened:
            conn.close()


def test_a_home_analyst_gets_its_limit_of_sessions_and_not_one_more(profile: Profile, stack_env: dict[str, str],
                                                                   tenant: Tenant) -> None:
    dsn = _home_analyst_dsn(profile, stack_env, tenant)
    with _sessions(dsn, analyst_roles.CONNECTION_LIMIT) as opened:
        assert opened[0].execute("SHOW statement_timeout").fetchone() == (analyst_roles.STATEMENT_TIMEOUT,)
        assert opened[0].execute("SHOW idle_in_transaction_session_timeout").fetchone() == (
            analyst_roles.IDLE_IN_TRANSACTION_TIMEOUT,)
        with pytest.raises(psycopg.OperationalError, match="too many connections for role"):
            psycopg.connect(dsn, connect_timeout=10).close()
    psycopg.connect(dsn, connect_timeout=10).close()  # one closed, one may come


def test_the_operators_analyst_gets_its_limit_of_sessions_and_not_one_more(stack_env: dict[str, str]) -> None:
    limit = LIMITS["hats_analyst"][0]
    with _sessions(stack_env["HATS_ANALYST_DSN"], limit), \
            pytest.raises(psycopg.OperationalError, match="too many connections for role"):
        psycopg.connect(stack_env["HATS_ANALYST_DSN"], connect_timeout=10).close()
