"""What the simulator publishes matches what Home Assistant really sends (shared DESIGN.md), and the data
has the behaviours the ingest path must survive: °F and kW/Wh units, meter resets, `unavailable`
dropouts, late and out-of-order states. Everything is read back from the bytes on the wire by a small
decoder here, the way a consumer would."""

from __future__ import annotations

import itertools
import json
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ha_simulator.fleet import ALL_FORMATS, Format
from ha_simulator.kinds import CLIMATE, DOOR, OUTDOOR
from ha_simulator.messages import Message, Role, Topics
from ha_simulator.models import make_model
from ha_simulator.simulation import Batch, Simulation, SimulationConfig, to_us

START = datetime(2026, 3, 1, tzinfo=UTC)
TEMPLATE = re.compile(r"""\{\{ value_json(?:\.(\w+)|\['(\w+)'\]|\["(\w+)"\])(?: \| (?:float|int|round\(\d\)))? \}\}""")
ISO_HA = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00$")
ISO_Z2M = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
HA_ATTRIBUTES = {"unit_of_measurement", "device_class", "state_class", "friendly_name"}
DAY_US = 86_400_000_000
NEAR_ZERO_WH = 2_000.0  # a reset counter restarts below this (counters start at 100 kWh or more)


@dataclass(frozen=True)
class Observation:
    """One entity state as a consumer decodes it; `emit_us` is when the simulator published it."""

    entity_id: str
    state: str
    timestamp: datetime | None  # None: zigbee2mqtt availability carries no time
    fmt: Format
    emit_us: int


@dataclass
class Decoded:
    observations: list[Observation]
    attributes: dict[str, dict[str, Any]]  # entity_id -> statestream attributes / discovery config
    events: list[dict[str, Any]]  # every eventstream payload
    other_events: int
    quoted_states: int
    plain_states: int
    availability_online: list[tuple[str, int]]


def simulate(config: SimulationConfig, hours: float, start: datetime = START) -> tuple[Simulation, list[Batch]]:
    simulation = Simulation(config, start)
    return simulation, list(simulation.batches_until(to_us(start + timedelta(hours=hours))))


def decode(topics: Topics, messages: Iterable[tuple[int, Message]]) -> Decoded:
    """Read messages as an ingest consumer would (statestream, eventstream, zigbee2mqtt discovery)."""
    out = Decoded([], {}, [], 0, 0, 0, [])
    pending: dict[str, str] = {}
    devices: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}  # state_topic -> (entity, key, config)
    for emit_us, message in messages:
        topic, payload = message.topic, message.payload.decode()
        if topic.startswith(topics.statestream + "/"):
            domain, object_id, leaf = topic.removeprefix(topics.statestream + "/").split("/")
            entity_id = f"{domain}.{object_id}"
            if leaf == "state":
                assert message.retain
                if payload.startswith('"'):
                    out.quoted_states += 1
                    payload = json.loads(payload)
                else:
                    out.plain_states += 1
                pending[entity_id] = payload
            elif leaf in ("last_updated", "last_changed"):
                assert ISO_HA.match(payload), payload
                if leaf == "last_updated":
                    out.observations.append(Observation(entity_id, pending.pop(entity_id),
                                                        datetime.fromisoformat(payload), Format.STATESTREAM, emit_us))
            else:
                out.attributes.setdefault(entity_id, {})[leaf] = json.loads(payload)
        elif topic == topics.events:
            event = json.loads(payload)
            out.events.append(event)
            if event["event_type"] != "state_changed":
                out.other_events += 1
                continue
            new = event["event_data"]["new_state"]
            out.attributes[new["entity_id"]] = new["attributes"]
            out.observations.append(Observation(new["entity_id"], new["state"],
                                                datetime.fromisoformat(new["last_updated"]), Format.EVENTSTREAM,
                                                emit_us))
        elif topic.startswith(topics.discovery + "/") and topic.endswith("/config"):
            config = json.loads(payload)
            match = TEMPLATE.fullmatch(config["value_template"])
            assert match, config["value_template"]
            key = next(group for group in match.groups() if group)
            entity_id = f"{topic.split('/')[-4]}.{config['object_id']}"
            devices.setdefault(config["state_topic"], []).append((entity_id, key, config))
            out.attributes[entity_id] = config
        elif topic.endswith("/availability"):
            entities = devices[topic.removesuffix("/availability")]
            if json.loads(payload)["state"] == "offline":
                out.observations.extend(Observation(entity_id, "unavailable", None, Format.DISCOVERY, emit_us)
                                        for entity_id, _, _ in entities)
            else:
                out.availability_online.append((topic.removesuffix("/availability"), emit_us))
        elif topic in devices:
            body = json.loads(payload)
            assert ISO_Z2M.match(body["last_seen"]), body["last_seen"]
            seen = datetime.fromisoformat(body["last_seen"])
            for entity_id, key, config in devices[topic]:
                value = body[key]
                if "payload_on" in config:
                    state = "on" if value == config["payload_on"] else "off"
                else:
                    assert isinstance(value, int | float), (topic, key, value)
                    state = str(value)
                out.observations.append(Observation(entity_id, state, seen, Format.DISCOVERY, emit_us))
    return out


