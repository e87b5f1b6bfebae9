"""Properties of the WebSocket API's parsers: frames split by the link, events, `get_states` states, history
rows and the recorder import's rows (the same compressed form). Hostile input is refused with a reason,
never a crash; what HA sends becomes its point, float epochs within the documented precision."""

from __future__ import annotations

import json

from hypothesis import example, given
from hypothesis import strategies as st

from ingest_worker.ha_history import history_items
from ingest_worker.sources import websocket as ws
from ingest_worker.sources.recorder import RecorderSource, row_payload, state_topic
from ingest_worker.sources.websocket import WebsocketSource
from tests.ha_strategies import (
    HaState,
    any_text,
    assert_point_is,
    deep,
    dumps,
    examples,
    ha_states,
    hostile_json,
    outcome_of,
    payload_bytes,
    through_worker,
)
from tests.unit.test_websocket_link import link

topics = st.sampled_from([ws.EVENT_TOPIC, ws.STATE_TOPIC, ws.FRAME_TOPIC, ws.HISTORY_TOPIC + "sensor.x",
                          ws.PREFIX + "result"]) | any_text.map(lambda t: ws.HISTORY_TOPIC + t)
rows = st.fixed_dictionaries({}, optional={"s": hostile_json(4), "a": hostile_json(), "lu": hostile_json(2),
                                           "lc": hostile_json(2)})


def check(source: WebsocketSource | RecorderSource, topic: str, payload: bytes) -> None:
    outcome = outcome_of(lambda: source.handle(topic, payload))
    if not isinstance(outcome, Exception):
        for state in outcome.states:
            through_worker(state)


@examples(200)
@given(topics, payload_bytes | rows.map(dumps) | st.builds(
    lambda new: {"id": 2, "type": "event", "event": {"event_type": "state_changed", "data": {"new_state": new}}},
    hostile_json()).map(dumps))
def test_hostile_items_are_refused_with_a_reason_or_become_writable_points(topic: str, payload: bytes) -> None:
    check(WebsocketSource(), topic, payload)


@examples(150)
@given(st.lists(hostile_json(8) | st.just(deep(990)), max_size=4) | hostile_json())
@example([{"\ud800": None}])  # a lone surrogate in a coalesced element once failed the link (UnicodeEncodeError)
def test_any_frame_becomes_items_the_source_refuses_or_reads(frame: object) -> None:
    ha, _, conn = link()
    text = json.dumps(frame)
    ha._frame(conn, text, json.loads(text))
    for item in ha.take():
        assert item.topic.startswith(ws.PREFIX)
        check(WebsocketSource(), item.topic, item.payload)


@examples(150)
@given(hostile_json())
def test_any_history_answer_becomes_items_the_source_refuses_or_reads(result: object) -> None:
    items = outcome_of(lambda: list(history_items({"sensor.x": result, "sensor.y": [result]}, 0)))
    assert not isinstance(items, Exception)
    for item in items:
        check(WebsocketSource(), item.topic, item.payload)


@examples(200)
@given(ha_states(with_device=False), st.sampled_from(["event", "state", "history", "recorder"]))
def test_what_home_assistant_sends_becomes_its_point(expected: HaState, how: str) -> None:
    state_object = expected.state_object()
    precision = 0
    if how == "event":
        data = {"entity_id": expected.entity_id, "new_state": state_object}
        message = {"id": 2, "type": "event", "event": {"event_type": "state_changed", "data": data}}
        outcome = WebsocketSource().handle(ws.EVENT_TOPIC, json.dumps(message).encode())
    elif how == "state":
        outcome = WebsocketSource().handle(ws.STATE_TOPIC, json.dumps(state_object).encode())
    elif how == "history":
        row = {"s": expected.state, "a": dict(expected.attributes), "lu": expected.epoch_s}
        outcome = WebsocketSource().handle(ws.history_topic(expected.entity_id), json.dumps(row).encode())
        precision = expected.epoch_precision_ns
    else:
        payload = row_payload(expected.state, json.dumps(dict(expected.attributes)), expected.epoch_s, None)
        outcome = RecorderSource().handle(state_topic(expected.entity_id), payload)
        precision = expected.epoch_precision_ns
    (state,) = outcome.states
    line = through_worker(state)
    assert not isinstance(line, Exception), line
    assert_point_is(line, expected, precision)


@examples(200)
@given(any_text | st.none(), any_text | st.none(), st.floats() | st.integers(-(2**62), 2**62),
       st.floats() | st.none(), any_text)
def test_any_recorder_row_is_refused_with_a_reason_or_becomes_a_writable_point(
        state: str | None, attrs: str | None, updated: float, changed: float | None, entity_id: str) -> None:
    payload = row_payload(state, attrs, updated, changed)
    check(RecorderSource(), state_topic(entity_id), payload)
