"""A tenant's InfluxDB database, the one way to make it: retention policies `raw` (the default) and `rollup`,
WRITE for the worker, ALL for Dagster; idempotent, and a change of tier is an ALTER.

Its own small admin client over the v1 `/query` endpoint (served by InfluxDB 1.x and by 2.x/3.x's
compatibility API): the code location's `InfluxDBResource` is a Dagster resource bound to one tenant
database and the devstack's helper is local-stack tooling, neither is for the operator's tools.
InfluxQL has no bound parameters for identifiers, so every identifier is quoted and escaped here.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from ingest_worker.contract import DATABASE_PREFIX, RAW_RP, ROLLUP_RP, database_for

ADMIN_TIMEOUT_S = 30.0
# The policy InfluxDB 1.x makes with every database: infinite duration and writable by the worker's account,
# so a write that named it (or no policy, before `raw` became the default) would never expire. Dropped.
AUTOGEN_RP = "autogen"
# Months → days as the retention asset converts them (hats_assets/defs/retention/assets.py): a month is
# 365.25 / 12 days and the policy is rounded up, so a retention run finds the policy where this left it.
DAYS_PER_MONTH = 365.25 / 12


def rollup_days(months: int) -> int:
    return round(months * DAYS_PER_MONTH + 0.5)


def ident(name: str) -> str:
    """An InfluxQL identifier, quoted and escaped."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class InfluxAdminError(RuntimeError):
    """InfluxDB refused an administrative statement; the message has its answer and the statement's verb."""


class InfluxAdmin:
    """The admin's connection; one HTTP client for its lifetime (making one per request costs ~55 ms of TLS
    context set-up each, most of a tenant's creation when measured)."""

    def __init__(self, url: str, username: str, password: str, verify: ssl.SSLContext | bool = True) -> None:
        """`verify`: the CA's context for an https:// InfluxDB (ingest_worker/tls.py)."""
        self.url = url
        self._client = httpx.Client(auth=(username, password), timeout=ADMIN_TIMEOUT_S, verify=verify)

    def close(self) -> None:
        self._client.close()

    def query(self, statement: str, database: str | None = None) -> list[dict[str, Any]]:
        """Run one statement as the admin; return its series. Statements here never carry a secret."""
        data = {"q": statement} | ({"db": database} if database else {})
        try:
            response = self._client.post(f"{self.url}/query", data=data)
        except httpx.HTTPError as exc:
            raise InfluxAdminError(f"InfluxDB at {self.url} unreachable ({exc}); is it running "
                                   "(HATS_INFLUX_URL)?") from exc
        if response.status_code != 200:
            raise InfluxAdminError(f"InfluxDB answered {response.status_code} to {statement.split()[0]} …: "
                                   f"{response.text[:300]} (check HATS_INFLUX_ADMIN_USERNAME/PASSWORD)")
        series: list[dict[str, Any]] = []
        for result in response.json().get("results", []):
            if "error" in result:
                raise InfluxAdminError(f"InfluxDB: {result['error']} (statement: {statement})")
            series.extend(result.get("series", []))
        return series

    def rows(self, statement: str, database: str | None = None) -> list[list[Any]]:
        return [row for series in self.query(statement, database) for row in series.get("values", [])]

    def databases(self) -> list[str]:
        return sorted(str(row[0]) for row in self.rows("SHOW DATABASES"))

    def retention_policies(self, database: str) -> dict[str, tuple[str, bool]]:
        """Policy name → (duration as InfluxDB prints it, e.g. ``720h0m0s``; whether it is the default)."""
        series = self.query(f"SHOW RETENTION POLICIES ON {ident(database)}")
        found: dict[str, tuple[str, bool]] = {}
        for one in series:
            columns = one["columns"]
            for row in one.get("values", []):
                record = dict(zip(columns, row, strict=True))
                found[str(record["name"])] = (str(record["duration"]), bool(record["default"]))
        return found

    def grants(self, user: str) -> dict[str, str]:
        """Database → privilege (``WRITE``, ``ALL PRIVILEGES``…) of one user."""
        return {str(row[0]): str(row[1]) for row in self.rows(f"SHOW GRANTS FOR {ident(user)}")}


def ensure_database(admin: InfluxAdmin, tenant_id: str, raw_days: int, rollup_months: int,
                    writer: str, dagster: str) -> bool:
    """Make (or bring up to date) the tenant's database; True when it did not exist before."""
    return ensure_named_database(admin, database_for(tenant_id), raw_days, rollup_days(rollup_months),
                                 writer, dagster)


def ensure_named_database(admin: InfluxAdmin, database: str, raw_days: int, rollup_days: int,
                          writer: str, dagster: str) -> bool:
    """The statements behind ``ensure_database``, for a database named directly (the benches' and the local
    stack's helpers size the rollup policy in days)."""
    created = database not in admin.databases()
    admin.query(f"CREATE DATABASE {ident(database)}")
    existing = admin.retention_policies(database)
    for policy, days, default in ((RAW_RP, raw_days, " DEFAULT"), (ROLLUP_RP, rollup_days, "")):
        verb = "ALTER" if policy in existing else "CREATE"
        admin.query(f"{verb} RETENTION POLICY {ident(policy)} ON {ident(database)} DURATION {days}d "
                    f"REPLICATION 1{default}")
    drop_autogen(admin, database)
    admin.query(f"GRANT WRITE ON {ident(database)} TO {ident(writer)}")
    admin.query(f"GRANT ALL ON {ident(database)} TO {ident(dagster)}")
    return created


def drop_autogen(admin: InfluxAdmin, database: str) -> bool:
    """Drop the `autogen` policy InfluxDB made with the database (never expiring, writable: a write to it
    escaped retention); True if it was there. Run at creation, at `hats up` for every hats database, and
    safe to repeat (`raw` is the default first, so the database never lacks one)."""
    if AUTOGEN_RP not in admin.retention_policies(database):
        return False
    admin.query(f"DROP RETENTION POLICY {ident(AUTOGEN_RP)} ON {ident(database)}")
    return True


def drop_every_autogen(admin: InfluxAdmin) -> list[str]:
    """`drop_autogen` on every hats database (those made before it existed); the databases it changed."""
    return [database for database in admin.databases()
            if database.startswith(DATABASE_PREFIX) and drop_autogen(admin, database)]


def set_tier(admin: InfluxAdmin, tenant_id: str, raw_days: int, rollup_months: int) -> None:
    """A change of retention tier: ALTER both policies (the retention asset may lengthen raw again)."""
    database = database_for(tenant_id)
    admin.query(f"ALTER RETENTION POLICY {ident(RAW_RP)} ON {ident(database)} DURATION {raw_days}d DEFAULT")
    admin.query(f"ALTER RETENTION POLICY {ident(ROLLUP_RP)} ON {ident(database)} "
                f"DURATION {rollup_days(rollup_months)}d")


def drop_database(admin: InfluxAdmin, tenant_id: str) -> bool:
    """Drop the tenant's database and its points; True if it existed (InfluxDB drops its grants with it)."""
    database = database_for(tenant_id)
    existed = database in admin.databases()
    admin.query(f"DROP DATABASE {ident(database)}")
    return existed
