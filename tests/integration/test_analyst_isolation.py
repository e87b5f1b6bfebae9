"""An analyst of one home reads only that home (migration 0012), as a real home analyst on real PostgreSQL.

A database of its own, migrated to head, with two homes seeded in every table an analyst can read
(inserted by the owners, month partitions made by ``hats_dagster`` after the migration, as the loader
makes them). The relations are enumerated from the catalogue at test time, so a future view or table is
covered without editing this file; the reference for each is the owner's own ``WHERE tenant_id = …``.
"""

from __future__ import annotations

import importlib.util
import secrets as token
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import psycopg
import pytest
from psycopg import sql

from devstack import postgres
from devstack.profile import PROJECT_ROOT, Profile
from devstack.stack import migrate
from hats_assets.defs.warehouse.tables import month_partition
from tenancy import iam
from tenancy.analyst_roles import (
    GROUP,
    analyst_role_name,
    drop_analyst_role,
    ensure_analyst_role,
    set_analyst_role_enabled,
)

pytestmark = pytest.mark.integration

HOUR = datetime(2026, 11, 26, 10, tzinfo=UTC)
DAY = date(2026, 11, 26)
# Every table 0012 puts under row-level security: what the analyst views read, and billing.
RLS_TABLES = sorted(["analytics.daily_rollup", "analytics.hourly_rollup", "analytics.local_daily_rollup",
                     "analytics.state_local_daily", "billing.usage_daily", "core.areas", "core.devices",
                     "core.entities", "ops.dq_results",
                     # 0013: what analytics.home_day_status reads
                     "core.tenants", "ops.ingest_hours", "ops.rollup_watermarks"])
PARTITIONED = ("hourly_rollup", "daily_rollup", "local_daily_rollup", "state_local_daily")
# Planner settings an analyst may change to reorder predicates or pick other scans.
PLANNER_SETTINGS: tuple[dict[str, str], ...] = (
    {},
    {"enable_seqscan": "off"},
    {"enable_indexscan": "off", "enable_bitmapscan": "off"},
    {"enable_seqscan": "off", "enable_indexscan": "off"},
    {"random_page_cost": "0", "cpu_operator_cost": "0"},
)


@dataclass(frozen=True)
class Home:
    tenant: str
    role: str
    password: str
    time_zone: str
    base: float  # every number of this home's rows is offset by it: no value is shared with the other home


@dataclass(frozen=True)
class Warehouse:
    owner_dsn: str
    profile: Profile
    database: str
    a: Home
    b: Home
    operator_password: str  # hats_analyst's, the stack's (HATS_ANALYST_DSN): the role is cluster-wide

    def dsn(self, user: str, password: str) -> str:
        return postgres.dsn(self.profile, user, password, self.database)


