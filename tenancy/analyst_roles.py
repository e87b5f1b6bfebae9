"""Each home's PostgreSQL analyst: a LOGIN role that reads only that home's rows.

The role ``hats_analyst_<tenant>`` inherits every analyst grant from ``hats_home_analysts`` (migration
0012) and may not ``SET ROLE`` to it; row-level security gives it the rows of the tenant its
``iam.accounts`` row names (the caller records the returned account there, in the same transaction:
until then, and once that row is disabled, the role reads nothing). Roles are cluster-wide, so one
role serves the home in every database migrated to 0012.

Every call runs inside the caller's transaction as the migrations' owner (a superuser, ``HATS_PG_DSN``).
The password reaches the server only as a SCRAM-SHA-256 verifier computed here by libpq, so it never
appears in a statement the server could log.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from ingest_worker.contract import TENANT_PATTERN
from tenancy.iam import IamAccount

GROUP = "hats_home_analysts"
# A home's analyst runs ad-hoc reads: a few sessions, no statement or idle transaction holding the warehouse for
# long (migration 0016 gives the roles that existed before the same).
CONNECTION_LIMIT = 5
STATEMENT_TIMEOUT = "2min"
IDLE_IN_TRANSACTION_TIMEOUT = "5min"
ROLE_PREFIX = "hats_analyst_"
PURPOSE = "analyst: reads this home's rows in the analytics views (row-level security)"


def analyst_role_name(tenant_id: str) -> str:
    """``hats_analyst_<tenant>``; refuses an id that is not a tenant id (it becomes an identifier)."""
    if not TENANT_PATTERN.fullmatch(tenant_id):
        raise ValueError(f"tenant_id {tenant_id!r} must match {TENANT_PATTERN.pattern} (lowercase letters, digits, _)")
    return ROLE_PREFIX + tenant_id


def _role_exists(cur: psycopg.Cursor[Any], role: str) -> bool:
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
    return cur.fetchone() is not None


def _verifier(cur: psycopg.Cursor[Any], role: str, password: str) -> str:
    return cur.connection.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()


def ensure_analyst_role(cur: psycopg.Cursor[Any], tenant_id: str, password: str) -> IamAccount:
    """Create (or refresh: LOGIN, this password, the group membership) the home's analyst role."""
    role = analyst_role_name(tenant_id)
    if not password:
        raise ValueError(f"the password of {role} is empty: write one to the tenant secret {tenant_id}/pg_analyst")
    if not _role_exists(cur, GROUP):
        raise RuntimeError(f"role {GROUP} does not exist: migrate the database to 0012 (hats up) first")
    verb = "ALTER" if _role_exists(cur, role) else "CREATE"
    cur.execute(sql.SQL(verb + " ROLE {} LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                        "NOBYPASSRLS PASSWORD {}").format(sql.Identifier(role), sql.Literal(_verifier(cur, role,
                                                                                                       password))))
    cur.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT {}").format(sql.Identifier(role),
                                                                     sql.Literal(CONNECTION_LIMIT)))
    for setting, value in (("statement_timeout", STATEMENT_TIMEOUT),
                           ("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION_TIMEOUT)):
        cur.execute(sql.SQL("ALTER ROLE {} SET {} = {}").format(sql.Identifier(role), sql.Identifier(setting),
                                                                 sql.Literal(value)))
    cur.execute(sql.SQL("GRANT {} TO {} WITH INHERIT TRUE, SET FALSE, ADMIN FALSE").format(
        sql.Identifier(GROUP), sql.Identifier(role)))
    cur.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(
        sql.Identifier(role), sql.Literal(f"Analyst of home {tenant_id}: reads its rows only")))
    return IamAccount(system="postgresql", name=role, purpose=PURPOSE)


def set_analyst_role_enabled(cur: psycopg.Cursor[Any], tenant_id: str, enabled: bool) -> None:
    """LOGIN or NOLOGIN; disabling also ends the role's open sessions, which NOLOGIN alone would keep."""
    role = analyst_role_name(tenant_id)
    if not _role_exists(cur, role):
        raise LookupError(f"no analyst role {role} for tenant {tenant_id}: add the tenant first")
    cur.execute(sql.SQL("ALTER ROLE {} " + ("LOGIN" if enabled else "NOLOGIN")).format(sql.Identifier(role)))
    if not enabled:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))


def drop_analyst_role(cur: psycopg.Cursor[Any], tenant_id: str) -> None:
    """Drop the role (idempotent). It owns nothing and was granted nothing but its group membership, so
    no database keeps a dependency on it; its open sessions are ended first."""
    role = analyst_role_name(tenant_id)
    if not _role_exists(cur, role):
        return
    cur.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(role)))
    cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
    cur.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
