"""The real Home Assistant peer (2024.3 and 2025.4) is up, provisioned and publishing what the worker reads.

No worker here: this proves the peer itself — token, time zone and version, the MQTT entry loaded, a
changed value on the broker as statestream (state, timestamps, JSON attributes; QoS 1, retained) and
eventstream (`state_changed`, QoS 0 as HA publishes it), and in HA's own history.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest

from devstack.home_assistant import config
from tests.conftest import wait_for
from tests.ha_peer import HaPeer
from tests.mqtt import session

pytestmark = pytest.mark.integration

TEMPERATURE = config.NUMBERS[0]
PUBLISHED_ATTRIBUTES = ("unit_of_measurement", "device_class", "state_class", "friendly_name")


def test_home_assistant_is_provisioned_with_its_token_and_mqtt_entry(home_assistant: HaPeer) -> None:
    found = home_assistant.api.config()
    assert found["version"] == home_assistant.version
    assert found["time_zone"] == config.TIME_ZONE
    assert found["state"] == "RUNNING"
    assert {"mqtt", "mqtt_statestream", "mqtt_eventstream", "recorder", "history"} <= set(found["components"])
    assert httpx.get(f"{home_assistant.url}/api/config", timeout=10).status_code == 401
    entries = home_assistant.api.get("/api/config/config_entries/entry", {"domain": "mqtt"})
    assert [entry["state"] for entry in entries] == ["loaded"]
    assert home_assistant.ws_call("get_config")["version"] == home_assistant.version
    statistics = home_assistant.statistics_during_period([config.NUMBERS[0].sensor_entity],
                                                         datetime.now(UTC) - timedelta(hours=1), period="5minute")
    assert isinstance(statistics, dict)  # compiled every 5 min: empty until then, but the call is answered
    for number in config.NUMBERS:
        state = home_assistant.state(number.sensor_entity)
        assert state is not None, number.sensor_entity
        assert state["attributes"].get("unit_of_measurement") == (number.unit or config.UNIT_OPTIONS[0])
    assert (home_assistant.state(config.DOOR) or {}).get("attributes", {}).get("device_class") == "door"
    assert (home_assistant.state(config.SWITCH) or {}).get("state") == "off"
    assert (home_assistant.state(config.MODE) or {}).get("state") == config.MODE_OPTIONS[0]


def _live(messages: list[mqtt.MQTTMessage], topic: str) -> list[mqtt.MQTTMessage]:
    """Messages published after the subscription (a retained copy from before carries the retain flag)."""
    return [m for m in messages if m.topic == topic and not m.retain]


def _changed(messages: list[mqtt.MQTTMessage], topic: str, entity_id: str) -> list[dict[str, Any]]:
    events = [json.loads(m.payload) for m in messages if m.topic == topic]
    return [e for e in events if e["event_type"] == "state_changed" and e["event_data"]["entity_id"] == entity_id]


def test_a_changed_value_reaches_the_broker_and_the_history(home_assistant: HaPeer, stack_env: dict[str, str]) -> None:
    current = (home_assistant.state(TEMPERATURE.sensor_entity) or {}).get("state")
    value = next(v for v in (23.4, 23.5) if str(v) != current)
    entity = f"{home_assistant.statestream_base}/sensor/{TEMPERATURE.key}"
    events = home_assistant.eventstream_topic
    with session(int(stack_env["HATS_MQTT_PORT"]), stack_env["HATS_MQTT_USERNAME"], stack_env["HATS_MQTT_PASSWORD"],
                 v311=True) as listener:
        listener.subscribe(f"{entity}/#")
        listener.subscribe(events)
        start = datetime.now(UTC)
        home_assistant.set_number(TEMPERATURE.input_entity, value)
        topics = [f"{entity}/{name}" for name in ("state", "last_updated", "last_changed", *PUBLISHED_ATTRIBUTES)]
        listener.wait(lambda: all(_live(listener.received, topic) for topic in topics)
                      and _changed(listener.received, events, TEMPERATURE.sensor_entity), "statestream and eventstream")
        received = list(listener.received)

    state, = _live(received, f"{entity}/state")
    assert state.payload == str(value).encode()
    assert state.qos == 1
    updated = datetime.fromisoformat(_live(received, f"{entity}/last_updated")[0].payload.decode())
    assert start - timedelta(seconds=1) <= updated <= datetime.now(UTC)
    attributes = {m.topic.rsplit("/", 1)[1]: json.loads(m.payload) for m in received
                  if not m.retain and m.topic.startswith(entity) and m.topic.rsplit("/", 1)[1] not in
                  ("state", "last_updated", "last_changed")}
    assert attributes["unit_of_measurement"] == "°C"
    assert attributes["device_class"] == "temperature"
    assert attributes["state_class"] == "measurement"
    event, = _changed(received, events, TEMPERATURE.sensor_entity)
    assert event["event_data"]["new_state"]["state"] == str(value)
    assert event["event_data"]["new_state"]["attributes"]["unit_of_measurement"] == "°C"
    assert next(m.qos for m in received if m.topic == events) == 0

    def recorded() -> bool:
        history = home_assistant.history([TEMPERATURE.sensor_entity], start - timedelta(seconds=5),
                                         datetime.now(UTC) + timedelta(seconds=1))
        return str(value) in [s["state"] for s in history[TEMPERATURE.sensor_entity]]
    wait_for(recorded, f"{value} in Home Assistant's history", timeout=30)


def test_a_state_posted_over_rest_is_published_for_a_fresh_entity(home_assistant: HaPeer,
                                                                  stack_env: dict[str, str]) -> None:
    object_id = f"probe_{uuid.uuid4().hex[:8]}"
    entity = f"{home_assistant.statestream_base}/sensor/{object_id}"
    with session(int(stack_env["HATS_MQTT_PORT"]), stack_env["HATS_MQTT_USERNAME"], stack_env["HATS_MQTT_PASSWORD"],
                 v311=True) as listener:
        listener.subscribe(f"{entity}/#")
        home_assistant.set_state(f"sensor.{object_id}", "1234.5",
                                 {"unit_of_measurement": "W", "device_class": "power", "state_class": "measurement"})
        listener.wait(lambda: {"state", "unit_of_measurement", "device_class"}
                      <= {m.topic.rsplit("/", 1)[1] for m in listener.received}, "the new entity's topics")
        received = {m.topic.rsplit("/", 1)[1]: m.payload for m in listener.received}
    assert received["state"] == b"1234.5"
    assert json.loads(received["unit_of_measurement"]) == "W"


def test_the_helpers_drive_availability_a_unit_change_and_a_meter_reset(home_assistant: HaPeer) -> None:
    flaky, variable = config.NUMBERS[-2], config.NUMBERS[-1]
    meter = next(n for n in config.NUMBERS if n.key == "energy_kwh")

    def attribute(entity_id: str, name: str) -> object:
        return ((home_assistant.state(entity_id) or {}).get("attributes") or {}).get(name)
    try:
        home_assistant.call_service("input_boolean", "turn_off", {"entity_id": config.FLAKY_AVAILABLE})
        home_assistant.call_service("input_select", "select_option",
                                    {"entity_id": config.UNIT_INPUT, "option": config.UNIT_OPTIONS[1]})
        home_assistant.set_number(meter.input_entity, 0)
        wait_for(lambda: (home_assistant.state(flaky.sensor_entity) or {}).get("state") == "unavailable",
                 f"{flaky.sensor_entity} unavailable")
        wait_for(lambda: attribute(variable.sensor_entity, "unit_of_measurement") == config.UNIT_OPTIONS[1],
                 f"{variable.sensor_entity} in {config.UNIT_OPTIONS[1]}")
        wait_for(lambda: (home_assistant.state(meter.sensor_entity) or {}).get("state") == "0.0",
                 f"{meter.sensor_entity} reset to 0")
    finally:  # the instance is shared by the session: put the helpers back
        home_assistant.call_service("input_boolean", "turn_on", {"entity_id": config.FLAKY_AVAILABLE})
        home_assistant.call_service("input_select", "select_option",
                                    {"entity_id": config.UNIT_INPUT, "option": config.UNIT_OPTIONS[0]})
        home_assistant.set_number(meter.input_entity, meter.initial)