def wire(simulation: Simulation, batches: list[Batch]) -> list[tuple[int, Message]]:
    return [(simulation.start_us, m) for m in simulation.announce()] + [
        (batch.emit_us, m) for batch in batches for m in batch.messages]


def by_entity(observations: Iterable[Observation]) -> dict[str, list[Observation]]:
    grouped: dict[str, list[Observation]] = defaultdict(list)
    for observation in observations:
        grouped[observation.entity_id].append(observation)
    return grouped


# --- shapes ------------------------------------------------------------------------------------------


def test_statestream_topics_and_payloads() -> None:
    config = SimulationConfig(devices=30, formats=(Format.STATESTREAM,))
    simulation, batches = simulate(config, 2)
    announced = simulation.announce()
    attribute_topics = [m for m in announced if m.topic.startswith("homeassistant/statestream/")]
    assert attribute_topics
    assert all(m.retain for m in attribute_topics)
    decoded = decode(config.topics, wire(simulation, batches))
    assert set(decoded.attributes) == set(simulation.entity_ids)
    for entity_id, attributes in decoded.attributes.items():
        assert {"friendly_name"} <= set(attributes) <= HA_ATTRIBUTES, entity_id
        if entity_id.startswith("sensor."):
            assert {"unit_of_measurement", "state_class"} <= set(attributes)
    assert decoded.attributes["sensor.climate_00000_temperature"] == {
        "state_class": "measurement", "unit_of_measurement": "°C", "device_class": "temperature",
        "friendly_name": "climate_00000 Temperature"}
    # Some devices JSON-quote the state, most do not.
    assert decoded.quoted_states > 0
    assert decoded.plain_states > decoded.quoted_states
    states = [m for batch in batches for m in batch.messages if m.role is Role.STATE]
    assert all(re.fullmatch(r"homeassistant/statestream/(sensor|binary_sensor)/\w+/state", m.topic) for m in states)
    assert len(decoded.observations) == len(states)


def test_statestream_attributes_always_republishes_them_with_every_state() -> None:
    config = SimulationConfig(devices=10, formats=(Format.STATESTREAM,), statestream_attributes="always")
    _simulation, batches = simulate(config, 0.5)
    for batch in batches:
        leaves = [m.topic.rsplit("/", 1)[1] for m in batch.messages]
        assert leaves[:3] == ["state", "last_updated", "last_changed"]
        assert "friendly_name" in leaves[3:]


def test_eventstream_state_changed_shape_and_old_state() -> None:
    config = SimulationConfig(devices=30, formats=(Format.EVENTSTREAM,), late_fraction=0.0, out_of_order_fraction=0.0)
    simulation, batches = simulate(config, 3)
    decoded = decode(config.topics, wire(simulation, batches))
    changes = [e for e in decoded.events if e["event_type"] == "state_changed"]
    assert len(changes) > 1_000
    assert decoded.other_events > 0  # other event types arrive on the same topic
    previous: dict[str, dict[str, Any] | None] = {}
    for event in changes:
        assert set(event) >= {"event_type", "event_data"}
        data = event["event_data"]
        new = data["new_state"]
        assert set(data) == {"entity_id", "old_state", "new_state"}
        assert {"entity_id", "state", "attributes", "last_changed", "last_updated", "context"} <= set(new)
        assert new["entity_id"] == data["entity_id"]
        assert ISO_HA.match(new["last_updated"])
        assert ISO_HA.match(new["last_changed"])
        assert len(new["context"]["id"]) == 26
        assert data["old_state"] == previous.get(data["entity_id"])  # null first, then the previous state
        assert new["state"] != (data["old_state"] or {}).get("state")  # HA fires only on a change
        previous[data["entity_id"]] = new
    power = next(e for e in changes if e["event_data"]["entity_id"] == "sensor.plug_00001_power")
    assert power["event_data"]["new_state"]["attributes"] == {
        "state_class": "measurement", "unit_of_measurement": "W", "device_class": "power",
        "friendly_name": "plug_00001 Power"}
    assert all(not m.retain for b in batches for m in b.messages)


