"""Every service runs with authentication and least privilege (real Mosquitto, InfluxDB, PostgreSQL)."""

from __future__ import annotations

import uuid

import httpx
import psycopg
import pytest
from psycopg import errors

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
    with session(port, *worker) as w, session(port, *publisher) as p:
        assert w.subscribe(topic).value == 1  # granted QoS 1
        assert w.publish(topic, b"forged").value == NOT_AUTHORIZED
        p.subscribe(topic)  # Mosquitto grants the SUBACK but must never deliver: the ACL has no read
        assert p.publish(f"not_home_assistant/{uuid.uuid4().hex}", b"x").value == NOT_AUTHORIZED
        assert p.publish(topic, b"21.5").value == 0
        w.wait(lambda: len(w.received) == 1, "the publisher's message")
        assert [m.payload for m in w.received] == [b"21.5"]  # the forged one never arrived
        # The broker handles one connection's packets in order: once this PUBACK is back, a delivery
        # of 21.5 to the publisher's own subscription would already have arrived.
        assert p.publish(topic, b"22.0").value == 0
        assert p.received == []


def _influx(stack_env: dict[str, str], q: str, auth: tuple[str, str] | None, db: str = "hats_home") -> httpx.Response:
    return httpx.post(f"{stack_env['HATS_INFLUX_URL']}/query", data={"q": q, "db": db}, auth=auth, timeout=10)


def test_influxdb_requires_auth_and_the_writer_cannot_read(stack_env: dict[str, str]) -> None:
    assert _influx(stack_env, "SHOW DATABASES", None).status_code == 401
    writer = (stack_env["HATS_INFLUX_USERNAME"], stack_env["HATS_INFLUX_PASSWORD"])
    denied = _influx(stack_env, "SELECT * FROM raw.temperature LIMIT 1", writer)
    assert "not authorized" in denied.text
    written = httpx.post(f"{stack_env['HATS_INFLUX_URL']}/write", params={"db": "hats_home", "rp": "raw"},
                         content=b"acl_probe value=1.0", auth=writer, timeout=10)
    assert written.status_code == 204
    dagster = (stack_env["HATS_INFLUX_DAGSTER_USERNAME"], stack_env["HATS_INFLUX_DAGSTER_PASSWORD"])
    assert "error" not in _influx(stack_env, "SELECT * FROM raw.acl_probe", dagster).json()["results"][0]


@pytest.mark.parametrize("statement", [
    "SELECT count(*) FROM core.entities",
    "SELECT count(*) FROM core.tenants",
    "SELECT count(*) FROM ops.dead_letters",
    "SELECT count(*) FROM ops.retention_audit",
    "SELECT count(*) FROM alembic_version",
    "CREATE TABLE analytics.analyst_owned (x int)",
    "CREATE TABLE public.analyst_owned (x int)",
    "DELETE FROM analytics.entity_hourly",
    "INSERT INTO analytics.entity_hourly (tenant_id, entity_id, measurement, hour, count) "
    "VALUES ('x', 'sensor.x', 'x', now(), 1)",
])
def test_analyst_is_refused_everything_but_reading_analytics(stack_env: dict[str, str], statement: str) -> None:
    with psycopg.connect(stack_env["HATS_ANALYST_DSN"]) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute(statement)


def test_analyst_reads_analytics(stack_env: dict[str, str]) -> None:
    with psycopg.connect(stack_env["HATS_ANALYST_DSN"]) as conn:
        row = conn.execute("SELECT count(*) FROM analytics.entity_hourly").fetchone()
    assert row is not None
    assert row[0] >= 0


def test_analyst_cannot_reach_dagster_storage(stack_env: dict[str, str]) -> None:
    dsn = stack_env["HATS_ANALYST_DSN"].rsplit("/", 1)[0] + "/dagster"
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        psycopg.connect(dsn)


def test_ingest_role_writes_dead_letters_but_reads_no_analytics(stack_env: dict[str, str]) -> None:
    with psycopg.connect(stack_env["HATS_INGEST_DSN"]) as conn:
        conn.execute("INSERT INTO ops.dead_letters (received_at, topic, payload, reason) "
                     "VALUES (now(), 'probe', 'x', 'probe')")
        conn.rollback()
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM analytics.entity_hourly")
