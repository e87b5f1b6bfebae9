"""Every service runs with authentication and least privilege (real Mosquitto, InfluxDB, PostgreSQL)."""

from __future__ import annotations

import uuid

import httpx
import psycopg
import pytest
from psycopg import errors, sql
from psycopg.conninfo import make_conninfo

from ingest_worker.tls import client_context
from tests.mqtt import connect_code, session

pytestmark = pytest.mark.integration

NOT_AUTHORIZED = 135  # MQTT 5 reason code


def test_mqtt_refuses_anonymous_and_wrong_passwords(stack_env: dict[str, str]) -> None:
    port = int(stack_env["HATS_MQTT_PORT"])
    assert connect_code(port, None, None).is_failure
    assert connect_code(port, stack_env["HATS_MQTT_USERNAME"], "wrong").is_failure
    assert not connect_code(port, stack_env["HATS_MQTT_USERNAME"], stack_env["HATS_MQTT_PASSWORD"]).is_failure


def test_mqtt_acl_worker_only_reads_publisher_only_writes_ha_topics(stack_env: dict[str, str]) -> None:
    port = int(stack_env["HATS_MQTT_PORT"])
    worker = (stack_env["HATS_MQTT_USERNAME"], stack_env["HATS_MQTT_PASSWORD"])
    publisher = (stack_env["HATS_MQTT_PUBLISHER_USERNAME"], stack_env["HATS_MQTT_PUBLISHER_PASSWORD"])
    topic = f"homeassistant/acl_{uuid.uuid4().hex[:8]}/state"
    # The demo's publisher is bound to its own client id (tenancy/broker.py): nobody else's.
    with session(port, *worker) as w, session(port, *publisher, client_id=publisher[0]) as p:
        assert w.subscribe(topic).value == 1  # granted QoS 1
        assert w.publish(topic, b"forged").value == NOT_AUTHORIZED
        # The dynamic security plugin refuses the subscription outright: the account has no read.
        assert p.subscribe(topic).value == NOT_AUTHORIZED
        assert p.publish(f"not_home_assistant/{uuid.uuid4().hex}", b"x").value == NOT_AUTHORIZED
        # The homes' prefixes live under hats/: the demo's shared account writes none of them.
        assert p.publish(f"hats/{uuid.uuid4().hex[:8]}/homeassistant/events", b"x").value == NOT_AUTHORIZED
        assert p.publish(topic, b"21.5").value == 0
        w.wait(lambda: len(w.received) == 1, "the publisher's message")
        assert [m.payload for m in w.received] == [b"21.5"]  # the forged one never arrived
        # The broker handles one connection's packets in order: once this PUBACK is back, a delivery
        # of 21.5 to the publisher's own subscription would already have arrived.
        assert p.publish(topic, b"22.0").value == 0
        assert p.received == []
    assert connect_code(port, *publisher, client_id="hats-ingest").value == NOT_AUTHORIZED
    assert connect_code(port, *publisher, client_id="").value == NOT_AUTHORIZED


def test_mqtt_admin_account_only_administers(stack_env: dict[str, str]) -> None:
    """The broker admin may use the dynamic-security control topic and nothing else; the worker may not
    use it at all (its `#` never matches `$` topics)."""
    port = int(stack_env["HATS_MQTT_PORT"])
    worker = (stack_env["HATS_MQTT_USERNAME"], stack_env["HATS_MQTT_PASSWORD"])
    admin = (stack_env["HATS_BROKER_ADMIN_USERNAME"], stack_env["HATS_BROKER_ADMIN_PASSWORD"])
    control = "$CONTROL/dynamic-security/v1"
    with session(port, *admin) as a, session(port, *worker) as w:
        assert a.publish("homeassistant/admin_probe", b"x").value == NOT_AUTHORIZED
        assert a.subscribe("homeassistant/#").value == NOT_AUTHORIZED
        assert w.publish(control, b'{"commands": [{"command": "listClients"}]}').value == NOT_AUTHORIZED
        assert w.subscribe(f"{control}/response").value == 1  # granted by `#`, yet nothing is delivered:
        assert a.subscribe(f"{control}/response").value == 1
        assert a.publish(control, b'{"commands": [{"command": "listClients"}]}').value == 0
        a.wait(lambda: len(a.received) == 1, "the broker's answer to the admin")
        assert b"hats_worker" in a.received[0].payload
        # Answers go to the asking client only; the worker's subscription saw nothing (ordered delivery:
        # its own next PUBACK would come after anything queued for it).
        assert w.publish(control, b"{}").value == NOT_AUTHORIZED
        assert w.received == []