def test_discovery_configs_and_zigbee2mqtt_state() -> None:
    config = SimulationConfig(devices=30, formats=(Format.DISCOVERY,))
    simulation, batches = simulate(config, 2)
    announced = simulation.announce()
    assert announced[0] == Message("homeassistant/status", b"online", True, Role.CONFIG)
    configs = [m for m in announced if m.topic.endswith("/config")]
    assert len(configs) == len(simulation.entity_ids)
    assert all(m.retain for m in announced)
    for message in configs:
        assert re.fullmatch(r"homeassistant/(sensor|binary_sensor)/0x[0-9a-f]{16}/\w+/config", message.topic)
        body = json.loads(message.payload)
        assert {"value_template", "state_topic", "object_id", "unique_id", "device"} <= set(body)
        assert {"identifiers", "name", "model", "manufacturer"} <= set(body["device"])
        assert body["state_topic"] == f"zigbee2mqtt/{body['device']['name']}"
    climate = json.loads(next(m.payload for m in configs if b'"object_id":"climate_00000_temperature"' in m.payload))
    assert (climate["unit_of_measurement"], climate["device_class"], climate["state_class"]) == (
        "°C", "temperature", "measurement")
    templates = {json.loads(m.payload)["value_template"] for m in configs}
    assert any("value_json['" in t for t in templates)
    assert any('value_json["' in t for t in templates)
    assert any("| float" in t for t in templates)
    assert any("value_json.temperature }}" in t for t in templates)

    state = next(m for b in batches for m in b.messages if m.topic == "zigbee2mqtt/climate_00000")
    assert set(json.loads(state.payload)) == {"temperature", "humidity", "battery", "linkquality", "last_seen"}
    assert not state.retain
    door = next(m for b in batches for m in b.messages if m.topic == "zigbee2mqtt/door_00002")
    assert isinstance(json.loads(door.payload)["contact"], bool)
    decoded = decode(config.topics, wire(simulation, batches))
    assert {o.entity_id for o in decoded.observations} == set(simulation.entity_ids)


def test_tenant_prefix_is_prepended_to_every_topic() -> None:
    topics = Topics(tenant_prefix="hats/acme")
    simulation, batches = simulate(SimulationConfig(devices=15, topics=topics), 1)
    topics_seen = {m.topic for m in simulation.announce()} | {m.topic for b in batches for m in b.messages}
    assert all(topic.startswith("hats/acme/") for topic in topics_seen)
    assert "hats/acme/homeassistant/status" in topics_seen
    assert "hats/acme/homeassistant/events" in topics_seen
    assert any(t.startswith("hats/acme/homeassistant/statestream/sensor/") for t in topics_seen)
    assert any(t.startswith("hats/acme/zigbee2mqtt/") for t in topics_seen)
    configs = [json.loads(m.payload) for m in simulation.announce() if m.topic.endswith("/config")]
    assert configs
    assert all(c["state_topic"].startswith("hats/acme/zigbee2mqtt/") for c in configs)


# --- behaviours --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_fahrenheit_and_kilowatt_sensors_exist_with_plausible_values(fmt: Format) -> None:
    config = SimulationConfig(devices=20, formats=(fmt,))
    simulation, batches = simulate(config, 6)
    decoded = decode(config.topics, wire(simulation, batches))
    units = {entity_id: a["unit_of_measurement"] for entity_id, a in decoded.attributes.items()
             if "unit_of_measurement" in a}
    assert {"°F", "°C", "kW", "W", "Wh", "kWh"} <= set(units.values())
    values: dict[str, list[float]] = defaultdict(list)
    for observation in decoded.observations:
        if observation.state != "unavailable" and observation.entity_id.endswith("_temperature"):
            values[units[observation.entity_id]].append(float(observation.state))
    fahrenheit, celsius = values["°F"], values["°C"]
    assert fahrenheit
    assert celsius
    assert 35 < sum(fahrenheit) / len(fahrenheit) < 80
    assert min(fahrenheit) > -20
    assert max(fahrenheit) < 120
    assert 15 < sum(celsius) / len(celsius) < 27


