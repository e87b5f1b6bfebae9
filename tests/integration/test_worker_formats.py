"""Each Home Assistant format, end to end through the real worker process into InfluxDB and PostgreSQL
`core`, from payloads shaped exactly as Home Assistant and zigbee2mqtt publish them (shared DESIGN.md,
"What Home Assistant really sends" and "Raw data contract")."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from ha_simulator.publish import Publisher
from tests.conftest import Tenant, WorkerProcess, wait_for
from tests.integration.test_worker_durability import Start, publisher

pytestmark = pytest.mark.integration

EVENTS = "homeassistant/events"
STATESTREAM = "homeassistant/statestream"
DISCOVERY = "homeassistant"
STATUS = "homeassistant/status"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
# Columns every row of `select` carries, None where the measurement lacks them.
COLUMNS = ("value", "state", "device_id")
# Inside the raw retention policy (30 days), with microseconds so that precision loss would show.
RECENT = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=123_456)


# -- helpers shared with the other worker test modules --------------------------------------------------

def ns(moment: datetime) -> int:
    """A timestamp as InfluxDB stores it: integer nanoseconds, exact to the microsecond."""
    return (moment - EPOCH) // timedelta(microseconds=1) * 1_000


def iso(time_ns: int) -> str:
    return (EPOCH + timedelta(microseconds=time_ns // 1_000)).isoformat()


def topic(tenant: Tenant, suffix: str) -> str:
    return tenant.env["HATS_TOPIC_PREFIX"] + suffix


def statestream_topic(tenant: Tenant, entity_id: str, leaf: str) -> str:
    return topic(tenant, f"{STATESTREAM}/{entity_id.replace('.', '/')}/{leaf}")


def state_changed(entity_id: str, state: str, at: datetime | None = None, **attributes: object) -> bytes:
    """An mqtt_eventstream `state_changed` event as Home Assistant serialises it."""
    new_state: dict[str, object] = {"entity_id": entity_id, "state": state, "attributes": attributes,
                                    "context": {"id": "01JDXC3V5Q", "parent_id": None, "user_id": None}}
    event: dict[str, object] = {"event_type": "state_changed", "origin": "LOCAL",
                                "event_data": {"entity_id": entity_id, "old_state": None, "new_state": new_state}}
    if at is not None:
        new_state["last_changed"] = new_state["last_updated"] = event["time_fired"] = at.isoformat()
    return json.dumps(event).encode()


def select(tenant: Tenant, query: str) -> list[dict[str, Any]]:
    """Rows of an InfluxQL query as dicts (tags and fields by name), each with its measurement."""
    found: list[dict[str, Any]] = []
    for series in tenant.influx(query):
        for values in series["values"]:
            row = dict.fromkeys(COLUMNS) | dict(zip(series["columns"], values, strict=True))
            found.append({"measurement": series["name"], **row})
    return sorted(found, key=lambda row: (row["time"], row["measurement"]))


def entity_points(tenant: Tenant, entity_id: str) -> list[dict[str, Any]]:
    """Every point of one entity, in whichever measurement it landed."""
    return select(tenant, f"SELECT * FROM raw./.*/ WHERE entity_id = '{entity_id}'")


def field_types(tenant: Tenant, measurement: str) -> dict[str, str]:
    series = tenant.influx(f'SHOW FIELD KEYS FROM raw."{measurement}"')
    return {key: kind for series_ in series for key, kind in series_["values"]}


def pg_rows(tenant: Tenant, query: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(tenant.env["HATS_PG_DSN"], autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def sample(worker: WorkerProcess, name: str, **labels: str) -> float:
    """Sum of a Prometheus metric's samples whose labels include `labels` (0 before the first one)."""
    total = 0.0
    for line in httpx.get(f"{worker.url}/metrics", timeout=10).text.splitlines():
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if line.startswith("#") or metric != name:
            continue
        found = dict(LABEL.findall(label_text))
        if all(found.get(key) == wanted for key, wanted in labels.items()):
            total += float(value)
    return total


