"""MQTT discovery: real-shaped configs (zigbee2mqtt, ESPHome abbreviations) and the states they decode."""

from __future__ import annotations

import json

import pytest

from ingest_worker.normalise import DeviceInfo, normalise
from ingest_worker.rejections import Reason, Rejected
from ingest_worker.sources.base import Outcome, Source
from ingest_worker.sources.discovery import (
    MAX_ENTITIES_PER_STATE_TOPIC,
    MAX_LISTED_FAILURES,
    REPEAT_WINDOW_S,
    DiscoverySource,
)

Z2M_TOPIC = "zigbee2mqtt/weather_sensor"
Z2M_DEVICE = {"identifiers": ["zigbee2mqtt_0x0017880104e45522"], "name": "weather_sensor",
              "model": "Temperature and humidity sensor", "manufacturer": "Aqara"}
# The shared DESIGN.md config, verbatim.
DESIGN_CONFIG = {
    "unit_of_measurement": "°C", "device_class": "temperature", "state_class": "measurement",
    "value_template": '{{ value_json["temperature"] }}', "state_topic": Z2M_TOPIC,
    "object_id": "weather_sensor_temperature", "unique_id": "0x0017880104e45522_temperature_zigbee2mqtt",
    "device": Z2M_DEVICE,
}
DESIGN_STATE = b'{"temperature":27.34,"humidity":44.72,"battery":97,"linkquality":120}'


def config_topic(key: str, prefix: str = "homeassistant", component: str = "sensor") -> str:
    return f"{prefix}/{component}/0x0017880104e45522/{key}/config"


def z2m_config(key: str, unit: str | None, device_class: str | None, state_class: str = "measurement",
               template: str | None = None) -> bytes:
    config: dict[str, object] = {
        "state_class": state_class, "value_template": template or f"{{{{ value_json.{key} }}}}",
        "state_topic": Z2M_TOPIC, "object_id": f"weather_sensor_{key}",
        "unique_id": f"0x0017880104e45522_{key}_zigbee2mqtt", "device": Z2M_DEVICE,
        "availability": [{"topic": "zigbee2mqtt/bridge/state"}], "enabled_by_default": True,
    }
    if unit:
        config["unit_of_measurement"] = unit
    if device_class:
        config["device_class"] = device_class
    return json.dumps(config).encode()


def weather_sensor(source: DiscoverySource) -> list[Outcome]:
    return [
        source.handle(config_topic("temperature"), json.dumps(DESIGN_CONFIG).encode()),
        source.handle(config_topic("humidity"), z2m_config("humidity", "%", "humidity")),
        source.handle(config_topic("battery"), z2m_config("battery", "%", "battery")),
        source.handle(config_topic("linkquality"), z2m_config("linkquality", "lqi", None)),
    ]


def test_it_is_a_source() -> None:
    source: Source = DiscoverySource()
    assert source.name == "discovery"
    assert source.flush() == ()


def test_filters_cover_both_config_topic_shapes() -> None:
    assert DiscoverySource().filters() == ("homeassistant/+/+/config", "homeassistant/+/+/+/config")
    assert DiscoverySource("hats/acme/ha/").filters() == ("hats/acme/ha/+/+/config", "hats/acme/ha/+/+/+/config")


@pytest.mark.parametrize("prefix", ["", "/", "home/+", "#"])
def test_a_prefix_with_wildcards_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="discovery prefix"):
        DiscoverySource(prefix)


def test_design_config_subscribes_its_state_topic() -> None:
    source = DiscoverySource()
    assert source.matches(config_topic("temperature"))
    assert not source.matches(Z2M_TOPIC)
    outcome = source.handle(config_topic("temperature"), json.dumps(DESIGN_CONFIG).encode())
    assert outcome == Outcome(subscribe=(Z2M_TOPIC,))
    assert source.matches(Z2M_TOPIC)
    assert source.state_topics() == (Z2M_TOPIC,)
    assert source.take_rejections() == []


