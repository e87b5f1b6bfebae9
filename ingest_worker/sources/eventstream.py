"""mqtt_eventstream: one topic carrying every Home Assistant event as JSON.

Only `state_changed` events with a `new_state` carry a state; other event types and removals
(`new_state: null`) are expected traffic, not errors, so they yield nothing and are counted.
"""

from __future__ import annotations

from collections.abc import Mapping

from ingest_worker.normalise import EntityState
from ingest_worker.rejections import Reason, Rejected
from ingest_worker.sources.base import Outcome, SingleTopicSource, parse_json

SOURCE = "eventstream"


def parse(payload: bytes) -> EntityState | None:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(Reason.NOT_UTF8, f"payload is not UTF-8 at byte {exc.start}") from None
    event = parse_json(text, "eventstream payload")
    if not isinstance(event, dict) or not isinstance(event.get("event_type"), str):
        raise Rejected(Reason.SCHEMA, "an eventstream payload is an object with a string event_type")
    if event["event_type"] != "state_changed":
        return None
    data = event.get("event_data")
    if not isinstance(data, dict):
        raise Rejected(Reason.SCHEMA, "state_changed without an event_data object")
    new_state = data.get("new_state")
    if new_state is None:
        return None
    if not isinstance(new_state, dict):
        raise Rejected(Reason.SCHEMA, "new_state is neither an object nor null")
    entity_id = new_state.get("entity_id", data.get("entity_id"))
    state = new_state.get("state")
    if not isinstance(entity_id, str) or not isinstance(state, str):
        raise Rejected(Reason.SCHEMA, "new_state needs a string entity_id and a string state")
    attributes = new_state.get("attributes") or {}
    if not isinstance(attributes, Mapping):
        raise Rejected(Reason.SCHEMA, "new_state.attributes is not an object")
    last_updated = new_state.get("last_updated")
    if last_updated is not None and not isinstance(last_updated, str):
        raise Rejected(Reason.BAD_TIMESTAMP, "new_state.last_updated is not a string")
    return EntityState(entity_id=entity_id, state=state, attributes=attributes,
                       last_updated=last_updated, source=SOURCE)


class EventstreamSource(SingleTopicSource):
    """mqtt_eventstream's single topic (`publish_topic` in Home Assistant's configuration)."""

    name = SOURCE

    def handle(self, topic: str, payload: bytes, received_ns: int | None = None, retained: bool = False) -> Outcome:
        state = parse(payload)
        return Outcome(states=(state,)) if state is not None else Outcome(ignored="not_a_state_change")
