"""Alembic owns every PostgreSQL object: upgrade, downgrade and upgrade again on a fresh database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from devstack import postgres
from devstack.profile import PROJECT_ROOT, Profile
from devstack.stack import migrate

pytestmark = pytest.mark.integration

SCHEMAS = "('core', 'ops', 'analytics')"
ROLES = {"hats_ingest", "hats_dagster", "hats_analyst", "hats_home_analysts", "hats_exporter", "hats_backup"}
# Since 0012 the views run with the reader's rights: the analysts read the tables behind them, under
# row-level security (tests/integration/test_analyst_isolation.py); never their month partitions.
# The tables behind the views (row-level security, 0012; 0013 adds those analytics.home_day_status reads, and of
# core.tenants only tenant_id and time_zone, a column grant has_table_privilege does not count).
ANALYST_TABLES = {"analytics.hourly_rollup", "analytics.daily_rollup", "analytics.local_daily_rollup",
                  "analytics.state_local_daily", "core.entities", "core.devices", "core.areas", "ops.dq_results",
                  "ops.ingest_hours", "ops.rollup_watermarks"}
VIEWS_0005 = {"analytics.entity_hourly", "analytics.entity_daily", "analytics.energy_daily",
              "analytics.device_last_seen"}
VIEWS_0008 = VIEWS_0005 | {"analytics.data_quality_daily"}
VIEWS_0009 = VIEWS_0008 | {"analytics.entity_daily_utc", "analytics.energy_daily_utc", "analytics.energy_weekly",
                           "analytics.energy_monthly"}
VIEWS = VIEWS_0009 | {"analytics.state_daily", "analytics.home_day_status"}
TABLES_0002 = {"core.tenants", "core.devices", "core.entities", "ops.dead_letters", "ops.retention_audit",
               "analytics.entity_hourly"}
TABLES_0004 = (TABLES_0002 - {"analytics.entity_hourly"}) | {
    "ops.ingest_hours", "ops.rollup_watermarks", "analytics.hourly_rollup", "analytics.daily_rollup"}
TABLES_0006 = TABLES_0004 | {"ops.dq_results"}
TABLES_0007 = TABLES_0006 | {"core.areas", "ops.websocket_resume"}
TABLES_0008 = TABLES_0007 | {"ops.imports", "ops.import_progress"}
TABLES_0009 = TABLES_0008 | {"analytics.local_daily_rollup"}
TABLES_0010 = TABLES_0009 | {"analytics.state_hourly", "analytics.state_local_daily"}
TABLES_HEAD = TABLES_0010 | {"ops.tenant_audit"}
PARTITIONED_0008 = {"analytics.hourly_rollup:hats_dagster", "analytics.daily_rollup:hats_dagster"}
PARTITIONED_0009 = PARTITIONED_0008 | {"analytics.local_daily_rollup:hats_dagster"}
PARTITIONED_HEAD = PARTITIONED_0009 | {"analytics.state_hourly:hats_dagster",
                                       "analytics.state_local_daily:hats_dagster"}
AREA_VIEWS = ("analytics.entity_hourly", "analytics.entity_daily", "analytics.device_last_seen")
SEQUENCES_0002 = {"ops.dead_letters_id_seq", "ops.retention_audit_id_seq"}
SEQUENCES_0004 = SEQUENCES_0002 | {"ops.ingest_version"}
SEQUENCES_0007 = SEQUENCES_0004 | {"ops.dq_results_id_seq"}
SEQUENCES_0010 = SEQUENCES_0007 | {"ops.imports_import_id_seq"}
SEQUENCES_HEAD = SEQUENCES_0010 | {"ops.tenant_audit_audit_id_seq"}


@pytest.fixture
def fresh_database(profile: Profile, secrets: dict[str, str]) -> Iterator[str]:
    name = f"migrations_{uuid.uuid4().hex[:8]}"
    postgres.ensure_database(profile, secrets, name)
    yield postgres.superuser_dsn(profile, secrets, name)
    with psycopg.connect(postgres.superuser_dsn(profile, secrets, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _head() -> str:
    head = ScriptDirectory.from_config(Config(str(PROJECT_ROOT / "alembic.ini"))).get_current_head()
    assert head is not None
    return head


def _analyst_dsn(stack_env: dict[str, str], database_dsn: str) -> str:
    return make_conninfo(stack_env["HATS_ANALYST_DSN"], dbname=conninfo_to_dict(database_dsn)["dbname"])


def _analyst_default_acl_0002(migrator_dsn: str) -> set[tuple[str, str, str, str]]:
    """Until 0003, every future table the migration role or hats_dagster made in analytics was analyst-readable."""
    migrator = psycopg.conninfo.conninfo_to_dict(migrator_dsn)["user"]
    return {(str(migrator), "analytics", "r", "SELECT"), ("hats_dagster", "analytics", "r", "SELECT")}


def _catalogue(dsn: str) -> dict[str, set[Any]]:
    with psycopg.connect(dsn) as conn:
        schemas = {r[0] for r in conn.execute(f"SELECT nspname FROM pg_namespace WHERE nspname IN {SCHEMAS}")}
        tables = {f"{r[0]}.{r[1]}" for r in conn.execute(
            f"SELECT schemaname, tablename FROM pg_tables WHERE schemaname IN {SCHEMAS}")}
        partitioned = {f"{r[0]}.{r[1]}:{r[2]}" for r in conn.execute(
            "SELECT n.nspname, c.relname, pg_get_userbyid(c.relowner) FROM pg_class c "
            f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'p' AND n.nspname IN {SCHEMAS}")}
        views = {f"{r[0]}.{r[1]}" for r in conn.execute(
            f"SELECT schemaname, viewname FROM pg_views WHERE schemaname IN {SCHEMAS}")}
        sequences = {f"{r[0]}.{r[1]}" for r in conn.execute(
            f"SELECT schemaname, sequencename FROM pg_sequences WHERE schemaname IN {SCHEMAS}")}
        analyst = {(f"{r[0]}.{r[1]}", r[2]) for r in conn.execute(
            "SELECT n.nspname, c.relname, p.privilege FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) AS p(privilege) "
            f"WHERE n.nspname IN {SCHEMAS} AND has_table_privilege('hats_analyst', c.oid, p.privilege)")}
        default_acl = {(r[0], r[1], r[2], r[3]) for r in conn.execute(
            "SELECT pg_get_userbyid(d.defaclrole), d.defaclnamespace::regnamespace::text, d.defaclobjtype, "
            "a.privilege_type FROM pg_default_acl d CROSS JOIN LATERAL aclexplode(d.defaclacl) a "
            "WHERE a.grantee = 'hats_analyst'::regrole")}
        extensions = {r[0] for r in conn.execute("SELECT extname FROM pg_extension")}
        # The platform's roles, not the homes' analysts (hats_analyst_<tenant>, made by tenancy per home).
        roles = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'hats\\_%' "
                                            "AND rolname NOT LIKE 'hats\\_analyst\\_%'")}
    return {"schemas": schemas, "tables": tables, "partitioned": partitioned, "views": views,
            "sequences": sequences, "analyst": analyst, "default_acl": default_acl, "extensions": extensions,
            "roles": roles}


def test_upgrade_downgrade_upgrade(fresh_database: str, stack_env: dict[str, str]) -> None:
    migrate(fresh_database)
    at_head = _catalogue(fresh_database)
    assert at_head["schemas"] == {"core", "ops", "analytics"}
    assert at_head["tables"] == TABLES_HEAD
    assert at_head["partitioned"] == PARTITIONED_HEAD
    assert at_head["views"] == VIEWS
    assert at_head["sequences"] == SEQUENCES_HEAD
    assert at_head["analyst"] == {(relation, "SELECT") for relation in VIEWS | ANALYST_TABLES}
    assert at_head["default_acl"] == set()
    assert {"uuid-ossp", "pgcrypto", "citext"} <= at_head["extensions"]
    assert at_head["roles"] == ROLES
    with psycopg.connect(fresh_database) as conn:
        assert conn.execute("SELECT uuid_generate_v4() IS NOT NULL, gen_random_uuid() IS NOT NULL, "
                            "'A'::citext = 'a'").fetchone() == (True, True, True)
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(_head(),)]

    migrate(fresh_database, "base", downgrade=True)
    at_base = _catalogue(fresh_database)
    assert at_base["schemas"] == set()
    assert at_base["tables"] == set()
    assert at_base["views"] == set()
    assert at_base["sequences"] == set()
    assert at_base["default_acl"] == set()
    assert not {"uuid-ossp", "pgcrypto", "citext"} & at_base["extensions"]
    # The roles are cluster-wide and the stack's own database still uses them: they must survive.
    assert at_base["roles"] == ROLES
    with psycopg.connect(stack_env["HATS_ANALYST_DSN"]) as conn:
        conn.execute("SELECT count(*) FROM analytics.entity_hourly")

    migrate(fresh_database)
    assert _catalogue(fresh_database) == at_head


INDEXES_0004 = {"entities_tenant_text_entity_idx", "entities_tenant_device_idx", "daily_rollup_tenant_day_idx"}


def _view_and_indexes(dsn: str) -> tuple[bool, set[str]]:
    """Whether entity_daily still joins through citext (0003), and which of the indexes 0003/0004 made exist."""
    with psycopg.connect(dsn) as conn:
        definition = conn.execute("SELECT pg_get_viewdef('analytics.entity_daily'::regclass)").fetchone()
        names = {row[0] for row in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE indexname = ANY(%s)",
            (["daily_rollup_day_idx", *INDEXES_0004],)).fetchall()}
    assert definition is not None
    return "citext" in str(definition[0]), names


def _area_columns(dsn: str) -> set[str]:
    """The analyst views that have an `area` column (0007), and the core tables with `area_id`."""
    with psycopg.connect(dsn) as conn:
        return {f"{r[0]}.{r[1]}" for r in conn.execute(
            "SELECT table_schema, table_name FROM information_schema.columns "
            "WHERE (table_schema, column_name) IN (('analytics', 'area'), ('core', 'area_id'))")}


def _origin_and_day_columns(dsn: str) -> set[str]:
    """Which columns of 0009 exist: hourly_rollup.origin, daily_rollup.imported_hours and the views' day names."""
    with psycopg.connect(dsn) as conn:
        return {f"{r[0]}.{r[1]}" for r in conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'analytics' "
            "AND column_name IN ('origin', 'imported_hours', 'day', 'local_day', 'utc_day') "
            "AND table_name IN ('hourly_rollup', 'daily_rollup', 'entity_hourly', 'entity_daily', 'energy_daily', "
            "'entity_daily_utc', 'energy_daily_utc')")}