def healthy(worker: WorkerProcess) -> bool:
    """Not crashed, and its loop alive by its own /healthz."""
    if worker.proc.poll() is not None:
        return False
    try:
        return httpx.get(f"{worker.url}/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def publish_statestream(pub: Publisher, tenant: Tenant, entity_id: str, state: bytes, at: datetime | None,
                        attributes: dict[str, object]) -> None:
    """One state change exactly as mqtt_statestream publishes it (QoS 1, retained): the raw state, then
    with `publish_timestamps` last_updated and last_changed (plain ISO 8601), then each attribute as JSON."""
    pub.publish(state, topic=statestream_topic(tenant, entity_id, "state"), retain=True)
    if at is not None:
        for leaf in ("last_updated", "last_changed"):
            pub.publish(at.isoformat().encode(), topic=statestream_topic(tenant, entity_id, leaf), retain=True)
    for name, value in attributes.items():
        pub.publish(json.dumps(value).encode(), topic=statestream_topic(tenant, entity_id, name), retain=True)


# -- mqtt_statestream ------------------------------------------------------------------------------------

PORCH_ATTRIBUTES: dict[str, object] = {"unit_of_measurement": "°F", "device_class": "temperature",
                                       "state_class": "measurement", "friendly_name": "Porch"}
# Raw (`70.7`) and JSON-quoted (`"71.6"`) states alternate: Home Assistant versions differ.
# Four dozen updates, each a separate burst of MQTT messages like a real sensor's: a state that a hand-off
# batch boundary splits from its timestamps or attributes cannot hide among them.
PORCH_FAHRENHEIT = [68.0, 70.7, 71.6, 75.2, 69.8, 32.0, -40.0, 98.6, 212.0, 50.0, 59.9, 77.0,
                    *(round(45.5 + 0.9 * i, 1) for i in range(36))]


def test_statestream_states_land_converted_to_celsius_at_their_own_last_updated(
    tenant: Tenant, start_worker: Start
) -> None:
    """Every update is published as Home Assistant does (state, timestamps, then attributes) and waited
    for before the next, as state changes of a real sensor arrive: each must land in `temperature`, in
    °C, stamped with its own last_updated — never receipt time, never an unconverted °F value."""
    worker = start_worker({**tenant.env, "HATS_BATCH_MAX_AGE_S": "0.05"})
    pub = publisher(tenant)
    moments = [RECENT + timedelta(minutes=i, microseconds=i) for i in range(len(PORCH_FAHRENHEIT) + 1)]
    for i, fahrenheit in enumerate(PORCH_FAHRENHEIT):
        state = f"{fahrenheit}" if i % 2 == 0 else json.dumps(f"{fahrenheit}")
        publish_statestream(pub, tenant, "sensor.porch", state.encode(), moments[i], PORCH_ATTRIBUTES)
        wait_for(lambda n=i + 1: len(entity_points(tenant, "sensor.porch")) == n,  # type: ignore[misc]
                 f"update {i + 1} of sensor.porch in InfluxDB")
    publish_statestream(pub, tenant, "sensor.porch", b"unavailable", moments[-1], PORCH_ATTRIBUTES)
    pub.close()
    wait_for(lambda: len(entity_points(tenant, "sensor.porch")) == len(moments), "the unavailable record")

    found = entity_points(tenant, "sensor.porch")
    expected = {ns(m): i for i, m in enumerate(moments)}
    strays = [f"{row['measurement']} at {iso(row['time'])}" for row in found if row["time"] not in expected]
    assert not strays, (f"{len(strays)} of {len(moments)} updates not stamped with their own last_updated "
                        f"(published {iso(ns(moments[0]))} … {iso(ns(moments[-1]))}): landed as {strays}")
    assert [(row["measurement"], row["time"]) for row in found] == [("temperature", ns(m)) for m in moments]
    celsius = [(f - 32.0) * 5.0 / 9.0 for f in PORCH_FAHRENHEIT]
    assert [row["value"] for row in found[:-1]] == pytest.approx(celsius, rel=1e-9, abs=1e-12)
    assert all(row["state"] is None for row in found[:-1])
    assert (found[-1]["value"], found[-1]["state"]) == (None, "unavailable")  # availability, never a number
    assert {(row["domain"], row.get("source"), row["device_id"]) for row in found} == {("sensor", None, None)}
    assert field_types(tenant, "temperature") == {"value": "float", "state": "string"}

    entity = pg_rows(tenant, "SELECT measurement, device_class, state_class, unit_original, unit_canonical, "
                             "conversion, friendly_name, source FROM core.entities "
                             "WHERE tenant_id = %s AND entity_id = %s", tenant.name, "sensor.porch")
    assert entity == [("temperature", "temperature", "measurement", "°F", "°C", "degF->degC", "Porch",
                       "statestream")]
    assert worker.stop() == 0
    assert worker.counters()["dead_lettered"] == 0