def test_meter_resets_happen_and_never_make_consumption_negative() -> None:
    config = SimulationConfig(devices=20, meter_resets_per_day=8.0, dropouts_per_hour=0.2)
    simulation, batches = simulate(config, 16)
    decoded = decode(config.topics, wire(simulation, batches))
    counters = {e: o for e, o in by_entity(decoded.observations).items() if e.endswith("_energy")}
    assert {e.split("_")[0] for e in counters} == {"sensor.meter", "sensor.plug"}
    resets = 0
    for entity_id, observations in counters.items():
        values = [float(o.state) for o in sorted(observations, key=lambda o: o.timestamp or START)
                  if o.state != "unavailable"]
        for before, after in itertools.pairwise(values):
            if after < before:  # a drop is only ever a meter reset: a new cycle from about zero
                assert entity_id.startswith("sensor.meter_"), (entity_id, before, after)
                assert after < NEAR_ZERO_WH, (entity_id, before, after)
                resets += 1
    assert resets >= 10
    assert resets <= simulation.meter_resets


def test_devices_drop_out_to_unavailable_and_come_back() -> None:
    config = SimulationConfig(devices=30, dropouts_per_hour=0.5)
    simulation, batches = simulate(config, 12)
    decoded = decode(config.topics, wire(simulation, batches))
    dropped_formats = set()
    for entity_id, observations in by_entity(decoded.observations).items():
        states = [o.state for o in sorted(observations, key=lambda o: o.emit_us)]
        for position, state in enumerate(states[:-1]):
            if state == "unavailable":
                dropped_formats.add(observations[0].fmt)
                assert "unavailable" not in states[position + 1:position + 2], entity_id  # back with a value
    assert dropped_formats == set(ALL_FORMATS)
    assert decoded.availability_online  # zigbee2mqtt announces the device again before its state
    unavailable = sum(1 for o in decoded.observations if o.state == "unavailable")
    assert 0 < unavailable < len(decoded.observations) * 0.05


def test_late_and_out_of_order_states_at_the_configured_fraction() -> None:
    config = SimulationConfig(devices=50)  # the defaults: 1 % late, 1 % out of order
    simulation, batches = simulate(config, 6)
    states = [b for b in batches if b.is_state]
    late = [b for b in states if b.emit_us - b.timestamp_us >= 120_000_000]
    assert len(states) > 20_000
    assert config.late_fraction * 0.7 < len(late) / len(states) < config.late_fraction * 1.3
    # On the wire: an entity's state published after a newer one of the same entity.
    decoded = decode(config.topics, wire(simulation, batches))
    newest: dict[str, datetime] = {}
    inversions = 0
    timed = [o for o in decoded.observations if o.timestamp is not None]
    for observation in timed:
        assert observation.timestamp is not None
        if observation.entity_id in newest and observation.timestamp < newest[observation.entity_id]:
            inversions += 1
        newest[observation.entity_id] = max(observation.timestamp, newest.get(observation.entity_id, START))
    expected = config.late_fraction + config.out_of_order_fraction
    assert expected * 0.3 < inversions / len(timed) < expected * 1.3
    # Late states carry their own (past) time, minutes before they are published.
    emitted = Counter(o.emit_us - int(o.timestamp.timestamp() * 1e6) >= 120_000_000 for o in timed if o.timestamp)
    assert emitted[True] > 0


def test_batteries_drain_slowly() -> None:
    """Over a month a coin cell loses a few percent (a year or two of life), never gaining any back."""
    start_us = to_us(START)
    for kind in (CLIMATE, OUTDOOR, DOOR):
        for seed in range(5):
            model = make_model(kind, random.Random(seed), start_us, meter_resets_per_day=0.0)
            battery = [spec.key for spec in kind.entities].index("battery")
            levels = [int(model.states(start_us + day * DAY_US)[battery]) for day in range(31)]
            assert levels == sorted(levels, reverse=True), (kind.name, levels)
            assert 2 <= levels[0] - levels[-1] <= 13, (kind.name, levels)


def test_published_battery_levels_never_rise() -> None:
    config = SimulationConfig(devices=30, dropouts_per_hour=0.2)
    simulation, batches = simulate(config, 8)
    decoded = decode(config.topics, wire(simulation, batches))
    batteries = {e: o for e, o in by_entity(decoded.observations).items() if e.endswith("_battery")}
    assert len(batteries) == 18  # climate, door and outdoor devices carry one
    for entity_id, observations in batteries.items():
        levels = [int(o.state) for o in sorted(observations, key=lambda o: o.timestamp or START)
                  if o.state != "unavailable"]
        assert levels == sorted(levels, reverse=True), entity_id