def _influx(stack_env: dict[str, str], q: str, auth: tuple[str, str] | None, db: str = "hats_home") -> httpx.Response:
    return httpx.post(f"{stack_env['HATS_INFLUX_URL']}/query", data={"q": q, "db": db}, auth=auth, timeout=10,
    verify=client_context(stack_env["HATS_INFLUX_CA_FILE"]))


def test_influxdb_requires_auth_and_the_writer_cannot_read(stack_env: dict[str, str]) -> None:
    assert _influx(stack_env, "SHOW DATABASES", None).status_code == 401
    writer = (stack_env["HATS_INFLUX_USERNAME"], stack_env["HATS_INFLUX_PASSWORD"])
    # The worker's credential is the write gate's: InfluxDB does not know it (tests/integration/test_influx_gate.py).
    denied = _influx(stack_env, "SELECT * FROM raw.temperature LIMIT 1", writer)
    assert denied.status_code == 401, denied.text
    written = httpx.post(f"{stack_env['HATS_INFLUX_WRITE_URL']}/write", params={"db": "hats_home", "rp": "raw"},
                         content=b"acl_probe value=1.0", auth=writer, timeout=10,
                         verify=client_context(stack_env["HATS_INFLUX_CA_FILE"]))
    assert written.status_code == 204
    dagster = (stack_env["HATS_INFLUX_DAGSTER_USERNAME"], stack_env["HATS_INFLUX_DAGSTER_PASSWORD"])
    assert "error" not in _influx(stack_env, "SELECT * FROM raw.acl_probe", dagster).json()["results"][0]


# The analysts' whole interface (migrations/versions/0003, 0006, 0009, 0010) and the columns each one shows.
LOCAL_DAY = ["local_day", "time_zone", "day_hours", "hours_loaded", "complete", "imported_hours"]
ENERGY_PERIOD = ["period_hours", "hours_loaded", "complete", "imported_hours", "kwh", "meter_resets", "readings",
                 "area"]
ANALYST_VIEWS = {
    "entity_hourly": ["tenant_id", "entity_id", "friendly_name", "device_id", "measurement", "unit", "kind", "hour",
                      "mean", "min", "max", "count", "last", "consumption", "resets", "coverage_pct", "last_seen",
                      "area", "origin"],
    "entity_daily": ["tenant_id", "entity_id", "friendly_name", "device_id", "measurement", "unit", "kind",
                     *LOCAL_DAY, "mean", "min", "max", "count", "last", "consumption", "coverage_pct", "last_seen",
                     "area"],
    "energy_daily": ["tenant_id", "entity_id", "friendly_name", "device_id", *LOCAL_DAY, "kwh", "meter_resets",
                     "readings", "area"],
    "energy_weekly": ["tenant_id", "entity_id", "friendly_name", "device_id", "week_start", "week", "time_zone",
                      *ENERGY_PERIOD],
    "energy_monthly": ["tenant_id", "entity_id", "friendly_name", "device_id", "month_start", "month", "time_zone",
                       *ENERGY_PERIOD],
    "entity_daily_utc": ["tenant_id", "entity_id", "friendly_name", "device_id", "measurement", "unit", "kind",
                         "utc_day", "mean", "min", "max", "count", "last", "consumption", "coverage_pct",
                         "last_seen", "imported_hours", "area"],
    "energy_daily_utc": ["tenant_id", "entity_id", "friendly_name", "device_id", "utc_day", "kwh", "meter_resets",
                         "readings", "imported_hours", "area"],
    "device_last_seen": ["tenant_id", "device_id", "name", "manufacturer", "model", "last_seen", "battery_pct",
                         "battery_at", "availability_pct_7d", "area"],
    "data_quality_daily": ["tenant_id", "entity_id", "measurement", "day", "coverage_pct", "points",
                           "out_of_range_hours", "gaps", "incomplete_hours", "meter_dips"],
    "state_daily": ["tenant_id", "entity_id", "friendly_name", "device_id", "measurement", "local_day", "time_zone",
                    "day_hours", "hours_loaded", "complete", "state", "duration_s", "duration", "entries",
                    "share_pct", "area"],
    "home_day_status": ["tenant_id", "local_day", "time_zone", "day_hours", "hours_with_data", "hours_rolled_up",
                        "hours_failing_checks", "hours_loaded", "complete"],
}
# Since migration 0012 the views run with the reader's rights, so the analysts read the tables behind them,
# under row-level security (each home's analyst its own rows: tests/integration/test_analyst_isolation.py).
# 0013 adds what analytics.home_day_status reads: ops.ingest_hours, ops.rollup_watermarks and, of core.tenants,
# the columns tenant_id and time_zone only.
ANALYST_TABLES = ("analytics.hourly_rollup", "analytics.daily_rollup", "analytics.local_daily_rollup",
                  "analytics.state_local_daily", "core.entities", "core.devices", "core.areas", "ops.dq_results",
                  "ops.ingest_hours", "ops.rollup_watermarks", "core.tenants")
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


