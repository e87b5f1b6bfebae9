"""`python -m ingest_worker.deadletters` after a fix: count and list what a worker dead-lettered, replay
it through today's parsers (dry run first), and see the point arrive in InfluxDB.

Replay does not apply HATS_MAX_PAYLOAD_BYTES (ingest_worker/deadletters.py `replay`): a message dead-
lettered as too large passes as soon as it parses. The test raises the limit for the replay anyway, as an
operator would after deciding the larger payloads are legitimate.

Replay goes through the same door as the worker (ingest_worker/door.py): the hours it writes are in
ops.ingest_hours, a message keeps its exact receipt time, the series budget holds, a statestream state
replayed alone is described from core.entities, and a message that fails again is superseded by a new dead
letter with today's reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from devstack.profile import PROJECT_ROOT
from tests.conftest import Tenant, wait_for
from tests.integration.test_worker_bad_input import letter_count
from tests.integration.test_worker_durability import Start, publisher
from tests.integration.test_worker_formats import (
    entity_points,
    ns,
    pg_rows,
    publish_statestream,
    state_changed,
    statestream_topic,
)
from tests.integration.test_worker_ingest_hours import hours

pytestmark = pytest.mark.integration

WORKER_LIMIT = 1024  # the lowest HATS_MAX_PAYLOAD_BYTES allowed
RAISED_LIMIT = 1024 * 1024
AT = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=654_321)
PREVIEW_BYTES = 120  # what `list` shows of a payload


def cli(tenant: Tenant, *args: str, **env: str) -> list[str]:
    """Run the CLI as an operator would (the tenant's settings in the environment); its output lines."""
    done = subprocess.run([sys.executable, "-m", "ingest_worker.deadletters", *args], cwd=PROJECT_ROOT,
                          env={**os.environ, **tenant.env, **env}, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def replayed_at(tenant: Tenant) -> list[object]:
    return [row[0] for row in pg_rows(tenant, "SELECT replayed_at FROM ops.dead_letters WHERE tenant_id = %s "
                                              "ORDER BY id", tenant.name)]


def hour_of(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def store_letter(tenant: Tenant, topic: str, payload: bytes, received_at: datetime, reason: str = "internal_error"
                 ) -> None:
    """A dead letter as a worker stores one (here: as if a parser bug had refused the message)."""
    pg_rows(tenant, "INSERT INTO ops.dead_letters (received_at, tenant_id, topic, payload, reason, detail) "
                    "VALUES (%s, %s, %s, %s, %s, 'a bug since fixed') RETURNING id",
            received_at, tenant.name, topic, payload, reason)


def test_count_list_and_replay_a_payload_too_large(tenant: Tenant, start_worker: Start) -> None:
    worker = start_worker({**tenant.env, "HATS_MAX_PAYLOAD_BYTES": str(WORKER_LIMIT)})
    # A real sensor whose attributes make the event larger than the worker's limit.
    big = state_changed("sensor.inverter", "4210.5", AT, unit_of_measurement="W", device_class="power",
                        friendly_name="Inverter", strings=[{"string": n, "voltage": 301.2, "current": 7.1,
                                                            "serial": f"SN-{n:08d}"} for n in range(24)])
    assert len(big) > WORKER_LIMIT
    pub = publisher(tenant)
    pub.publish(big)
    pub.publish(state_changed("sensor.marker", "1.0", AT))
    pub.close()
    wait_for(lambda: len(entity_points(tenant, "sensor.marker")) == 1, "the small message next to it")
    wait_for(lambda: letter_count(tenant) == 1, "the large one dead-lettered")
    assert worker.stop() == 0
    assert pg_rows(tenant, "SELECT topic, payload, reason FROM ops.dead_letters WHERE tenant_id = %s",
                   tenant.name) == [(tenant.topic, big, "payload_too_large")]

    assert cli(tenant, "count") == ["1  payload_too_large"]
    header, detail, preview = cli(tenant, "list")
    number, _day, _time, reason, where = header.split(" ")
    assert (number.startswith("#"), reason, where) == (True, "payload_too_large", tenant.topic)
    assert detail == f"{len(big)} bytes, over {WORKER_LIMIT}"
    assert preview == repr(big[:PREVIEW_BYTES])
    assert cli(tenant, "list", "--reason", "invalid_json") == []

    assert cli(tenant, "replay", "--dry-run", HATS_MAX_PAYLOAD_BYTES=str(RAISED_LIMIT)) == ["1  would replay"]
    assert entity_points(tenant, "sensor.inverter") == []  # a dry run writes nothing…
    assert replayed_at(tenant) == [None]  # …and marks nothing

    before = hours(tenant)
    assert before[hour_of(AT)][0] == 1  # the marker
    assert cli(tenant, "replay", HATS_MAX_PAYLOAD_BYTES=str(RAISED_LIMIT)) == ["1  points written", "1  replayed"]
    found = entity_points(tenant, "sensor.inverter")
    assert [(row["measurement"], row["time"], row["value"], row.get("source")) for row in found] == [
        ("power", ns(AT), 4210.5, None)]
    # The replayed point is counted in its hour, with a new version: the late-data sensor re-rolls the hour.
    points, version = hours(tenant)[hour_of(AT)]
    assert (points, version > before[hour_of(AT)][1]) == (2, True)
    assert all(isinstance(moment, datetime) for moment in replayed_at(tenant))
    assert cli(tenant, "count") == []  # nothing left to replay
    assert cli(tenant, "replay") == ["0  replayed"]  # and a second replay finds nothing


def test_a_replay_that_influxdb_still_refuses_stays_a_dead_letter(tenant: Tenant, start_worker: Start) -> None:
    """A point older than the raw retention policy is refused again on replay: the message must stay a dead
    letter (still counted), or it would vanish from the queue without being written. It is superseded: the
    old row is stamped, a new one with the same message and receipt time holds today's reason."""
    worker = start_worker(tenant.env)
    old = state_changed("sensor.meter", "12.5", AT - timedelta(days=60), unit_of_measurement="W")
    pub = publisher(tenant)
    pub.publish(old)
    pub.close()
    wait_for(lambda: letter_count(tenant) == 1, "the refused point dead-lettered")
    assert worker.stop() == 0
    assert cli(tenant, "count") == ["1  influx_rejected"]

    first = pg_rows(tenant, "SELECT topic, payload, received_at, reason FROM ops.dead_letters WHERE tenant_id = %s",
                    tenant.name)

    assert cli(tenant, "replay") == ["0  replayed", "1  still failing: influx_rejected"]
    assert entity_points(tenant, "sensor.meter") == []
    rows = pg_rows(tenant, "SELECT topic, payload, received_at, reason, replayed_at IS NULL FROM ops.dead_letters "
                           "WHERE tenant_id = %s ORDER BY id", tenant.name)
    assert rows == [(*first[0], False), (*first[0], True)], "the refusal must survive the replay, as a new letter"
    assert cli(tenant, "count") == ["1  influx_rejected"]
    assert cli(tenant, "replay") == ["0  replayed", "1  still failing: influx_rejected"]  # and again, never lost
    assert cli(tenant, "count") == ["1  influx_rejected"]


def test_a_statestream_state_replayed_alone_is_described_from_core_entities_at_its_exact_receipt_time(
        tenant: Tenant, start_worker: Start) -> None:
    """The worker learned sensor.porch (°F, temperature) from a full statestream burst; a later state of it,
    dead-lettered by a bug, replays without its attribute topics. Like a live state it gets the entity's
    unit from core.entities (22.5 °C, not a unitless 72.5 in `state`), and, carrying no timestamp, its
    receipt time, exact to the nanosecond (`int(ts * 1e9)` of this receipt time is 1 µs off)."""
    worker = start_worker(tenant.env)
    pub = publisher(tenant)
    publish_statestream(pub, tenant, "sensor.porch", b"68.0", AT - timedelta(minutes=5),
                        {"unit_of_measurement": "°F", "device_class": "temperature", "state_class": "measurement"})
    pub.close()
    wait_for(lambda: len(entity_points(tenant, "sensor.porch")) == 1, "the learned state")
    assert worker.stop() == 0
    received = AT.replace(microsecond=123_455)
    assert int(received.timestamp() * 1e9) != ns(received)  # the float multiply the replay used to do
    store_letter(tenant, statestream_topic(tenant, "sensor.porch", "state"), b"72.5", received)

    assert cli(tenant, "replay") == ["1  points written", "1  replayed"]
    found = [(row["measurement"], row["time"], row["value"], row["state"])
             for row in entity_points(tenant, "sensor.porch")]
    assert found == [("temperature", ns(AT - timedelta(minutes=5)), 20.0, None),
                     ("temperature", ns(received), 22.5, None)]
    assert hours(tenant)[hour_of(received)][0] >= 1


def test_replay_keeps_the_series_budget(tenant: Tenant) -> None:
    """Three new entities replayed under a budget of two: the third is refused (series_budget), as live."""
    for n in range(3):
        store_letter(tenant, tenant.topic, state_changed(f"sensor.budget_{n}", f"{n}.5", AT + timedelta(seconds=n),
                                                         unit_of_measurement="W"), AT)
    pg_rows(tenant, "UPDATE core.tenants SET series_budget = 2 WHERE tenant_id = %s RETURNING 1", tenant.name)
    assert cli(tenant, "replay", "--dry-run") == [
        "1  still failing: series_budget", "2  would replay"]
    assert cli(tenant, "replay") == [
        "2  points written", "2  replayed", "1  still failing: series_budget"]
    assert [bool(entity_points(tenant, f"sensor.budget_{n}")) for n in range(3)] == [True, True, False]
    assert cli(tenant, "count") == ["1  series_budget"]
    entities = pg_rows(tenant, "SELECT entity_id FROM core.entities WHERE tenant_id = %s ORDER BY 1", tenant.name)
    assert entities == [("sensor.budget_0",), ("sensor.budget_1",)]