def test_design_state_becomes_an_entity_state_with_meaning_and_device() -> None:
    source = DiscoverySource()
    source.handle(config_topic("temperature"), json.dumps(DESIGN_CONFIG).encode())
    (state,) = source.handle(Z2M_TOPIC, DESIGN_STATE).states
    assert (state.entity_id, state.state, state.source) == ("sensor.weather_sensor_temperature", "27.34", "discovery")
    assert dict(state.attributes) == {"unit_of_measurement": "°C", "device_class": "temperature",
                                      "state_class": "measurement", "friendly_name": "weather_sensor"}
    assert state.device_id == "zigbee2mqtt_0x0017880104e45522"
    assert state.device == DeviceInfo(device_id="zigbee2mqtt_0x0017880104e45522", name="weather_sensor",
                                      manufacturer="Aqara", model="Temperature and humidity sensor",
                                      identifiers=("zigbee2mqtt_0x0017880104e45522",))
    assert state.last_updated is None
    point = normalise(state, received_ns=1)
    assert (point.measurement, point.value, point.tag("device_id")) == (
        "temperature", 27.34, "zigbee2mqtt_0x0017880104e45522")


def test_four_entities_share_one_state_topic_and_subscribe_it_once() -> None:
    source = DiscoverySource()
    outcomes = weather_sensor(source)
    assert outcomes[0].subscribe == (Z2M_TOPIC,)
    assert all(o == Outcome(ignored="config") for o in outcomes[1:])
    states = source.handle(Z2M_TOPIC, DESIGN_STATE).states
    assert [(s.entity_id, s.state) for s in states] == [
        ("sensor.weather_sensor_temperature", "27.34"), ("sensor.weather_sensor_humidity", "44.72"),
        ("sensor.weather_sensor_battery", "97"), ("sensor.weather_sensor_linkquality", "120")]
    assert states[3].attributes["unit_of_measurement"] == "lqi"
    assert "device_class" not in states[3].attributes
    assert source.entity_count == 4


def test_removing_entities_unsubscribes_only_when_the_last_one_goes() -> None:
    source = DiscoverySource()
    weather_sensor(source)
    assert source.handle(config_topic("humidity"), b"") == Outcome(ignored="entity_removed")
    assert source.handle(config_topic("battery"), b"{}") == Outcome(ignored="entity_removed")
    assert source.handle(config_topic("linkquality"), b"") == Outcome(ignored="entity_removed")
    states = source.handle(Z2M_TOPIC, DESIGN_STATE).states
    assert [s.entity_id for s in states] == ["sensor.weather_sensor_temperature"]
    assert source.handle(config_topic("temperature"), b"") == Outcome(unsubscribe=(Z2M_TOPIC,))
    assert not source.matches(Z2M_TOPIC)
    assert source.entity_count == 0
    with pytest.raises(Rejected) as caught:
        source.handle(Z2M_TOPIC, DESIGN_STATE)
    assert caught.value.reason is Reason.BAD_TOPIC


def test_removing_an_unknown_entity_is_harmless() -> None:
    assert DiscoverySource().handle(config_topic("temperature"), b"") == Outcome(ignored="unknown_entity_removed")


def test_readding_after_removal_subscribes_again() -> None:
    source = DiscoverySource()
    payload = json.dumps(DESIGN_CONFIG).encode()
    source.handle(config_topic("temperature"), payload)
    source.handle(config_topic("temperature"), b"")
    assert source.handle(config_topic("temperature"), payload) == Outcome(subscribe=(Z2M_TOPIC,))


def test_an_update_on_the_same_state_topic_keeps_the_subscription() -> None:
    source = DiscoverySource()
    source.handle(config_topic("temperature"), json.dumps(DESIGN_CONFIG).encode())
    updated = {**DESIGN_CONFIG, "value_template": "{{ value_json.temperature | round(1) }}"}
    assert source.handle(config_topic("temperature"), json.dumps(updated).encode()) == Outcome(ignored="config")
    assert source.entity_count == 1
    assert [s.state for s in source.handle(Z2M_TOPIC, DESIGN_STATE).states] == ["27.3"]


def test_an_update_that_moves_the_state_topic_swaps_subscriptions() -> None:
    source = DiscoverySource()
    source.handle(config_topic("temperature"), json.dumps(DESIGN_CONFIG).encode())
    moved = {**DESIGN_CONFIG, "state_topic": "zigbee2mqtt/garden_sensor"}
    outcome = source.handle(config_topic("temperature"), json.dumps(moved).encode())
    assert outcome == Outcome(subscribe=("zigbee2mqtt/garden_sensor",), unsubscribe=(Z2M_TOPIC,))
    assert not source.matches(Z2M_TOPIC)
    assert source.matches("zigbee2mqtt/garden_sensor")


