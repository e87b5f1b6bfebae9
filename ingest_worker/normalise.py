"""A Home Assistant state, whatever format carried it, becomes one contract `Point`.

Pure functions: every source parser hands over an `EntityState`; the rules for measurement, units,
availability and time live here once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ingest_worker.contract import AVAILABILITY_STATES, Point
from ingest_worker.rejections import Reason, Rejected
from ingest_worker.units import conversion_for, is_percent_class, quantity_for_unit

ENTITY_ID = re.compile(r"^[a-z0-9_]{1,64}\.[a-z0-9_]{1,255}$")
# Home Assistant's device classes are short lowercase identifiers (`temperature`, `pm25`,
# `volatile_organic_compounds_parts`); one becomes a measurement name, so nothing else may.
DEVICE_CLASS = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_STATE_CHARS = 255  # Home Assistant's own limit on a state string
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# InfluxDB's time range is a signed 64-bit nanosecond count around the epoch.
MIN_TIME = datetime(1677, 9, 22, tzinfo=UTC)
MAX_TIME = datetime(2262, 4, 11, tzinfo=UTC)
BINARY_STATES = {"on": 1.0, "off": 0.0, "open": 1.0, "closed": 0.0, "home": 1.0, "not_home": 0.0,
                 "online": 1.0, "offline": 0.0}
TWO_STATE_MEASUREMENTS = frozenset({"binary", "availability"})
NUMERIC_STATE_CLASSES = frozenset({"measurement", "total", "total_increasing"})
MAX_TAG_CHARS = 256
BINARY_DOMAINS = frozenset({"binary_sensor", "switch", "light", "input_boolean", "fan", "lock", "cover"})


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """A physical device as MQTT discovery describes it (upserted into core.devices)."""

    device_id: str
    name: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    identifiers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EntityState:
    """One state of one entity, as any source parsed it; `attributes` carries unit_of_measurement,
    device_class, state_class, friendly_name when the source knows them."""

    entity_id: str
    state: str
    attributes: Mapping[str, object] = field(default_factory=dict)
    last_updated: str | None = None
    source: str = "eventstream"
    device_id: str | None = None
    device: DeviceInfo | None = None
    # The message (topic, payload, receipt ns) a state held back by its source came from, for dead letters.
    origin: tuple[str, bytes, int] | None = None
    # `attributes` were pieced together from messages of their own (statestream), so some the entity has
    # may be missing (a restarted worker rebuilds them from a replay): what is known fills the gaps.
    attributes_pieced: bool = False


def parse_time_ns(text: str) -> int:
    """ISO 8601 with offset (as Home Assistant writes it) to UTC nanoseconds, microseconds kept exact."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise Rejected(Reason.BAD_TIMESTAMP, f"not an ISO 8601 timestamp: {text[:64]!r}") from None
    if moment.tzinfo is None:
        raise Rejected(Reason.BAD_TIMESTAMP, f"timestamp without a UTC offset: {text[:64]!r}")
    if not MIN_TIME <= moment <= MAX_TIME:
        raise Rejected(Reason.BAD_TIMESTAMP, f"{text[:64]!r} is outside what InfluxDB stores (1677-2262)")
    delta = moment.astimezone(UTC) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def measurement_for(domain: str, device_class: str | None, unit: str | None) -> str:
    """On/off domains are one `binary` quantity whatever their device_class (door, motion…), so that
    binary sensors do not scatter over dozens of measurements; others: device_class, else the quantity
    the unit implies, else `state`."""
    if domain in BINARY_DOMAINS:
        return "binary"
    if domain == "homeassistant":
        return "availability"
    if device_class:
        return device_class
    quantity = quantity_for_unit(unit)
    if quantity:
        return quantity
    return "state"


@dataclass(frozen=True, slots=True)
class Series:
    """What stays the same from one state of an entity to the next: measurement, tags, unit conversion.

    Derived once per entity and attribute set and cached by the pipeline, so the per-message work is
    only the value and the timestamp (the hot path at tens of thousands of messages a second).
    """

    entity_id: str
    measurement: str
    tags: tuple[tuple[str, str], ...]
    convert: Callable[[float], float]
    two_state: bool
    # A unit or a statistics state_class declares a number: a text state there is an error, not a state.
    numeric: bool


def describe(state: EntityState) -> Series:
    if not ENTITY_ID.fullmatch(state.entity_id):
        raise Rejected(Reason.BAD_ENTITY_ID, f"entity_id {state.entity_id[:80]!r} is not domain.object_id")
    domain = state.entity_id.split(".", 1)[0]
    attrs = state.attributes
    device_class = _text(attrs.get("device_class"))
    if device_class is not None and not DEVICE_CLASS.fullmatch(device_class):
        raise Rejected(Reason.BAD_DEVICE_CLASS,
                       f"{state.entity_id} device_class {device_class[:64]!r} is not {DEVICE_CLASS.pattern}")
    unit = _text(attrs.get("unit_of_measurement"))
    measurement = measurement_for(domain, device_class, unit)
    tags = [("domain", domain), ("entity_id", state.entity_id)]
    if state.device_id:
        if len(state.device_id) > MAX_TAG_CHARS:
            raise Rejected(Reason.TAG_TOO_LONG, f"device_id of {len(state.device_id)} chars, over {MAX_TAG_CHARS}")
        if "\x00" in state.device_id:
            # InfluxDB would take it as a tag, but core.entities/core.devices (PostgreSQL text) cannot hold it,
            # and the flush that failed on it would fail again for every batch.
            raise Rejected(Reason.UNWRITABLE, f"device_id {state.device_id[:80]!r} holds a NUL character")
        tags.append(("device_id", state.device_id))
    tags.sort()
    conversion = conversion_for(None if is_percent_class(device_class) else unit)
    two_state = measurement in TWO_STATE_MEASUREMENTS
    numeric = not two_state and (unit is not None or _text(attrs.get("state_class")) in NUMERIC_STATE_CLASSES)
    return Series(state.entity_id, measurement, tuple(tags), conversion.apply, two_state, numeric)


def point_of(series: Series, state: EntityState, received_ns: int) -> Point:
    time_ns = parse_time_ns(state.last_updated) if state.last_updated else received_ns
    raw = state.state.strip()
    if raw in AVAILABILITY_STATES:
        return Point(series.measurement, series.tags, time_ns, state=raw)
    number = _number(raw)
    if number is not None:
        if not math.isfinite(number):
            raise Rejected(Reason.NON_FINITE, f"{state.entity_id} state {raw!r} is not a finite number")
        return Point(series.measurement, series.tags, time_ns, value=float(series.convert(number)))
    if series.two_state and raw in BINARY_STATES:
        return Point(series.measurement, series.tags, time_ns, value=BINARY_STATES[raw])
    if series.numeric:
        raise Rejected(Reason.NON_NUMERIC,
                       f"{state.entity_id} declares a unit or state_class but its state {raw[:40]!r} is not a number")
    if len(raw) > MAX_STATE_CHARS:
        raise Rejected(Reason.SCHEMA, f"{state.entity_id} state is {len(raw)} chars, over {MAX_STATE_CHARS}")
    return Point(series.measurement, series.tags, time_ns, state=raw)


def normalise(state: EntityState, received_ns: int) -> Point:
    return point_of(describe(state), state, received_ns)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _number(raw: str) -> float | None:
    try:
        return float(raw)
    except ValueError:
        return None
