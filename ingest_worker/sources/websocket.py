"""Home Assistant's WebSocket API: messages the connection (`ha_link.py`) hands over, into `EntityState`s.

The link speaks the protocol (auth, request ids, results, pings) and hands every message that may carry
a state to the pipeline as one item, under a topic naming what it is, so that a bad one is dead-lettered
with that topic and its exact JSON like any MQTT message:

* `websocket:event` — one `subscribe_events` message, `{"id":…,"type":"event","event":{"event_type":
  "state_changed","data":{"entity_id":…,"old_state":…,"new_state":{…}}}}`. `new_state` has the full
  attributes and ISO 8601 `last_updated`, as mqtt_eventstream's; other event types and removals
  (`new_state: null`) are counted, not stored.
* `websocket:history:<entity_id>` — one row of `history/history_during_period` in its compressed form
  (`homeassistant.const.COMPRESSED_STATE_*`, the same in 2024.3 and 2025.4): `s` state, `a` attributes,
  `lu` last_updated and `lc` last_changed as float epoch seconds. The recorder writes `lc` only when it
  differs from `lu`; a row without `lu` (the form `subscribe_entities` uses) means `lu == lc`.
* `websocket:state` — one state of `get_states` (the shape of `new_state`).
* `websocket:frame` — a frame or array element that is not a JSON object with a `type`: always rejected.
* `websocket:<type>` — any other message type: valid, counted as ignored.

Float epoch seconds become nanoseconds exactly: Home Assistant stores `datetime.timestamp()` of a
microsecond-precise time, so the float is within 0.12 µs of a whole microsecond and rounding to the
microsecond recovers it (`int(ts * 1e9)` would not: 1709294400.123455 gives …123454976). The same state
through the live stream (ISO string) and through the history (float) thus gets the same point time, and
InfluxDB stores a duplicate once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from ingest_worker.normalise import MAX_TIME, MIN_TIME, EntityState
from ingest_worker.rejections import Reason, Rejected
from ingest_worker.sources.base import Outcome, parse_json

SOURCE = "websocket"
PREFIX = "websocket:"
EVENT_TOPIC = PREFIX + "event"
HISTORY_TOPIC = PREFIX + "history:"
STATE_TOPIC = PREFIX + "state"
FRAME_TOPIC = PREFIX + "frame"
STATE = "s"
ATTRIBUTES = "a"
LAST_UPDATED = "lu"
LAST_CHANGED = "lc"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_EPOCH_S = (MIN_TIME - EPOCH).total_seconds()
MAX_EPOCH_S = (MAX_TIME - EPOCH).total_seconds()
US_PER_S = 1_000_000

DeviceLookup = Callable[[str], str | None]


def epoch_to_us(seconds: object, what: str = "timestamp") -> int:
    """Float (or int) epoch seconds to whole microseconds, exactly as Home Assistant's datetime had them.

    `seconds - floor(seconds)` is exact in binary floating point, so only the fraction is scaled and
    rounded: no error from multiplying a large number."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise Rejected(Reason.BAD_TIMESTAMP, f"{what} is {type(seconds).__name__}, not epoch seconds")
    if not math.isfinite(seconds) or not MIN_EPOCH_S <= seconds <= MAX_EPOCH_S:
        raise Rejected(Reason.BAD_TIMESTAMP, f"{what} {seconds!r} is outside what InfluxDB stores (1677-2262)")
    whole = math.floor(seconds)
    return int(whole) * US_PER_S + round((seconds - whole) * US_PER_S)


def epoch_to_ns(seconds: object, what: str = "timestamp") -> int:
    return epoch_to_us(seconds, what) * 1_000


def iso_from_us(micros: int) -> str:
    """UTC ISO 8601 of a microsecond count, as `normalise.parse_time_ns` reads it back exactly."""
    return (EPOCH + timedelta(microseconds=micros)).isoformat()


def _decode(payload: bytes) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(Reason.NOT_UTF8, f"payload is not UTF-8 at byte {exc.start}") from None


def _object(payload: bytes, what: str) -> dict[str, object]:
    message = parse_json(_decode(payload), what)
    if not isinstance(message, dict):
        raise Rejected(Reason.SCHEMA, f"a {what} is a JSON object")
    return message


def _attributes(value: object, what: str) -> Mapping[str, object]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Rejected(Reason.SCHEMA, f"{what} is not an object")
    return value


