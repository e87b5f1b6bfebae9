"""Hypothesis strategies for what Home Assistant sends, valid and hostile, shared by the fuzz properties.

Valid states are modelled on what HA publishes (DESIGN.md, "What Home Assistant really sends"): an entity
of a known kind (a temperature in °C/°F/K, a power in W/kW, an energy meter in Wh/kWh, a humidity or
battery in %, an on/off domain, a text sensor), its state as HA formats it, a microsecond-precise
`last_updated` with an offset. Each carries what the point must be — measurement, tags, value or text,
nanoseconds — computed here from the kind's own reference conversion, not by the worker's code, so a
round trip compares the worker with an independent answer. Hostile values (huge and non-finite numbers,
control characters, lone surrogates, deep nesting, long strings, wrong types) come from `hostile_json`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import TypeVar

import hypothesis
from hypothesis import strategies as st

from ingest_worker.contract import Point
from ingest_worker.lineprotocol import encode
from ingest_worker.normalise import EntityState, normalise
from ingest_worker.rejections import Reason, Rejected
from tests.lineprotocol_reader import Line, read_line

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def examples(n: int, *, shared_fixture: bool = False) -> hypothesis.settings:
    """`n` examples under the deterministic profile, 20 × `n` under `--hypothesis-profile=explore`.
    `shared_fixture`: the test takes a function-scoped fixture (a tenant) that every example may share."""
    profile = hypothesis.settings.default
    scale = max(1, (profile.max_examples if profile is not None else 100) // 100)
    suppressed = [hypothesis.HealthCheck.function_scoped_fixture] if shared_fixture else []
    return hypothesis.settings(max_examples=n * scale, deadline=None, suppress_health_check=suppressed)


@dataclass(frozen=True)
class Kind:
    """A kind of entity HA has: how its state is written and what point it must become."""

    domain: str
    device_class: str | None
    unit: str | None
    measurement: str
    convert: Callable[[float], float] | None  # None: not numeric
    state_class: str | None = "measurement"


# Reference conversions, written independently of ingest_worker/units.py.
NUMERIC_KINDS = (
    Kind("sensor", "temperature", "°C", "temperature", lambda c: c),
    Kind("sensor", "temperature", "°F", "temperature", lambda f: (f - 32) / 1.8),
    Kind("sensor", "temperature", "K", "temperature", lambda k: k - 273.15),
    Kind("sensor", "power", "W", "power", lambda w: w),
    Kind("sensor", "power", "kW", "power", lambda kw: kw * 1e3),
    Kind("sensor", "energy", "kWh", "energy", lambda e: e, "total_increasing"),
    Kind("sensor", "energy", "Wh", "energy", lambda e: e * 1e-3, "total_increasing"),
    Kind("sensor", "energy", "MWh", "energy", lambda e: e * 1e3, "total"),
    Kind("sensor", "humidity", "%", "humidity", lambda h: h),
    Kind("sensor", "battery", "%", "battery", lambda b: b),
    Kind("sensor", "pressure", "Pa", "pressure", lambda p: p / 100),
    Kind("sensor", None, "V", "voltage", lambda v: v),
    Kind("sensor", None, "mA", "current", lambda a: a * 1e-3),
    Kind("sensor", None, "lx", "illuminance", lambda x: x),
)
BINARY_KINDS = (
    Kind("binary_sensor", "door", None, "binary", None, None),
    Kind("binary_sensor", "motion", None, "binary", None, None),
    Kind("binary_sensor", None, None, "binary", None, None),
    Kind("switch", "outlet", None, "binary", None, None),
    Kind("light", None, None, "binary", None, None),
    Kind("input_boolean", None, None, "binary", None, None),
)
TEXT_KINDS = (
    Kind("sensor", None, None, "state", None, None),
    Kind("input_select", None, None, "state", None, None),
    Kind("climate", None, None, "state", None, None),
    Kind("weather", None, None, "state", None, None),
)
ON_OFF = {"on": 1.0, "off": 0.0}
AVAILABILITY = ("unavailable", "unknown")
OFFSETS = tuple(timezone(timedelta(minutes=m)) for m in (0, 60, -300, 330, 345, -570, 840, -720))


@dataclass(frozen=True)
class HaState:
    """A state as HA has it, and the point the worker must make of it."""

    entity_id: str
    state: str
    attributes: Mapping[str, object]
    last_updated: datetime
    measurement: str
    value: float | None = None
    text: str | None = None
    device_id: str | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def domain(self) -> str:
        return self.entity_id.split(".", 1)[0]

    @property
    def object_id(self) -> str:
        return self.entity_id.split(".", 1)[1]

    @property
    def time_ns(self) -> int:
        delta = self.last_updated - EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000

    @property
    def last_updated_iso(self) -> str:
        return self.last_updated.isoformat()

    @property
    def epoch_s(self) -> float:
        """As HA's recorder and history API carry it: `datetime.timestamp()`."""
        return self.last_updated.timestamp()

    @property
    def epoch_precision_ns(self) -> int:
        """How exactly a float epoch keeps the microsecond (sources/websocket.py): exactly while half the
        float's spacing is under 0.5 µs (before 2106, 2**32 s), within 1 µs after."""
        return 0 if self.epoch_s < 2**32 else 1_000

    def expected_tags(self) -> tuple[tuple[str, str], ...]:
        tags = {"domain": self.domain, "entity_id": self.entity_id}
        if self.device_id is not None:
            tags["device_id"] = self.device_id
        return tuple(sorted(tags.items()))

    def state_object(self) -> dict[str, object]:
        """`new_state` / a `get_states` element."""
        stamp = self.last_updated_iso
        return {"entity_id": self.entity_id, "state": self.state, "attributes": dict(self.attributes),
                "last_changed": stamp, "last_updated": stamp, "context": {"id": "01J0", "parent_id": None}}


