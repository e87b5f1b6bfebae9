"""MQTT discovery devices: retained configs say what a state topic means, then states arrive on it.

A config on `<prefix>/<component>/[<node_id>/]<object_id>/config` registers one entity and links it to
its `state_topic`; the source learns state topics at run time and asks the pipeline to (un)subscribe
them through `Outcome`. Several entities may share one state topic (zigbee2mqtt publishes one JSON with
temperature, humidity, battery, linkquality), so a state message yields one `EntityState` per entity.

Per-entity failures on a shared topic: one entity's broken template or missing key must neither hide
its siblings' good states nor vanish silently. So:

* `handle()` raises `Rejected` when the message as a whole fails: a bad topic or config, a payload that
  is not UTF-8, or a state message where *no* entity produced a state. In the last case the single
  rejection lists every entity's failure in its detail (reason of the first), so one message is one
  dead letter and nothing is lost.
* Otherwise it returns the good states, and each failed entity's `Rejected` (detail prefixed with its
  entity_id) is kept for `take_rejections()`, which the pipeline calls after a `handle()` that returned
  and dead-letters with that message's topic and payload. Only the latest `handle()`'s rejections are
  kept (each call starts afresh), so they can never be attributed to another message, and memory is
  bounded by `MAX_ENTITIES_PER_STATE_TOPIC`.
* A config whose `value_template` is unsupported still registers (the device is real, its state topic
  is subscribed): the config message yields one `UNSUPPORTED_TEMPLATE` rejection (so the operator sees
  the config that carries it), and every state message then rejects that entity with the same reason.

Config handling follows Home Assistant's discovery: abbreviated keys are expanded (an abbreviation wins
over its full key, as in HA), `~` is substituted into `*_topic` values, an empty payload or `{}`
removes the entity, configs without a `state_topic` (buttons, device triggers, device-based discovery)
are ignored. Templates are compiled once per config (`templates.compile_template`, cached by text).
Rendered states get the meaning HA gives them: `None` is `unknown`; binary_sensor and switch payloads
are mapped to `on`/`off` through `payload_on`/`payload_off` (`state_on`/`state_off`), defaults ON/OFF;
an empty rendering is skipped as HA skips it. Entities are keyed by config topic (HA's discovery hash);
two configs yielding the same entity_id both write to it, as the ids are the publisher's choice.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from ingest_worker import topic_filters
from ingest_worker.normalise import ENTITY_ID, DeviceInfo, EntityState
from ingest_worker.rejections import Reason, Rejected
from ingest_worker.routing import within
from ingest_worker.sources.base import Outcome, parse_json
from ingest_worker.sources.templates import NOT_JSON, ValueTemplate, compile_template, load_json

SOURCE = "discovery"
DEFAULT_PREFIX = "homeassistant"
# A large installation has a few thousand discovered entities; the bound stops a publisher that
# floods config topics from growing the registry (each entry holds a few hundred bytes) without end.
MAX_DISCOVERED_ENTITIES = 100_000
# zigbee2mqtt's busiest devices expose a few dozen entities on one topic; beyond this a single state
# message would cost thousands of renders.
MAX_ENTITIES_PER_STATE_TOPIC = 256
# Real state topics are well under 200 characters; every learned topic is kept and subscribed.
MAX_STATE_TOPIC_CHARS = 1024
# Names, units, classes and device fields are kept per entity; longer values are refused, not truncated.
MAX_CONFIG_TEXT_CHARS = 255
MAX_DEVICE_IDENTIFIERS = 16
# Entity failures spelled out in the one rejection of a state message where every entity failed.
MAX_LISTED_FAILURES = 8
# A payload repeated on its state topic within this long is not a new point (`_repeated`): a publisher's
# retransmission comes within seconds of the original (the soak's broker restart: 10 s down).
REPEAT_WINDOW_S = 120
REPEAT_WINDOW_NS = REPEAT_WINDOW_S * 1_000_000_000
# Home Assistant's MQTT entities read a rendered "None" as "no value" (its PAYLOAD_NONE).
PAYLOAD_NONE = "None"
UNKNOWN_STATE = "unknown"
DEFAULT_PAYLOAD_ON = "ON"
DEFAULT_PAYLOAD_OFF = "OFF"
# Components whose raw payload HA maps to on/off, and the config keys that say how (first found wins).
ON_OFF_KEYS: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "binary_sensor": (("payload_on",), ("payload_off",)),
    "switch": (("state_on", "payload_on"), ("state_off", "payload_off")),
}
CARRIED_ATTRIBUTES = ("unit_of_measurement", "device_class", "state_class")

# The subset of Home Assistant's abbreviation tables (mqtt/abbreviations.py) that this source reads.
ABBREVIATIONS: Mapping[str, str] = {
    "stat_t": "state_topic",
    "val_tpl": "value_template",
    "unit_of_meas": "unit_of_measurement",
    "dev_cla": "device_class",
    "stat_cla": "state_class",
    "uniq_id": "unique_id",
    "obj_id": "object_id",
    "def_ent_id": "default_entity_id",
    "dev": "device",
    "pl_on": "payload_on",
    "frc_upd": "force_update",
    "pl_off": "payload_off",
    "stat_on": "state_on",
    "stat_off": "state_off",
}
DEVICE_ABBREVIATIONS: Mapping[str, str] = {
    "ids": "identifiers",
    "cns": "connections",
    "mf": "manufacturer",
    "mdl": "model",
}
TOPIC_BASE = "~"

_COMPONENT = re.compile(r"[a-z0-9_]+")
# HA's discovery topic rule for node_id and object_id.
_TOPIC_ID = re.compile(r"[a-zA-Z0-9_-]+")
_NOT_ENTITY_CHAR = re.compile(r"[^a-z0-9_]")


@dataclass(frozen=True, slots=True)
class _Entity:
    entity_id: str
    state_topic: str
    template: ValueTemplate | None
    # The UNSUPPORTED_TEMPLATE detail when the config's template could not be compiled.
    template_error: str | None
    attributes: Mapping[str, object]
    device: DeviceInfo | None
    on_off: tuple[str, str] | None
    force_update: bool = False  # HA's `force_update`: every report is a state, a repeated one too

    def state_from(self, text: str, data: object) -> EntityState | None:
        if self.template_error is not None:
            raise Rejected(Reason.UNSUPPORTED_TEMPLATE, self.template_error)
        rendered = self.template.render(text, data) if self.template else text
        if not rendered.strip():
            return None
        state = _meaning(rendered, self.on_off)
        return EntityState(entity_id=self.entity_id, state=state, attributes=self.attributes, source=SOURCE,
                           device_id=self.device.device_id if self.device else None, device=self.device)


@dataclass(slots=True)
class _Registry:
    by_config: dict[str, _Entity] = field(default_factory=dict)
    # state topic -> {config topic: entity}, insertion-ordered so states come out in config order.
    by_state: dict[str, dict[str, _Entity]] = field(default_factory=dict)


class DiscoverySource:
    """Home Assistant MQTT discovery (`discovery_prefix`), plus the state topics its configs name."""

    name = SOURCE

    def __init__(self, prefix: str = DEFAULT_PREFIX, *, max_entities: int = MAX_DISCOVERED_ENTITIES,
                 tenant_prefix: str = "", state_filters: tuple[str, ...] = ()) -> None:
        """`tenant_prefix`: the home's topic prefix; a config may make the worker read only under it
        (another home's state topic would write that home's states into this one). '' = everything.
        `state_filters`: where devices publish their states, subscribed from the start (`subscription_filters`
        shares them between replicas, unlike the configs): a state topic they cover is never subscribed on its
        own. A state there that no config explains is a dead letter like any unowned message (replayable once
        its config is known: after a restart the configs come last)."""
        self._tenant_prefix = tenant_prefix
        self.state_filters = state_filters
        prefix = prefix.rstrip("/")
        if not prefix or "+" in prefix or "#" in prefix:
            raise ValueError(f"discovery prefix {prefix!r} must be a non-empty topic without wildcards")
        self._prefix = prefix
        self._max_entities = max_entities
        self._registry = _Registry()
        self._last_payload: dict[str, tuple[int, int]] = {}  # state topic -> (hash of payload, receipt ns)
        self._rejections: list[Rejected] = []

    def filters(self) -> tuple[str, ...]:
        return (f"{self._prefix}/+/+/config", f"{self._prefix}/+/+/+/config")

    def matches(self, topic: str) -> bool:
        return topic in self._registry.by_state or self._is_config_topic(topic)

    def handle(self, topic: str, payload: bytes, received_ns: int | None = None, retained: bool = False) -> Outcome:
        self._rejections = []
        if self._is_config_topic(topic):
            return self._handle_config(topic, payload)
        entities = self._registry.by_state.get(topic)
        if entities is None:
            raise Rejected(Reason.BAD_TOPIC, f"{_clip(topic)} is neither a discovery config nor a learned state topic")
        if self._repeated(topic, entities, payload, received_ns):
            return Outcome(ignored="repeated_payload")
        return self._handle_state(entities, payload)

    def _repeated(self, topic: str, entities: Mapping[str, _Entity], payload: bytes, received_ns: int | None) -> bool:
        """The same payload again on the same topic within `REPEAT_WINDOW_S`: a QoS 1 retransmission (a
        publisher resends its unacknowledged messages after a broker restart, and the broker forwards both),
        or a report that changed nothing, which Home Assistant records no state for either (unless
        `force_update`). Stamped at receipt, each copy would be a second point."""
        at = received_ns if received_ns is not None else time.time_ns()
        key = hash(payload)
        last = self._last_payload.get(topic)
        self._last_payload[topic] = (key, at)
        if last is None or last[0] != key or at - last[1] > REPEAT_WINDOW_NS:
            return False
        return not any(entity.force_update for entity in entities.values())

    def flush(self, force: bool = False) -> tuple[EntityState, ...]:
        return ()

    def take_rejections(self) -> list[Rejected]:
        """Per-entity rejections of the latest `handle()` that returned (see the module docstring)."""
        taken, self._rejections = self._rejections, []
        return taken

    @property
    def entity_count(self) -> int:
        return len(self._registry.by_config)

    def state_topics(self) -> tuple[str, ...]:
        """Learned state topics subscribed on their own (not under `state_filters`), for resubscribing after a
        reconnect with a clean session."""
        return tuple(t for t in self._registry.by_state if not self.covers(t))

    def covers(self, topic: str) -> bool:
        """Whether `topic` lies under `state_filters` (subscribed already, whether or not a config names it)."""
        return any(topic_filters.covers(f, topic) for f in self.state_filters)

    # -- state messages -------------------------------------------------------------------------

    def _handle_state(self, entities: Mapping[str, _Entity], payload: bytes) -> Outcome:
        text = _decode(payload)
        needs_json = any(e.template is not None and e.template.needs_json for e in entities.values())
        data = load_json(text) if needs_json else NOT_JSON
        states: list[EntityState] = []
        failures: list[Rejected] = []
        for entity in entities.values():
            try:
                state = entity.state_from(text, data)
            except Rejected as rejected:
                failures.append(Rejected(rejected.reason, f"{entity.entity_id}: {rejected.detail}"))
                continue
            if state is not None:
                states.append(state)
        if failures and not states:
            raise _combined(failures)
        self._rejections = failures
        return Outcome(states=tuple(states)) if states else Outcome(ignored="empty_state")

    # -- config messages ------------------------------------------------------------------------

    def _is_config_topic(self, topic: str) -> bool:
        if not topic.endswith("/config") or not topic.startswith(self._prefix + "/"):
            return False
        return topic.count("/", len(self._prefix) + 1) in (2, 3)

    def _handle_config(self, topic: str, payload: bytes) -> Outcome:
        component, topic_object_id = self._config_topic_parts(topic)
        if not payload:
            return self._remove(topic)
        config = parse_json(_decode(payload), "discovery config")
        if not isinstance(config, dict):
            raise Rejected(Reason.SCHEMA, "a discovery config is a JSON object")
        if not config:
            return self._remove(topic)
        config = _expand(config)
        if config.get("state_topic") is None:
            removed = self._remove(topic)
            return Outcome(unsubscribe=removed.unsubscribe, ignored="no_state_topic")
        entity = self._entity_from(component, topic_object_id, config)
        outcome = self._register(topic, entity)
        if entity.template_error is not None:
            self._rejections = [Rejected(Reason.UNSUPPORTED_TEMPLATE, f"{entity.entity_id}: {entity.template_error}")]
        return outcome

    def _config_topic_parts(self, topic: str) -> tuple[str, str]:
        parts = topic[len(self._prefix) + 1:].split("/")
        component, object_id = parts[0], parts[-2]
        if not _COMPONENT.fullmatch(component):
            raise Rejected(Reason.BAD_TOPIC, f"component {component[:64]!r} in {_clip(topic)} is not [a-z0-9_]+")
        for part in parts[1:-1]:
            if not _TOPIC_ID.fullmatch(part):
                raise Rejected(Reason.BAD_TOPIC, f"{part[:64]!r} in {_clip(topic)} is not [a-zA-Z0-9_-]+")
        return component, object_id

    def _entity_from(self, component: str, topic_object_id: str, config: Mapping[str, object]) -> _Entity:
        state_topic = _state_topic(config["state_topic"], self._prefix)
        if not within(state_topic, self._tenant_prefix):
            raise Rejected(Reason.FOREIGN_TOPIC, f"state_topic {_clip(state_topic)} lies outside this home's "
                           f"topic prefix {self._tenant_prefix!r}: the worker reads no other home's topics")
        entity_id = f"{component}.{_object_id(config, topic_object_id)}"
        if not ENTITY_ID.fullmatch(entity_id):
            raise Rejected(Reason.BAD_ENTITY_ID, f"entity_id {entity_id[:80]!r} is not domain.object_id")
        template: ValueTemplate | None = None
        template_error: str | None = None
        text = config.get("value_template")
        if text is not None and not isinstance(text, str):
            raise Rejected(Reason.SCHEMA, f"{entity_id}: value_template is not a string")
        if text:
            try:
                template = compile_template(text)
            except Rejected as rejected:
                template_error = rejected.detail
        device = _device(config.get("device"))
        attributes: dict[str, object] = {}
        for key in CARRIED_ATTRIBUTES:
            value = _text(config, key)
            if value:
                attributes[key] = value
        friendly = _friendly_name(config, device)
        if friendly:
            attributes["friendly_name"] = friendly
        on_off = None
        if component in ON_OFF_KEYS:
            on_keys, off_keys = ON_OFF_KEYS[component]
            on_off = (_first_text(config, on_keys) or DEFAULT_PAYLOAD_ON,
                      _first_text(config, off_keys) or DEFAULT_PAYLOAD_OFF)
        return _Entity(entity_id, state_topic, template, template_error, attributes, device, on_off,
                       config.get("force_update") is True)

    def _register(self, config_topic: str, entity: _Entity) -> Outcome:
        registry = self._registry
        previous = registry.by_config.get(config_topic)
        if previous is None and len(registry.by_config) >= self._max_entities:
            raise Rejected(Reason.TOO_MANY_ENTITIES,
                           f"{entity.entity_id}: registry holds {self._max_entities} discovered entities already")
        siblings = registry.by_state.get(entity.state_topic, {})
        moving_in = previous is None or previous.state_topic != entity.state_topic
        if moving_in and len(siblings) >= MAX_ENTITIES_PER_STATE_TOPIC:
            raise Rejected(Reason.TOO_MANY_ENTITIES, f"{entity.entity_id}: state topic {_clip(entity.state_topic)} "
                                                     f"has {MAX_ENTITIES_PER_STATE_TOPIC} entities already")
        if not moving_in:  # an update that keeps its state topic: the subscription stays as it is
            registry.by_config[config_topic] = entity
            siblings[config_topic] = entity
            return Outcome(ignored="config")
        unsubscribe = self._unlink(config_topic) if previous is not None else None
        subscribe = entity.state_topic not in registry.by_state and not self.covers(entity.state_topic)
        registry.by_config[config_topic] = entity
        registry.by_state.setdefault(entity.state_topic, {})[config_topic] = entity
        if not subscribe and unsubscribe is None:
            return Outcome(ignored="config")
        return Outcome(subscribe=(entity.state_topic,) if subscribe else (),
                       unsubscribe=(unsubscribe,) if unsubscribe else ())

    def _remove(self, config_topic: str) -> Outcome:
        if config_topic not in self._registry.by_config:
            return Outcome(ignored="unknown_entity_removed")
        unsubscribe = self._unlink(config_topic)
        return Outcome(unsubscribe=(unsubscribe,)) if unsubscribe else Outcome(ignored="entity_removed")

    def _unlink(self, config_topic: str) -> str | None:
        """Forget a registration; the state topic it leaves unused, if any, to unsubscribe."""
        entity = self._registry.by_config.pop(config_topic)
        siblings = self._registry.by_state[entity.state_topic]
        del siblings[config_topic]
        if siblings:
            return None
        del self._registry.by_state[entity.state_topic]
        self._last_payload.pop(entity.state_topic, None)
        return None if self.covers(entity.state_topic) else entity.state_topic


def _combined(failures: list[Rejected]) -> Rejected:
    """One rejection for a message where every entity failed; a differing reason is named inline."""
    if len(failures) == 1:
        return failures[0]
    first = failures[0].reason
    parts = [f.detail if f.reason is first else f"[{f.reason}] {f.detail}" for f in failures[:MAX_LISTED_FAILURES]]
    if len(failures) > MAX_LISTED_FAILURES:
        parts.append(f"and {len(failures) - MAX_LISTED_FAILURES} more")
    return Rejected(first, "; ".join(parts))


def _decode(payload: bytes) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(Reason.NOT_UTF8, f"payload is not UTF-8 at byte {exc.start}") from None


def _expand(config: dict[str, object]) -> dict[str, object]:
    """HA's abbreviation and `~` rules, on a copy (the abbreviated key wins, as it does in HA)."""
    expanded = dict(config)
    for short in ABBREVIATIONS.keys() & config.keys():
        expanded[ABBREVIATIONS[short]] = expanded.pop(short)
    device = expanded.get("device")
    if isinstance(device, dict):
        device = dict(device)
        for short in DEVICE_ABBREVIATIONS.keys() & device.keys():
            device[DEVICE_ABBREVIATIONS[short]] = device.pop(short)
        expanded["device"] = device
    base = expanded.pop(TOPIC_BASE, None)
    if isinstance(base, str):
        for key, value in expanded.items():
            if key.endswith("topic") and isinstance(value, str) and value:
                if value.startswith(TOPIC_BASE):
                    value = base + value[1:]
                if value.endswith(TOPIC_BASE):
                    value = value[:-1] + base
                expanded[key] = value
    return expanded