def test_an_update_that_drops_the_state_topic_removes_the_entity() -> None:
    source = DiscoverySource()
    source.handle(config_topic("temperature"), json.dumps(DESIGN_CONFIG).encode())
    button = {k: v for k, v in DESIGN_CONFIG.items() if k != "state_topic"}
    outcome = source.handle(config_topic("temperature"), json.dumps(button).encode())
    assert outcome == Outcome(unsubscribe=(Z2M_TOPIC,), ignored="no_state_topic")
    assert source.entity_count == 0


def test_configs_without_a_state_topic_are_ignored() -> None:
    button = {"command_topic": "zigbee2mqtt/x/set", "payload_press": "identify", "name": "Identify"}
    outcome = DiscoverySource().handle(config_topic("identify", component="button"), json.dumps(button).encode())
    assert outcome == Outcome(ignored="no_state_topic")


# ESPHome publishes abbreviated keys and a `~` base topic.
ESPHOME_CONFIG = {
    "dev_cla": "temperature", "unit_of_meas": "°C", "stat_cla": "measurement", "name": "Living Temperature",
    "stat_t": "~/sensor/living_temperature/state", "avty_t": "~/status", "uniq_id": "esp-livingsensor-temp",
    "obj_id": "living_temperature", "val_tpl": "{{ value | float | round(1) }}", "~": "livingsensor",
    "dev": {"ids": "a4cf12b3c4d5", "name": "livingsensor", "sw": "esphome v2024.6.1", "mdl": "esp32dev",
            "mf": "espressif"},
}


def test_esphome_abbreviations_and_base_topic_are_expanded() -> None:
    source = DiscoverySource()
    topic = "homeassistant/sensor/livingsensor/living_temperature/config"
    outcome = source.handle(topic, json.dumps(ESPHOME_CONFIG).encode())
    assert outcome == Outcome(subscribe=("livingsensor/sensor/living_temperature/state",))
    (state,) = source.handle("livingsensor/sensor/living_temperature/state", b"21.46").states
    assert (state.entity_id, state.state) == ("sensor.living_temperature", "21.5")
    assert dict(state.attributes) == {"unit_of_measurement": "°C", "device_class": "temperature",
                                      "state_class": "measurement", "friendly_name": "livingsensor Living Temperature"}
    assert state.device == DeviceInfo(device_id="a4cf12b3c4d5", name="livingsensor", manufacturer="espressif",
                                      model="esp32dev", identifiers=("a4cf12b3c4d5",))


def test_base_topic_at_the_end_of_a_topic_is_substituted() -> None:
    source = DiscoverySource()
    config = {"~": "shellies/plug1", "stat_t": "power/~", "val_tpl": "{{ value }}"}
    assert source.handle(config_topic("power"), json.dumps(config).encode()).subscribe == ("power/shellies/plug1",)


def test_abbreviation_wins_over_full_key_as_in_home_assistant() -> None:
    source = DiscoverySource()
    config = {"state_topic": "a/full", "stat_t": "a/short"}
    assert source.handle(config_topic("x"), json.dumps(config).encode()).subscribe == ("a/short",)


def test_without_a_template_the_raw_payload_is_the_state() -> None:
    source = DiscoverySource()
    source.handle("homeassistant/sensor/tasmota_power/config",
                  json.dumps({"state_topic": "tele/plug/POWER", "unit_of_measurement": "W"}).encode())
    (state,) = source.handle("tele/plug/POWER", b"1234.5").states
    assert (state.entity_id, state.state, state.device_id) == ("sensor.tasmota_power", "1234.5", None)
    assert "friendly_name" not in state.attributes


@pytest.mark.parametrize(("config", "topic", "entity_id"), [
    ({"object_id": "Weather Sensor-Temp"}, "homeassistant/sensor/node/obj/config", "sensor.weather_sensor_temp"),
    ({}, "homeassistant/sensor/node/Kitchen-Temp/config", "sensor.kitchen_temp"),
    ({}, "homeassistant/cover/door/config", "cover.door"),
    ({"default_entity_id": "sensor.hall_lux"}, "homeassistant/sensor/n/o/config", "sensor.hall_lux"),
    ({"object_id": 42}, "homeassistant/sensor/n/o/config", "sensor.42"),
])
def test_entity_ids_come_from_object_id_else_topic_sanitised(
        config: dict[str, object], topic: str, entity_id: str) -> None:
    source = DiscoverySource()
    source.handle(topic, json.dumps({"state_topic": "dev/state", **config}).encode())
    (state,) = source.handle("dev/state", b"1").states
    assert state.entity_id == entity_id