def _view_comments(dsn: str) -> dict[str, object]:
    with psycopg.connect(dsn) as conn:
        rows = {view: conn.execute("SELECT obj_description(%s::regclass, 'pg_class')", (view,)).fetchone()
                for view in AREA_VIEWS}
    return {view: row[0] if row else None for view, row in rows.items()}


def test_each_step_downgrades_cleanly(fresh_database: str) -> None:
    migrate(fresh_database)
    at_head = _catalogue(fresh_database)
    assert _area_columns(fresh_database) == {*AREA_VIEWS, "analytics.entity_daily_utc", "analytics.energy_daily",
                                             "analytics.energy_daily_utc", "analytics.energy_weekly",
                                             "analytics.energy_monthly", "analytics.state_daily", "core.areas",
                                             "core.devices", "core.entities"}
    assert _origin_and_day_columns(fresh_database) == {
        "hourly_rollup.origin", "entity_hourly.origin", "daily_rollup.imported_hours", "daily_rollup.day",
        "entity_daily_utc.utc_day", "entity_daily_utc.imported_hours", "energy_daily_utc.utc_day",
        "energy_daily_utc.imported_hours", "entity_daily.local_day", "entity_daily.imported_hours",
        "energy_daily.local_day", "energy_daily.imported_hours"}

    # head → 0009: the state durations (two tables, one view) go, and what 0011 and 0012 added.
    migrate(fresh_database, "0009", downgrade=True)
    at_0009 = _catalogue(fresh_database)
    later = ("tables", "partitioned", "views", "analyst", "sequences")
    assert {k: v for k, v in at_0009.items() if k not in later} == {k: v for k, v in at_head.items() if k not in later}
    assert at_0009["sequences"] == SEQUENCES_0010
    assert (at_0009["tables"], at_0009["partitioned"]) == (TABLES_0009, PARTITIONED_0009)
    assert (at_0009["views"], at_0009["analyst"]) == (VIEWS_0009, {(view, "SELECT") for view in VIEWS_0009})
    migrate(fresh_database)
    assert _catalogue(fresh_database) == at_head

    # 0009 → 0008: the local days, origin and imported_hours go; entity_daily/energy_daily are UTC days again.
    migrate(fresh_database, "0008", downgrade=True)
    at_0008 = _catalogue(fresh_database)
    assert (at_0008["tables"], at_0008["partitioned"]) == (TABLES_0008, PARTITIONED_0008)
    assert (at_0008["views"], at_0008["analyst"]) == (VIEWS_0008, {(view, "SELECT") for view in VIEWS_0008})
    assert _origin_and_day_columns(fresh_database) == {"daily_rollup.day", "entity_daily.day", "energy_daily.day"}
    assert _area_columns(fresh_database) == {*AREA_VIEWS, "core.areas", "core.devices", "core.entities"}
    comments = _view_comments(fresh_database)
    assert all(comments.values())
    migrate(fresh_database)
    assert _catalogue(fresh_database) == at_head
    migrate(fresh_database, "0008", downgrade=True)
    assert _catalogue(fresh_database) == at_0008

    # 0008 → 0007: the import tables, their sequence and the tenants' time zone go.
    migrate(fresh_database, "0007", downgrade=True)
    at_0007 = _catalogue(fresh_database)
    assert (at_0007["tables"], at_0007["sequences"]) == (TABLES_0007, SEQUENCES_0007)
    with psycopg.connect(fresh_database) as conn:
        assert conn.execute("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'core' "
                            "AND table_name = 'tenants' AND column_name LIKE 'time_zone%'").fetchone() == (0,)
    migrate(fresh_database)
    assert _catalogue(fresh_database) == at_head
    migrate(fresh_database, "0007", downgrade=True)

    # 0007 → 0006: the area columns, core.areas and the resume table go; the views keep grants and comments.
    migrate(fresh_database, "0006", downgrade=True)
    at_0006 = _catalogue(fresh_database)
    assert at_0006["tables"] == TABLES_0006
    assert {k: v for k, v in at_0006.items() if k != "tables"} == {k: v for k, v in at_0007.items() if k != "tables"}
    assert _area_columns(fresh_database) == set()
    assert _view_comments(fresh_database) == comments
    migrate(fresh_database, "0007")
    assert _catalogue(fresh_database) == at_0007
    migrate(fresh_database, "0006", downgrade=True)

    # 0006 → 0005: only the data-quality view goes; 0005 → 0004: only ops.dq_results goes.
    migrate(fresh_database, "0005", downgrade=True)
    at_0005 = _catalogue(fresh_database)
    assert (at_0005["views"], at_0005["analyst"]) == (VIEWS_0005, {(view, "SELECT") for view in VIEWS_0005})
    migrate(fresh_database, "0004", downgrade=True)
    at_0004 = _catalogue(fresh_database)
    assert (at_0004["tables"], at_0004["sequences"]) == (TABLES_0004, SEQUENCES_0004)
    different = {"tables", "sequences", "views", "analyst"}
    same = {k: v for k, v in at_0004.items() if k not in different}
    assert same == {k: v for k, v in at_0006.items() if k not in different}
    assert at_0004["views"] == at_0005["views"]

    # 0004 → 0003: the views' joins go back to citext, the indexes 0004 added go.
    assert _view_and_indexes(fresh_database) == (False, INDEXES_0004)
    migrate(fresh_database, "0003", downgrade=True)
    assert _view_and_indexes(fresh_database) == (True, {"daily_rollup_day_idx"})
    assert _catalogue(fresh_database) == at_0004  # same relations, grants and owners

    # 0003 → 0002: the warehouse goes, the skeleton table (partitioned, loader-owned, analyst-readable) is back.
    migrate(fresh_database, "0002", downgrade=True)
    downgraded = _catalogue(fresh_database)
    assert downgraded["tables"] == TABLES_0002
    assert downgraded["partitioned"] == {"analytics.entity_hourly:hats_dagster"}
    assert downgraded["views"] == set()
    assert downgraded["sequences"] == SEQUENCES_0002
    assert downgraded["analyst"] == {("analytics.entity_hourly", "SELECT")}
    assert downgraded["default_acl"] == _analyst_default_acl_0002(fresh_database)

    migrate(fresh_database, "0001", downgrade=True)
    at_0001 = _catalogue(fresh_database)
    assert "analytics.entity_hourly" not in at_0001["tables"] | at_0001["views"]
    assert "core.entities" in at_0001["tables"]
    assert at_0001["default_acl"] == _analyst_default_acl_0002(fresh_database)

    # 0003's downgrade left exactly what 0002's upgrade builds.
    migrate(fresh_database, "0002")
    assert _catalogue(fresh_database) == downgraded

    migrate(fresh_database, "0003")
    assert _view_and_indexes(fresh_database) == (True, {"daily_rollup_day_idx"})
    migrate(fresh_database)
    assert _view_and_indexes(fresh_database) == (False, INDEXES_0004)
    upgraded = _catalogue(fresh_database)
    assert "analytics.entity_hourly" in upgraded["views"]
    assert "analytics.entity_hourly" not in upgraded["tables"]
    assert upgraded == at_head