def _state_topic(value: object, prefix: str) -> str:
    if not isinstance(value, str) or not value:
        raise Rejected(Reason.SCHEMA, "state_topic is not a non-empty string")
    if len(value) > MAX_STATE_TOPIC_CHARS:
        raise Rejected(Reason.BAD_TOPIC, f"state_topic is {len(value)} chars, over {MAX_STATE_TOPIC_CHARS}")
    if "+" in value or "#" in value or "\x00" in value:
        raise Rejected(Reason.BAD_TOPIC, f"state_topic {_clip(value)} has a wildcard or NUL; only plain topics")
    if value.startswith(prefix + "/") and value.endswith("/config"):
        raise Rejected(Reason.BAD_TOPIC, f"state_topic {_clip(value)} is a discovery config topic")
    return value


def _object_id(config: Mapping[str, object], topic_object_id: str) -> str:
    """object_id from the payload (or the object part of HA 2025's default_entity_id), else the topic's."""
    # Unbounded here: the entity_id check that follows names the real problem.
    raw = _text(config, "object_id", limit=None)
    if not raw:
        default_entity_id = _text(config, "default_entity_id", limit=None)
        if default_entity_id:
            raw = default_entity_id.partition(".")[2] or default_entity_id
    return _NOT_ENTITY_CHAR.sub("_", (raw or topic_object_id).lower())


