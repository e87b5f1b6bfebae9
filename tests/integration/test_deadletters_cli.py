"""`python -m ingest_worker.deadletters` after a fix: count and list what a worker dead-lettered, replay
it through today's parsers (dry run first), and see the point arrive in InfluxDB.

Replay does not apply HATS_MAX_PAYLOAD_BYTES (ingest_worker/deadletters.py `replay`): a message dead-
lettered as too large passes as soon as it parses. The test raises the limit for the replay anyway, as an
operator would after deciding the larger payloads are legitimate.
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
from tests.integration.test_worker_formats import entity_points, ns, pg_rows, state_changed

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
    return [row[0] for row in pg_rows(tenant, "SELECT replayed_at FROM ops.dead_letters WHERE tenant_id = %s",
                                      tenant.name)]


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

    assert cli(tenant, "replay", HATS_MAX_PAYLOAD_BYTES=str(RAISED_LIMIT)) == ["1  points written", "1  replayed"]
    found = entity_points(tenant, "sensor.inverter")
    assert [(row["measurement"], row["time"], row["value"], row.get("source")) for row in found] == [
        ("power", ns(AT), 4210.5, None)]
    assert all(isinstance(moment, datetime) for moment in replayed_at(tenant))
    assert cli(tenant, "count") == []  # nothing left to replay
    assert cli(tenant, "replay") == ["0  replayed"]  # and a second replay finds nothing


def test_a_replay_that_influxdb_still_refuses_stays_a_dead_letter(tenant: Tenant, start_worker: Start) -> None:
    """A point older than the raw retention policy is refused again on replay: the dead letter must stay
    unreplayed (still counted, replayed_at NULL), or it would vanish from the queue without being written."""
    worker = start_worker(tenant.env)
    old = state_changed("sensor.meter", "12.5", AT - timedelta(days=60), unit_of_measurement="W")
    pub = publisher(tenant)
    pub.publish(old)
    pub.close()
    wait_for(lambda: letter_count(tenant) == 1, "the refused point dead-lettered")
    assert worker.stop() == 0
    assert cli(tenant, "count") == ["1  influx_rejected"]

    assert "1  still failing: influx_rejected" in cli(tenant, "replay")
    assert entity_points(tenant, "sensor.meter") == []
    assert replayed_at(tenant) == [None], "a dead letter InfluxDB refused again was marked as replayed"
    assert cli(tenant, "count") == ["1  influx_rejected"]