def test_analyst_privileges_hold_in_a_migrated_database(fresh_database: str, stack_env: dict[str, str]) -> None:
    migrate(fresh_database)
    with psycopg.connect(fresh_database) as conn:
        conn.execute("INSERT INTO core.areas (tenant_id, area_id, name) VALUES ('home', 'kitchen', 'Kitchen'), "
                     "('home', 'hall', 'Hall')")
        conn.execute("INSERT INTO core.devices (tenant_id, device_id, name, area_id) VALUES ('home', 'd1', 'Probe "
                     "device', 'kitchen')")
        conn.execute("INSERT INTO core.entities (tenant_id, entity_id, device_id, domain, measurement, friendly_name, "
                     "unit_canonical, source) VALUES ('home', 'sensor.probe', 'd1', 'sensor', 'temperature', 'Probe', "
                     "'°C', 'statestream')")
        # As the loader does: hats_dagster adds a month partition and loads an hour, creates a table of its own.
        conn.execute("SET ROLE hats_dagster")
        conn.execute("CREATE TABLE analytics.hourly_rollup_p2026_11 PARTITION OF analytics.hourly_rollup "
                     "FOR VALUES FROM ('2026-11-01 00:00+00') TO ('2026-12-01 00:00+00')")
        conn.execute("INSERT INTO analytics.hourly_rollup (tenant_id, entity_id, quantity, kind, hour, mean, count, "
                     "available_s) VALUES ('home', 'sensor.probe', 'temperature', 'gauge', '2026-11-26 10:00+00', "
                     "21.5, 360, 1800)")
        conn.execute("CREATE TABLE analytics.dagster_scratch (x int)")
    with psycopg.connect(_analyst_dsn(stack_env, fresh_database)) as conn:
        for view in sorted(VIEWS):
            conn.execute(f"SELECT count(*) FROM {view}")
        # The view joins core.entities, which the operator's analyst reads (every home's rows, 0012).
        assert conn.execute("SELECT entity_id, friendly_name, unit, measurement, hour, mean, coverage_pct, area "
                            "FROM analytics.entity_hourly").fetchall() == [
            ("sensor.probe", "Probe", "°C", "temperature", datetime(2026, 11, 26, 10, tzinfo=UTC), 21.5,
             Decimal("50.00"), "Kitchen")]
        # Areas: an entity follows its device's area unless it has its own (as in Home Assistant).
        assert conn.execute("SELECT device_id, area FROM analytics.device_last_seen").fetchall() == [("d1", "Kitchen")]
        with psycopg.connect(fresh_database, autocommit=True) as owner:
            owner.execute("UPDATE core.entities SET area_id = 'hall' WHERE entity_id = 'sensor.probe'")
        assert conn.execute("SELECT area FROM analytics.entity_hourly").fetchall() == [("Hall",)]
        conn.rollback()
        # The tables behind the views are readable (row-level security), a month partition made later is not.
        for relation in sorted(ANALYST_TABLES):
            conn.execute(f"SELECT count(*) FROM {relation}")
        for relation in ("analytics.hourly_rollup_p2026_11", "analytics.dagster_scratch", "analytics.state_hourly",
                         "ops.websocket_resume", "iam.accounts", "alembic_version"):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(f"SELECT count(*) FROM {relation}")
            conn.rollback()
        # Of core.tenants, the home's id and time zone (analytics.home_day_status counts local days), no more.
        conn.execute("SELECT tenant_id, time_zone FROM core.tenants")
        for column in ("name", "ha_url", "broker_username", "topic_prefix"):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(f"SELECT {column} FROM core.tenants")
            conn.rollback()
