"""Properties of the mqtt_eventstream parser: hostile input is refused with a reason, never a crash; what
HA sends becomes the point it means (value, tags, the state's own microsecond time)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from ingest_worker.normalise import EntityState
from ingest_worker.sources.eventstream import parse
from tests.ha_strategies import (
    HaState,
    assert_point_is,
    dumps,
    examples,
    ha_states,
    hostile_json,
    outcome_of,
    payload_bytes,
    through_worker,
)


def event(new_state: object, event_type: object = "state_changed") -> dict[str, object]:
    return {"event_type": event_type, "event_data": {"entity_id": "sensor.x", "old_state": None,
                                                     "new_state": new_state}}


def hostile_state() -> st.SearchStrategy[dict[str, object]]:
    return st.fixed_dictionaries({}, optional={"entity_id": hostile_json(4) | st.just("sensor.x"),
                                               "state": hostile_json(4), "attributes": hostile_json(),
                                               "last_updated": hostile_json(4)})


@examples(300)
@given(payload_bytes | st.builds(event, hostile_json()).map(dumps)
       | st.builds(event, hostile_state()).map(dumps))
def test_hostile_payloads_are_refused_with_a_reason_or_become_writable_points(payload: bytes) -> None:
    state = outcome_of(lambda: parse(payload))
    if isinstance(state, EntityState):
        through_worker(state)


@examples(200)
@given(ha_states())
def test_what_home_assistant_sends_becomes_its_point(expected: HaState) -> None:
    state = parse(json.dumps(event(expected.state_object())).encode())
    assert isinstance(state, EntityState)
    line = through_worker(state)
    assert not isinstance(line, Exception), line
    assert_point_is(line, expected)