def _seed(cur: psycopg.Cursor[Any], home: Home) -> None:
    """One home's rows in every table an analyst reads; every text names the home, every number is its own."""
    t, n = home.tenant, home.base
    cur.execute("INSERT INTO core.tenants (tenant_id, name, time_zone) VALUES (%s, %s, %s)",
                (t, f"Home {t}", home.time_zone))
    cur.execute("INSERT INTO core.areas (tenant_id, area_id, name) VALUES (%s, %s, %s)", (t, f"kitchen_{t}",
                                                                                        f"Kitchen of {t}"))
    cur.execute("INSERT INTO core.devices (tenant_id, device_id, name, manufacturer, model, area_id) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (t, f"dev_{t}", f"Device of {t}", f"Maker of {t}", f"Model of {t}", f"kitchen_{t}"))
    entities = ((f"sensor.temp_{t}", "temperature", "°C", "gauge"), (f"sensor.energy_{t}", "energy", "kWh", "counter"),
                (f"sensor.battery_{t}", "battery", "%", "gauge"))
    for entity, quantity, unit, _ in entities:
        cur.execute("INSERT INTO core.entities (tenant_id, entity_id, device_id, domain, measurement, unit_canonical, "
                    "friendly_name, registry_name, source) VALUES (%s, %s, %s, 'sensor', %s, %s, %s, %s, %s)",
                    (t, entity, f"dev_{t}", quantity, unit, f"Secret name {entity}", f"Registry {entity}",
                     f"statestream_{t}"))
    cur.execute("INSERT INTO core.entities (tenant_id, entity_id, device_id, domain, measurement, friendly_name, "
                "source) VALUES (%s, %s, %s, 'binary_sensor', 'binary', %s, %s)",
                (t, f"binary_sensor.door_{t}", f"dev_{t}", f"Door of {t}", f"statestream_{t}"))
    for i, (entity, quantity, _, kind) in enumerate(entities):
        v = n + i
        counter = kind == "counter"
        cur.execute("INSERT INTO analytics.hourly_rollup (tenant_id, entity_id, quantity, kind, hour, mean, min, max, "
                    "count, last, available_s, value_s, consumption, resets, last_seen) VALUES "
                    "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (t, entity, quantity, kind, HOUR, v + 0.25, v, v + 0.5, int(n) + 7, v + 0.125, 1800 + n,
                     (v + 0.25) * (1800 + n), v + 0.75 if counter else None, 1 if counter else None,
                     HOUR.replace(minute=int(n) % 60)))
        cur.execute("INSERT INTO analytics.daily_rollup (tenant_id, entity_id, quantity, kind, day, mean, min, max, "
                    "count, last, available_s, value_s, consumption, resets, imported_hours) VALUES "
                    "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (t, entity, quantity, kind, DAY, v + 0.25, v, v + 0.5, int(n) + 70, v + 0.125, 3600 + n,
                     (v + 0.25) * (3600 + n), v + 0.75 if counter else None, 1 if counter else None, int(n) % 24))
        cur.execute("INSERT INTO analytics.local_daily_rollup (tenant_id, entity_id, quantity, kind, local_day, "
                    "time_zone, day_hours, hours_loaded, imported_hours, mean, min, max, count, last, available_s, "
                    "value_s, consumption, resets) VALUES "
                    "(%s, %s, %s, %s, %s, %s, 24, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (t, entity, quantity, kind, DAY, home.time_zone, int(n) % 24, int(n) % 7, v + 0.25, v, v + 0.5,
                     int(n) + 700, v + 0.125, 3600 + n, (v + 0.25) * (3600 + n), v + 0.75 if counter else None,
                     1 if counter else None))
    for state, seconds in ((f"open_{t}", 600 + n), (f"closed_{t}", 1200 + n)):
        cur.execute("INSERT INTO analytics.state_local_daily (tenant_id, entity_id, quantity, local_day, state, "
                    "duration_s, entries, time_zone, day_hours, hours_loaded) VALUES (%s, %s, 'binary', %s, %s, %s, "
                    "%s, %s, 24, %s)", (t, f"binary_sensor.door_{t}", DAY, state, seconds, int(n) % 5, home.time_zone,
                                        int(n) % 24))
    cur.execute("INSERT INTO ops.dq_results (tenant_id, asset, check_name, window_start, window_end, passed, severity, "
                "failing, checked, details) VALUES (%s, %s, 'plausible_ranges', %s, %s, false, 'WARN', %s, %s, %s)",
                (t, f"asset_{t}", HOUR, HOUR.replace(hour=11), int(n) + 1, int(n) + 2,
                 psycopg.types.json.Jsonb([{"entity_id": f"sensor.temp_{t}", "value": n + 0.5}])))
    cur.execute("INSERT INTO ops.ingest_hours (tenant_id, hour, points) VALUES (%s, %s, %s)", (t, HOUR, int(n) + 11))
    cur.execute("INSERT INTO ops.rollup_watermarks (tenant_id, hour, version, points) "
                "SELECT tenant_id, hour, version, points FROM ops.ingest_hours WHERE tenant_id = %s", (t,))
    cur.execute("INSERT INTO billing.usage_daily (tenant_id, day, points_ingested, series, dead_letters, raw_bytes, "
                "rollup_bytes) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (t, DAY, int(n) * 1000 + 1, int(n) + 3, int(n) + 4, int(n) * 4096 + 5, int(n) * 512 + 6))


def _new_home(label: str, time_zone: str, base: float) -> Home:
    tenant = f"iso{label}_{uuid.uuid4().hex[:8]}"
    return Home(tenant, analyst_role_name(tenant), token.token_urlsafe(24), time_zone, base)


@pytest.fixture(scope="module")
def warehouse(profile: Profile, secrets: dict[str, str], stack_env: dict[str, str]) -> Iterator[Warehouse]:
    database = f"analyst_iso_{uuid.uuid4().hex[:8]}"
    postgres.ensure_database(profile, secrets, database)
    owner_dsn = postgres.superuser_dsn(profile, secrets, database)
    a, b = _new_home("a", "Europe/Amsterdam", 1000.0), _new_home("b", "Asia/Tokyo", 9000.0)
    try:
        migrate(owner_dsn)
        with psycopg.connect(owner_dsn) as conn, conn.cursor() as cur:
            # The loader's month partitions, made after the migration by their owner.
            cur.execute("SET ROLE hats_dagster")
            for table in PARTITIONED:
                cur.execute(month_partition(table, HOUR if table == "hourly_rollup" else DAY)[0])
            cur.execute("RESET ROLE")
            for home in (a, b):
                _seed(cur, home)
                iam.record(cur, home.tenant, [ensure_analyst_role(cur, home.tenant, home.password)])
        operator = str(psycopg.conninfo.conninfo_to_dict(stack_env["HATS_ANALYST_DSN"])["password"])
        yield Warehouse(owner_dsn, profile, database, a, b, operator)
    finally:
        with psycopg.connect(postgres.superuser_dsn(profile, secrets, "postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
            with conn.cursor() as cur:
                for home in (a, b):
                    drop_analyst_role(cur, home.tenant)


def _analyst_relations(owner_dsn: str) -> list[str]:
    """Every relation the home analysts' group or the operator's analyst can read, from the catalogue
    (partitions included, were any): a view granted to hats_analyst alone fails here for the homes."""
    with psycopg.connect(owner_dsn) as conn:
        rows = conn.execute(
            "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = "
            "c.relnamespace WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname NOT IN ('pg_catalog', "
            "'information_schema') AND (has_table_privilege(%s, c.oid, 'SELECT') "
            "OR has_table_privilege('hats_analyst', c.oid, 'SELECT')) ORDER BY 1", (GROUP,)).fetchall()
    return [str(row[0]) for row in rows]


def _columns(conn: psycopg.Connection[Any], relation: str) -> list[str]:
    rows = conn.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT "
                        "attisdropped ORDER BY attnum", (relation,)).fetchall()
    return [str(row[0]) for row in rows]


EVERY_ROW = sql.SQL("true")


def _rows(conn: psycopg.Connection[Any], relation: str, where: sql.Composable = EVERY_ROW,
          params: tuple[Any, ...] = ()) -> list[str]:
    query = sql.SQL("SELECT to_jsonb(r)::text FROM {} r WHERE {} ORDER BY 1").format(sql.SQL(relation), where)
    return [str(row[0]) for row in conn.execute(query, params).fetchall()]


def _by_tenant(conn: psycopg.Connection[Any], relation: str, tenant: str) -> list[str]:
    return _rows(conn, relation, sql.SQL("r.tenant_id::text = %s"), (tenant,))


def _only_in_b(owner: psycopg.Connection[Any], relation: str, wh: Warehouse) -> set[str]:
    """Every value (as text, 5+ characters) that B's rows of the relation hold and A's never do."""
    values: dict[str, set[str]] = {wh.a.tenant: set(), wh.b.tenant: set()}
    for column in _columns(owner, relation):
        for tenant, seen in values.items():
            query = sql.SQL("SELECT DISTINCT r.{}::text FROM {} r WHERE r.tenant_id::text = %s").format(
                sql.Identifier(column), sql.SQL(relation))
            seen |= {str(row[0]) for row in owner.execute(query, (tenant,)) if row[0] is not None}
    return {v for v in values[wh.b.tenant] - values[wh.a.tenant] if len(v) >= 5}


def test_every_analyst_relation_shows_a_home_its_rows_only(warehouse: Warehouse) -> None:
    wh = warehouse
    relations = _analyst_relations(wh.owner_dsn)
    # The views and the tables behind them; never a month partition (those are read through the parent).
    assert {"analytics.entity_hourly", "analytics.state_daily", "analytics.data_quality_daily",
            "analytics.hourly_rollup", "core.entities", "billing.usage_daily"} <= set(relations)
    assert not [r for r in relations if "_p20" in r]
    with (psycopg.connect(wh.owner_dsn) as owner,
          psycopg.connect(wh.dsn(wh.a.role, wh.a.password)) as home_a,
          psycopg.connect(wh.dsn(wh.b.role, wh.b.password)) as home_b,
          psycopg.connect(wh.dsn("hats_analyst", wh.operator_password)) as operator):
        for relation in relations:
            expected_a, expected_b = _by_tenant(owner, relation, wh.a.tenant), _by_tenant(owner, relation, wh.b.tenant)
            assert expected_a, f"{relation}: seed home A (a new analyst relation needs rows of both homes)"
            assert expected_b, f"{relation}: seed home B (a new analyst relation needs rows of both homes)"
            assert _rows(home_a, relation) == expected_a, relation
            assert _rows(home_b, relation) == expected_b, relation
            assert _by_tenant(home_a, relation, wh.b.tenant) == [], relation
            # The operator's cross-home role reads every home (this database has only these two with rows).
            assert _rows(operator, relation) == _rows(owner, relation), relation


@dataclass
class Attempt:
    """What an analyst's query showed: its rows, or its error, and the notices it raised, as one text."""

    conn: psycopg.Connection[Any]
    notices: list[str]

    @classmethod
    def open(cls, dsn: str) -> Attempt:
        conn = psycopg.connect(dsn, autocommit=True)
        attempt = cls(conn, [])
        conn.add_notice_handler(lambda d: attempt.notices.append(f"{d.message_primary} {d.message_detail}"))
        return attempt

    def settings(self, settings: dict[str, str]) -> None:
        self.conn.execute("RESET ALL")
        for name, value in settings.items():
            self.conn.execute(sql.SQL("SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))

    def run(self, query: sql.SQL | sql.Composed, params: tuple[Any, ...] = ()) -> str:
        try:
            return " ".join(str(row) for row in self.conn.execute(query, params).fetchall())
        except psycopg.Error as error:
            d = error.diag
            return f"ERROR {d.message_primary} {d.message_detail} {d.message_hint} {d.context}"


def _leaked(text: str, secrets_of_b: set[str]) -> list[str]:
    return sorted(value for value in secrets_of_b if value in text)


def _casts_and_notices(wh: Warehouse, probe: str) -> tuple[list[str], set[str], str]:
    """Every column of every analyst relation, as home A, under every planner setting, with ``probe``
    (a predicate template over ``{column}``) in WHERE; returns the leaks found, B's values that were
    looked for, and all that A's queries showed."""
    leaks: list[str] = []
    looked_for: set[str] = set()
    shown: list[str] = []
    with psycopg.connect(wh.owner_dsn) as owner:
        relations = {relation: (_columns(owner, relation), _only_in_b(owner, relation, wh))
                     for relation in _analyst_relations(wh.owner_dsn)}
    home_a = Attempt.open(wh.dsn(wh.a.role, wh.a.password))
    with home_a.conn:
        for settings in PLANNER_SETTINGS:
            home_a.settings(settings)
            for relation, (columns, secrets_of_b) in relations.items():
                looked_for |= secrets_of_b
                for column in columns:
                    home_a.notices.clear()
                    query = sql.SQL("SELECT to_jsonb(r)::text FROM {} r WHERE {}").format(
                        sql.SQL(relation), sql.SQL(probe).format(column=sql.Identifier(column)))
                    text = home_a.run(query) + " " + " ".join(home_a.notices)
                    shown.append(text)
                    leaks += [f"{relation}.{column} {settings}: {value}" for value in _leaked(text, secrets_of_b)]
    return leaks, looked_for, "\n".join(shown)


def test_cast_errors_in_predicates_show_nothing_of_another_home(warehouse: Warehouse) -> None:
    leaks, looked_for, shown = _casts_and_notices(warehouse, "r.{column}::text::int = 0")
    assert len(looked_for) >= 50  # B's names, ids, states, zone, numbers in every relation
    assert leaks == [], "\n".join(leaks)
    # The casts did fail on A's own values (the trick works; it only never reaches B's rows).
    assert "Secret name sensor.temp_" + warehouse.a.tenant in shown
    assert f"open_{warehouse.a.tenant}" in shown


def test_a_notice_function_in_where_sees_nothing_of_another_home(warehouse: Warehouse) -> None:
    wh = warehouse
    home_a = Attempt.open(wh.dsn(wh.a.role, wh.a.password))
    with home_a.conn:
        # An analyst cannot make a function of its own: no TEMP privilege, no CREATE on any schema.
        for schema in ("pg_temp", "public", "analytics", "core", "iam"):
            text = home_a.run(sql.SQL("CREATE FUNCTION {}.leak(v text) RETURNS boolean LANGUAGE sql "
                                      "AS 'SELECT true'").format(sql.Identifier(schema)))
            assert text.startswith("ERROR permission denied"), (schema, text)
    # So the owner makes one for it: cheap (evaluated first if the planner may), not leakproof, it
    # RAISEs NOTICE with every value it is given.
    with psycopg.connect(wh.owner_dsn) as owner:
        owner.execute("CREATE SCHEMA IF NOT EXISTS leak_probe")
        owner.execute("""CREATE OR REPLACE FUNCTION leak_probe.notice(v text) RETURNS boolean LANGUAGE plpgsql
                         COST 0.0000001 AS $$ BEGIN RAISE NOTICE 'saw %', v; RETURN true; END $$""")
        owner.execute(sql.SQL("GRANT USAGE ON SCHEMA leak_probe TO {}").format(sql.Identifier(GROUP)))
        owner.execute(sql.SQL("GRANT EXECUTE ON FUNCTION leak_probe.notice(text) TO {}").format(sql.Identifier(GROUP)))
    leaks, looked_for, shown = _casts_and_notices(wh, "leak_probe.notice(r.{column}::text)")
    assert len(looked_for) >= 50
    assert leaks == [], "\n".join(leaks)
    assert f"saw Secret name sensor.temp_{wh.a.tenant}" in shown  # the function did run, on A's rows


def test_a_predicate_that_fails_on_another_home_never_runs_on_its_rows(warehouse: Warehouse) -> None:
    wh = warehouse
    home_a = Attempt.open(wh.dsn(wh.a.role, wh.a.password))
    trick = "SELECT count(*) FROM {} r WHERE 1 / (CASE WHEN r.tenant_id::text = %s THEN 0 ELSE 1 END) = 1"
    with home_a.conn, psycopg.connect(wh.owner_dsn) as owner:
        for settings in PLANNER_SETTINGS:
            home_a.settings(settings)
            for relation in _analyst_relations(wh.owner_dsn):
                expected = len(_by_tenant(owner, relation, wh.a.tenant))
                query = sql.SQL(trick).format(sql.SQL(relation))
                assert home_a.run(query, (wh.b.tenant,)) == f"({expected},)", (relation, settings)
                # On A's own rows the same predicate does divide by zero: it was evaluated.
                assert home_a.run(query, (wh.a.tenant,)).startswith("ERROR division by zero"), (relation, settings)


def test_explain_shows_row_counts_never_values(warehouse: Warehouse) -> None:
    """EXPLAIN ANALYZE shows how many rows a scan's policy filter removed, so an analyst can learn how
    many rows other homes have in a table (and statistics estimates), never their values."""
    wh = warehouse
    home_a = Attempt.open(wh.dsn(wh.a.role, wh.a.password))
    with home_a.conn, psycopg.connect(wh.owner_dsn) as owner:
        home_a.settings({"enable_indexscan": "off", "enable_bitmapscan": "off"})
        for relation in _analyst_relations(wh.owner_dsn):
            plan = home_a.run(sql.SQL("EXPLAIN (ANALYZE, VERBOSE, FORMAT JSON) SELECT * FROM {}").format(
                sql.SQL(relation)))
            assert _leaked(plan, _only_in_b(owner, relation, wh)) == [], relation
            assert f"'Actual Rows': {len(_by_tenant(owner, relation, wh.a.tenant))}," in plan, relation
        others = owner.execute("SELECT count(*) FROM core.entities WHERE tenant_id::text <> %s",
                               (wh.a.tenant,)).fetchone()
        plan = home_a.run(sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) SELECT * FROM core.entities"))
    assert others is not None
    assert f"'Rows Removed by Filter': {others[0]}," in plan  # the count of other homes' entities


def test_partitions_are_read_through_their_parent_only(warehouse: Warehouse) -> None:
    wh = warehouse
    with psycopg.connect(wh.owner_dsn) as owner:
        # One more month, made now by the loader's role: default privileges must not open it.
        owner.execute("SET ROLE hats_dagster")
        owner.execute(month_partition("hourly_rollup", datetime(2027, 1, 5, tzinfo=UTC))[0])
        owner.execute("RESET ROLE")
        owner.commit()
        partitions = [str(row[0]) for row in owner.execute(
            "SELECT i.inhrelid::regclass::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE c.relnamespace = 'analytics'::regnamespace AND c.relkind IN ('r', 'p') ORDER BY 1")]
        readers = (GROUP, "hats_analyst", wh.a.role, wh.b.role, "public")
        readable = owner.execute(
            "SELECT part, reader FROM unnest(%s::text[]) part, unnest(%s::text[]) reader "
            "WHERE has_table_privilege(reader, part::regclass, 'SELECT')", (partitions, list(readers))).fetchall()
        default_acl = owner.execute(
            "SELECT pg_get_userbyid(d.defaclrole), a.grantee FROM pg_default_acl d "
            "CROSS JOIN LATERAL aclexplode(d.defaclacl) a WHERE a.grantee = 0 OR pg_has_role(a.grantee, %s, "
            "'MEMBER') OR a.grantee = 'hats_analyst'::regrole", (GROUP,)).fetchall()
    assert "analytics.hourly_rollup_p2027_01" in partitions
    assert len(partitions) == len(PARTITIONED) + 1
    assert readable == []
    assert default_acl == []
    home_a = Attempt.open(wh.dsn(wh.a.role, wh.a.password))
    with home_a.conn:
        for partition in partitions:
            text = home_a.run(sql.SQL("SELECT * FROM {}").format(sql.SQL(partition)))
            assert text.startswith("ERROR permission denied"), (partition, text)


def test_an_analyst_cannot_become_another(warehouse: Warehouse) -> None:
    wh = warehouse
    home_a = Attempt.open(wh.dsn(wh.a.role, wh.a.password))
    with home_a.conn:
        for statement in (f"SET ROLE {wh.b.role}", f"SET ROLE {GROUP}", "SET ROLE hats_analyst",
                          "SET ROLE hats_dagster", f"SET SESSION AUTHORIZATION {wh.b.role}",
                          "SET SESSION AUTHORIZATION hats_analyst"):
            text = home_a.run(sql.SQL(statement))
            assert text.startswith("ERROR permission denied"), (statement, text)
            assert home_a.run(sql.SQL("SELECT current_user, session_user")) == f"('{wh.a.role}', '{wh.a.role}')"
        # The tenant lookup answers only for a role this session may act as.
        assert home_a.run(sql.SQL("SELECT iam.analyst_tenant(current_user)")) == f"('{wh.a.tenant}',)"
        assert home_a.run(sql.SQL("SELECT iam.analyst_tenant(%s)"), (wh.b.role,)) == "(None,)"
        assert home_a.run(sql.SQL("SELECT count(*) FROM iam.accounts")).startswith("ERROR permission denied")


def _count_as(dsn: str, relation: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.SQL(relation))).fetchone()
    assert row is not None
    return int(row[0])


def test_a_disabled_or_unrecorded_analyst_reads_nothing(warehouse: Warehouse) -> None:
    """The role's home comes from its iam.accounts row: disabled there (or never recorded), it fails closed."""
    wh = warehouse
    home_a = wh.dsn(wh.a.role, wh.a.password)
    relations = _analyst_relations(wh.owner_dsn)
    assert all(_count_as(home_a, relation) > 0 for relation in relations)
    with psycopg.connect(wh.owner_dsn) as owner, owner.cursor() as cur:
        iam.set_disabled(cur, wh.a.tenant, True)
    try:
        assert {relation: _count_as(home_a, relation) for relation in relations} == dict.fromkeys(relations, 0)
        assert _count_as(wh.dsn(wh.b.role, wh.b.password), "analytics.entity_hourly") > 0
    finally:
        with psycopg.connect(wh.owner_dsn) as owner, owner.cursor() as cur:
            iam.set_disabled(cur, wh.a.tenant, False)
    assert all(_count_as(home_a, relation) > 0 for relation in relations)


def test_analyst_role_lifecycle(warehouse: Warehouse) -> None:
    wh = warehouse
    tenant = f"isoc_{uuid.uuid4().hex[:8]}"
    role, first, second = analyst_role_name(tenant), token.token_urlsafe(24), token.token_urlsafe(24)
    with psycopg.connect(wh.owner_dsn, autocommit=True) as owner, owner.cursor() as cur:
        with pytest.raises(ValueError, match="tenant_id 'Bad-Home' must match"):
            ensure_analyst_role(cur, "Bad-Home", first)
        with pytest.raises(ValueError, match=f"{tenant}/pg_analyst"):
            ensure_analyst_role(cur, tenant, "")
        cur.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", (role,))
        assert cur.fetchone() == (0,)  # nothing half-made
        try:
            account = ensure_analyst_role(cur, tenant, first)
            assert (account.system, account.name) == ("postgresql", role)
            cur.execute("SELECT rolcanlogin, rolinherit, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, "
                        "rolpassword LIKE 'SCRAM-SHA-256$%%' FROM pg_authid WHERE rolname = %s", (role,))
            assert cur.fetchone() == (True, True, False, False, False, False, True)
            cur.execute("SELECT inherit_option, set_option, admin_option FROM pg_auth_members m "
                        "WHERE m.member = %s::regrole AND m.roleid = %s::regrole", (role, GROUP))
            assert cur.fetchall() == [(True, False, False)]
            # Recorded for no home yet: it connects and reads nothing.
            assert _count_as(wh.dsn(role, first), "analytics.entity_hourly") == 0
            # Again with another password: the same role, the old password refused.
            ensure_analyst_role(cur, tenant, second)
            with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
                psycopg.connect(wh.dsn(role, first)).close()
            psycopg.connect(wh.dsn(role, second)).close()
            with psycopg.connect(wh.dsn(role, second)) as session:
                set_analyst_role_enabled(cur, tenant, False)
                with pytest.raises(psycopg.OperationalError):
                    session.execute("SELECT 1")  # its open session was ended
            with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
                psycopg.connect(wh.dsn(role, second)).close()
            set_analyst_role_enabled(cur, tenant, True)
            psycopg.connect(wh.dsn(role, second)).close()
        finally:
            drop_analyst_role(cur, tenant)
        cur.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", (role,))
        assert cur.fetchone() == (0,)
        drop_analyst_role(cur, tenant)  # idempotent
        with pytest.raises(LookupError, match=role):
            set_analyst_role_enabled(cur, tenant, True)


def test_the_services_write_and_read_every_home(warehouse: Warehouse, stack_env: dict[str, str]) -> None:
    """Row-level security narrows the analysts only: the worker and the loader keep what their grants give."""
    wh = warehouse

    def as_service(key: str) -> str:
        return psycopg.conninfo.make_conninfo(stack_env[key], dbname=wh.database)

    tenants = (wh.a.tenant, wh.b.tenant)
    with psycopg.connect(as_service("HATS_INGEST_DSN")) as ingest:
        for t in tenants:
            ingest.execute("INSERT INTO core.entities (tenant_id, entity_id, domain, measurement, source) "
                           "VALUES (%s, 'sensor.service_probe', 'sensor', 'temperature', 'statestream') "
                           "ON CONFLICT (tenant_id, entity_id) DO UPDATE SET friendly_name = 'probed'", (t,))
            ingest.execute("INSERT INTO core.areas (tenant_id, area_id, name) VALUES (%s, 'probe', 'Probe') "
                           "ON CONFLICT (tenant_id, area_id) DO UPDATE SET name = 'Probe'", (t,))
            ingest.execute("UPDATE core.devices SET last_seen = now() WHERE tenant_id = %s", (t,))
        seen = ingest.execute("SELECT tenant_id::text, count(*) FROM core.entities WHERE tenant_id::text = ANY(%s) "
                              "GROUP BY 1 ORDER BY 1", (list(tenants),)).fetchall()
    assert seen == [(t, 5) for t in sorted(tenants)]
    with psycopg.connect(as_service("HATS_DAGSTER_DSN")) as dagster:
        for table in ("ops.dq_results", "billing.usage_daily"):
            before = dagster.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.SQL(table))).fetchone()
            assert before == (2,), table
        # The usage asset's upsert (hats_assets/defs/billing/usage_upsert.sql); it deletes nothing (migration 0016).
        dagster.execute("INSERT INTO billing.usage_daily (tenant_id, day, points_ingested, series, dead_letters, "
                        "raw_bytes, rollup_bytes) VALUES (%s, %s, 1, 1, 0, 1, 1) ON CONFLICT (tenant_id, day) "
                        "DO UPDATE SET points_ingested = EXCLUDED.points_ingested", (wh.b.tenant, DAY))
        dagster.execute("INSERT INTO ops.dq_results (tenant_id, asset, check_name, window_start, window_end, passed, "
                        "severity) VALUES (%s, 'probe', 'probe', %s, %s, true, 'WARN')", (wh.a.tenant, HOUR, HOUR))
        dagster.execute("DELETE FROM ops.dq_results WHERE check_name = 'probe'")
        assert dagster.execute("SELECT count(*) FROM core.entities e JOIN core.devices d USING (tenant_id, device_id) "
                               "WHERE e.tenant_id::text = ANY(%s)", (list(tenants),)).fetchone() == (8,)
        dagster.rollback()  # leave the seed as it was for the other tests
    with psycopg.connect(wh.owner_dsn) as owner:
        owner.execute("DELETE FROM core.entities WHERE entity_id = 'sensor.service_probe'")
        owner.execute("DELETE FROM core.areas WHERE area_id = 'probe'")


def _isolation_catalogue(dsn: str) -> dict[str, Any]:
    """What 0012 makes in one database: RLS flags, policies, view options, the group's grants, the lookup."""
    with psycopg.connect(dsn) as conn:
        rls = conn.execute("SELECT c.oid::regclass::text FROM pg_class c WHERE c.relrowsecurity ORDER BY 1").fetchall()
        policies = conn.execute("SELECT schemaname, tablename, policyname, (SELECT string_agg(r, ',' ORDER BY r) FROM "
                                "unnest(roles) r), cmd, qual FROM pg_policies "
                                "ORDER BY 1, 2, 3").fetchall()
        views = conn.execute("SELECT c.oid::regclass::text, c.reloptions FROM pg_class c WHERE c.relkind = 'v' "
                             "AND c.relnamespace = 'analytics'::regnamespace ORDER BY 1").fetchall()
        grants = conn.execute("SELECT c.oid::regclass::text FROM pg_class c WHERE c.relnamespace::regnamespace::text "
                              "NOT IN ('pg_catalog', 'information_schema') AND "
                              "has_table_privilege(%s, c.oid, 'SELECT') ORDER BY 1", (GROUP,)).fetchall() \
            if conn.execute("SELECT to_regrole(%s)", (GROUP,)).fetchone() != (None,) else []
        lookup = conn.execute("SELECT to_regprocedure('iam.analyst_tenant(name)') IS NOT NULL").fetchone()
    return {"rls": rls, "policies": policies, "views": views, "grants": grants, "lookup": lookup}


def _exporter_policies() -> set[tuple[str, str, str]]:
    """The ops exporter's unfiltered read (migration 0014) on the tables under RLS it reads, from the migration."""
    path = PROJECT_ROOT / "migrations" / "versions" / "0014_ops_exporter_role.py"
    spec = importlib.util.spec_from_file_location("migration_0014", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {(table, module.POLICY, "hats_exporter") for table in module.UNDER_RLS}


def test_downgrade_to_0011_and_up_again(warehouse: Warehouse) -> None:
    wh = warehouse
    at_head = _isolation_catalogue(wh.owner_dsn)
    assert at_head["rls"] == [(table,) for table in RLS_TABLES]
    # Per table: the home analysts' (filtered), the operator's and the services' (unfiltered), and the ops
    # exporter's (unfiltered) on what it reads.
    assert {(f"{s}.{t}", name, roles) for s, t, name, roles, *_ in at_head["policies"]} == {
        (table, name, roles) for table in RLS_TABLES for name, roles in (
            ("home_analyst_reads_its_home", "hats_home_analysts"),
            ("operator_analyst_reads_every_home", "hats_analyst"),
            ("services_unfiltered", "hats_dagster,hats_ingest"))} | _exporter_policies()
    assert {tuple(options_) for _, options_ in at_head["views"]} == {("security_barrier=true", "security_invoker=true")}
    migrate(wh.owner_dsn, "0011", downgrade=True)
    try:
        at_0011 = _isolation_catalogue(wh.owner_dsn)
        assert at_0011["rls"] == []
        assert at_0011["policies"] == []
        assert {options_ for _, options_ in at_0011["views"]} == {None}  # (home_day_status, 0013, is gone too)
        assert at_0011["grants"] == []  # the group (kept for the stack's database) reads nothing here
        assert at_0011["lookup"] == (False,)
        # As before 0012: a home's role reads nothing, the operator reads the views (with their owner's rights).
        assert _count_as(wh.dsn("hats_analyst", wh.operator_password), "analytics.entity_hourly") == 6
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            _count_as(wh.dsn(wh.a.role, wh.a.password), "analytics.entity_hourly")
    finally:
        migrate(wh.owner_dsn)
    assert _isolation_catalogue(wh.owner_dsn) == at_head
    # The roles outlived the round trip in the group: isolation holds again at once.
    assert _count_as(wh.dsn(wh.a.role, wh.a.password), "analytics.entity_hourly") == 3
