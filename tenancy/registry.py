"""The Python API of tenant administration (`hats tenant …` is a thin shell over it).

Nothing half-made: every input is validated first; the PostgreSQL work (the `core.tenants` row, the
analyst role, `iam.accounts`, `ops.tenant_audit`) runs in one transaction that commits last; the
InfluxDB database, the broker accounts and the secret files are made before that commit, each with its
undo, and a failure anywhere undoes them in reverse order and rolls the transaction back. Removal deletes
the external objects first and commits last, so a failed removal leaves the row and can be run again.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, Protocol

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ingest_worker.contract import database_for
from tenancy import analyst_roles, iam, influx
from tenancy import secrets as tenant_secrets
from tenancy.broker import account_name
from tenancy.iam import IamAccount
from tenancy.settings import TenancySettings
from tenancy.spec import CHANGEABLE, TenantError, TenantSpec, translate

# Schemas whose tables with a tenant_id column are the home's data; billing is kept (invoices outlive a home)
# and so is the audit (who removed it, with what).
REMOVED_SCHEMAS = ("core", "ops", "analytics")
KEPT_TABLES = ("ops.tenant_audit",)
TENANT_TABLES = """
    SELECT c.table_schema, c.table_name
      FROM information_schema.columns c
      JOIN pg_class k ON k.oid = format('%%I.%%I', c.table_schema, c.table_name)::regclass
     WHERE c.column_name = 'tenant_id' AND c.table_schema = ANY(%s)
       AND format('%%s.%%s', c.table_schema, c.table_name) <> ALL(%s)
       AND k.relkind IN ('r', 'p') AND NOT k.relispartition
     ORDER BY c.table_schema = 'core' AND c.table_name = 'tenants', c.table_schema, c.table_name"""
ROW_COLUMNS = ("tenant_id", "name", "topic_prefix", "broker_url", "broker_username", "ha_url", "time_zone",
               "time_zone_source", "series_budget", "raw_days", "rollup_months", "status", "created_at",
               "disabled_at", "updated_at")
SELECT_ROW = sql.SQL("SELECT {} FROM core.tenants").format(sql.SQL(", ").join(map(sql.Identifier, ROW_COLUMNS)))
AUDIT_INSERT = """
    INSERT INTO ops.tenant_audit (tenant_id, action, actor, details)
    VALUES (%s, %s, %s || ' as ' || session_user, %s)"""
HOME_ACCOUNT_SECRETS = (tenant_secrets.MQTT_HOMEASSISTANT, tenant_secrets.MQTT_DEVICE)
# secret → kind of the broker account it is the password of (tenancy/broker.py's account_name)
HOME_ACCOUNT_KINDS = {tenant_secrets.MQTT_HOMEASSISTANT: "ha", tenant_secrets.MQTT_DEVICE: "device"}


class HomeBroker(Protocol):
    """The platform broker's per-home accounts (tenancy/broker.py's BrokerAdmin)."""

    def ensure_home_accounts(self, tenant_id: str, topic_prefix: str,
                             passwords: Mapping[str, str]) -> list[IamAccount]: ...

    def set_home_accounts_enabled(self, tenant_id: str, enabled: bool) -> None: ...

    def remove_home_accounts(self, tenant_id: str) -> list[str]: ...

    def home_account_names(self, tenant_id: str) -> list[str]: ...

    def set_password(self, username: str, password: str) -> None: ...


@dataclass(frozen=True)
class TenantRecord:
    """A `core.tenants` row as the operator sees it."""

    tenant_id: str
    name: str
    topic_prefix: str | None
    broker_url: str | None
    broker_username: str | None
    ha_url: str | None
    time_zone: str
    time_zone_source: str
    series_budget: int
    raw_days: int
    rollup_months: int
    status: str
    created_at: datetime
    disabled_at: datetime | None
    updated_at: datetime

    @property
    def database(self) -> str:
        return database_for(self.tenant_id)

    def spec(self) -> TenantSpec:
        fields = {name: getattr(self, name) for name in CHANGEABLE}
        return TenantSpec(id=self.tenant_id, **fields)

    def as_json(self) -> dict[str, Any]:
        return {key: value.isoformat() if isinstance(value, datetime) else value
                for key, value in asdict(self).items()}


@dataclass(frozen=True)
class TenantDetails:
    """What `show` reports: the row, its accounts, its latest metered day and which secrets it has."""

    record: TenantRecord
    accounts: list[dict[str, Any]]
    latest_usage: dict[str, Any] | None
    secrets: list[str]
    database_exists: bool

    def as_json(self) -> dict[str, Any]:
        def plain(row: Mapping[str, Any]) -> dict[str, Any]:
            return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in row.items()}
        return {"tenant": self.record.as_json(), "database": self.record.database,
                "database_exists": self.database_exists, "accounts": [plain(a) for a in self.accounts],
                "latest_usage": plain(self.latest_usage) if self.latest_usage else None, "secrets": self.secrets}


@dataclass
class RemovalPlan:
    """Everything `remove` deletes (billing rows stay); ``done`` once it acted."""

    tenant_id: str
    database: str | None
    rows: dict[str, int]
    accounts: list[str]
    secrets: list[str]
    done: bool = False

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        verb = "removed" if self.done else "would remove"
        lines = [f"tenant {self.tenant_id}: {verb}",
                 f"  InfluxDB database: {self.database or '(none)'}",
                 "  PostgreSQL rows (billing.usage_daily and ops.tenant_audit are kept):"]
        lines += [f"    {table}: {count}" for table, count in self.rows.items()]
        lines.append(f"  accounts: {', '.join(self.accounts) or '(none)'}")
        lines.append(f"  secrets: {', '.join(self.secrets) or '(none)'}")
        return "\n".join(lines)


@dataclass
class _Undo:
    """What was made outside PostgreSQL, to unmake in reverse if the transaction does not commit."""

    steps: list[tuple[str, Callable[[], object]]] = field(default_factory=list)

    def push(self, what: str, action: Callable[[], object]) -> None:
        self.steps.append((what, action))

    def run(self) -> list[str]:
        """Undo everything; return what could not be undone (so the error can say what is left)."""
        failed = []
        for what, action in reversed(self.steps):
            try:
                action()
            except Exception as exc:  # undo the rest, then report every leftover
                failed.append(f"{what} ({exc})")
        self.steps.clear()
        return failed


def _os_user() -> str:
    """The operator's login name; in a container without a passwd entry, its uid."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