def test_prefix_may_contain_slashes() -> None:
    source = DiscoverySource("hats/acme/homeassistant")
    topic = "hats/acme/homeassistant/sensor/0x00/temperature/config"
    assert source.matches(topic)
    assert not source.matches("homeassistant/sensor/0x00/temperature/config")
    assert source.handle(topic, json.dumps(DESIGN_CONFIG).encode()).subscribe == (Z2M_TOPIC,)


@pytest.mark.parametrize("topic", [
    "homeassistant/status", "homeassistant/sensor/config", "homeassistant/a/b/c/d/config",
    "homeassistant/sensor/x/state", "other/sensor/x/config", "zigbee2mqtt/weather_sensor",
])
def test_other_topics_are_not_claimed(topic: str) -> None:
    assert not DiscoverySource().matches(topic)


# zigbee2mqtt occupancy sensor: booleans in the state JSON, payload_on/payload_off as JSON booleans.
MOTION_CONFIG = {
    "device_class": "motion", "payload_on": True, "payload_off": False,
    "value_template": "{{ value_json.occupancy }}", "state_topic": "zigbee2mqtt/hall_motion",
    "object_id": "hall_motion_occupancy",
    "device": {"identifiers": ["zigbee2mqtt_0x00158d0001"], "name": "hall_motion"},
}


@pytest.mark.parametrize(("payload", "expected"), [
    (b'{"occupancy":true,"battery":100}', "on"), (b'{"occupancy":false}', "off"), (b'{"occupancy":null}', "unknown"),
])
def test_binary_sensor_payloads_map_to_on_off(payload: bytes, expected: str) -> None:
    source = DiscoverySource()
    source.handle(config_topic("occupancy", component="binary_sensor"), json.dumps(MOTION_CONFIG).encode())
    (state,) = source.handle("zigbee2mqtt/hall_motion", payload).states
    assert (state.entity_id, state.state) == ("binary_sensor.hall_motion_occupancy", expected)
    point = normalise(state, received_ns=1)
    assert point.measurement == "binary"


def test_binary_sensor_defaults_are_on_and_off_payloads() -> None:
    source = DiscoverySource()
    source.handle("homeassistant/binary_sensor/door/config", json.dumps({"stat_t": "door/contact"}).encode())
    assert source.handle("door/contact", b"ON").states[0].state == "on"
    assert source.handle("door/contact", b"OFF").states[0].state == "off"
    with pytest.raises(Rejected) as caught:
        source.handle("door/contact", b"open")
    assert caught.value.reason is Reason.SCHEMA
    assert "payload_on 'ON'" in caught.value.detail


def test_switch_uses_state_on_before_payload_on() -> None:
    source = DiscoverySource()
    config = {"stat_t": "plug/state", "cmd_t": "plug/set", "pl_on": "1", "pl_off": "0", "stat_on": "ENABLED"}
    source.handle("homeassistant/switch/plug/config", json.dumps(config).encode())
    assert source.handle("plug/state", b"ENABLED").states[0].state == "on"
    assert source.handle("plug/state", b"0").states[0].state == "off"


def test_sensor_none_is_unknown_and_empty_renders_are_skipped() -> None:
    source = DiscoverySource()
    source.handle(config_topic("temperature"), json.dumps(DESIGN_CONFIG).encode())
    assert source.handle(Z2M_TOPIC, b'{"temperature":null}').states[0].state == "unknown"
    assert source.handle(Z2M_TOPIC, b'{"temperature":""}') == Outcome(ignored="empty_state")


def test_a_missing_key_rejects_that_entity_and_keeps_its_siblings() -> None:
    source = DiscoverySource()
    weather_sensor(source)
    states = source.handle(Z2M_TOPIC, b'{"humidity":44.72,"battery":97,"linkquality":120}').states
    assert [s.entity_id for s in states] == ["sensor.weather_sensor_humidity", "sensor.weather_sensor_battery",
                                             "sensor.weather_sensor_linkquality"]
    (rejected,) = source.take_rejections()
    assert rejected.reason is Reason.SCHEMA
    assert rejected.detail == "sensor.weather_sensor_temperature: key 'temperature' missing from state payload"
    assert source.take_rejections() == []


