"""The walking skeleton, end to end on the real stack: a Home Assistant eventstream message published
to Mosquitto → `python -m ingest_worker` → InfluxDB → the rollup and warehouse assets → PostgreSQL
analytics → read by the analyst role. The expected hour is worked out by hand in the test from the
published values (the thorough comparison with a reference is tests/integration/test_rollups.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import dagster as dg
import psycopg
import pytest

from hats_assets.defs.rollups.assets import rollups
from hats_assets.defs.warehouse.assets import daily_rollup, hourly_rollup
from tests.conftest import Tenant, WorkerProcess, wait_for
from tests.homeassistant import asset_resources, publish, state_changed

pytestmark = pytest.mark.integration

# Noon yesterday: inside the raw retention policy (30 days) and in a complete UTC day, the warehouse's
# partition.
HOUR = (datetime.now(UTC) - timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)
PARTITION = HOUR.strftime("%Y-%m-%d-%H:%M")
DAY = HOUR.strftime("%Y-%m-%d")
ASSETS = [rollups, hourly_rollup, daily_rollup]


def analyst_rows(tenant: Tenant) -> list[tuple[object, ...]]:
    with psycopg.connect(tenant.env["HATS_ANALYST_DSN"]) as conn:
        return conn.execute(
            "SELECT entity_id, measurement, hour, mean, min, max, count, last, coverage_pct "
            "FROM analytics.entity_hourly WHERE tenant_id = %s ORDER BY entity_id", (tenant.name,)).fetchall()


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
        state_changed("sensor.plug", "unavailable", HOUR + timedelta(minutes=59), unit_of_measurement="W"),
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

    resources = asset_resources(tenant)
    assert dg.materialize(ASSETS[:1], partition_key=PARTITION, resources=resources).success
    result = dg.materialize(ASSETS[1:], partition_key=DAY, resources=resources)
    assert result.success
    # States hold until the next one: the porch's four readings held 10, 10, 10 and 30 minutes; the plug
    # held 120 W for 15 min, 0 W for 15 min and 3500.5 W for 24 min, then was unavailable (not zero).
    celsius = [(f - 32) * 5 / 9 for f in fahrenheit]
    porch_mean = (10 * celsius[0] + 10 * celsius[1] + 10 * celsius[2] + 30 * celsius[3]) / 60
    plug_mean = (15 * watts[0] + 15 * watts[1] + 24 * watts[2]) / 54
    expected = [
        ("sensor.plug", "power", HOUR, plug_mean, min(watts), max(watts), 3, watts[-1], 90.0),
        ("sensor.porch", "temperature", HOUR, porch_mean, min(celsius), max(celsius), 4, celsius[-1], 100.0),
    ]
    rows = analyst_rows(tenant)
    assert [row[:3] for row in rows] == [row[:3] for row in expected]
    for row, want in zip(rows, expected, strict=True):
        assert row[6] == want[6]
        for got, ref in zip(row[3:], want[3:], strict=True):
            assert float(str(got)) == pytest.approx(ref, rel=1e-9, abs=1e-12)
    metadata = result.asset_materializations_for_node("hourly_rollup")[0].metadata
    assert metadata["rows_upserted"].value == 2

    # A re-run replaces exactly its day: same rows, nothing duplicated.
    again = dg.materialize(ASSETS[1:], partition_key=DAY, resources=resources)
    assert again.asset_materializations_for_node("hourly_rollup")[0].metadata["rows_replaced"].value == 2
    assert analyst_rows(tenant) == rows

    assert worker.stop() == 0
    counters = worker.counters()
    assert counters["received"] == len(payloads)
    assert counters["written"] == len(payloads) - 1
    assert counters["dead_letter:invalid_json"] == 1