def test_statestream_binary_sensor_lands_as_one_and_zero(tenant: Tenant, start_worker: Start) -> None:
    """A binary_sensor without `publish_timestamps` (Home Assistant's default): `on`/`off`, raw or
    JSON-quoted, are 1.0/0.0 in measurement `binary`, stamped at receipt."""
    worker = start_worker(tenant.env)
    pub = publisher(tenant)
    attributes: dict[str, object] = {"device_class": "door", "friendly_name": "Front door"}
    states = [b"on", b'"off"', b'"on"', b"off"]
    before = ns(datetime.now(UTC))
    for i, state in enumerate(states):
        publish_statestream(pub, tenant, "binary_sensor.front_door", state, None, attributes)
        wait_for(lambda n=i + 1: len(entity_points(tenant, "binary_sensor.front_door")) == n,  # type: ignore[misc]
                 f"state {i + 1} of binary_sensor.front_door")
    pub.close()
    after = ns(datetime.now(UTC))

    found = entity_points(tenant, "binary_sensor.front_door")
    assert [(row["measurement"], row["value"], row["state"]) for row in found] == [
        ("binary", 1.0, None), ("binary", 0.0, None), ("binary", 1.0, None), ("binary", 0.0, None)]
    assert all(before <= row["time"] <= after for row in found)  # receipt time, as the contract says
    assert {(row["domain"], row.get("source")) for row in found} == {("binary_sensor", None)}
    assert field_types(tenant, "binary") == {"value": "float"}
    assert worker.stop() == 0
    assert worker.counters()["dead_lettered"] == 0


# -- mqtt_eventstream ------------------------------------------------------------------------------------

def design_example(at: datetime) -> dict[str, Any]:
    """DESIGN.md's state_changed example in full, at a time inside the raw retention policy."""
    stamp = at.isoformat()
    attributes = {"unit_of_measurement": "°C", "device_class": "temperature", "state_class": "measurement",
                  "friendly_name": "Living room"}
    return {
        "event_type": "state_changed",
        "event_data": {
            "entity_id": "sensor.x",
            "old_state": {"entity_id": "sensor.x", "state": "21.3", "attributes": attributes,
                          "last_changed": stamp, "last_updated": stamp, "context": {"id": "01JDXC3V4Z"}},
            "new_state": {"entity_id": "sensor.x", "state": "21.4", "attributes": attributes,
                          "last_changed": stamp, "last_updated": stamp,
                          "context": {"id": "01JDXC3V5Q", "parent_id": None, "user_id": None}},
        },
        "origin": "LOCAL",
        "time_fired": stamp,
    }