def assert_point_is(line: Line, expected: HaState, precision_ns: int = 0) -> None:
    """The decoded line is the expected point: measurement, tags, value or text, time within `precision_ns`."""
    assert line.measurement == expected.measurement
    assert line.tags == expected.expected_tags()
    if expected.value is not None:
        assert set(line.fields) == {"value"}
        value = line.fields["value"]
        assert isinstance(value, float)
        assert math.isclose(value, expected.value, rel_tol=1e-12, abs_tol=1e-12), (value, expected.value)
    else:
        assert line.fields == {"state": expected.text}
    assert abs(line.time_ns - expected.time_ns) <= precision_ns, (line.time_ns, expected.time_ns)


object_ids = st.from_regex(r"[a-z0-9][a-z0-9_]{0,30}", fullmatch=True)
# HA's own names: any printable text, accents and emoji included.
names = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40)
moments = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1),
                       timezones=st.sampled_from(OFFSETS))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# A text state: printable, not a number (Python's float() reads "nan", "1_0" and other scripts' digits), not
# an availability or on/off word, without the surrounding whitespace the worker strips.
text_states = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=60) \
    .map(str.strip).filter(lambda t: bool(t) and not _is_number(t) and t not in AVAILABILITY and t not in ON_OFF)


@st.composite
def numbers(draw: st.DrawFn) -> tuple[str, float]:
    """A number as HA formats a sensor's state (an integer, or rounded to its display precision)."""
    value = draw(st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False))
    digits = draw(st.sampled_from([None, 0, 1, 2, 3]))
    text = str(int(value)) if digits is None else f"{value:.{digits}f}"
    return text, float(text)


@st.composite
def ha_states(draw: st.DrawFn, kinds: str = "any", with_device: bool = False) -> HaState:
    """One valid state of a modelled entity and the point it must become; `kinds`: numeric, binary, text, any."""
    family = draw(st.sampled_from(["numeric", "binary", "text"])) if kinds == "any" else kinds
    pool = {"numeric": NUMERIC_KINDS, "binary": BINARY_KINDS, "text": TEXT_KINDS}[family]
    kind = draw(st.sampled_from(pool))
    entity_id = f"{kind.domain}.{draw(object_ids)}"
    attributes: dict[str, object] = {"friendly_name": draw(names)}
    if kind.device_class:
        attributes["device_class"] = kind.device_class
    if kind.unit:
        attributes["unit_of_measurement"] = kind.unit
    if kind.state_class:
        attributes["state_class"] = kind.state_class
    device_id = draw(st.from_regex(r"[0-9a-f]{32}", fullmatch=True)) if with_device else None
    moment = draw(moments)
    if draw(st.integers(0, 9)) == 0:
        state = draw(st.sampled_from(AVAILABILITY))
        return HaState(entity_id, state, attributes, moment, kind.measurement, text=state, device_id=device_id)
    if family == "numeric":
        assert kind.convert is not None
        text, number = draw(numbers())
        return HaState(entity_id, text, attributes, moment, kind.measurement, value=kind.convert(number),
                       device_id=device_id)
    if family == "binary":
        state = draw(st.sampled_from(sorted(ON_OFF)))
        return HaState(entity_id, state, attributes, moment, kind.measurement, value=ON_OFF[state],
                       device_id=device_id)
    text = draw(text_states)
    return HaState(entity_id, text, attributes, moment, kind.measurement, text=text, device_id=device_id)


