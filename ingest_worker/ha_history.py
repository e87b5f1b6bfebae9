"""Home Assistant's `history/history_during_period`, as the live link's gap fill and the import ask it.

Both read every recorded change (`significant_changes_only: false`) with the full attributes
(`minimal_response: false`, `no_attributes: false`: unit, device_class, state_class and friendly_name
decide a point's series, and the recorder's file gives them with every row too), `HISTORY_IDS_PER_CALL`
entity ids per call and bounded windows. HA's window is `start < last_updated < end` (`end` optional: up
to its present), so a window that should include its end asks for 1 µs more. Only ids HA's own
`valid_entity_id` accepts are asked for: one other id makes HA refuse the whole call.

`history_items` turns an answer into `websocket:history:<entity_id>` items' topic and payload (one
compressed row each, `sources/websocket.py` parses it), leaving out rows at or before the window's start
(with `include_start_time_state` HA adds the state at the start, stamped with the start: not a change).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from ingest_worker.ha_client import ConnectionLost
from ingest_worker.rejections import Rejected
from ingest_worker.sources import websocket as ws_source
from ingest_worker.sources.base import json_bytes
from ingest_worker.store.resume import us_to_datetime

COMMAND = "history/history_during_period"
HISTORY_IDS_PER_CALL = 50
HISTORY_WINDOW_S = 3_600
# Home Assistant's own valid_entity_id: one id outside it makes history_during_period refuse the whole call.
HA_ENTITY_ID = re.compile(r"^(?!.+__)(?!_)[\da-z_]+(?<!_)\.(?!_)[\da-z_]+(?<!_)$")


class HistoryItem(NamedTuple):
    """One item of an answer: a row (`row` True; `stamp_us` its last_updated, None when it has none), or
    an entity's whole answer when that is not a list (the source dead-letters both kinds of junk)."""

    topic: str
    payload: bytes
    stamp_us: int | None
    row: bool


def iso(micros: int) -> str:
    return us_to_datetime(micros).isoformat()


def valid_ids(entity_ids: Sequence[str]) -> list[str]:
    """The ids HA accepts in a history call, sorted, once each."""
    return sorted({e for e in entity_ids if HA_ENTITY_ID.fullmatch(e)})


def request(entity_ids: Sequence[str], start_us: int, end_us: int | None,
            include_start_time_state: bool) -> dict[str, object]:
    """The command for the changes of `entity_ids` after `start_us` and before `end_us` (None: HA's now)."""
    command: dict[str, object] = {
        "type": COMMAND, "start_time": iso(start_us), "entity_ids": list(entity_ids),
        "include_start_time_state": include_start_time_state, "significant_changes_only": False,
        "minimal_response": False, "no_attributes": False}
    if end_us is not None:
        command["end_time"] = iso(end_us)
    return command


def recorded_request(entity_id: str, stamp_us: int) -> dict[str, object]:
    """The command that answers with `entity_id`'s row stamped `stamp_us` once the recorder has it.

    With the attributes: without them (`no_attributes: true`) HA first asks its state machine whether the
    entity's `last_changed` is after the start and, for a change of attributes only, answers `{}` without
    reading the recorder, so a probe for such a change would never see it recorded."""
    return request([entity_id], stamp_us - 1, stamp_us + 1, include_start_time_state=False)


def row_us(row: object) -> int | None:
    """A compressed row's last_updated in µs (`lc` when HA left `lu` out: they are equal), None if unreadable."""
    if not isinstance(row, dict):
        return None
    try:
        return ws_source.epoch_to_us(row.get(ws_source.LAST_UPDATED, row.get(ws_source.LAST_CHANGED)))
    except Rejected:
        return None


def history_items(result: object, window_start_us: int) -> Iterator[HistoryItem]:
    """The answer's rows after `window_start_us`, in HA's order (entity by entity, oldest first)."""
    if not isinstance(result, dict):
        raise ConnectionLost(f"{COMMAND} answered {str(result)[:200]}")
    for entity_id, entity_rows in result.items():
        topic = ws_source.history_topic(str(entity_id))
        if not isinstance(entity_rows, list):
            yield HistoryItem(topic, json_bytes(entity_rows), None, False)
            continue
        for row in entity_rows:
            stamp = row_us(row)
            if stamp is not None and stamp <= window_start_us:
                continue  # the state at the window's start (HA stamps it with the start): not a change
            yield HistoryItem(topic, json_bytes(row, (",", ":")), stamp, True)
