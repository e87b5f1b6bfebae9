"""The MQTT messages of the three ways Home Assistant data reaches a broker (shared DESIGN.md, "What Home
Assistant really sends"): mqtt_statestream, mqtt_eventstream and zigbee2mqtt-style MQTT discovery.

One encoder per device turns a reading (one state string per entity) into messages. Everything that is
constant for an entity — topics, attributes, discovery configs, the JSON around a state — is serialised
once when the encoder is built, so a reading costs a few string joins, not a `json.dumps`.

A *state message* is an MQTT message that carries the state of one or more entities: a statestream
`.../state`, an eventstream `state_changed`, a zigbee2mqtt device JSON, or zigbee2mqtt's availability
`offline` (which makes the device's entities `unavailable`). `--count` and the stats count those.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final, NamedTuple

from ha_simulator.const import (
    DEFAULT_DISCOVERY_PREFIX,
    DEFAULT_EVENTSTREAM_TOPIC,
    DEFAULT_STATESTREAM_BASE,
    DEFAULT_ZIGBEE_BASE,
    STATUS_ONLINE,
    STATUS_SUFFIX,
)
from ha_simulator.fleet import Device, Entity, Format

UNAVAILABLE: Final = "unavailable"
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
MASK64: Final = (1 << 64) - 1
CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# A ULID is 26 Crockford base-32 characters (130 bits); encoded two characters (10 bits) per lookup.
CROCKFORD_PAIRS: Final = tuple(high + low for high in CROCKFORD for low in CROCKFORD)
PAIR_MASK: Final = 0x3FF
ULID_SHIFTS: Final = tuple(range(120, -1, -10))
ZIGBEE2MQTT_VERSION: Final = "1.42.0"
ZIGBEE2MQTT_URL: Final = "https://www.zigbee2mqtt.io"
COORDINATOR_IEEE: Final = "0x00124b0022d2f4a1"
AVAILABILITY_ONLINE: Final = b'{"state":"online"}'
AVAILABILITY_OFFLINE: Final = b'{"state":"offline"}'
AVAILABILITY_TEMPLATE: Final = "{{ value_json.state }}"
ROUND_DIGITS: Final = 3  # the most decimals any simulated value has: `| round(3)` never changes one
# The service call an eventstream consumer sees between state changes (and must ignore).
OTHER_EVENT_DOMAIN: Final = "homeassistant"
OTHER_EVENT_SERVICE: Final = "update_entity"


class Role(StrEnum):
    """Why a message is published; the stats count messages per role."""

    CONFIG = "config"  # retained once at start: birth message, discovery configs, statestream attributes
    STATE = "state"  # carries entity states (see the module docstring)
    TIMESTAMP = "timestamp"  # statestream's last_updated / last_changed companions of a state
    ATTRIBUTE = "attribute"  # statestream attributes republished with a state (`--statestream-attributes always`)
    AVAILABILITY = "availability"  # zigbee2mqtt availability `online` (at start and after a dropout)
    EVENT = "event"  # an eventstream event that is not a state change


class Message(NamedTuple):
    topic: str
    payload: bytes
    retain: bool
    role: Role


class Part(NamedTuple):
    """The messages of one entity state (or one device JSON), published together; `entities` are the
    fleet-wide indices of the entities whose state they carry (empty for a non-state event)."""

    entities: tuple[int, ...]
    available: bool
    messages: tuple[Message, ...]


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic bases, each prefixed with `tenant_prefix` (e.g. `hats/acme`) when one is given."""

    statestream_base: str = DEFAULT_STATESTREAM_BASE
    eventstream: str = DEFAULT_EVENTSTREAM_TOPIC
    discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX
    zigbee_base: str = DEFAULT_ZIGBEE_BASE
    tenant_prefix: str = ""

    def _full(self, topic: str) -> str:
        prefix = self.tenant_prefix.strip("/")
        topic = topic.strip("/")
        return f"{prefix}/{topic}" if prefix else topic

    @property
    def statestream(self) -> str:
        return self._full(self.statestream_base)

    @property
    def events(self) -> str:
        return self._full(self.eventstream)

    @property
    def discovery(self) -> str:
        return self._full(self.discovery_prefix)

    @property
    def zigbee(self) -> str:
        return self._full(self.zigbee_base)

    @property
    def status(self) -> str:
        return f"{self.discovery}/{STATUS_SUFFIX}"

    @property
    def bridge_state(self) -> str:
        return f"{self.zigbee}/bridge/state"