def state_from_dict(state: Mapping[str, object], what: str, device_of: DeviceLookup | None = None,
                    entity_id: str | None = None) -> EntityState:
    """A full state object (`new_state`, a `get_states` element) as an `EntityState`."""
    found = state.get("entity_id", entity_id)
    value = state.get("state")
    if not isinstance(found, str) or not isinstance(value, str):
        raise Rejected(Reason.SCHEMA, f"{what} needs a string entity_id and a string state")
    last_updated = state.get("last_updated")
    if last_updated is not None and not isinstance(last_updated, str):
        raise Rejected(Reason.BAD_TIMESTAMP, f"{what}.last_updated is not a string")
    attributes = _attributes(state.get("attributes"), f"{what}.attributes")
    return EntityState(entity_id=found, state=value, attributes=attributes, last_updated=last_updated,
                       source=SOURCE, device_id=device_of(found) if device_of else None)


def parse_event(payload: bytes, device_of: DeviceLookup | None = None) -> EntityState | str:
    """A `subscribe_events` message: its new state, or why it carries none (counted as ignored)."""
    message = _object(payload, "WebSocket event message")
    event = message.get("event")
    if message.get("type") != "event" or not isinstance(event, dict):
        raise Rejected(Reason.SCHEMA, "an event message has type 'event' and an event object")
    event_type = event.get("event_type")
    if not isinstance(event_type, str):
        raise Rejected(Reason.SCHEMA, "event.event_type is not a string")
    if event_type != "state_changed":
        return "event_type"
    data = event.get("data")
    if not isinstance(data, dict):
        raise Rejected(Reason.SCHEMA, "state_changed without a data object")
    new_state = data.get("new_state")
    if new_state is None:
        return "entity_removed"
    if not isinstance(new_state, dict):
        raise Rejected(Reason.SCHEMA, "new_state is neither an object nor null")
    entity_id = data.get("entity_id")
    return state_from_dict(new_state, "new_state", device_of, entity_id if isinstance(entity_id, str) else None)


def parse_history_row(entity_id: str, payload: bytes, device_of: DeviceLookup | None = None,
                      source: str = SOURCE, check_last_changed: bool = False) -> EntityState:
    """One compressed row of `history/history_during_period` for `entity_id` (also the recorder import's
    rows, `sources/recorder.py`, as `source`, which checks an `lc` the point does not use: a recorder cell
    that is not a time is the row's dead letter, not a point beside a damaged row)."""
    row = _object(payload, "history row")
    if check_last_changed and LAST_CHANGED in row:
        epoch_to_us(row[LAST_CHANGED], f"{LAST_CHANGED} (last_changed)")
    state = row.get(STATE)
    if not isinstance(state, str):
        raise Rejected(Reason.SCHEMA, f"history row of {entity_id[:80]} has no string state ({STATE!r})")
    if LAST_UPDATED in row:
        micros = epoch_to_us(row[LAST_UPDATED], f"{LAST_UPDATED} (last_updated)")
    elif LAST_CHANGED in row:
        micros = epoch_to_us(row[LAST_CHANGED], f"{LAST_CHANGED} (last_changed, standing in for last_updated)")
    else:
        raise Rejected(Reason.BAD_TIMESTAMP, f"history row of {entity_id[:80]} has neither {LAST_UPDATED!r} "
                                             f"nor {LAST_CHANGED!r}")
    return EntityState(entity_id=entity_id, state=state, attributes=_attributes(row.get(ATTRIBUTES), "row attributes"),
                       last_updated=iso_from_us(micros), source=source,
                       device_id=device_of(entity_id) if device_of else None)


def history_topic(entity_id: str) -> str:
    return HISTORY_TOPIC + entity_id


class WebsocketSource:
    """Owns the `websocket:` items the HA link queues; holds nothing back."""

    name = SOURCE

    def __init__(self, device_of: DeviceLookup | None = None) -> None:
        self._device_of = device_of

    def filters(self) -> tuple[str, ...]:
        return ()  # not an MQTT source

    def matches(self, topic: str) -> bool:
        return topic.startswith(PREFIX)

    def handle(self, topic: str, payload: bytes, received_ns: int | None = None, retained: bool = False) -> Outcome:
        if topic == EVENT_TOPIC:
            parsed = parse_event(payload, self._device_of)
            return Outcome(ignored=parsed) if isinstance(parsed, str) else Outcome(states=(parsed,))
        if topic.startswith(HISTORY_TOPIC):
            return Outcome(states=(parse_history_row(topic[len(HISTORY_TOPIC):], payload, self._device_of),))
        if topic == STATE_TOPIC:
            return Outcome(states=(state_from_dict(_object(payload, "get_states state"), "state", self._device_of),))
        if topic == FRAME_TOPIC:
            _object(payload, "WebSocket message")  # raises invalid_json or schema for what is not an object
            raise Rejected(Reason.SCHEMA, "a WebSocket message is a JSON object with a string type")
        return Outcome(ignored="message_type")

    def flush(self, force: bool = False) -> tuple[EntityState, ...]:
        return ()

    def take_rejections(self) -> list[Rejected]:
        return []
