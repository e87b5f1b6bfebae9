"""The payloads Home Assistant's mqtt_eventstream publishes (see shared DESIGN.md for the shape)."""

from __future__ import annotations

import json
from datetime import datetime

from ha_simulator.fleet import Device


def state_changed(device: Device, at: datetime, state: str) -> bytes:
    attributes: dict[str, object] = {"friendly_name": device.name}
    kind = device.kind
    if kind.unit:
        attributes["unit_of_measurement"] = kind.unit
    if kind.device_class:
        attributes["device_class"] = kind.device_class
    if kind.state_class:
        attributes["state_class"] = kind.state_class
    stamp = at.isoformat()
    new_state = {"entity_id": device.entity_id, "state": state, "attributes": attributes,
                 "last_changed": stamp, "last_updated": stamp, "context": {"id": f"{at.timestamp():.6f}"}}
    event = {"event_type": "state_changed",
             "event_data": {"entity_id": device.entity_id, "old_state": None, "new_state": new_state},
             "event_origin": "LOCAL", "time_fired": stamp}
    return json.dumps(event, separators=(",", ":")).encode()