def ha_time(t_us: int) -> str:
    """Home Assistant's `datetime.isoformat()` of a UTC time (no fraction when the microseconds are 0)."""
    return (EPOCH + timedelta(microseconds=t_us)).isoformat()


def zigbee_time(t_us: int) -> str:
    """zigbee2mqtt's `last_seen: ISO_8601` (JavaScript `toISOString()`: milliseconds, `Z`)."""
    return (EPOCH + timedelta(microseconds=t_us)).isoformat(timespec="milliseconds")[:-6] + "Z"


def mix64(value: int) -> int:
    """splitmix64: a cheap, well-spread hash, so ids and rare events need no draw from a device's
    generator (its values then stay the same whichever format it publishes in)."""
    value = (value + 0x9E3779B97F4A7C15) & MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & MASK64
    return value ^ (value >> 31)


def ulid(t_us: int, salt: int) -> str:
    """A ULID (48-bit milliseconds + 80 hashed bits) like Home Assistant's context ids, reproducibly."""
    first = mix64(salt * 1_000_003 + t_us)
    value = ((t_us // 1000) << 80) | (first << 16) | (mix64(first) & 0xFFFF)
    pairs = CROCKFORD_PAIRS
    return "".join([pairs[(value >> shift) & PAIR_MASK] for shift in ULID_SHIFTS])


def ha_attributes(entity: Entity) -> dict[str, object]:
    """The attributes Home Assistant gives an entity, in its order (capabilities first)."""
    spec = entity.spec
    attributes: dict[str, object] = {}
    if spec.state_class:
        attributes["state_class"] = spec.state_class
    if spec.unit:
        attributes["unit_of_measurement"] = spec.unit
    if spec.device_class:
        attributes["device_class"] = spec.device_class
    attributes["friendly_name"] = entity.friendly_name
    return attributes


class _HomeAssistantEncoder:
    """What statestream and eventstream share: Home Assistant only fires `state_changed` when an entity's
    state changes, so an unchanged state (a battery still at 97) publishes nothing."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self._last: list[str | None] = [None] * len(device.entities)

    def announce(self) -> list[Message]:
        return []

    def reading(self, t_us: int, states: tuple[str, ...], back_online: bool) -> list[Part]:
        parts: list[Part] = []
        stamp = ""
        last = self._last
        for position, state in enumerate(states):
            if state == last[position]:
                continue
            last[position] = state
            if not stamp:
                stamp = ha_time(t_us)
            messages = self._encode(position, state, stamp, t_us)
            parts.append(Part((self.device.entities[position].index,), state != UNAVAILABLE, messages))
        return parts

    def unavailable(self, t_us: int) -> list[Part]:
        return self.reading(t_us, (UNAVAILABLE,) * len(self.device.entities), back_online=False)

    def _encode(self, position: int, state: str, stamp: str, t_us: int) -> tuple[Message, ...]:
        raise NotImplementedError


class StatestreamEncoder(_HomeAssistantEncoder):
    """mqtt_statestream with `publish_attributes` and `publish_timestamps`: the raw state retained on
    `<base>/<domain>/<object_id>/state`, then `last_updated` and `last_changed`, each attribute
    JSON-encoded on its own retained topic."""

    def __init__(self, device: Device, topics: Topics, attributes_always: bool) -> None:
        super().__init__(device)
        self._quoted = device.quoted_state
        self._topics: list[tuple[str, str, str]] = []
        self._attributes: list[tuple[Message, ...]] = []
        self._attributes_always = attributes_always
        for entity in device.entities:
            base = f"{topics.statestream}/{entity.spec.component}/{entity.object_id}"
            self._topics.append((f"{base}/state", f"{base}/last_updated", f"{base}/last_changed"))
            self._attributes.append(tuple(
                Message(f"{base}/{key}", json.dumps(value).encode(), True, Role.ATTRIBUTE)
                for key, value in ha_attributes(entity).items()))

    def announce(self) -> list[Message]:
        return [message._replace(role=Role.CONFIG) for attributes in self._attributes for message in attributes]

    def _encode(self, position: int, state: str, stamp: str, t_us: int) -> tuple[Message, ...]:
        state_topic, updated_topic, changed_topic = self._topics[position]
        payload = f'"{state}"' if self._quoted else state
        stamp_bytes = stamp.encode()
        messages = (Message(state_topic, payload.encode(), True, Role.STATE),
                    Message(updated_topic, stamp_bytes, True, Role.TIMESTAMP),
                    Message(changed_topic, stamp_bytes, True, Role.TIMESTAMP))
        if self._attributes_always:
            return messages + self._attributes[position]
        return messages


class EventstreamEncoder(_HomeAssistantEncoder):
    """mqtt_eventstream: one `state_changed` JSON per change on one topic, the previous state as
    `old_state` (null for an entity's first state); now and then another event type in between."""

    def __init__(self, device: Device, topics: Topics, other_event_fraction: float) -> None:
        super().__init__(device)
        self._topic = topics.events
        self._other_threshold = int(other_event_fraction * MASK64)
        self._heads: list[str] = []
        self._state_heads: list[str] = []
        self._attribute_parts: list[str] = []
        self._old: list[str] = ["null"] * len(device.entities)
        for entity in device.entities:
            entity_json = json.dumps(entity.entity_id)
            self._heads.append(
                f'{{"event_type":"state_changed","event_data":{{"entity_id":{entity_json},"old_state":')
            self._state_heads.append(f'{{"entity_id":{entity_json},"state":"')
            attributes = json.dumps(ha_attributes(entity), separators=(",", ":"))
            self._attribute_parts.append(f'","attributes":{attributes},"last_changed":"')

    def reading(self, t_us: int, states: tuple[str, ...], back_online: bool) -> list[Part]:
        parts = super().reading(t_us, states, back_online)
        if parts and mix64(self.device.index << 40 ^ t_us) < self._other_threshold:
            parts.insert(0, self._other_event(t_us))
        return parts

    def _other_event(self, t_us: int) -> Part:
        stamp = ha_time(t_us)
        event = {"event_type": "call_service",
                 "event_data": {"domain": OTHER_EVENT_DOMAIN, "service": OTHER_EVENT_SERVICE,
                                "service_data": {"entity_id": self.device.entities[0].entity_id}},
                 "event_origin": "LOCAL", "time_fired": stamp}
        payload = json.dumps(event, separators=(",", ":")).encode()
        return Part((), True, (Message(self._topic, payload, False, Role.EVENT),))

    def _encode(self, position: int, state: str, stamp: str, t_us: int) -> tuple[Message, ...]:
        context = ulid(t_us, self.device.entities[position].index)
        new_state = (f'{self._state_heads[position]}{state}{self._attribute_parts[position]}{stamp}'
                     f'","last_reported":"{stamp}","last_updated":"{stamp}",'
                     f'"context":{{"id":"{context}","parent_id":null,"user_id":null}}}}')
        payload = (f'{self._heads[position]}{self._old[position]},"new_state":{new_state}}},'
                   f'"event_origin":"LOCAL","time_fired":"{stamp}"}}')
        self._old[position] = new_state
        return (Message(self._topic, payload.encode(), False, Role.STATE),)


def value_template(key: str, style: str, integer: bool) -> str:
    """The `value_template` spelling of this device (shared DESIGN.md lists the ones to support)."""
    if style == "single_quotes":
        return f"{{{{ value_json['{key}'] }}}}"
    if style == "double_quotes":
        return f'{{{{ value_json["{key}"] }}}}'
    if style == "filter":
        return f"{{{{ value_json.{key} | {'int' if integer else 'float'} }}}}"
    if style == "round" and not integer:
        return f"{{{{ value_json.{key} | round({ROUND_DIGITS}) }}}}"
    return f"{{{{ value_json.{key} }}}}"


def discovery_config(device: Device, entity: Entity, topics: Topics) -> dict[str, object]:
    """The retained config zigbee2mqtt publishes for one entity of a device."""
    spec = entity.spec
    state_topic = f"{topics.zigbee}/{device.name}"
    style = "attr" if spec.json_for_state else device.template_style  # binary sensors: as zigbee2mqtt does
    config: dict[str, object] = {
        "availability": [{"topic": topics.bridge_state, "value_template": AVAILABILITY_TEMPLATE},
                         {"topic": f"{state_topic}/availability", "value_template": AVAILABILITY_TEMPLATE}],
        "availability_mode": "all",
        "device": {"identifiers": [f"zigbee2mqtt_{device.ieee}"], "manufacturer": device.kind.manufacturer,
                   "model": device.kind.model, "name": device.name,
                   "via_device": f"zigbee2mqtt_bridge_{COORDINATOR_IEEE}"},
        "enabled_by_default": True,
        "name": spec.name,
        "object_id": entity.object_id,
        "origin": {"name": "Zigbee2MQTT", "sw": ZIGBEE2MQTT_VERSION, "url": ZIGBEE2MQTT_URL},
        "state_topic": state_topic,
        "unique_id": f"{device.ieee}_{spec.key}_zigbee2mqtt",
        "value_template": value_template(spec.key, style, spec.integer),
    }
    if spec.device_class:
        config["device_class"] = spec.device_class
    if spec.state_class:
        config["state_class"] = spec.state_class
    if spec.unit:
        config["unit_of_measurement"] = spec.unit
    config.update(spec.extra_config)
    return config


class DiscoveryEncoder:
    """A zigbee2mqtt device: retained discovery configs (one per entity) and availability at start, then
    one JSON with every property and `last_seen` per report on `<zigbee base>/<device name>`."""

    def __init__(self, device: Device, topics: Topics) -> None:
        self.device = device
        self._state_topic = f"{topics.zigbee}/{device.name}"
        self._availability_topic = f"{self._state_topic}/availability"
        self._configs = [
            Message(f"{topics.discovery}/{entity.spec.component}/{device.ieee}/{entity.spec.key}/config",
                    json.dumps(discovery_config(device, entity, topics), ensure_ascii=False,
                               separators=(",", ":")).encode(),
                    True, Role.CONFIG)
            for entity in device.entities]
        self._keys = [f'{"{" if position == 0 else ","}"{entity.spec.key}":'
                      for position, entity in enumerate(device.entities)]
        self._json_for_state = [entity.spec.json_for_state for entity in device.entities]
        self._entities = tuple(entity.index for entity in device.entities)
        self._online = Message(self._availability_topic, AVAILABILITY_ONLINE, True, Role.AVAILABILITY)
        self._offline = Message(self._availability_topic, AVAILABILITY_OFFLINE, True, Role.STATE)

    def announce(self) -> list[Message]:
        return [*self._configs, self._online._replace(role=Role.CONFIG)]

    def reading(self, t_us: int, states: tuple[str, ...], back_online: bool) -> list[Part]:
        pieces = []
        for key, mapping, state in zip(self._keys, self._json_for_state, states, strict=True):
            pieces.append(key)
            pieces.append(mapping[state] if mapping else state)
        pieces.append(f',"last_seen":"{zigbee_time(t_us)}"}}')
        message = Message(self._state_topic, "".join(pieces).encode(), False, Role.STATE)
        messages = (self._online, message) if back_online else (message,)
        return [Part(self._entities, True, messages)]

    def unavailable(self, t_us: int) -> list[Part]:
        return [Part(self._entities, False, (self._offline,))]


Encoder = StatestreamEncoder | EventstreamEncoder | DiscoveryEncoder


def make_encoder(device: Device, topics: Topics, *, attributes_always: bool,
                 other_event_fraction: float) -> Encoder:
    if device.fmt is Format.STATESTREAM:
        return StatestreamEncoder(device, topics, attributes_always)
    if device.fmt is Format.EVENTSTREAM:
        return EventstreamEncoder(device, topics, other_event_fraction)
    return DiscoveryEncoder(device, topics)


def birth_messages(topics: Topics, formats_in_use: set[Format]) -> list[Message]:
    """Home Assistant's retained `online` birth message, and zigbee2mqtt's bridge state when it is used."""
    messages = [Message(topics.status, STATUS_ONLINE, True, Role.CONFIG)]
    if Format.DISCOVERY in formats_in_use:
        messages.append(Message(topics.bridge_state, AVAILABILITY_ONLINE, True, Role.CONFIG))
    return messages
