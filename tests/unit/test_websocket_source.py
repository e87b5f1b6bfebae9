"""The WebSocket source's parsing: event messages, history rows in HA's compressed form, get_states
states, bad messages (Rejected with a reason), and exact float-epoch → nanosecond conversion."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest

from ingest_worker.normalise import normalise, parse_time_ns
from ingest_worker.rejections import Reason, Rejected
from ingest_worker.sources import websocket as ws
from ingest_worker.sources.websocket import WebsocketSource, epoch_to_ns, epoch_to_us, iso_from_us

AT = "2024-03-01T12:00:00.123456+00:00"
AT_NS = 1_709_294_400_123_456_000
ATTRS = {"unit_of_measurement": "°F", "device_class": "temperature", "state_class": "measurement",
         "friendly_name": "Porch"}


def event(new_state: object, event_type: str = "state_changed", sub: int = 2) -> bytes:
    return json.dumps({"id": sub, "type": "event", "event": {
        "event_type": event_type, "data": {"entity_id": "sensor.porch", "old_state": None, "new_state": new_state},
        "origin": "LOCAL", "time_fired": AT, "context": {"id": "c"}}}).encode()


def new_state(state: str = "70.7", **extra: object) -> dict[str, object]:
    return {"entity_id": "sensor.porch", "state": state, "attributes": ATTRS, "last_changed": AT,
            "last_reported": AT, "last_updated": AT, "context": {"id": "c"}, **extra}


def test_state_changed_event_becomes_a_state_with_its_last_updated() -> None:
    source = WebsocketSource(device_of=lambda entity: "dev1" if entity == "sensor.porch" else None)
    outcome = source.handle(ws.EVENT_TOPIC, event(new_state()))
    (state,) = outcome.states
    assert (state.entity_id, state.state, state.last_updated, state.source, state.device_id) == (
        "sensor.porch", "70.7", AT, "websocket", "dev1")
    point = normalise(state, received_ns=0)
    assert point.time_ns == AT_NS
    assert point.value == pytest.approx(21.5)  # °F → °C, as for every source
    assert ("device_id", "dev1") in point.tags


@pytest.mark.parametrize(("payload", "why"), [
    (event(None), "entity_removed"),
    (event(new_state(), event_type="call_service"), "event_type"),
])
def test_events_without_a_state_are_counted_not_stored(payload: bytes, why: str) -> None:
    outcome = WebsocketSource().handle(ws.EVENT_TOPIC, payload)
    assert (outcome.states, outcome.ignored) == ((), why)


@pytest.mark.parametrize(("topic", "payload", "reason"), [
    (ws.EVENT_TOPIC, b"{not json", Reason.INVALID_JSON),
    (ws.EVENT_TOPIC, b"\xff\xfe", Reason.NOT_UTF8),
    (ws.EVENT_TOPIC, b"[1, 2]", Reason.SCHEMA),
    (ws.EVENT_TOPIC, json.dumps({"id": 2, "type": "event"}).encode(), Reason.SCHEMA),
    (ws.EVENT_TOPIC, json.dumps({"id": 2, "type": "event", "event": {"event_type": 3}}).encode(), Reason.SCHEMA),
    (ws.EVENT_TOPIC, json.dumps({"id": 2, "type": "event", "event": {"event_type": "state_changed"}}).encode(),
     Reason.SCHEMA),
    (ws.EVENT_TOPIC, event("on"), Reason.SCHEMA),
    (ws.EVENT_TOPIC, event(new_state(state=21)), Reason.SCHEMA),  # type: ignore[arg-type]
    (ws.EVENT_TOPIC, event(new_state(last_updated=1709294400.1)), Reason.BAD_TIMESTAMP),
    (ws.EVENT_TOPIC, event(new_state(attributes=["x"])), Reason.SCHEMA),
    (ws.history_topic("sensor.x"), json.dumps({"a": {}, "lu": 1.5}).encode(), Reason.SCHEMA),
    (ws.history_topic("sensor.x"), json.dumps({"s": "1"}).encode(), Reason.BAD_TIMESTAMP),
    (ws.history_topic("sensor.x"), json.dumps({"s": "1", "lu": "1709294400.1"}).encode(), Reason.BAD_TIMESTAMP),
    (ws.history_topic("sensor.x"), json.dumps({"s": "1", "lu": True}).encode(), Reason.BAD_TIMESTAMP),
    (ws.history_topic("sensor.x"), json.dumps({"s": "1", "lu": 1e300}).encode(), Reason.BAD_TIMESTAMP),
    (ws.history_topic("sensor.x"), b'{"s": "1", "lu": NaN}', Reason.BAD_TIMESTAMP),
    (ws.history_topic("sensor.x"), json.dumps([{"s": "1", "lu": 1.5}]).encode(), Reason.SCHEMA),
    (ws.history_topic("sensor.x"), json.dumps({"s": "1", "lu": 1.5, "a": "x"}).encode(), Reason.SCHEMA),
    (ws.STATE_TOPIC, json.dumps({"state": "1"}).encode(), Reason.SCHEMA),
    (ws.FRAME_TOPIC, b"]]", Reason.INVALID_JSON),
    (ws.FRAME_TOPIC, b"42", Reason.SCHEMA),
    (ws.FRAME_TOPIC, json.dumps({"id": 1}).encode(), Reason.SCHEMA),
])
def test_bad_messages_are_rejected_with_a_reason(topic: str, payload: bytes, reason: Reason) -> None:
    with pytest.raises(Rejected) as caught:
        WebsocketSource().handle(topic, payload)
    assert caught.value.reason == reason
    assert caught.value.detail


def test_other_message_types_are_counted_as_ignored() -> None:
    outcome = WebsocketSource().handle("websocket:something_new", json.dumps({"type": "something_new"}).encode())
    assert (outcome.states, outcome.ignored) == ((), "message_type")


def test_source_owns_only_websocket_items() -> None:
    source = WebsocketSource()
    assert source.matches("websocket:event")
    assert not source.matches("homeassistant/events")
    assert source.filters() == ()


def test_history_row_in_compressed_form() -> None:
    row = {"s": "1.5", "a": {"unit_of_measurement": "kW", "device_class": "power"}, "lu": 1709294400.123456,
           "lc": 1709294000.5}
    (state,) = WebsocketSource().handle(ws.history_topic("sensor.heat_pump"), json.dumps(row).encode()).states
    assert (state.entity_id, state.state, state.source) == ("sensor.heat_pump", "1.5", "websocket")
    point = normalise(state, received_ns=0)
    assert point.time_ns == AT_NS  # last_updated, never last_changed
    assert point.value == 1500.0  # kW → W
    assert point.measurement == "power"


def test_history_row_without_lu_means_lu_equals_lc() -> None:
    row = {"s": "on", "a": {}, "lc": 1709294400.123456}
    (state,) = WebsocketSource().handle(ws.history_topic("binary_sensor.door"), json.dumps(row).encode()).states
    assert parse_time_ns(state.last_updated or "") == AT_NS


def test_history_row_without_attributes_has_none() -> None:
    (state,) = WebsocketSource().handle(ws.history_topic("sensor.x"), b'{"s":"3","lu":1709294400}').states
    assert (state.attributes, parse_time_ns(state.last_updated or "")) == ({}, 1_709_294_400_000_000_000)


def test_get_states_element() -> None:
    (state,) = WebsocketSource().handle(ws.STATE_TOPIC, json.dumps(new_state("68")).encode()).states
    assert (state.entity_id, state.state, state.last_updated) == ("sensor.porch", "68", AT)


def test_live_event_and_history_row_of_one_change_get_the_same_point_time() -> None:
    moment = datetime(2025, 4, 30, 23, 59, 59, 999_999, tzinfo=UTC)
    live = WebsocketSource().handle(ws.EVENT_TOPIC, event(new_state(last_updated=moment.isoformat()))).states[0]
    row = {"s": "70.7", "a": ATTRS, "lu": moment.timestamp()}
    history = WebsocketSource().handle(ws.history_topic("sensor.porch"), json.dumps(row).encode()).states[0]
    assert normalise(live, 0).time_ns == normalise(history, 0).time_ns == parse_time_ns(moment.isoformat())


def test_float_epoch_to_ns_is_exact_to_the_microsecond() -> None:
    """Every microsecond HA's datetime had survives datetime.timestamp() → float → ns; int(ts * 1e9) loses it."""
    rng = random.Random(7)
    base = datetime(2024, 1, 1, tzinfo=UTC)
    truncation_errors = 0
    for _ in range(20_000):
        moment = base + timedelta(microseconds=rng.randrange(0, 10 * 365 * 86_400 * 10**6))
        seconds = moment.timestamp()  # what HA's recorder stores (last_updated_ts) and sends as lu
        exact = parse_time_ns(moment.isoformat())
        assert epoch_to_ns(seconds) == exact, moment
        truncation_errors += int(seconds * 1e9) != exact
    assert truncation_errors > 1_000  # the naive conversion really is wrong, often
    assert epoch_to_ns(1709294400.123455) == AT_NS - 1_000
    assert int(1709294400.123455 * 1e9) == AT_NS - 1_024  # the naive conversion, off by 24 ns


def test_epoch_edges_and_iso_round_trip() -> None:
    assert epoch_to_us(0) == 0
    assert epoch_to_us(-1.5) == -1_500_000
    assert epoch_to_us(1.9999996) == 2_000_000  # the carry into the next second
    assert iso_from_us(1_709_294_400_123_456) == AT
    assert parse_time_ns(iso_from_us(-1)) == -1_000
