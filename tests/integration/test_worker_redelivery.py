"""Messages stamped with their receipt time (no timestamp in the payload: zigbee2mqtt discovery states,
statestream states without `publish_timestamps`) stay one point each when the worker is SIGKILLed with
acknowledgements outstanding: the broker redelivers them (DUP) to the restarted worker, which takes
their receipt time from the client id's receipt journal (ingest_worker/receipts.py), so InfluxDB
overwrites the same point instead of storing a second one. A statestream state the source holds for its
attributes keeps its message unacknowledged until it is written, so a SIGKILL loses none of them."""

from __future__ import annotations

import json
import threading
from collections import Counter

import pytest

from tests.conftest import Tenant, wait_for
from tests.integration.test_worker_durability import Start, publisher
from tests.integration.test_worker_formats import DISCOVERY, statestream_topic, topic, weather_config
from tests.tcp_relay import TcpRelay

pytestmark = pytest.mark.integration

DEVICES = 12  # discovery devices, one battery entity each, on their own state topics
STATESTREAM_ENTITIES = 4
KILLS = 5


def device_topic(tenant: Tenant, device: int) -> str:
    return topic(tenant, f"zigbee2mqtt/door_{device:02d}")


def publish_configs(tenant: Tenant) -> None:
    """Retained discovery configs, as zigbee2mqtt publishes them before any state."""
    pub = publisher(tenant)
    for device in range(DEVICES):
        config = json.loads(weather_config(device_topic(tenant, device), "battery", "%", "battery",
                                           "{{ value_json.battery }}"))
        config |= {"object_id": f"door_{device:02d}_battery", "unique_id": f"door_{device:02d}_battery_z2m",
                   "device": {"identifiers": [f"zigbee2mqtt_door_{device:02d}"], "name": f"door_{device:02d}"}}
        config_topic = topic(tenant, f"{DISCOVERY}/sensor/door_{device:02d}/battery/config")
        pub.publish(json.dumps(config).encode(), topic=config_topic, retain=True)
    pub.close()


def publish_fleet(tenant: Tenant, stop: threading.Event, published: Counter[str]) -> threading.Thread:
    """Round-robin state messages without timestamps at a steady rate until `stop`; `published` counts
    them per entity once the broker has acknowledged them all (the publisher's close)."""
    def run() -> None:
        pub = publisher(tenant)
        sent: Counter[str] = Counter()
        i = 0
        try:
            while not stop.is_set():
                device = i % (DEVICES + STATESTREAM_ENTITIES)
                if device < DEVICES:
                    pub.publish(json.dumps({"battery": i % 100, "linkquality": i % 255, "seq": i}).encode(),
                                topic=device_topic(tenant, device))
                    sent[f"sensor.door_{device:02d}_battery"] += 1
                else:
                    entity = f"sensor.plain_{device - DEVICES}"
                    pub.publish(str(i).encode(), topic=statestream_topic(tenant, entity, "state"))
                    sent[entity] += 1
                i += 1
                if i % 50 == 0:
                    pacing.wait(0.05)  # ≈1,000 messages/s: the simulated fleet's pace, not synchronisation
        finally:
            pub.close()
            published.update(sent)

    pacing = threading.Event()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def stored(tenant: Tenant) -> Counter[str]:
    counts: Counter[str] = Counter()
    for series in tenant.influx("SELECT count(value) FROM raw./.*/ GROUP BY entity_id"):
        counts[series["tags"]["entity_id"]] += int(series["values"][0][1])
    for series in tenant.influx("SELECT count(state) FROM raw./.*/ GROUP BY entity_id"):
        counts[series["tags"]["entity_id"]] += int(series["values"][0][1])
    return counts


def test_receipt_stamped_messages_stay_one_point_each_across_sigkills(tenant: Tenant, start_worker: Start) -> None:
    publish_configs(tenant)
    worker = start_worker(tenant.env)  # its first subscription creates the persistent session
    stop = threading.Event()
    published: Counter[str] = Counter()
    sender = publish_fleet(tenant, stop, published)
    for kill in range(KILLS):
        if kill:
            worker = start_worker(tenant.env)
        before = sum(stored(tenant).values())
        wait_for(lambda b=before: sum(stored(tenant).values()) > b + 200,  # type: ignore[misc]
                 "progress before the kill")
        worker.kill()
    stop.set()
    sender.join(timeout=120)
    assert not sender.is_alive()
    total = sum(published.values())
    assert len(published) == DEVICES + STATESTREAM_ENTITIES
    worker = start_worker(tenant.env)
    doors = {entity: count for entity, count in published.items() if entity.startswith("sensor.door_")}

    def stored_doors() -> dict[str, int]:
        return {entity: count for entity, count in stored(tenant).items() if entity.startswith("sensor.door_")}

    # Until every discovery point is in, or more points than were published (a redelivery stored twice).
    wait_for(lambda: stored_doors() == doors or sum(stored_doors().values()) > sum(doors.values()),
             f"all {total} points after {KILLS} SIGKILLs", timeout=120)
    assert stored_doors() == doors
    # Statestream states, held by the source for their attributes: their messages are acknowledged only
    # once the held state is written, so a SIGKILL meanwhile leaves them with the broker to redeliver:
    # neither lost nor a second point.
    wait_for(lambda: stored(tenant) == published or sum(stored(tenant).values()) > total,
             "every statestream point too", timeout=60)
    assert worker.stop() == 0
    final = stored(tenant)
    assert final == published, {entity: final[entity] - count for entity, count in published.items()}


def test_acknowledgements_lost_with_the_connection_keep_their_receipt_times(tenant: Tenant,
                                                                           start_worker: Start) -> None:
    """PUBACKs written to the socket but never handled by the broker (a connection that dies with them: a
    SIGKILL's reset, a network fault): the broker redelivers their messages, which must keep their receipt
    time (the acknowledgement barrier of ingest_worker/mqtt_link.py), not become second points."""
    publish_configs(tenant)
    with TcpRelay(int(tenant.env["HATS_MQTT_PORT"])) as relay:
        worker = start_worker(tenant.env | {"HATS_MQTT_PORT": str(relay.port)})
        stop = threading.Event()
        published: Counter[str] = Counter()
        sender = publish_fleet(tenant, stop, published)
        wait_for(lambda: sum(stored(tenant).values()) > 200, "progress before the fault")
        relay.swallow_upstream()  # from now on the worker's PUBACKs are written, and vanish
        before = sum(stored(tenant).values())
        wait_for(lambda: sum(stored(tenant).values()) > before + 500,
                 "points written (and acknowledged into the void) while the broker hears nothing")
        assert relay.swallowed_bytes > 0
        relay.cut()  # the connection dies with them; the worker reconnects through the relay
        wait_for(lambda: relay.connections > 0, "the worker to reconnect")
        stop.set()
        sender.join(timeout=120)
        assert not sender.is_alive()
        total = sum(published.values())
        wait_for(lambda: stored(tenant) == published or sum(stored(tenant).values()) > total,
                 f"all {total} points, or more than were published", timeout=120)
        final = stored(tenant)
        assert final == published, {entity: final[entity] - count for entity, count in published.items()}
        # Once the broker has answered the barrier, nothing of it is kept: the journal stays bounded.
        wait_for(lambda: worker.metric("hats_receipt_times_kept") == 0, "the receipt times to be released")
        assert worker.stop() == 0
