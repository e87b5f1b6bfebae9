"""An entity's quantity (its InfluxDB measurement) does not depend on a worker restart: the chaos soak
found `sensor.door_<n>_battery` of a statestream device stored under both `battery` and `state` (the
same point twice) after a worker SIGKILL under backlog, and the blocking check `one_series_per_entity`
failed for the hour.

The sequence, with the real broker and worker: a home's statestream attributes are retained (published
once, as the simulator's default does and as a real home's are once they stopped changing); the worker
caches them and is SIGKILLed; the entities' first states arrive while it is down. The restarted worker
has an empty cache, and the broker sends the session's backlog (the states and their timestamps) before
it replays the retained topics on the re-subscription, the home's other entities' attributes first:
released after `HOLD_S` with nothing describing them, the states landed in `state`; the retained copy
of each state, replayed after its attributes, landed in `battery`."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import Tenant, wait_for
from tests.integration.test_worker_durability import Start, publisher
from tests.integration.test_worker_formats import ns, sample, statestream_topic

pytestmark = pytest.mark.integration

DOORS = 8
# Other entities' retained attributes, replayed before the doors' (the broker's retained tree keeps
# insertion order): enough that the replay takes the restarted worker well over HOLD_S.
FILLER_ENTITIES = 25_000
FILLER_ATTRIBUTES = ("friendly_name", "icon", "attribution", "supported_features")
AT = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=250_001)
BATTERY_ATTRIBUTES: dict[str, object] = {"state_class": "measurement", "unit_of_measurement": "%",
                                         "device_class": "battery", "friendly_name": "Door battery"}


def door(n: int) -> str:
    return f"sensor.door_{n:05d}_battery"


def measurements(tenant: Tenant) -> dict[str, set[str]]:
    """Each entity's measurements, from InfluxDB's own series index."""
    found: dict[str, set[str]] = defaultdict(set)
    for series in tenant.influx("SHOW SERIES"):
        for (key,) in series["values"]:
            measurement, *tags = key.split(",")
            found[dict(tag.split("=", 1) for tag in tags)["entity_id"]].add(measurement)
    return dict(found)


def points(tenant: Tenant) -> dict[str, list[tuple[int, float]]]:
    found: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for series in tenant.influx("SELECT value FROM raw./.*/ GROUP BY entity_id"):
        found[series["tags"]["entity_id"]] += [(int(t), float(v)) for t, v in series["values"]]
    return dict(found)


def test_a_first_state_in_the_backlog_of_a_restarted_worker_keeps_its_entitys_quantity(
    tenant: Tenant, start_worker: Start
) -> None:
    pub = publisher(tenant)
    retained = 0
    for n in range(FILLER_ENTITIES):
        for name in FILLER_ATTRIBUTES:
            pub.publish(json.dumps(f"{name} {n}").encode(), retain=True,
                        topic=statestream_topic(tenant, f"sensor.filler_{n:05d}", name))
            retained += 1
    for n in range(DOORS):
        for name, value in BATTERY_ATTRIBUTES.items():
            pub.publish(json.dumps(value).encode(), topic=statestream_topic(tenant, door(n), name), retain=True)
            retained += 1
    worker = start_worker(tenant.env)  # its subscription creates the persistent session
    wait_for(lambda: sample(worker, "hats_messages_received_total", source="statestream") >= retained
             and sample(worker, "hats_unacked_messages") == 0, f"the first worker to take {retained} attributes")
    worker.kill()

    times = {door(n): AT + timedelta(seconds=n) for n in range(DOORS)}
    for n in range(DOORS):  # each door's first state, as mqtt_statestream publishes it (retained)
        pub.publish(f"{90 + n}".encode(), topic=statestream_topic(tenant, door(n), "state"), retain=True)
        for leaf in ("last_updated", "last_changed"):
            pub.publish(times[door(n)].isoformat().encode(), retain=True,
                        topic=statestream_topic(tenant, door(n), leaf))
    pub.close()

    worker = start_worker(tenant.env)
    expected = {door(n): [(ns(times[door(n)]), 90.0 + n)] for n in range(DOORS)}
    wait_for(lambda: all(len(points(tenant).get(entity, [])) >= 1 for entity in expected), "every door's point")
    # The retained replay (attributes, then each door's state again) is in once every attribute is taken.
    wait_for(lambda: sample(worker, "hats_messages_received_total", source="statestream") >= retained + 3 * DOORS * 2,
             "the retained replay")
    assert worker.stop() == 0
    assert measurements(tenant) == {entity: {"battery"} for entity in expected}
    assert points(tenant) == expected
