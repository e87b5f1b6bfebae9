"""The walking skeleton, end to end on the real stack: a Home Assistant eventstream message published
to Mosquitto → `python -m ingest_worker` → InfluxDB → the hourly Dagster asset → PostgreSQL analytics
→ read by the analyst role. The aggregate is checked against a reference computed here from the
published values.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import dagster as dg
import psycopg
import pytest

from ha_simulator.publish import Publisher, Target
from hats_assets.defs.common.resources import InfluxDBResource, PostgresResource
from hats_assets.defs.warehouse.assets import entity_hourly
from tests.conftest import Tenant, WorkerProcess, wait_for

pytestmark = pytest.mark.integration

# A complete hour inside the raw retention policy (30 days): InfluxDB refuses points older than that.
HOUR = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
PARTITION = HOUR.strftime("%Y-%m-%d-%H:%M")


def state_changed(entity_id: str, state: str, at: datetime, **attributes: object) -> bytes:
    new_state = {"entity_id": entity_id, "state": state, "attributes": attributes,
                 "last_changed": at.isoformat(), "last_updated": at.isoformat(), "context": {"id": "x"}}
    return json.dumps({"event_type": "state_changed",
                       "event_data": {"entity_id": entity_id, "old_state": None, "new_state": new_state}}).encode()


def publish(tenant: Tenant, payloads: list[bytes]) -> None:
    env = tenant.env
    publisher = Publisher(Target("127.0.0.1", int(env["HATS_MQTT_PORT"]), env["HATS_MQTT_PUBLISHER_USERNAME"],
                                 env["HATS_MQTT_PUBLISHER_PASSWORD"], tenant.topic), client_id=f"pub-{tenant.name}")
    try:
        for payload in payloads:
            publisher.publish(payload)
    finally:
        publisher.close()


def resources(tenant: Tenant) -> dict[str, object]:
    env = tenant.env
    return {
        "influxdb": InfluxDBResource(url=env["HATS_INFLUX_URL"], username=env["HATS_INFLUX_DAGSTER_USERNAME"],
                                     password=env["HATS_INFLUX_DAGSTER_PASSWORD"], tenant=tenant.name),
        "postgres": PostgresResource(dsn=env["HATS_DAGSTER_DSN"]),
    }


def analyst_rows(tenant: Tenant) -> list[tuple[object, ...]]:
    with psycopg.connect(tenant.env["HATS_ANALYST_DSN"]) as conn:
        return conn.execute(
            "SELECT entity_id, measurement, hour, mean, min, max, count, last FROM analytics.entity_hourly "
            "WHERE tenant_id = %s ORDER BY entity_id", (tenant.name,)).fetchall()


def test_eventstream_message_reaches_the_analyst(
    tenant: Tenant, start_worker: Callable[[dict[str, str]], WorkerProcess]
) -> None:
    worker = start_worker(tenant.env)
    fahrenheit = [68.0, 71.6, 75.2, 69.8]  # the porch sensor reports °F
    watts = [120.0, 0.0, 3500.5]
    payloads = [
        state_changed("sensor.porch", f"{v}", HOUR + timedelta(minutes=10 * i), unit_of_measurement="°F",
                      device_class="temperature", state_class="measurement")
        for i, v in enumerate(fahrenheit)
    ] + [
        state_changed("sensor.plug", f"{v}", HOUR + timedelta(minutes=5 + 15 * i), unit_of_measurement="W")
        for i, v in enumerate(watts)
    ] + [
        state_changed("sensor.plug", "unavailable", HOUR + timedelta(minutes=59)),  # not a number
        state_changed("sensor.plug", "1.0", HOUR + timedelta(hours=1)),  # the next hour: not in this partition
        b'{"event_type": "state_changed", "event_data": {broken',
    ]
    publish(tenant, payloads)

    wait_for(lambda: sum(s["values"][0][1] for s in tenant.influx("SELECT count(value) FROM raw./.*/")) == 8,
             "8 numeric points in InfluxDB")
    with psycopg.connect(tenant.env["HATS_PG_DSN"]) as conn:
        letters = wait_for(lambda: conn.execute(
            "SELECT reason, topic, payload FROM ops.dead_letters WHERE tenant_id = %s", (tenant.name,)).fetchall(),
            "the broken message in ops.dead_letters")
    assert [(r, t, bytes(p)) for r, t, p in letters] == [("invalid_json", tenant.topic, payloads[-1])]

    result = dg.materialize([entity_hourly], partition_key=PARTITION, resources=resources(tenant))
    assert result.success
    celsius = [(f - 32) * 5 / 9 for f in fahrenheit]
    expected = [
        ("sensor.plug", "power", HOUR, statistics.fmean(watts), min(watts), max(watts), len(watts), watts[-1]),
        ("sensor.porch", "temperature", HOUR, statistics.fmean(celsius), min(celsius), max(celsius), len(celsius),
         celsius[-1]),
    ]
    rows = analyst_rows(tenant)
    assert [row[:3] for row in rows] == [row[:3] for row in expected]
    for row, want in zip(rows, expected, strict=True):
        assert row[6] == want[6]
        for got, ref in zip(row[3:], want[3:], strict=True):
            assert got == pytest.approx(ref, rel=1e-9, abs=1e-12)
    metadata = result.asset_materializations_for_node("entity_hourly")[0].metadata
    assert metadata["points_read"].value == 7
    assert metadata["rows_upserted"].value == 2

    # A re-run replaces exactly its hour: same rows, nothing duplicated.
    again = dg.materialize([entity_hourly], partition_key=PARTITION, resources=resources(tenant))
    assert again.asset_materializations_for_node("entity_hourly")[0].metadata["rows_replaced"].value == 2
    assert analyst_rows(tenant) == rows

    assert worker.stop() == 0
    counters = worker.counters()
    assert counters["received"] == len(payloads)
    assert counters["written"] == len(payloads) - 1
    assert counters["dead_letter:invalid_json"] == 1