def test_eventstream_state_changed_lands_and_other_events_are_counted(tenant: Tenant, start_worker: Start) -> None:
    worker = start_worker(tenant.env)
    at = RECENT.replace(microsecond=1)
    call_service = {"event_type": "call_service", "origin": "LOCAL", "time_fired": at.isoformat(),
                    "event_data": {"domain": "light", "service": "turn_on",
                                   "service_data": {"entity_id": "light.kitchen", "brightness": 180}}}
    removed = {"event_type": "state_changed", "origin": "LOCAL", "time_fired": at.isoformat(),
               "event_data": {"entity_id": "sensor.old", "new_state": None,
                              "old_state": {"entity_id": "sensor.old", "state": "3", "attributes": {}}}}
    pub = publisher(tenant)
    for event in (design_example(at), call_service, removed):
        pub.publish(json.dumps(event).encode())
    pub.close()
    wait_for(lambda: len(entity_points(tenant, "sensor.x")) == 1, "the state_changed point")
    wait_for(lambda: sample(worker, "hats_messages_ignored_total", source="eventstream",
                            why="not_a_state_change") == 2, "call_service and the removal counted as ignored")

    found = entity_points(tenant, "sensor.x")
    assert [(row["measurement"], row["time"], row["value"], row["state"]) for row in found] == [
        ("temperature", ns(at), 21.4, None)]
    assert (found[0]["domain"], found[0].get("source")) == ("sensor", None)  # no source tag: one series per entity
    assert field_types(tenant, "temperature") == {"value": "float"}
    assert entity_points(tenant, "sensor.old") == []
    assert entity_points(tenant, "light.kitchen") == []
    assert worker.stop() == 0
    counters = worker.counters()
    assert (counters["received"], counters["written"], counters["ignored"], counters["dead_lettered"]) == (3, 1, 2, 0)
    entity = pg_rows(tenant, "SELECT measurement, unit_original, unit_canonical, conversion, friendly_name, source "
                             "FROM core.entities WHERE tenant_id = %s ORDER BY entity_id", tenant.name)
    assert entity == [("temperature", "°C", "°C", None, "Living room", "eventstream")]


# -- MQTT discovery (zigbee2mqtt) ------------------------------------------------------------------------

WEATHER_DEVICE = {"identifiers": ["zigbee2mqtt_0x0017880104e45522"], "name": "weather_sensor",
                  "model": "Temperature and humidity sensor", "manufacturer": "Aqara"}
# (object, unit, device_class, template): the three quoting forms devices really use.
WEATHER_ENTITIES = [
    ("temperature", "°C", "temperature", '{{ value_json["temperature"] }}'),
    ("humidity", "%", "humidity", "{{ value_json.humidity }}"),
    ("battery", "%", "battery", "{{ value_json['battery'] }}"),
]


def weather_config(state_topic: str, name: str, unit: str, device_class: str, template: str) -> bytes:
    """zigbee2mqtt's discovery config for one exposed value (DESIGN.md's example for temperature)."""
    return json.dumps({
        "unit_of_measurement": unit, "device_class": device_class, "state_class": "measurement",
        "value_template": template, "state_topic": state_topic, "json_attributes_topic": state_topic,
        "object_id": f"weather_sensor_{name}", "unique_id": f"0x0017880104e45522_{name}_zigbee2mqtt",
        "origin": {"name": "Zigbee2MQTT", "sw": "1.40.2", "url": "https://www.zigbee2mqtt.io"},
        "availability": [{"topic": "zigbee2mqtt/bridge/state"}], "enabled_by_default": True,
        "device": WEATHER_DEVICE,
    }).encode()