def _device(value: object) -> DeviceInfo | None:
    """The device and its id (first identifier, else first connection as `type:value`)."""
    if not isinstance(value, dict):
        return None
    identifiers = _strings(value.get("identifiers"))
    device_id = identifiers[0] if identifiers else None
    if device_id is None:
        connections = value.get("connections")
        if isinstance(connections, list):
            pairs = [c for c in connections if isinstance(c, list) and len(c) == 2]
            device_id = next((f"{_plain(t)}:{_plain(v)}" for t, v in pairs), None)
    if device_id is None:
        return None
    if len(device_id) > MAX_CONFIG_TEXT_CHARS:
        raise Rejected(Reason.SCHEMA, f"device identifier is {len(device_id)} chars, over {MAX_CONFIG_TEXT_CHARS}")
    return DeviceInfo(device_id=device_id, name=_text(value, "name"), manufacturer=_text(value, "manufacturer"),
                      model=_text(value, "model"), identifiers=identifiers)


def _strings(value: object) -> tuple[str, ...]:
    """HA accepts one identifier or a list (`cv.ensure_list`); numbers become strings as with `cv.string`."""
    items = value if isinstance(value, list) else [value]
    found = tuple(_plain(v) for v in items if isinstance(v, str | int | float) and not isinstance(v, bool))
    found = tuple(v for v in found if v)
    if len(found) > MAX_DEVICE_IDENTIFIERS:
        raise Rejected(Reason.SCHEMA, f"device has {len(found)} identifiers, over {MAX_DEVICE_IDENTIFIERS}")
    if any(len(v) > MAX_CONFIG_TEXT_CHARS for v in found):
        raise Rejected(Reason.SCHEMA, f"a device identifier is over {MAX_CONFIG_TEXT_CHARS} chars")
    return found


