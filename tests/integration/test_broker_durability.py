"""The broker keeps a disconnected worker's QoS 1 messages, beyond the stock 1000-message queue, across
its own restart: persistence and queue sizing in devstack/mosquitto.py."""

from __future__ import annotations

import uuid

import pytest

from devstack import mosquitto
from devstack.profile import Profile
from ha_simulator.publish import Publisher, Target
from ingest_worker.tls import mqtt_context
from tests.mqtt import session

pytestmark = pytest.mark.integration

MESSAGES = 5_000  # five times Mosquitto's stock max_queued_messages


def test_offline_subscriber_gets_every_message_after_a_broker_restart(
    profile: Profile, stack_env: dict[str, str], secrets: dict[str, str]
) -> None:
    port = int(stack_env["HATS_MQTT_PORT"])
    worker = (stack_env["HATS_MQTT_USERNAME"], stack_env["HATS_MQTT_PASSWORD"])
    client_id = f"durability-{uuid.uuid4().hex[:8]}"
    topic = f"homeassistant/durability_{client_id}"
    # MQTT 3.1.1 with a persistent session, exactly as the worker (paho-mqtt) connects.
    with session(port, *worker, client_id=client_id, clean_start=False, v311=True) as s:
        assert s.subscribe(topic) == 1
    publisher = Publisher(Target("127.0.0.1", port, stack_env["HATS_MQTT_PUBLISHER_USERNAME"],
                                 stack_env["HATS_MQTT_PUBLISHER_PASSWORD"], topic, tls=mqtt_context(stack_env)))
    for i in range(MESSAGES):
        publisher.publish(str(i).encode())
    publisher.close()  # every PUBACK received: the broker owns all of them now

    mosquitto.stop(profile)
    mosquitto.start(profile, secrets)

    with session(port, *worker, client_id=client_id, clean_start=False, v311=True) as s:
        s.wait(lambda: len(s.received) >= MESSAGES, f"{MESSAGES} queued messages")
        payloads = [int(m.payload) for m in s.received]
    assert sorted(payloads) == list(range(MESSAGES))