@pytest.mark.parametrize("statement", [
    # reading anything but the views and the tables behind them
    "SELECT count(*) FROM analytics.state_hourly",
    "SELECT name FROM core.tenants",
    "SELECT ha_url FROM core.tenants",
    "SELECT count(*) FROM iam.accounts",
    "SELECT count(*) FROM ops.dead_letters",
    "SELECT count(*) FROM ops.retention_audit",
    "SELECT last_value FROM ops.ingest_version",
    "SELECT nextval('ops.ingest_version')",
    "SELECT count(*) FROM alembic_version",
    # writing anywhere
    "INSERT INTO analytics.hourly_rollup (tenant_id, entity_id, quantity, kind, hour, count) "
    "VALUES ('x', 'sensor.x', 'x', 'gauge', now(), 1)",
    "DELETE FROM analytics.hourly_rollup",
    "UPDATE analytics.daily_rollup SET mean = 0",
    "TRUNCATE analytics.daily_rollup",
    "DELETE FROM analytics.local_daily_rollup",
    "INSERT INTO core.tenants (tenant_id, name) VALUES ('x', 'x')",
    "INSERT INTO ops.ingest_hours (tenant_id, hour, points) VALUES ('x', now(), 1)",
    "INSERT INTO ops.rollup_watermarks (tenant_id, hour, version, points) VALUES ('x', now(), 1, 1)",
    "DELETE FROM alembic_version",
    "CREATE TABLE analytics.analyst_owned (x int)",
    "CREATE VIEW analytics.analyst_view AS SELECT 1 AS x",
    "CREATE OR REPLACE VIEW analytics.entity_hourly AS SELECT 1 AS x",
    "CREATE TABLE analytics.hourly_rollup_p2099_01 PARTITION OF analytics.hourly_rollup "
    "FOR VALUES FROM ('2099-01-01') TO ('2099-02-01')",
    "CREATE TABLE public.analyst_owned (x int)",
    "CREATE TEMP TABLE analyst_owned (x int)",
    "CREATE SCHEMA analyst_owned",
    "DROP VIEW analytics.entity_daily",
    "ALTER VIEW analytics.energy_daily RENAME TO analyst_renamed",
    "COMMENT ON VIEW analytics.device_last_seen IS 'analyst'",
])
def test_analyst_is_refused_all_but_the_views_and_their_tables(stack_env: dict[str, str], statement: str) -> None:
    with psycopg.connect(stack_env["HATS_ANALYST_DSN"]) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute(statement)


@pytest.mark.parametrize("statement", [
    "INSERT INTO analytics.entity_hourly (tenant_id, entity_id, measurement, hour, count) "
    "VALUES ('x', 'sensor.x', 'x', now(), 1)",
    "UPDATE analytics.entity_daily SET mean = 0",
    "DELETE FROM analytics.energy_daily",
    "DELETE FROM analytics.energy_weekly",
    "UPDATE analytics.energy_daily_utc SET kwh = 0",
    "DELETE FROM analytics.device_last_seen",
])
def test_analyst_cannot_write_through_the_views(stack_env: dict[str, str], statement: str) -> None:
    # The joins make the views non-updatable, which PostgreSQL reports before it checks privileges; were
    # one ever simple enough to update, the missing INSERT/UPDATE/DELETE grant would refuse it instead
    # (test_analyst_privileges_are_select_on_the_views_and_their_tables checks there is none).
    with (psycopg.connect(stack_env["HATS_ANALYST_DSN"]) as conn,
          pytest.raises((errors.InsufficientPrivilege, errors.ObjectNotInPrerequisiteState))):
        conn.execute(statement)


