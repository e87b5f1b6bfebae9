"""An entity's series never depends on what one message carried: attribute-less messages and
`unavailable` states without their unit take what `core.entities` knows of the entity."""

from __future__ import annotations

import pytest

from ingest_worker.normalise import EntityState, describe, normalise
from ingest_worker.store.metadata import MetadataStore

METER = {"unit_of_measurement": "Wh", "device_class": "energy", "state_class": "total_increasing",
         "friendly_name": "Grid"}


def store_knowing(state: EntityState) -> MetadataStore:
    store = MetadataStore("t", budget=10)
    assert store.admit(state.entity_id)
    store.note(state, describe(state).measurement)
    return store


@pytest.mark.parametrize("state", ["1500", "unavailable", "unknown"])
def test_an_attribute_less_message_takes_the_known_description(state: str) -> None:
    store = store_knowing(EntityState("sensor.grid", "1200", METER, source="eventstream"))
    described = store.described(EntityState("sensor.grid", state, {}, source="statestream"))
    assert dict(described.attributes) == METER
    point = normalise(described, received_ns=1)
    assert point.measurement == "energy"
    if state == "1500":
        assert point.value == 1.5  # Wh → kWh as the entity's unit says, not a bare number in `state`


def test_an_unavailable_state_with_only_its_name_takes_the_known_unit() -> None:
    store = store_knowing(EntityState("sensor.grid", "1200", METER, source="eventstream"))
    described = store.described(EntityState("sensor.grid", "unavailable", {"friendly_name": "Grid (lost)"}))
    assert normalise(described, received_ns=1).measurement == "energy"
    assert described.attributes["friendly_name"] == "Grid (lost)"  # what the message says wins


def test_a_message_that_describes_itself_is_left_alone() -> None:
    store = store_knowing(EntityState("sensor.grid", "1200", METER, source="eventstream"))
    own = EntityState("sensor.grid", "2.5", {"unit_of_measurement": "kWh", "device_class": "energy"})
    assert store.described(own) is own
    text = EntityState("sensor.grid", "idle", {"friendly_name": "Grid"})  # a numeric state's text: its own call
    assert store.described(text) is text


def test_an_unknown_entity_is_left_alone() -> None:
    store = MetadataStore("t", budget=10)
    bare = EntityState("sensor.new", "5", {})
    assert store.described(bare) is bare


BATTERY = {"state_class": "measurement", "unit_of_measurement": "%", "device_class": "battery",
           "friendly_name": "Door battery"}


@pytest.mark.parametrize("cached", [("state_class",), ("state_class", "unit_of_measurement"), ("friendly_name",)])
def test_pieced_attributes_with_gaps_take_the_known_description(cached: tuple[str, ...]) -> None:
    """statestream after a restart: the retained replay stalled part way through an entity's attributes
    (soak run F: a battery with only its state_class landed in measurement `state`, a second series)."""
    store = store_knowing(EntityState("sensor.door_battery", "80", BATTERY, source="statestream"))
    partial = {key: BATTERY[key] for key in cached}
    described = store.described(EntityState("sensor.door_battery", "79", partial, source="statestream",
                                            attributes_pieced=True))
    assert dict(described.attributes) == BATTERY
    assert normalise(described, received_ns=1).measurement == normalise(
        EntityState("sensor.door_battery", "79", BATTERY), received_ns=1).measurement == "battery"


def test_pieced_attributes_keep_what_they_carry_over_what_is_known() -> None:
    store = store_knowing(EntityState("sensor.grid", "1200", METER, source="statestream"))
    changed = EntityState("sensor.grid", "1.5", {"unit_of_measurement": "kWh"}, source="statestream",
                          attributes_pieced=True)
    described = store.described(changed)
    assert described.attributes["unit_of_measurement"] == "kWh"  # a unit change wins
    assert described.attributes["device_class"] == "energy"
    whole = EntityState("sensor.grid", "1.5", METER, source="statestream", attributes_pieced=True)
    assert store.described(whole) is whole  # nothing missing: left alone