def test_when_no_entity_succeeds_one_rejection_lists_every_failure() -> None:
    source = DiscoverySource()
    weather_sensor(source)
    with pytest.raises(Rejected) as caught:
        source.handle(Z2M_TOPIC, b'{"update":{"state":"idle"}}')
    assert caught.value.reason is Reason.SCHEMA
    assert caught.value.detail == "; ".join(
        f"sensor.weather_sensor_{key}: key '{key}' missing from state payload"
        for key in ("temperature", "humidity", "battery", "linkquality"))
    assert source.take_rejections() == []


def test_a_combined_rejection_names_differing_reasons_and_is_bounded() -> None:
    source = DiscoverySource()
    source.handle(config_topic("bad"), json.dumps({"stat_t": "dev/x", "val_tpl": "{{ value_json.t * 2 }}"}).encode())
    for n in range(MAX_LISTED_FAILURES + 3):
        source.handle(config_topic(f"k{n}"), json.dumps({"stat_t": "dev/x", "val_tpl": f"{{{{ value_json.k{n} }}}}"})
                      .encode())
    with pytest.raises(Rejected) as caught:
        source.handle("dev/x", b"{}")
    assert caught.value.reason is Reason.UNSUPPORTED_TEMPLATE
    parts = caught.value.detail.split("; ")
    assert parts[0].startswith("sensor.bad: value_template")
    assert parts[1] == "[schema] sensor.k0: key 'k0' missing from state payload"
    assert len(parts) == MAX_LISTED_FAILURES + 1
    assert parts[-1] == "and 4 more"


def test_unsupported_template_registers_and_is_reported_at_config_and_every_state() -> None:
    source = DiscoverySource()
    weather_sensor(source)
    source.take_rejections()
    bad = z2m_config("pressure", "hPa", "pressure", template="{{ value_json.pressure * 100 }}")
    assert source.handle(config_topic("pressure"), bad) == Outcome(ignored="config")
    (at_config,) = source.take_rejections()
    assert at_config.reason is Reason.UNSUPPORTED_TEMPLATE
    assert at_config.detail.startswith(
        "sensor.weather_sensor_pressure: value_template '{{ value_json.pressure * 100 }}'")
    for lqi in (120, 121):
        states = source.handle(Z2M_TOPIC, b'{"temperature":27.34,"humidity":44.72,"battery":97,"linkquality":%d,'
                                          b'"pressure":1013.2}' % lqi).states
        assert len(states) == 4
        (at_state,) = source.take_rejections()
        assert (at_state.reason, at_state.detail) == (at_config.reason, at_config.detail)


def test_unsupported_template_alone_on_its_topic_raises_on_each_state() -> None:
    source = DiscoverySource()
    config = {"stat_t": "esp/power", "val_tpl": "{{ states('sensor.x') }}"}
    assert source.handle(config_topic("power"), json.dumps(config).encode()) == Outcome(subscribe=("esp/power",))
    assert [r.reason for r in source.take_rejections()] == [Reason.UNSUPPORTED_TEMPLATE]
    for payload in (b"12", b"13"):
        with pytest.raises(Rejected) as caught:
            source.handle("esp/power", payload)
        assert caught.value.reason == "unsupported_value_template"
        assert source.take_rejections() == []


def test_a_non_json_state_rejects_value_json_entities_but_not_value_ones() -> None:
    source = DiscoverySource()
    source.handle(config_topic("a"), json.dumps({"stat_t": "dev/x", "val_tpl": "{{ value_json.a }}"}).encode())
    source.handle(config_topic("b"), json.dumps({"stat_t": "dev/x", "val_tpl": "{{ value }}"}).encode())
    assert [s.state for s in source.handle("dev/x", b"offline").states] == ["offline"]
    assert [r.reason for r in source.take_rejections()] == [Reason.INVALID_JSON]


def test_state_payload_not_utf8_is_rejected_once() -> None:
    source = DiscoverySource()
    weather_sensor(source)
    with pytest.raises(Rejected) as caught:
        source.handle(Z2M_TOPIC, b"\xff\xfe")
    assert caught.value.reason is Reason.NOT_UTF8
    assert source.take_rejections() == []