@pytest.mark.parametrize("view", sorted(ANALYST_VIEWS))
def test_analyst_reads_the_views(stack_env: dict[str, str], view: str) -> None:
    # The views run with the reader's rights (0012): the operator's analyst reads every home through them.
    with psycopg.connect(stack_env["HATS_ANALYST_DSN"]) as conn:
        cur = conn.execute(sql.SQL("SELECT * FROM analytics.{} LIMIT 10").format(sql.Identifier(view)))
        cur.fetchall()
        assert [column.name for column in cur.description or []] == ANALYST_VIEWS[view]
        row = conn.execute(sql.SQL("SELECT count(*) FROM analytics.{}").format(sql.Identifier(view))).fetchone()
    assert row is not None
    assert row[0] >= 0


def test_analyst_privileges_are_select_on_the_views_and_their_tables(stack_env: dict[str, str]) -> None:
    """The catalogue, not a sample: every relation (month partitions included), sequence and schema."""
    with psycopg.connect(stack_env["HATS_PG_DSN"]) as conn:
        relations = conn.execute(
            "SELECT n.nspname || '.' || c.relname, p.privilege FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace CROSS JOIN unnest(%s::text[]) AS p(privilege) "
            "WHERE n.nspname IN ('core', 'ops', 'analytics', 'public') AND c.relkind IN ('r', 'p', 'v', 'm', 'f') "
            "AND (has_table_privilege('hats_analyst', c.oid, p.privilege) OR (p.privilege IN "
            "('SELECT', 'INSERT', 'UPDATE', 'REFERENCES') AND has_any_column_privilege('hats_analyst', c.oid, "
            "p.privilege)))", (list(TABLE_PRIVILEGES),)).fetchall()
        sequences = conn.execute(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'S' AND n.nspname IN ('core', 'ops', 'analytics', 'public') AND "
            "(has_sequence_privilege('hats_analyst', c.oid, 'USAGE') "
            "OR has_sequence_privilege('hats_analyst', c.oid, 'SELECT') "
            "OR has_sequence_privilege('hats_analyst', c.oid, 'UPDATE'))").fetchall()
        schemas = conn.execute(
            "SELECT nspname, p.privilege FROM pg_namespace CROSS JOIN unnest(ARRAY['USAGE', 'CREATE']) AS p(privilege) "
            "WHERE nspname IN ('core', 'ops', 'analytics', 'public') "
            "AND has_schema_privilege('hats_analyst', nspname, p.privilege)").fetchall()
        database = conn.execute(
            "SELECT has_database_privilege('hats_analyst', current_database(), 'CONNECT'), "
            "has_database_privilege('hats_analyst', current_database(), 'CREATE'), "
            "has_database_privilege('hats_analyst', current_database(), 'TEMPORARY')").fetchone()
        # Tables hats_dagster (or the migration role) creates later (month partitions) stay unreadable.
        future = conn.execute(
            "SELECT count(*) FROM pg_default_acl d CROSS JOIN LATERAL aclexplode(d.defaclacl) a "
            "WHERE a.grantee = 'hats_analyst'::regrole").fetchone()
    assert set(relations) == {(f"analytics.{view}", "SELECT") for view in ANALYST_VIEWS} | {
        (table, "SELECT") for table in ANALYST_TABLES}
    assert sequences == []
    assert set(schemas) == {("analytics", "USAGE"), ("core", "USAGE"), ("ops", "USAGE"), ("public", "USAGE")}
    assert database == (True, False, False)
    assert future == (0,)


def test_analyst_cannot_reach_dagster_storage(stack_env: dict[str, str]) -> None:
    dsn = make_conninfo(stack_env["HATS_ANALYST_DSN"], dbname="dagster")
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        psycopg.connect(dsn)


def test_ingest_role_writes_dead_letters_but_reads_no_analytics(stack_env: dict[str, str]) -> None:
    with psycopg.connect(stack_env["HATS_INGEST_DSN"]) as conn:
        conn.execute("INSERT INTO ops.dead_letters (received_at, topic, payload, reason) "
                     "VALUES (now(), 'probe', 'x', 'probe')")
        conn.rollback()
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM analytics.entity_hourly")
