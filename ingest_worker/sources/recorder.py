"""Home Assistant's recorder database (`hats import`): one `states` row, one item.

The importer (`importers/states.py`) turns each row into an item under `recorder:state:<entity_id>` whose
payload is the row in the compressed form of `history/history_during_period` — `{"s": state, "a":
attributes, "lu": last_updated_ts, "lc": last_changed_ts}` (`lc` only when the recorder stored one, i.e.
when it differs from `lu`) — so the WebSocket source's parser, with its exact float-epoch → nanosecond
conversion, reads it: a state reaching us live, through the history API or from the database file gets
one point time, and InfluxDB stores a copy once. A bad row is a dead letter with its topic and this
payload like any message, and `python -m ingest_worker.deadletters replay` can replay it.

A row whose state is NULL is the recorder's record of an entity being removed (`recorder/core.py` sets
`dbstate.state = None` when `new_state` is None): counted as ignored, as the live sources count removals.
"""

from __future__ import annotations

import json

from ingest_worker.normalise import EntityState
from ingest_worker.rejections import Rejected
from ingest_worker.sources.base import Outcome
from ingest_worker.sources.websocket import ATTRIBUTES, LAST_CHANGED, LAST_UPDATED, STATE, parse_history_row

SOURCE = "recorder"
PREFIX = "recorder:"
STATE_TOPIC = PREFIX + "state:"
REMOVED = b'{"s":null'  # how `row_payload` begins for a removal


def state_topic(entity_id: str) -> str:
    return STATE_TOPIC + entity_id


def row_payload(state: str | None, shared_attrs: str | None, last_updated_ts: float | object,
                last_changed_ts: float | object | None) -> bytes:
    """The compressed row; `shared_attrs` is the recorder's JSON text as stored (not parsed here: the source
    parses each payload once, and a broken one becomes a dead letter there, with this payload). A time that
    is not a number (a damaged file's cell, JSON-ready) is carried as it is and refused there by name."""
    parts = [f'{{"{STATE}":{json.dumps(state, ensure_ascii=False)}']
    if shared_attrs is not None:
        parts.append(f',"{ATTRIBUTES}":{shared_attrs}')
    parts.append(f',"{LAST_UPDATED}":{json.dumps(last_updated_ts)}')
    if last_changed_ts is not None and last_changed_ts != last_updated_ts:
        parts.append(f',"{LAST_CHANGED}":{json.dumps(last_changed_ts)}')
    parts.append("}")
    return "".join(parts).encode("utf-8", "surrogatepass")


class RecorderSource:
    """Owns the `recorder:` items of an import; holds nothing back, subscribes to nothing."""

    name = SOURCE

    def filters(self) -> tuple[str, ...]:
        return ()

    def matches(self, topic: str) -> bool:
        return topic.startswith(PREFIX)

    def handle(self, topic: str, payload: bytes, received_ns: int | None = None, retained: bool = False) -> Outcome:
        if not topic.startswith(STATE_TOPIC):
            return Outcome(ignored="topic")
        if payload.startswith(REMOVED):
            return Outcome(ignored="entity_removed")
        state: EntityState = parse_history_row(topic[len(STATE_TOPIC):], payload, source=SOURCE,
                                               check_last_changed=True)
        return Outcome(states=(state,))

    def flush(self, force: bool = False) -> tuple[EntityState, ...]:
        return ()

    def take_rejections(self) -> list[Rejected]:
        return []
