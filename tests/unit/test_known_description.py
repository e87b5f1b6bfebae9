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
