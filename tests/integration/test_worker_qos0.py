"""QoS 0 traffic — Home Assistant's mqtt_eventstream and device firmwares (zigbee2mqtt, ESPHome, Tasmota)
publish at QoS 0 by default, and a QoS 1 subscription does not upgrade a message — across worker
restarts and crashes (real Mosquitto, real worker processes).

The broker queues QoS 0 for the worker's offline persistent session (`queue_qos0_messages`), so a
restart loses nothing. A QoS 0 message is never redelivered, so a SIGKILL loses what the worker had
received and not yet made durable: at most `HATS_BATCH_MAX_AGE_S` (0.25 s) plus one flush of QoS 0
traffic. The crash test pins that window exactly: with a batch held open, the kill loses precisely the
held QoS 0 messages, and nothing published while the worker was down.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from ha_simulator.publish import Publisher, Target
from ingest_worker.tls import mqtt_context
from tests.conftest import Tenant, WorkerProcess, wait_for

pytestmark = pytest.mark.integration

Start = Callable[[dict[str, str]], WorkerProcess]
START = datetime.now(UTC) - timedelta(hours=1)
DEVICE_CONFIG = "homeassistant/sensor/0x00158d0001a2b3c4/temperature/config"
DEVICE_TOPIC = "zigbee2mqtt/qos0_probe"


def publisher(tenant: Tenant, qos: int) -> Publisher:
    """As the home's Home Assistant account, with the client id the broker binds it to (its name)."""
    env = tenant.env
    return Publisher(Target("127.0.0.1", int(env["HATS_MQTT_PORT"]), env["HATS_MQTT_PUBLISHER_USERNAME"],
                            env["HATS_MQTT_PUBLISHER_PASSWORD"], tenant.topic, tls=mqtt_context(env)), qos=qos)


def event(i: int) -> bytes:
    entity = f"sensor.qos0_{i % 20:02d}"
    at = (START + timedelta(milliseconds=i)).isoformat()
    state = {"entity_id": entity, "state": f"{i % 500 / 10:.1f}", "last_updated": at, "last_changed": at,
             "attributes": {"unit_of_measurement": "W", "device_class": "power"}}
    return json.dumps({"event_type": "state_changed", "event_data": {"entity_id": entity, "new_state": state}}).encode()


def instant_ns(i: int) -> int:
    moment = START + timedelta(milliseconds=i)
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1_000


def announce_device(tenant: Tenant) -> None:
    """A zigbee2mqtt-style retained discovery config (published QoS 1, as zigbee2mqtt does for configs)."""
    prefix = tenant.env["HATS_TOPIC_PREFIX"]
    config = {"state_topic": prefix + DEVICE_TOPIC, "value_template": "{{ value_json.temperature }}",
              "unit_of_measurement": "°C", "device_class": "temperature", "state_class": "measurement",
              "object_id": "qos0_probe_temperature", "unique_id": "0x00158d0001a2b3c4_temperature",
              "device": {"identifiers": ["zigbee2mqtt_0x00158d0001a2b3c4"], "name": "qos0_probe"}}
    pub = publisher(tenant, 1)
    pub.publish(json.dumps(config).encode(), topic=prefix + DEVICE_CONFIG, retain=True)
    pub.close()


def count(tenant: Tenant, query: str) -> int:
    return sum(int(s["values"][0][1]) for s in tenant.influx(query))


def events_written(tenant: Tenant) -> int:
    return count(tenant, "SELECT count(value) FROM raw.power WHERE entity_id =~ /^sensor.qos0_/")


def device_readings(tenant: Tenant) -> int:
    return count(tenant, "SELECT count(value) FROM raw.temperature WHERE entity_id = 'sensor.qos0_probe_temperature'")


def publish_device_readings(tenant: Tenant, first: int, n: int, suffix: str) -> None:
    """Device states carry no timestamp (receipt time), so each reading must land as its own point: the
    values are distinct and the test counts them."""
    pub = publisher(tenant, 0)
    for i in range(first, first + n):
        pub.publish(json.dumps({"temperature": 15 + i / 100, "linkquality": 120}).encode(),
                    topic=tenant.env["HATS_TOPIC_PREFIX"] + DEVICE_TOPIC)
    pub.close()


def test_qos0_published_while_the_worker_restarts_is_queued_and_written(tenant: Tenant, start_worker: Start) -> None:
    announce_device(tenant)
    worker = start_worker(tenant.env)  # creates the persistent session and learns the device's state topic
    # The worker subscribes the learned state topic after the config arrived; a QoS 0 reading published
    # before that has no subscriber and is gone, so warm up until one lands.
    warm_up = iter(range(10_000, 20_000))

    def warmed_up() -> bool:
        reading = next(warm_up)
        publish_device_readings(tenant, reading, 1, f"warm-up-{reading}")
        return device_readings(tenant) > 0
    wait_for(warmed_up, "the device's first reading", interval=0.5)
    assert worker.stop() == 0  # drains: every reading it received is written
    before = device_readings(tenant)

    # Every publisher has its own client id: a second connection under one id makes the broker close the
    # first, and the QoS 0 messages still unread in that socket are gone (seen once in CI: 98 of 1,000).
    pub = publisher(tenant, 0)
    for i in range(1_000):
        pub.publish(event(i))
    pub.close()
    publish_device_readings(tenant, 1, 200, "offline-readings")

    # The queued device readings reach the new process before the retained config that explains their
    # topic: they wait for it instead of becoming dead letters.
    worker = start_worker(tenant.env)
    wait_for(lambda: events_written(tenant) == 1_000, "the 1,000 QoS 0 events published while stopped")
    wait_for(lambda: device_readings(tenant) == before + 200, "the 200 QoS 0 device readings published while stopped")
    assert worker.stop() == 0
    assert worker.counters()["dead_lettered"] == 0


def test_a_sigkill_loses_exactly_the_qos0_messages_held_unwritten(tenant: Tenant, start_worker: Start) -> None:
    held_open = {**tenant.env, "HATS_BATCH_MAX_AGE_S": "60", "HATS_BATCH_MAX_POINTS": "100000"}
    worker = start_worker(held_open)
    pub = publisher(tenant, 0)
    for i in range(300):
        pub.publish(event(i))
    pub.close()
    wait_for(lambda: worker.metric("hats_unacked_messages") == 300, "300 QoS 0 events processed, held in a batch")
    worker.kill()
    pub = publisher(tenant, 0)
    for i in range(300, 800):
        pub.publish(event(i))
    pub.close()
    worker = start_worker(tenant.env)
    wait_for(lambda: events_written(tenant) == 500, "the 500 events published while the worker was down")
    assert worker.stop() == 0
    # The documented window, and nothing more: the held batch is gone (QoS 0 is never redelivered).
    written = sorted(row[0] for s in tenant.influx("SELECT value FROM raw.power") for row in s["values"])
    assert written == [instant_ns(i) for i in range(300, 800)]
