"""Properties of the mqtt_statestream parser: hostile topics and payloads are refused with a reason, never a
crash; HA's bursts (state, last_updated, last_changed, then the attributes, interleaved across entities and
sometimes JSON-quoted) become the points they mean."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from ingest_worker.normalise import EntityState
from ingest_worker.sources.statestream import StatestreamSource
from tests.ha_strategies import (
    HaState,
    any_text,
    assert_point_is,
    examples,
    ha_states,
    outcome_of,
    payload_bytes,
    through_worker,
)

BASE = "homeassistant/statestream"
leaves = st.sampled_from(["state", "last_updated", "last_changed", "unit_of_measurement", "device_class",
                          "state_class", "friendly_name"]) | any_text
topics = st.builds(lambda d, o, leaf: f"{BASE}/{d}/{o}/{leaf}", st.sampled_from(["sensor", "light"]) | any_text,
                   st.sampled_from(["t", "x_1"]) | any_text, leaves) | any_text


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@examples(120)
@given(st.lists(st.tuples(topics, payload_bytes), max_size=12))
def test_hostile_messages_are_refused_with_a_reason_and_held_states_stay_writable(
        messages: list[tuple[str, bytes]]) -> None:
    clock = Clock()
    source = StatestreamSource(BASE, clock=clock)
    emitted: list[EntityState] = []
    for topic, payload in messages:
        outcome = outcome_of(lambda topic=topic, payload=payload: source.handle(topic, payload, 1))  # type: ignore[misc]
        if not isinstance(outcome, Exception):
            emitted.extend(outcome.states)
        clock.now += 0.05
    clock.now += 5
    emitted.extend(source.flush())
    emitted.extend(source.flush(force=True))
    for state in emitted:
        through_worker(state)


def burst(state: HaState, quoted: bool) -> list[tuple[str, bytes]]:
    prefix = f"{BASE}/{state.domain}/{state.object_id}"
    value = json.dumps(state.state) if quoted else state.state
    messages = [(f"{prefix}/state", value.encode()), (f"{prefix}/last_updated", state.last_updated_iso.encode()),
                (f"{prefix}/last_changed", state.last_updated_iso.encode())]
    messages += [(f"{prefix}/{name}", json.dumps(attr).encode()) for name, attr in state.attributes.items()]
    return messages


@examples(100)
@given(st.lists(ha_states(), min_size=1, max_size=5, unique_by=lambda s: s.entity_id), st.booleans(),
       st.randoms(use_true_random=False))
def test_interleaved_bursts_become_their_points(states: list[HaState], quoted: bool, order: object) -> None:
    clock = Clock()
    source = StatestreamSource(BASE, clock=clock)
    bursts = [burst(state, quoted) for state in states]
    while any(bursts):  # interleave the entities' messages, each entity's in HA's own order
        pick = order.choice([b for b in bursts if b])  # type: ignore[attr-defined]
        topic, payload = pick.pop(0)
        assert not source.handle(topic, payload, 1).states
    clock.now += 5
    emitted = {state.entity_id: state for state in source.flush()}
    assert set(emitted) == {state.entity_id for state in states}
    for expected in states:
        line = through_worker(emitted[expected.entity_id])
        assert not isinstance(line, Exception), line
        assert_point_is(line, expected)