def test_discovery_device_states_land_and_an_empty_config_removes_the_entity(
    tenant: Tenant, start_worker: Start
) -> None:
    state_topic = topic(tenant, "zigbee2mqtt/weather_sensor")
    pub = publisher(tenant)
    for name, unit, device_class, template in WEATHER_ENTITIES:  # retained, as zigbee2mqtt publishes them
        config_topic = topic(tenant, f"{DISCOVERY}/sensor/0x0017880104e45522/{name}/config")
        pub.publish(weather_config(state_topic, name, unit, device_class, template), topic=config_topic, retain=True)
    before = ns(datetime.now(UTC))
    worker = start_worker(tenant.env)
    # Retained like zigbee2mqtt's `retain: true`: delivered once, whether the worker's subscription to the
    # state topic (learned from the configs) is in place before or after this publish.
    pub.publish(b'{"temperature":27.34,"humidity":44.72,"battery":97,"linkquality":120}', topic=state_topic,
                retain=True)
    wait_for(lambda: len(select(tenant, "SELECT * FROM raw./.*/")) == 3, "three points from one state message")
    after = ns(datetime.now(UTC))

    found = select(tenant, "SELECT * FROM raw./.*/")
    assert sorted((row["measurement"], row["entity_id"], row["value"]) for row in found) == [
        ("battery", "sensor.weather_sensor_battery", 97.0),
        ("humidity", "sensor.weather_sensor_humidity", 44.72),
        ("temperature", "sensor.weather_sensor_temperature", 27.34),
    ]
    assert {(row["domain"], row.get("source"), row["device_id"]) for row in found} == {
        ("sensor", None, "zigbee2mqtt_0x0017880104e45522")}
    assert all(before <= row["time"] <= after for row in found)  # no last_updated: receipt time
    for measurement in ("temperature", "humidity", "battery"):
        assert field_types(tenant, measurement) == {"value": "float"}

    # An empty retained config removes the battery entity; its siblings keep the shared state topic.
    pub.publish(b"", topic=topic(tenant, f"{DISCOVERY}/sensor/0x0017880104e45522/battery/config"), retain=True)
    wait_for(lambda: sample(worker, "hats_messages_ignored_total", source="discovery", why="entity_removed") == 1,
             "the battery entity removed")
    pub.publish(b'{"temperature":26.9,"humidity":45.1,"battery":96,"linkquality":116}', topic=state_topic,
                retain=True)
    pub.close()
    wait_for(lambda: len(select(tenant, "SELECT * FROM raw./.*/")) == 5, "the next state without the battery")
    found = select(tenant, "SELECT * FROM raw./.*/")
    values: dict[str, list[float]] = {}
    for row in found:
        values.setdefault(row["entity_id"], []).append(row["value"])
    assert values == {"sensor.weather_sensor_temperature": [27.34, 26.9],
                      "sensor.weather_sensor_humidity": [44.72, 45.1],
                      "sensor.weather_sensor_battery": [97.0]}

    assert pg_rows(tenant, "SELECT device_id, name, manufacturer, model, identifiers FROM core.devices "
                           "WHERE tenant_id = %s", tenant.name) == [
        ("zigbee2mqtt_0x0017880104e45522", "weather_sensor", "Aqara", "Temperature and humidity sensor",
         ["zigbee2mqtt_0x0017880104e45522"])]
    assert pg_rows(tenant, "SELECT entity_id, device_id, measurement, unit_original, unit_canonical, conversion, "
                           "source FROM core.entities WHERE tenant_id = %s ORDER BY entity_id", tenant.name) == [
        ("sensor.weather_sensor_battery", "zigbee2mqtt_0x0017880104e45522", "battery", "%", "%", None, "discovery"),
        ("sensor.weather_sensor_humidity", "zigbee2mqtt_0x0017880104e45522", "humidity", "%", "%", None,
         "discovery"),
        ("sensor.weather_sensor_temperature", "zigbee2mqtt_0x0017880104e45522", "temperature", "°C", "°C", None,
         "discovery"),
    ]
    assert worker.stop() == 0
    assert worker.counters()["dead_lettered"] == 0


# -- birth and last will ---------------------------------------------------------------------------------

def test_status_online_and_offline_land_as_availability(tenant: Tenant, start_worker: Start) -> None:
    worker = start_worker(tenant.env)
    pub = publisher(tenant)
    pub.publish(b"online", topic=topic(tenant, STATUS))
    wait_for(lambda: len(entity_points(tenant, "homeassistant.status")) == 1, "the birth message")
    pub.publish(b"offline", topic=topic(tenant, STATUS))
    pub.close()
    wait_for(lambda: len(entity_points(tenant, "homeassistant.status")) == 2, "the last will")

    found = entity_points(tenant, "homeassistant.status")
    assert [(row["measurement"], row["value"]) for row in found] == [("availability", 1.0), ("availability", 0.0)]
    assert {(row["domain"], row.get("source")) for row in found} == {("homeassistant", None)}
    assert field_types(tenant, "availability") == {"value": "float"}
    assert worker.stop() == 0
    assert worker.counters()["dead_lettered"] == 0