@pytest.mark.parametrize(("topic", "payload", "reason"), [
    (config_topic("t"), b"{not json", Reason.INVALID_JSON),
    (config_topic("t"), b"\xff", Reason.NOT_UTF8),
    (config_topic("t"), b"[]", Reason.SCHEMA),
    (config_topic("t"), b'"sensor"', Reason.SCHEMA),
    (config_topic("t"), b'{"state_topic": 5}', Reason.SCHEMA),
    (config_topic("t"), b'{"state_topic": ""}', Reason.SCHEMA),
    (config_topic("t"), b'{"state_topic": "zigbee2mqtt/+"}', Reason.BAD_TOPIC),
    (config_topic("t"), b'{"state_topic": "zigbee2mqtt/#"}', Reason.BAD_TOPIC),
    (config_topic("t"), b'{"state_topic": "homeassistant/sensor/x/config"}', Reason.BAD_TOPIC),
    (config_topic("t"), json.dumps({"state_topic": "a/" + "b" * 2000}).encode(), Reason.BAD_TOPIC),
    (config_topic("t"), b'{"state_topic": "a/b", "value_template": 5}', Reason.SCHEMA),
    (config_topic("t"), json.dumps({"state_topic": "a/b", "object_id": "x" * 300}).encode(), Reason.BAD_ENTITY_ID),
    (config_topic("t"), json.dumps({"state_topic": "a/b", "name": "n" * 300}).encode(), Reason.SCHEMA),
    (config_topic("t"), json.dumps({"state_topic": "a/b", "device": {"ids": ["i" * 300]}}).encode(), Reason.SCHEMA),
    (config_topic("t"), json.dumps({"state_topic": "a/b", "device": {"ids": list(map(str, range(20)))}}).encode(),
     Reason.SCHEMA),
    ("homeassistant/Sensor/x/config", b'{"state_topic": "a/b"}', Reason.BAD_TOPIC),
    ("homeassistant/sensor/x y/config", b'{"state_topic": "a/b"}', Reason.BAD_TOPIC),
    ("homeassistant/sensor//config", b'{"state_topic": "a/b"}', Reason.BAD_TOPIC),
    ("homeassistant/sensor/n.1/x/config", b'{"state_topic": "a/b"}', Reason.BAD_TOPIC),
    ("zigbee2mqtt/unknown", b"{}", Reason.BAD_TOPIC),
])
def test_broken_configs_are_rejected_with_their_reason(topic: str, payload: bytes, reason: Reason) -> None:
    source = DiscoverySource()
    with pytest.raises(Rejected) as caught:
        source.handle(topic, payload)
    assert caught.value.reason is reason
    assert source.entity_count == 0
    assert source.state_topics() == ()


def test_an_invalid_update_keeps_the_previous_registration() -> None:
    source = DiscoverySource()
    source.handle(config_topic("temperature"), json.dumps(DESIGN_CONFIG).encode())
    with pytest.raises(Rejected):
        source.handle(config_topic("temperature"), b'{"state_topic": "x/#"}')
    assert source.handle(Z2M_TOPIC, DESIGN_STATE).states[0].state == "27.34"


def test_device_id_falls_back_to_the_first_connection() -> None:
    source = DiscoverySource()
    config = {"stat_t": "shelly/power", "dev": {"cns": [["mac", "aa:bb:cc:dd:ee:ff"]], "name": "Shelly Plug"}}
    source.handle(config_topic("power"), json.dumps(config).encode())
    (state,) = source.handle("shelly/power", b"12.5").states
    assert state.device_id == "mac:aa:bb:cc:dd:ee:ff"
    assert state.attributes["friendly_name"] == "Shelly Plug"


@pytest.mark.parametrize(("name", "device_name", "expected"), [
    ("Temperature", "weather_sensor", "weather_sensor Temperature"),
    ("weather_sensor temperature", "weather_sensor", "weather_sensor temperature"),
    (None, "weather_sensor", "weather_sensor"),
    ("Temperature", None, "Temperature"),
])
def test_friendly_name_combines_device_and_entity_names(
        name: str | None, device_name: str | None, expected: str) -> None:
    config: dict[str, object] = {"stat_t": "d/s", "name": name}
    if device_name:
        config["dev"] = {"ids": ["d1"], "name": device_name}
    source = DiscoverySource()
    source.handle(config_topic("t"), json.dumps(config).encode())
    assert source.handle("d/s", b"1").states[0].attributes["friendly_name"] == expected