class TenantRegistry:
    """Add, list, show, change, disable, enable and remove homes, all or nothing, audited."""

    def __init__(self, settings: TenancySettings, broker: HomeBroker | None = None) -> None:
        self.settings = settings
        self.influx = influx.InfluxAdmin(settings.influx_url, settings.influx_admin_username,
                                         settings.influx_admin_password.get_secret_value(),
                                         verify=settings.influx_verify())
        self.secrets = tenant_secrets.TenantSecrets(settings.tenant_secrets_dir)
        self._broker = broker

    def close(self) -> None:
        self.influx.close()

    def __enter__(self) -> TenantRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def broker(self) -> HomeBroker:
        if self._broker is None:
            from tenancy.broker import BrokerAdmin

            self._broker = BrokerAdmin.from_settings(self.settings)
        return self._broker

    @contextmanager
    def _transaction(self) -> Iterator[tuple[psycopg.Cursor[Any], _Undo]]:
        """One PostgreSQL transaction committed last; on any failure the undo list runs and it rolls back."""
        undo = _Undo()
        with psycopg.connect(self.settings.pg_dsn.get_secret_value()) as conn:
            try:
                with conn.cursor() as cur:
                    yield cur, undo
                conn.commit()
            except BaseException as exc:
                conn.rollback()
                left = undo.run()
                if left:
                    exc.add_note("not undone, remove by hand: " + "; ".join(left))
                raise

    # ---- reading ------------------------------------------------------------------------------------

    @staticmethod
    def _row(cur: psycopg.Cursor[Any], tenant_id: str, lock: bool = False) -> TenantRecord | None:
        query = SELECT_ROW + sql.SQL(" WHERE tenant_id = %s") + sql.SQL(" FOR UPDATE" if lock else "")
        cur.execute(query, (tenant_id,))
        row = cur.fetchone()
        return TenantRecord(*row) if row else None

    def _existing(self, cur: psycopg.Cursor[Any], tenant_id: str, lock: bool = False) -> TenantRecord:
        record = self._row(cur, tenant_id, lock)
        if record is None:
            raise TenantError("id", f"no tenant {tenant_id!r}; `hats tenant list` shows the tenants")
        return record

    def list_tenants(self) -> list[TenantRecord]:
        with psycopg.connect(self.settings.pg_dsn.get_secret_value()) as conn, conn.cursor() as cur:
            cur.execute(SELECT_ROW + sql.SQL(" ORDER BY tenant_id"))
            return [TenantRecord(*row) for row in cur.fetchall()]

    def show(self, tenant_id: str) -> TenantDetails:
        with psycopg.connect(self.settings.pg_dsn.get_secret_value()) as conn, conn.cursor() as cur:
            record = self._existing(cur, tenant_id)
            accounts = iam.accounts_of(cur, tenant_id)
            cur.execute("""SELECT day, points_ingested, series, dead_letters, raw_bytes, rollup_bytes, measured_at
                             FROM billing.usage_daily WHERE tenant_id = %s ORDER BY day DESC LIMIT 1""",
                        (tenant_id,))
            usage = cur.fetchone()
            columns = [c.name for c in cur.description or ()]
        return TenantDetails(record, accounts, dict(zip(columns, usage, strict=True)) if usage else None,
                             self.secrets.present(tenant_id), record.database in self.influx.databases())

    # ---- adding -------------------------------------------------------------------------------------

    def add(self, spec: TenantSpec, *, ha_token: str | None = None, broker_password: str | None = None,
            exist_ok: bool = False) -> TenantRecord:
        """Make a home and everything that serves it. ``exist_ok`` (what `hats up` uses for the demo home):
        an existing row is kept as it is and whatever of the rest is missing is made."""
        if spec.broker_url is not None and broker_password is None and not exist_ok:
            raise TenantError("broker_password", "a home with its own broker account needs the worker's "
                                                 "password for it: name its environment variable")
        with self._transaction() as (cur, undo):
            record = self._row(cur, spec.id, lock=True)
            fresh = record is None
            if record is not None and not exist_ok:
                raise TenantError("id", f"tenant {spec.id!r} already exists; pick another id or "
                                        f"`hats tenant change {spec.id}`")
            if record is None:
                record = self._insert(cur, spec)
            made = self._provision(cur, undo, record, fresh,
                                   {tenant_secrets.HA_TOKEN: ha_token, tenant_secrets.BROKER_PASSWORD: broker_password})
            if fresh or made:
                details = {"spec": record.spec().model_dump(), "made": made}
                self._audit(cur, record.tenant_id, "add", details)
            return record

    def _insert(self, cur: psycopg.Cursor[Any], spec: TenantSpec) -> TenantRecord:
        row = spec.row()
        statement = sql.SQL("INSERT INTO core.tenants ({}, time_zone_source) VALUES ({}, %s)").format(
            sql.SQL(", ").join(map(sql.Identifier, row)), sql.SQL(", ").join(sql.Placeholder() * len(row)))
        source = "default" if spec.time_zone == "UTC" and "time_zone" not in spec.model_fields_set else "operator"
        try:
            cur.execute(statement, (*row.values(), source))
        except psycopg.Error as exc:
            refused = translate(exc, spec.id)
            if refused is None:
                raise
            raise refused from None
        return self._existing(cur, spec.id)

    def _provision(self, cur: psycopg.Cursor[Any], undo: _Undo, record: TenantRecord, fresh: bool,
                   given: Mapping[str, str | None]) -> list[str]:
        """The database, accounts and secrets of a home (idempotent); returns what it made."""
        tenant_id = record.tenant_id
        made: list[str] = []
        passwords: dict[str, str] = {}
        new_secrets: dict[str, str] = {name: value for name, value in given.items() if value is not None}
        wanted = [tenant_secrets.PG_ANALYST] + (list(HOME_ACCOUNT_SECRETS) if record.topic_prefix else [])
        for name in wanted:
            existing = self.secrets.read(tenant_id, name)
            passwords[name] = existing or new_secrets.setdefault(name, tenant_secrets.generate_password())
        if influx.ensure_database(self.influx, tenant_id, record.raw_days, record.rollup_months,
                                  self.settings.influx_writer_username, self.settings.influx_dagster_username):
            made.append(f"influxdb:{record.database}")
            undo.push(f"InfluxDB database {record.database}", lambda: influx.drop_database(self.influx, tenant_id))
        accounts = [analyst_roles.ensure_analyst_role(cur, tenant_id, passwords[tenant_secrets.PG_ANALYST])]
        if record.topic_prefix:
            home_passwords = {name: passwords[name] for name in HOME_ACCOUNT_SECRETS}
            try:
                accounts += self.broker.ensure_home_accounts(tenant_id, record.topic_prefix, home_passwords)
            except Exception as exc:
                if fresh:
                    self._unmake_home_accounts(tenant_id, exc)
                raise
            if fresh:
                undo.push(f"broker accounts of {tenant_id}", lambda: self.broker.remove_home_accounts(tenant_id))
            else:
                self._set_home_passwords(tenant_id, {k: v for k, v in new_secrets.items() if k in home_passwords})
        cur.execute("SELECT system, name FROM iam.accounts WHERE tenant_id = %s", (tenant_id,))
        known = {(system, name) for system, name in cur.fetchall()}
        made += [f"{a.system}:{a.name}" for a in accounts if (a.system, a.name) not in known]
        iam.record(cur, tenant_id, accounts)
        for name, value in new_secrets.items():
            undo.push(f"secret {tenant_id}/{name}", partial(self.secrets.remove, tenant_id, name))
            self.secrets.write(tenant_id, name, value)
            made.append(f"secret:{name}")
        return made

    def _set_home_passwords(self, tenant_id: str, generated: Mapping[str, str]) -> None:
        """An existing broker account keeps its password on ensure (tenancy/broker.py); when its secret file
        was missing and a new password was generated, the account must get that one."""
        for name, password in generated.items():
            self.broker.set_password(account_name(tenant_id, HOME_ACCOUNT_KINDS[name]), password)

    def _unmake_home_accounts(self, tenant_id: str, failure: Exception) -> None:
        """After a failed ensure, remove what it may have made of a new home's accounts. When the removal
        fails the way the ensure did (the admin never got in), nothing was made."""
        try:
            self.broker.remove_home_accounts(tenant_id)
        except Exception as exc:  # report, then let the ensure's own error propagate
            if str(exc) != str(failure):
                failure.add_note(f"not undone, remove by hand: broker accounts of {tenant_id} ({exc})")

    def _audit(self, cur: psycopg.Cursor[Any], tenant_id: str, action: str, details: Mapping[str, Any]) -> None:
        """Who (the OS user and the PostgreSQL session user) did what; details never hold a secret."""
        cur.execute(AUDIT_INSERT, (tenant_id, action, _os_user(), Jsonb(dict(details))))

    # ---- changing -----------------------------------------------------------------------------------

    def change(self, tenant_id: str, *, ha_token: str | None = None, broker_password: str | None = None,
               **fields: Any) -> TenantRecord:
        """Change fields of a home (see spec.CHANGEABLE) and whatever follows from them, all or nothing."""
        unknown = sorted(set(fields) - set(CHANGEABLE))
        if unknown:
            raise TenantError(unknown[0], f"cannot be changed; changeable: {', '.join(CHANGEABLE)}")
        if not fields and ha_token is None and broker_password is None:
            raise TenantError("fields", "nothing to change; give at least one field")
        with self._transaction() as (cur, undo):
            before = self._existing(cur, tenant_id, lock=True)
            merged = TenantSpec.parse(**(before.spec().model_dump() | {"id": tenant_id} | fields))
            if merged.broker_url is not None and broker_password is None and before.broker_url is None:
                raise TenantError("broker_password", "a home with its own broker account needs the worker's "
                                                     "password for it: name its environment variable")
            changed = {name: {"from": getattr(before, name), "to": getattr(merged, name)}
                       for name in CHANGEABLE if getattr(before, name) != getattr(merged, name)}
            if changed:
                assignments: list[sql.Composable] = [sql.SQL("{} = %s").format(sql.Identifier(name))
                                                     for name in changed]
                if "time_zone" in changed:
                    assignments.append(sql.SQL("time_zone_source = 'operator'"))
                statement = sql.SQL("UPDATE core.tenants SET {}, updated_at = now() WHERE tenant_id = %s").format(
                    sql.SQL(", ").join(assignments))
                try:
                    cur.execute(statement, (*(c["to"] for c in changed.values()), tenant_id))
                except psycopg.Error as exc:
                    refused = translate(exc, tenant_id)
                    if refused is None:
                        raise
                    raise refused from None
            if {"raw_days", "rollup_months"} & set(changed):
                influx.set_tier(self.influx, tenant_id, merged.raw_days, merged.rollup_months)
                undo.push("retention tier", lambda: influx.set_tier(self.influx, tenant_id, before.raw_days,
                                                                    before.rollup_months))
            if "topic_prefix" in changed:
                self._move_home_accounts(cur, undo, tenant_id, before.topic_prefix, merged.topic_prefix)
            replaced = []
            for name, value in ((tenant_secrets.HA_TOKEN, ha_token), (tenant_secrets.BROKER_PASSWORD,
                                                                       broker_password)):
                if value is not None:
                    self._replace_secret(undo, tenant_id, name, value)
                    replaced.append(name)
            self._audit(cur, tenant_id, "change", {"fields": changed, "secrets_replaced": replaced})
            return self._existing(cur, tenant_id)

    def _move_home_accounts(self, cur: psycopg.Cursor[Any], undo: _Undo, tenant_id: str, old: str | None,
                            new: str | None) -> None:
        """A new prefix confines the home's broker accounts to it; no prefix, no accounts on our broker."""
        def ensure(prefix: str) -> list[IamAccount]:
            passwords, generated = {}, {}
            for name in HOME_ACCOUNT_SECRETS:
                value = self.secrets.read(tenant_id, name)
                if value is None:
                    value = generated[name] = tenant_secrets.generate_password()
                    undo.push(f"secret {tenant_id}/{name}", partial(self.secrets.remove, tenant_id, name))
                    self.secrets.write(tenant_id, name, value)
                passwords[name] = value
            accounts = self.broker.ensure_home_accounts(tenant_id, prefix, passwords)
            self._set_home_passwords(tenant_id, generated)
            return accounts

        if new is None:
            removed = self.broker.remove_home_accounts(tenant_id)
            if old is not None:
                undo.push("broker accounts (old prefix)", lambda: ensure(old))
            cur.execute("DELETE FROM iam.accounts WHERE tenant_id = %s AND system = 'mqtt' AND name = ANY(%s)",
                        (tenant_id, removed))
            return
        undo.push("broker accounts (old prefix)", (lambda: ensure(old)) if old is not None
                  else (lambda: self.broker.remove_home_accounts(tenant_id)))
        iam.record(cur, tenant_id, ensure(new))

    def _replace_secret(self, undo: _Undo, tenant_id: str, name: str, value: str) -> None:
        previous = self.secrets.read(tenant_id, name)
        undo.push(f"secret {tenant_id}/{name}",
                  (lambda: self.secrets.write(tenant_id, name, previous)) if previous is not None
                  else (lambda: self.secrets.remove(tenant_id, name)))
        self.secrets.write(tenant_id, name, value)

    # ---- disabling ----------------------------------------------------------------------------------

    def disable(self, tenant_id: str) -> TenantRecord:
        return self._set_enabled(tenant_id, False)

    def enable(self, tenant_id: str) -> TenantRecord:
        return self._set_enabled(tenant_id, True)

    def _set_enabled(self, tenant_id: str, enabled: bool) -> TenantRecord:
        """A disabled home keeps its data; its broker accounts and analyst role cannot log in."""
        with self._transaction() as (cur, undo):
            before = self._existing(cur, tenant_id, lock=True)
            status = "active" if enabled else "disabled"
            if before.status == status:
                return before
            cur.execute("""UPDATE core.tenants SET status = %s, updated_at = now(),
                                  disabled_at = CASE WHEN %s THEN NULL ELSE now() END
                            WHERE tenant_id = %s""", (status, enabled, tenant_id))
            analyst_roles.set_analyst_role_enabled(cur, tenant_id, enabled)
            iam.set_disabled(cur, tenant_id, not enabled)
            if before.topic_prefix:
                self.broker.set_home_accounts_enabled(tenant_id, enabled)
                undo.push("broker accounts' state", lambda: self.broker.set_home_accounts_enabled(tenant_id,
                                                                                                 not enabled))
            cur.execute("SELECT name FROM iam.accounts WHERE tenant_id = %s ORDER BY name", (tenant_id,))
            accounts = [name for (name,) in cur.fetchall()]
            self._audit(cur, tenant_id, "enable" if enabled else "disable",
                        {"status": {"from": before.status, "to": status}, "accounts": accounts})
            return self._existing(cur, tenant_id)

    # ---- removing -----------------------------------------------------------------------------------

    def remove(self, tenant_id: str, dry_run: bool = True) -> RemovalPlan:
        """The plan of what removing a home deletes; with ``dry_run=False`` it also deletes it, audited."""
        with self._transaction() as (cur, _undo):
            record = self._existing(cur, tenant_id, lock=not dry_run)
            cur.execute(TENANT_TABLES, (list(REMOVED_SCHEMAS), list(KEPT_TABLES)))
            tables = [(schema, table) for schema, table in cur.fetchall()]
            # Read before the rows go: iam.accounts goes with the tenant row (ON DELETE CASCADE).
            cur.execute("SELECT system || ':' || name FROM iam.accounts WHERE tenant_id = %s", (tenant_id,))
            accounts = {name for (name,) in cur.fetchall()}
            # A dry run counts the rows; a removal deletes them (the home's row last) and counts what went.
            # External objects go after the rows, the commit last: a failure leaves the row to remove again.
            statement = "SELECT count(*) FROM {}.{} WHERE tenant_id = %s" if dry_run else \
                "DELETE FROM {}.{} WHERE tenant_id = %s"
            rows = {}
            for schema, table in tables:
                cur.execute(sql.SQL(statement).format(sql.Identifier(schema), sql.Identifier(table)), (tenant_id,))
                counted = cur.fetchone() if dry_run else (cur.rowcount,)
                rows[f"{schema}.{table}"] = int(counted[0]) if counted else 0
            if dry_run and record.topic_prefix:
                accounts |= {f"mqtt:{name}" for name in self.broker.home_account_names(tenant_id)}
            database = record.database if record.database in self.influx.databases() else None
            plan = RemovalPlan(tenant_id, database, rows, sorted(accounts), self.secrets.present(tenant_id))
            if dry_run:
                return plan
            analyst_roles.drop_analyst_role(cur, tenant_id)
            if record.topic_prefix:
                removed = self.broker.remove_home_accounts(tenant_id)
                plan.accounts = sorted(accounts | {f"mqtt:{name}" for name in removed})
            influx.drop_database(self.influx, tenant_id)
            self.secrets.remove_all(tenant_id)
            plan.done = True
            self._audit(cur, tenant_id, "remove", {"plan": plan.as_json()})
            return plan
