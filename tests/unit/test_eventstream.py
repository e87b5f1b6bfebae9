"""mqtt_eventstream payloads as Home Assistant sends them (shared DESIGN.md), and broken ones."""

from __future__ import annotations

import json

import pytest

from ingest_worker.rejections import Reason, Rejected
from ingest_worker.sources.eventstream import parse

DESIGN_EXAMPLE = {
    "event_type": "state_changed",
    "event_data": {
        "entity_id": "sensor.x",
        "old_state": {"entity_id": "sensor.x", "state": "21.3", "attributes": {}},
        "new_state": {
            "entity_id": "sensor.x", "state": "21.4",
            "attributes": {"unit_of_measurement": "°C", "device_class": "temperature",
                           "state_class": "measurement", "friendly_name": "Living room"},
            "last_changed": "2026-11-26T10:00:00.000001+00:00",
            "last_updated": "2026-11-26T10:00:00.000001+00:00",
            "context": {"id": "01J", "parent_id": None, "user_id": None},
        },
    },
}


def test_design_example_is_parsed() -> None:
    parsed = parse(json.dumps(DESIGN_EXAMPLE).encode())
    assert parsed is not None
    assert (parsed.entity_id, parsed.state) == ("sensor.x", "21.4")
    assert parsed.attributes["unit_of_measurement"] == "°C"
    assert parsed.last_updated == "2026-11-26T10:00:00.000001+00:00"


def test_other_event_types_are_ignored() -> None:
    assert parse(json.dumps({"event_type": "call_service", "event_data": {}}).encode()) is None


def test_removed_entity_is_ignored() -> None:
    removed = {"event_type": "state_changed", "event_data": {"entity_id": "sensor.x", "new_state": None}}
    assert parse(json.dumps(removed).encode()) is None


@pytest.mark.parametrize(("payload", "reason"), [
    (b"{not json", Reason.INVALID_JSON),
    (b"\xff\xfe", Reason.NOT_UTF8),
    (b"[]", Reason.SCHEMA),
    (b'{"event_type": 3}', Reason.SCHEMA),
    (b'{"event_type": "state_changed"}', Reason.SCHEMA),
    (b'{"event_type": "state_changed", "event_data": {"new_state": "on"}}', Reason.SCHEMA),
    (b'{"event_type": "state_changed", "event_data": {"new_state": {"entity_id": "sensor.x", "state": 21}}}',
     Reason.SCHEMA),
    (b'{"event_type": "state_changed", "event_data": {"new_state": {"entity_id": "sensor.x", "state": "1",'
     b' "attributes": [1]}}}', Reason.SCHEMA),
    (b'{"event_type": "state_changed", "event_data": {"new_state": {"entity_id": "sensor.x", "state": "1",'
     b' "last_updated": 5}}}', Reason.BAD_TIMESTAMP),
])
def test_broken_payloads_are_rejected_with_their_reason(payload: bytes, reason: Reason) -> None:
    with pytest.raises(Rejected) as caught:
        parse(payload)
    assert caught.value.reason is reason