def _friendly_name(config: Mapping[str, object], device: DeviceInfo | None) -> str | None:
    """HA names a device's entity "<device name> <entity name>"; `name: null` means the device name."""
    name = _text(config, "name")
    device_name = device.name if device else None
    if name and device_name and not name.startswith(device_name):
        return f"{device_name} {name}"
    return name or device_name


def _text(config: Mapping[str, object], key: str, limit: int | None = MAX_CONFIG_TEXT_CHARS) -> str | None:
    """A config string as HA's `cv.string` sees it (numbers and booleans become text), bounded."""
    value = config.get(key)
    if value is None or isinstance(value, dict | list):
        return None
    text = _plain(value)
    if limit is not None and len(text) > limit:
        raise Rejected(Reason.SCHEMA, f"{key} is {len(text)} chars, over {MAX_CONFIG_TEXT_CHARS}")
    return text


def _first_text(config: Mapping[str, object], keys: tuple[str, ...]) -> str | None:
    return next((text for key in keys if (text := _text(config, key)) is not None), None)


def _plain(value: object) -> str:
    return value if isinstance(value, str) else str(value)


def _meaning(rendered: str, on_off: tuple[str, str] | None) -> str:
    """What HA's entity does with the rendered payload (PAYLOAD_NONE, payload_on/payload_off)."""
    if rendered == PAYLOAD_NONE:
        return UNKNOWN_STATE
    if on_off is None:
        return rendered
    if rendered == on_off[0]:
        return "on"
    if rendered == on_off[1]:
        return "off"
    raise Rejected(Reason.SCHEMA,
                   f"payload {rendered[:64]!r} matches neither payload_on {on_off[0]!r} nor payload_off {on_off[1]!r}")


def _clip(topic: str) -> str:
    return repr(topic if len(topic) <= 120 else topic[:120] + "…")