# -- hostile input ----------------------------------------------------------------------------------------

HOSTILE_NUMBERS = (1e308, -1e308, 1.7976931348623157e308, 5e-324, 0.0, -0.0, 10**30, -(10**30), 2**63, -(2**63) - 1)
HOSTILE_TEXT = ("", " ", "\x00", "\n", "\r\n", "\\", '"', "\\\"", "\ud800", "\udfff", "\u2028", "\ufeff", "#",
                "ä" * 300, "x" * 5000, "on\n", "21.5\x00", "NaN", "Infinity", "-inf", "1e999", "1_0", "١٢",
                "unavailable", "None", "{{ value }}", "value_json", "+", "homeassistant/sensor/x/config")
# Text with every category Python knows, lone surrogates and control characters included.
any_text = st.text(st.characters(), max_size=80) | st.sampled_from(HOSTILE_TEXT)
scalars = (st.none() | st.booleans() | st.integers() | st.floats() | any_text
           | st.sampled_from(HOSTILE_NUMBERS))


def hostile_json(max_leaves: int = 20) -> st.SearchStrategy[object]:
    """Any JSON value (and NaN/Infinity, which Python's json writes), hostile scalars at the leaves."""
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(any_text, inner, max_size=4), max_leaves=max_leaves)


def deep(depth: int, leaf: object = 1) -> object:
    """A value nested `depth` lists deep (the json module's recursion limit is near 1,000)."""
    value: object = leaf
    for _ in range(depth):
        value = [value]
    return value


def dumps(value: object) -> bytes:
    """JSON bytes as an arbitrary publisher might send them: lone surrogates kept as escapes."""
    return json.dumps(value, ensure_ascii=True).encode()


payload_bytes = st.binary(max_size=300) | hostile_json().map(dumps) | any_text.map(
    lambda text: text.encode("utf-8", "surrogatepass"))


# -- what every property asserts ------------------------------------------------------------------------

T = TypeVar("T")


def outcome_of(call: Callable[[], T]) -> T | Rejected:
    """`call()`'s result, or the `Rejected` it raised, which must carry a known reason and a detail. Any
    other exception escapes and fails the property: that is a crash."""
    try:
        return call()
    except Rejected as rejected:
        refused = rejected
    assert isinstance(refused.reason, Reason), refused.reason
    assert refused.detail.strip(), f"{refused.reason} without a detail"
    return refused


def line_of(point: Point) -> Line | Rejected:
    """The point through the worker's encoder and back through the independent reader: an accepted point
    must come back exactly (measurement, tags, float value or text, nanoseconds)."""
    encoded = outcome_of(lambda: encode(point))
    if isinstance(encoded, Rejected):
        assert encoded.reason in (Reason.UNWRITABLE, Reason.NON_FINITE, Reason.SCHEMA), encoded
        return encoded
    line = read_line(encoded)
    assert line.measurement == point.measurement
    assert line.tags == point.tags
    assert line.time_ns == point.time_ns
    if point.value is not None:
        assert line.fields == {"value": float(point.value)}
    else:
        assert line.fields == {"state": point.state}
    return line


def through_worker(state: EntityState, received_ns: int = 1_700_000_000_000_000_000) -> Line | Rejected:
    """A parsed state the way the pipeline takes it: normalise (describe + point), encode, read back."""
    point = outcome_of(lambda: normalise(state, received_ns))
    return point if isinstance(point, Rejected) else line_of(point)