def test_the_registry_is_bounded() -> None:
    source = DiscoverySource(max_entities=3)
    for key in ("a", "b", "c"):
        source.handle(config_topic(key), json.dumps({"stat_t": f"dev/{key}"}).encode())
    with pytest.raises(Rejected) as caught:
        source.handle(config_topic("d"), json.dumps({"stat_t": "dev/d"}).encode())
    assert caught.value.reason is Reason.TOO_MANY_ENTITIES
    assert not source.matches("dev/d")
    # Updates and removals of known entities still work at the bound.
    assert source.handle(config_topic("a"), json.dumps({"stat_t": "dev/a2"}).encode()).subscribe == ("dev/a2",)
    source.handle(config_topic("b"), b"")
    assert source.handle(config_topic("d"), json.dumps({"stat_t": "dev/d"}).encode()).subscribe == ("dev/d",)


def test_entities_per_state_topic_are_bounded() -> None:
    source = DiscoverySource()
    for n in range(MAX_ENTITIES_PER_STATE_TOPIC):
        source.handle(config_topic(f"k{n}"), json.dumps({"stat_t": "busy/topic"}).encode())
    with pytest.raises(Rejected) as caught:
        source.handle(config_topic("one_more"), json.dumps({"stat_t": "busy/topic"}).encode())
    assert caught.value.reason is Reason.TOO_MANY_ENTITIES
    assert len(source.handle("busy/topic", b"1").states) == MAX_ENTITIES_PER_STATE_TOPIC


def test_ten_thousand_distinct_entities() -> None:
    source = DiscoverySource()
    subscribed: list[str] = []
    for n in range(10_000):
        outcome = source.handle(f"homeassistant/sensor/node{n}/temperature/config",
                                json.dumps({**DESIGN_CONFIG, "state_topic": f"zigbee2mqtt/dev{n}",
                                            "object_id": f"dev{n}_temperature"}).encode())
        subscribed.extend(outcome.subscribe)
    assert len(subscribed) == 10_000
    assert source.entity_count == 10_000
    assert all(source.matches(f"zigbee2mqtt/dev{n}") for n in range(0, 10_000, 997))
    (state,) = source.handle("zigbee2mqtt/dev9999", DESIGN_STATE).states
    assert state.entity_id == "sensor.dev9999_temperature"


def test_rejections_are_those_of_the_latest_message_only() -> None:
    source = DiscoverySource()
    weather_sensor(source)
    source.handle(Z2M_TOPIC, b'{"humidity":44.72,"battery":97,"linkquality":120}')  # temperature missing
    with pytest.raises(Rejected):
        source.handle(Z2M_TOPIC, b"\xff")
    source.handle(Z2M_TOPIC, DESIGN_STATE)
    assert source.take_rejections() == []
    source.handle(config_topic("bad"), z2m_config("bad", None, None, template="{% if %}"))
    source.handle(config_topic("temperature"), json.dumps(DESIGN_CONFIG).encode())
    assert source.take_rejections() == []


def test_a_repeated_payload_is_one_state_unless_force_update_as_in_home_assistant() -> None:
    source = DiscoverySource()
    weather_sensor(source)
    first = source.handle(Z2M_TOPIC, DESIGN_STATE, received_ns=1_000_000_000_000)
    assert len(first.states) == 4
    # The publisher's QoS 1 retransmission after a broker restart, seconds later: the same report.
    assert source.handle(Z2M_TOPIC, DESIGN_STATE, received_ns=1_005_000_000_000) == Outcome(ignored="repeated_payload")
    # A changed report is a state; the same report again after the window is one too (a device back online).
    assert len(source.handle(Z2M_TOPIC, DESIGN_STATE.replace(b"97", b"96"), received_ns=1_006_000_000_000).states) == 4
    later = 1_006_000_000_000 + (REPEAT_WINDOW_S + 1) * 1_000_000_000
    assert len(source.handle(Z2M_TOPIC, DESIGN_STATE.replace(b"97", b"96"), received_ns=later).states) == 4

    forced = DiscoverySource()
    config = {"stat_t": "esp/power", "val_tpl": "{{ value }}", "frc_upd": True, "unit_of_meas": "W",
              "dev_cla": "power"}
    forced.handle(config_topic("power"), json.dumps(config).encode())
    assert [len(forced.handle("esp/power", b"12", received_ns=n).states) for n in (1, 2)] == [1, 1]
