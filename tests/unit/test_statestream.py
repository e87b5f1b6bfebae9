"""mqtt_statestream as Home Assistant publishes it: state, timestamps and attributes on separate topics."""

from __future__ import annotations

import json

import pytest

from ingest_worker.normalise import EntityState, describe, normalise, parse_time_ns
from ingest_worker.rejections import Reason, Rejected
from ingest_worker.sources.base import Outcome, Source
from ingest_worker.sources.statestream import (
    LOOSE_LAST_UPDATED,
    MAX_ATTRIBUTE_VALUE_BYTES,
    MAX_ATTRIBUTES_PER_ENTITY,
    QUIET_S,
    UNDESCRIBED_HOLD_S,
    StatestreamSource,
)
from ingest_worker.store.metadata import MetadataStore

BASE = "hats/acme/statestream"
T1 = "2026-11-26T10:00:00.000001+00:00"
T2 = "2026-11-26T10:00:30.500000+00:00"


def topic(field: str, entity: str = "sensor/living_room_temperature") -> str:
    return f"{BASE}/{entity}/{field}"


def publish_state_change(source: StatestreamSource, state: bytes, stamp: str = T1,
                         entity: str = "sensor/living_room_temperature") -> list[Outcome]:
    """What HA's mqtt_statestream publishes for one change, in its order (publish_timestamps on)."""
    messages = [
        ("state", state), ("last_updated", stamp.encode()), ("last_changed", stamp.encode()),
        ("friendly_name", b'"Living room"'), ("unit_of_measurement", json.dumps("°C").encode()),
        ("device_class", b'"temperature"'), ("state_class", b'"measurement"'),
    ]
    return [source.handle(topic(field, entity), payload) for field, payload in messages]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


LIVING_ROOM_ATTRIBUTES = {"friendly_name": "Living room", "unit_of_measurement": "°C",
                          "device_class": "temperature", "state_class": "measurement"}


def test_it_is_a_source() -> None:
    source: Source = StatestreamSource(BASE)
    assert source.name == "statestream"
    assert source.filters() == (f"{BASE}/+/+/+",)


def test_trailing_slash_of_base_topic_is_ignored() -> None:
    assert StatestreamSource("homeassistant/statestream/").filters() == ("homeassistant/statestream/+/+/+",)


@pytest.mark.parametrize("base", ["", "/", "ha/+/x", "ha/#"])
def test_base_topic_with_wildcards_is_refused(base: str) -> None:
    with pytest.raises(ValueError, match="base_topic"):
        StatestreamSource(base)


@pytest.mark.parametrize(("candidate", "owned"), [
    (f"{BASE}/sensor/x/state", True),
    (f"{BASE}/sensor/x/unit_of_measurement", True),
    (f"{BASE}/sensor/x", False),
    (f"{BASE}/sensor/x/state/extra", False),
    ("hats/acme/statestreamX/sensor/x/state", False),
    ("homeassistant/statestream/sensor/x/state", False),
    ("hats/acme/sensor/x/state", False),
])
def test_matches_only_three_levels_under_the_base(candidate: str, owned: bool) -> None:
    assert StatestreamSource(BASE).matches(candidate) is owned


def test_a_state_change_is_held_until_flush_then_carries_its_attributes_and_time() -> None:
    clock = FakeClock()
    source = StatestreamSource(BASE, clock=clock)
    outcomes = publish_state_change(source, b"21.5")
    held = outcomes[0].held_by
    assert held is not None
    assert held[:2] == (topic("state"), b"21.5")
    assert outcomes[0] == Outcome(held_by=held)  # held, not ignored: its acknowledgement waits for it
    # Its burst's timestamp and attributes wait for it too (a redelivery must bring them back with it).
    assert outcomes[1] == Outcome(ignored="last_updated", held_by=held)
    assert outcomes[2] == Outcome(ignored="last_changed")
    assert all(o == Outcome(ignored="attribute", held_by=held) for o in outcomes[3:])
    assert source.flush() == ()  # its burst may still be arriving
    clock.now += QUIET_S
    (state,) = source.flush()  # complete: attributes and timestamp arrived, then the entity fell silent
    assert state.origin == held  # what the pipeline releases the held acknowledgements by
    assert state.origin[:2] == (topic("state"), b"21.5")  # dead letters keep the message really received
    assert state == EntityState(entity_id="sensor.living_room_temperature", state="21.5",
                                attributes=LIVING_ROOM_ATTRIBUTES, last_updated=T1, source="statestream",
                                origin=state.origin, attributes_pieced=True)
    assert source.flush(force=True) == ()
    point = normalise(state, received_ns=1)
    assert (point.measurement, point.value, point.time_ns) == ("temperature", 21.5, parse_time_ns(T1))


@pytest.mark.parametrize(("payload", "expected"), [
    (b"21.5", "21.5"), (b'"21.5"', "21.5"), (b"on", "on"), (b'"on"', "on"), (b"unavailable", "unavailable"),
    (b'"unavailable"', "unavailable"), (b"unknown", "unknown"), (b'"Caf\\u00e9 open"', "Café open"),
    (b'"', '"'), (b'"on', '"on'), (b'"a" "b"', '"a" "b"'), (b"", ""), ("Küche".encode(), "Küche"),
])
def test_raw_and_json_quoted_states_are_both_accepted(payload: bytes, expected: str) -> None:
    source = StatestreamSource(BASE)
    source.handle(topic("state", "binary_sensor/front_door"), payload)
    (state,) = source.flush(force=True)
    assert (state.entity_id, state.state) == ("binary_sensor.front_door", expected)


def test_attributes_cached_before_the_state_apply_to_it() -> None:
    source = StatestreamSource(BASE)
    source.handle(topic("unit_of_measurement"), b'"\\u00b0F"')
    source.handle(topic("device_class"), b'"temperature"')
    source.flush(force=True)
    source.handle(topic("state"), b"70.7")
    (state,) = source.flush(force=True)
    assert dict(state.attributes) == {"unit_of_measurement": "°F", "device_class": "temperature"}
    assert normalise(state, received_ns=1).value == pytest.approx(21.5)


def test_an_attribute_change_after_the_state_applies_at_flush() -> None:
    source = StatestreamSource(BASE)
    source.handle(topic("unit_of_measurement"), b'"W"')
    source.handle(topic("state"), b"1.2")
    source.handle(topic("unit_of_measurement"), b'"kW"')
    (state,) = source.flush(force=True)
    assert state.attributes["unit_of_measurement"] == "kW"


def test_two_states_of_one_entity_in_a_batch_are_both_emitted_in_order_with_their_own_times() -> None:
    source = StatestreamSource(BASE)
    publish_state_change(source, b"21.5", T1)
    publish_state_change(source, b"21.6", T2)
    first, second = source.flush(force=True)
    assert (first.state, first.last_updated) == ("21.5", T1)
    assert (second.state, second.last_updated) == ("21.6", T2)
    assert first.attributes == second.attributes == LIVING_ROOM_ATTRIBUTES


def test_a_timestamp_stamps_the_oldest_pending_state_without_one() -> None:
    """HA publishes each change from its own task: `state₁ state₂ last_updated₁` — the first stamp is the
    first state's."""
    source = StatestreamSource(BASE)
    source.handle(topic("state"), b"21.5")
    source.handle(topic("state"), b"21.6")
    source.handle(topic("last_updated"), T1.encode())
    first, second = source.flush(force=True)
    assert (first.state, first.last_updated) == ("21.5", T1)
    assert (second.state, second.last_updated) == ("21.6", None)


def test_states_of_different_entities_keep_arrival_order_and_their_own_attributes() -> None:
    source = StatestreamSource(BASE)
    source.handle(topic("state", "sensor/a"), b"1")
    source.handle(topic("state", "sensor/b"), b"2")
    source.handle(topic("unit_of_measurement", "sensor/b"), b'"W"')
    source.handle(topic("last_updated", "sensor/a"), T1.encode())
    a, b = source.flush(force=True)
    assert (a.entity_id, a.last_updated, dict(a.attributes)) == ("sensor.a", T1, {})
    assert (b.entity_id, b.last_updated, dict(b.attributes)) == ("sensor.b", None, {"unit_of_measurement": "W"})


def test_json_quoted_timestamp_is_unquoted() -> None:
    source = StatestreamSource(BASE)
    source.handle(topic("state"), b"21.5")
    source.handle(topic("last_updated"), json.dumps(T1).encode())
    assert source.flush(force=True)[0].last_updated == T1


def test_a_timestamp_replayed_before_its_state_is_taken_by_it_within_the_batch() -> None:
    source = StatestreamSource(BASE)
    source.handle(topic("unit_of_measurement"), b'"W"', retained=True)
    source.handle(topic("last_updated"), T1.encode(), retained=True)
    source.handle(topic("state"), b"21.5", retained=True)
    assert source.flush(force=True)[0].last_updated == T1


def test_a_loose_timestamp_is_never_carried_across_a_flush() -> None:
    source = StatestreamSource(BASE)
    source.handle(topic("unit_of_measurement"), b'"W"', retained=True)
    source.handle(topic("last_updated"), T1.encode(), retained=True)
    assert source.flush(force=True) == ()
    source.handle(topic("state"), b"21.5", retained=True)
    assert source.flush(force=True) == ()  # a replayed state without its own last_updated is no point


def test_a_live_timestamp_without_its_state_never_stamps_the_next_state() -> None:
    """Live, a timestamp follows its state; one with no state pending is a redelivery whose state an earlier
    process acknowledged (or a state whose hold ran out). Given to the next state it would overwrite the
    point of the change it belongs to, and every later state of the entity would take its predecessor's."""
    source = StatestreamSource(BASE)
    assert source.handle(topic("last_updated"), T1.encode()) == Outcome(ignored=LOOSE_LAST_UPDATED)
    source.handle(topic("state"), b"22.0")
    source.handle(topic("last_updated"), T2.encode())
    source.handle(topic("state"), b"22.5")
    first, second = source.flush(force=True)
    assert (first.state, first.last_updated) == ("22.0", T2)
    assert (second.state, second.last_updated) == ("22.5", None)


@pytest.mark.parametrize("stamp", [b"yesterday", b"2026-11-26T10:00:00", b"", b'"2026-13-01T00:00:00+00:00"'])
def test_a_bad_timestamp_is_rejected_and_does_not_stamp_the_state(stamp: bytes) -> None:
    source = StatestreamSource(BASE)
    source.handle(topic("state"), b"21.5")
    with pytest.raises(Rejected) as caught:
        source.handle(topic("last_updated"), stamp)
    assert caught.value.reason is Reason.BAD_TIMESTAMP
    (state,) = source.flush(force=True)
    assert (state.state, state.last_updated) == ("21.5", None)


def test_attribute_values_of_every_json_type_are_cached() -> None:
    source = StatestreamSource(BASE)
    for name, payload in [("friendly_name", b'"Thermostat"'), ("temperature", b"21"), ("hvac_modes", b'["heat","off"]'),
                          ("preset", b"null"), ("is_on", b"true"), ("extra", b'{"a": {"b": 1.5}}')]:
        assert source.handle(topic(name, "climate/hall"), payload) == Outcome(ignored="attribute")
    assert source.attributes("climate.hall") == {"friendly_name": "Thermostat", "temperature": 21,
                                                 "hvac_modes": ["heat", "off"], "preset": None, "is_on": True,
                                                 "extra": {"a": {"b": 1.5}}}


def test_attributes_returns_a_copy() -> None:
    source = StatestreamSource(BASE)
    source.handle(topic("unit_of_measurement"), b'"W"')
    source.attributes("sensor.living_room_temperature")["unit_of_measurement"] = "kW"
    assert source.attributes("sensor.living_room_temperature") == {"unit_of_measurement": "W"}


@pytest.mark.parametrize(("entity", "field", "payload", "reason"), [
    ("sensor/x", "state", b"\xff\xfe", Reason.NOT_UTF8),
    ("sensor/x", "unit_of_measurement", b"\xc3\x28", Reason.NOT_UTF8),
    ("sensor/x", "last_updated", b"\xff", Reason.NOT_UTF8),
    ("sensor/x", "unit_of_measurement", b"\xc2\xb0C", Reason.INVALID_JSON),  # the unit without JSON quotes
    ("sensor/x", "friendly_name", b"{broken", Reason.INVALID_JSON),
    ("sensor/x", "friendly_name", b"", Reason.INVALID_JSON),
    ("sensor/x", "state", b"x" * 256, Reason.SCHEMA),
    ("sensor/x", "state", json.dumps("x" * 256).encode(), Reason.SCHEMA),
    ("Sensor/x", "state", b"1", Reason.BAD_ENTITY_ID),
    ("sensor/X", "state", b"1", Reason.BAD_ENTITY_ID),
    ("sensor/kitchen-temp", "state", b"1", Reason.BAD_ENTITY_ID),
    ("sensor/x.y", "state", b"1", Reason.BAD_ENTITY_ID),
    ("sensor/", "state", b"1", Reason.BAD_ENTITY_ID),
    ("/x", "state", b"1", Reason.BAD_ENTITY_ID),
    ("sensor/x\n", "state", b"1", Reason.BAD_ENTITY_ID),
    ("sensor/" + "x" * 256, "state", b"1", Reason.BAD_ENTITY_ID),
    ("sensor/x", "", b'"W"', Reason.BAD_TOPIC),
])
def test_broken_messages_are_rejected_with_their_reason(entity: str, field: str, payload: bytes,
                                                        reason: Reason) -> None:
    source = StatestreamSource(BASE)
    with pytest.raises(Rejected) as caught:
        source.handle(topic(field, entity), payload)
    assert caught.value.reason is reason
    assert source.flush(force=True) == ()


def test_a_state_of_exactly_255_chars_is_accepted() -> None:
    source = StatestreamSource(BASE)
    source.handle(topic("state"), b"x" * 255)
    assert len(source.flush(force=True)[0].state) == 255


@pytest.mark.parametrize("foreign", ["homeassistant/statestream/sensor/x/state", f"{BASE}/sensor/x"])
def test_a_topic_outside_the_layout_is_rejected(foreign: str) -> None:
    with pytest.raises(Rejected) as caught:
        StatestreamSource(BASE).handle(foreign, b"1")
    assert caught.value.reason is Reason.BAD_TOPIC


def test_a_huge_attribute_is_neither_cached_nor_rejected_and_evicts_its_stale_value() -> None:
    source = StatestreamSource(BASE)
    source.handle(topic("forecast", "weather/home"), b'[{"t": 1}]')
    huge = json.dumps([{"datetime": T1, "temperature": 21.5}] * 200).encode()
    assert len(huge) > MAX_ATTRIBUTE_VALUE_BYTES
    assert source.handle(topic("forecast", "weather/home"), huge) == Outcome(ignored="attribute_too_large")
    assert "forecast" not in source.attributes("weather.home")
    assert source.cached_bytes == 0
    assert source.handle(topic("junk", "weather/home"), b"\xff" * (MAX_ATTRIBUTE_VALUE_BYTES + 1)) == Outcome(
        ignored="attribute_too_large")


def test_attributes_per_entity_are_bounded_but_the_meaningful_ones_still_get_in() -> None:
    source = StatestreamSource(BASE)
    outcomes = [source.handle(topic(f"attr_{n}"), b"1") for n in range(MAX_ATTRIBUTES_PER_ENTITY + 50)]
    assert outcomes.count(Outcome(ignored="attribute_limit")) == 50
    assert source.handle(topic("unit_of_measurement"), b'"W"') == Outcome(ignored="attribute")
    assert source.handle(topic("attr_0"), b"2") == Outcome(ignored="attribute")  # known names still update
    cached = source.attributes("sensor.living_room_temperature")
    assert len(cached) == MAX_ATTRIBUTES_PER_ENTITY + 1
    assert (cached["unit_of_measurement"], cached["attr_0"]) == ("W", 2)


def test_ten_thousand_distinct_entities() -> None:
    source = StatestreamSource(BASE)
    for n in range(10_000):
        source.handle(topic("state", f"sensor/power_{n}"), str(n).encode())
        source.handle(topic("unit_of_measurement", f"sensor/power_{n}"), b'"W"')
    states = source.flush(force=True)
    assert [s.entity_id for s in states] == [f"sensor.power_{n}" for n in range(10_000)]
    assert all(s.attributes == {"unit_of_measurement": "W"} for s in states)
    assert states[9_999].state == "9999"
    assert source.cached_entities == 10_000


def test_the_least_recently_touched_entity_is_evicted_first() -> None:
    source = StatestreamSource(BASE, max_cached_entities=3)
    for name in ("a", "b", "c"):
        source.handle(topic("unit_of_measurement", f"sensor/{name}"), b'"W"')
    source.handle(topic("state", "sensor/a"), b"1")  # a is touched, b is now the oldest
    source.handle(topic("unit_of_measurement", "sensor/d"), b'"W"')
    assert source.cached_entities == 3
    assert source.attributes("sensor.b") == {}
    assert source.attributes("sensor.a") == {"unit_of_measurement": "W"}


def test_cached_bytes_stay_within_the_budget() -> None:
    source = StatestreamSource(BASE, max_cache_bytes=64 * 1024)
    value = json.dumps("v" * 3_000).encode()
    for n in range(200):
        source.handle(topic("big", f"sensor/e{n}"), value)
        assert source.cached_bytes <= 64 * 1024
    assert source.cached_entities < 200
    assert source.attributes("sensor.e199") == {"big": "v" * 3_000}


def test_pending_states_are_bounded_by_emitting_the_oldest_early() -> None:
    source = StatestreamSource(BASE, max_pending_states=2)
    a = source.handle(topic("state", "sensor/a"), b"1", 1)
    assert a == Outcome(held_by=(topic("state", "sensor/a"), b"1", 1))
    assert source.handle(topic("last_updated", "sensor/a"), T1.encode()) == Outcome(ignored="last_updated",
                                                                                   held_by=a.held_by)
    assert source.handle(topic("state", "sensor/b"), b"2", 2) == Outcome(held_by=(topic("state", "sensor/b"), b"2", 2))
    c = source.handle(topic("state", "sensor/c"), b"3", 3)
    assert [(s.entity_id, s.last_updated, s.origin) for s in c.states] == [("sensor.a", T1, a.held_by)]
    assert c.held_by == (topic("state", "sensor/c"), b"3", 3)
    loose = source.handle(topic("last_updated", "sensor/a"), T2.encode())  # its state is gone: ignored
    assert loose == Outcome(ignored=LOOSE_LAST_UPDATED)  # no held state to wait for
    assert [s.entity_id for s in source.flush(force=True)] == ["sensor.b", "sensor.c"]


def test_completeness_not_read_boundaries_decides_emission() -> None:
    clock = FakeClock()
    source = StatestreamSource(BASE, clock=clock)
    publish_state_change(source, b"21.5")
    clock.now += QUIET_S
    assert [s.last_updated for s in source.flush()] == [T1]
    # The next change arrives in two reads: the state now, its timestamp later. Not emitted in between,
    # however long the gap between the reads (short of the hold).
    source.handle(topic("state"), b"21.7")
    clock.now += QUIET_S
    assert source.flush() == ()
    source.handle(topic("last_updated"), T2.encode())
    assert source.flush() == ()
    clock.now += QUIET_S
    (state,) = source.flush()
    assert (state.state, state.last_updated) == ("21.7", T2)


def test_a_state_whose_timestamp_never_comes_is_emitted_after_the_hold() -> None:
    clock = FakeClock()
    source = StatestreamSource(BASE, clock=clock, hold_s=1.0)
    publish_state_change(source, b"21.5")
    source.flush(force=True)
    source.handle(topic("state"), b"22.0")
    clock.now += 0.5
    assert source.flush() == ()
    clock.now += 0.6
    (state,) = source.flush()
    assert (state.state, state.last_updated) == ("22.0", None)


def test_interleaved_bursts_of_one_entity_keep_their_own_times_and_units() -> None:
    """As a real HA 2024.3 published a value change followed 36 ms later by a unit change: the two
    changes' messages interleave. Each state takes the first timestamp and attributes no older pending
    state of the entity has taken."""
    clock = FakeClock()
    source = StatestreamSource(BASE, clock=clock)
    entity = "sensor/variable_power"
    for field, payload in (("state", b"1.25"), ("state", b"1.25"), ("last_updated", T1.encode()),
                           ("last_updated", T2.encode()), ("last_changed", T1.encode()),
                           ("last_changed", T1.encode()), ("unit_of_measurement", b'"kW"'),
                           ("unit_of_measurement", b'"W"'), ("device_class", b'"power"'),
                           ("device_class", b'"power"')):
        source.handle(topic(field, entity), payload)
    clock.now += QUIET_S
    first, second = source.flush()
    assert (first.last_updated, first.attributes["unit_of_measurement"]) == (T1, "kW")
    assert (second.last_updated, second.attributes["unit_of_measurement"]) == (T2, "W")
    assert [normalise(s, received_ns=1).value for s in (first, second)] == [1250.0, 1.25]


def test_a_busy_entity_is_emitted_after_the_hold_with_each_state_its_own_burst() -> None:
    clock = FakeClock()
    source = StatestreamSource(BASE, clock=clock, hold_s=1.0)
    emitted: list[EntityState] = []
    for i in range(12):  # a change every 0.1 s: never quiet for QUIET_S
        publish_state_change(source, f"{20 + i}".encode(), f"2026-11-26T10:00:{i:02d}.000000+00:00")
        emitted += source.flush()
        clock.now += 0.1
    assert [s.state for s in emitted] == [f"{20 + i}" for i in range(len(emitted))]
    assert 1 <= len(emitted) <= 3  # the first ones, once held for a second
    emitted += source.flush(force=True)
    assert [s.last_updated for s in emitted] == [f"2026-11-26T10:00:{i:02d}.000000+00:00" for i in range(12)]


def test_a_first_state_waits_for_its_unit() -> None:
    clock = FakeClock()
    source = StatestreamSource(BASE, clock=clock)
    source.handle(topic("state", "sensor/new_one"), b"5")
    clock.now += QUIET_S
    assert source.flush() == ()  # no attribute yet: its measurement is unknown
    source.handle(topic("unit_of_measurement", "sensor/new_one"), b'"W"')
    clock.now += QUIET_S
    (state,) = source.flush()
    assert state.attributes == {"unit_of_measurement": "W"}


def test_a_first_state_waits_for_its_whole_attribute_burst() -> None:
    """Home Assistant 2024.3's order for a new meter: state, timestamps, then state_class, unit,
    device_class, friendly_name one by one. Released when the first attribute arrived, the state was
    described without its unit and device_class and landed in measurement `state`."""
    clock = FakeClock()
    source = StatestreamSource(BASE, clock=clock)
    entity = "sensor/grid_energy"
    for field, payload in (("state", b"12.5"), ("last_updated", T1.encode()), ("last_changed", T1.encode()),
                           ("state_class", b'"total_increasing"')):
        source.handle(topic(field, entity), payload)
        clock.now += 0.01
    assert source.flush() == ()
    for field, payload in (("unit_of_measurement", b'"kWh"'), ("device_class", b'"energy"'),
                           ("friendly_name", b'"Grid"')):
        clock.now += QUIET_S / 2  # slower than HA ever is, still one burst
        source.handle(topic(field, entity), payload)
        assert source.flush() == ()
    clock.now += QUIET_S
    (state,) = source.flush()
    assert normalise(state, received_ns=1).measurement == "energy"
    assert dict(state.attributes) == {"state_class": "total_increasing", "unit_of_measurement": "kWh",
                                      "device_class": "energy", "friendly_name": "Grid"}


BATTERY_BURST = (("state_class", b'"measurement"'), ("unit_of_measurement", b'"%"'),
                 ("device_class", b'"battery"'), ("friendly_name", b'"Door battery"'))
BATTERY_ATTRIBUTES = {field: json.loads(payload) for field, payload in BATTERY_BURST}


def test_a_state_nothing_describes_waits_past_the_hold_for_its_retained_attributes() -> None:
    """The soak's finding: after a worker SIGKILL the new process's cache is empty and the broker sends the
    session's backlog (state and timestamps) before it replays the retained attributes. Released after
    HOLD_S, the first state landed in measurement `state`, the entity's later states in `battery`."""
    clock = FakeClock()
    source = StatestreamSource(BASE, clock=clock, hold_s=1.0)
    entity = "sensor/door_00157_battery"
    for field, payload in (("state", b"72"), ("last_updated", T1.encode()), ("last_changed", T1.encode())):
        source.handle(topic(field, entity), payload)
    for i in range(int(UNDESCRIBED_HOLD_S)):  # the rest of the backlog, far longer than HOLD_S
        clock.now += 0.5
        source.handle(topic("state", f"sensor/other_{i}"), b"1")
        assert source.flush() == ()
    for field, payload in BATTERY_BURST:  # the retained replay
        source.handle(topic(field, entity), payload)
    clock.now += QUIET_S
    (state,) = source.flush()
    assert (state.state, state.last_updated) == ("72", T1)
    assert normalise(state, received_ns=1).measurement == "battery"


def test_an_entity_that_publishes_no_attributes_waits_only_the_hold_when_nothing_else_arrives() -> None:
    """Home Assistant's `publish_attributes: false`, a quiet home: no backlog or replay is under way, so the
    state waits HOLD_S; its entity is then known to be bare, and its states wait as described ones do."""
    clock = FakeClock()
    source = StatestreamSource(BASE, clock=clock, hold_s=1.0)
    entity = "sensor/plain"
    source.handle(topic("state", entity), b"5")
    source.handle(topic("last_updated", entity), T1.encode())
    clock.now += 0.99
    assert source.flush() == ()
    clock.now += 0.01
    (first,) = source.flush()
    assert (first.state, first.last_updated, dict(first.attributes)) == ("5", T1, {})
    source.handle(topic("state", entity), b"6")
    source.handle(topic("last_updated", entity), T2.encode())
    clock.now += QUIET_S
    (second,) = source.flush()
    assert (second.state, second.last_updated) == ("6", T2)
    assert normalise(second, received_ns=1).measurement == normalise(first, received_ns=1).measurement == "state"


def test_in_a_busy_stream_without_attributes_an_undescribed_state_waits_the_undescribed_hold() -> None:
    clock = FakeClock()
    source = StatestreamSource(BASE, clock=clock, hold_s=1.0)
    source.handle(topic("state", "sensor/plain"), b"5")
    emitted: list[EntityState] = []
    while not emitted:
        clock.now += 0.5
        source.handle(topic("last_changed", "sensor/busy"), T1.encode())  # statestream traffic, no attribute
        emitted += source.flush()
    assert clock.now - 1000.0 == pytest.approx(UNDESCRIBED_HOLD_S)
    assert [s.entity_id for s in emitted] == ["sensor.plain"]


def test_once_the_attributes_stopped_flowing_an_undescribed_first_state_waits_only_the_hold() -> None:
    clock = FakeClock()
    source = StatestreamSource(BASE, clock=clock, hold_s=1.0)
    for field, payload in BATTERY_BURST:  # another entity's attributes (a retained replay), then quiet
        source.handle(topic(field, "sensor/door_00001_battery"), payload)
    clock.now += 0.5
    source.handle(topic("state", "sensor/uptime"), b"12")
    clock.now += 0.6  # attributes quiet for HOLD_S, but this state not yet held so long
    assert source.flush() == ()
    clock.now += 0.4
    (state,) = source.flush()
    assert (state.entity_id, dict(state.attributes)) == ("sensor.uptime", {})


def test_a_unit_change_applies_to_the_state_it_came_with() -> None:
    clock = FakeClock()
    source = StatestreamSource(BASE, clock=clock)
    entity = "sensor/heater_power"
    for field, payload in (("state", b"800"), ("unit_of_measurement", b'"W"'), ("device_class", b'"power"')):
        source.handle(topic(field, entity), payload)
    clock.now += QUIET_S
    assert [normalise(s, received_ns=1).value for s in source.flush()] == [800.0]
    source.handle(topic("state", entity), b"1.5")  # the old unit W is still cached
    source.handle(topic("device_class", entity), b'"power"')
    assert source.flush() == ()
    source.handle(topic("unit_of_measurement", entity), b'"kW"')
    clock.now += QUIET_S
    assert [normalise(s, received_ns=1).value for s in source.flush()] == [1500.0]


# -- the broker's retained replay (a re-subscription after a restart) -------------------------------------

def replay(source: StatestreamSource, messages: list[tuple[str, bytes]],
           entity: str = "sensor/living_room_temperature") -> list[Outcome]:
    return [source.handle(topic(field, entity), payload, retained=True) for field, payload in messages]


ATTRIBUTES_REPLAYED = [("friendly_name", b'"Living room"'), ("unit_of_measurement", json.dumps("°C").encode()),
                       ("device_class", b'"temperature"'), ("state_class", b'"measurement"')]


def test_a_replayed_state_is_the_same_point_as_the_live_one_whatever_order_the_broker_replays_in() -> None:
    for order in (["last_updated", "state"], ["state", "last_updated"]):
        clock = FakeClock()
        source = StatestreamSource(BASE, clock=clock)
        fields = {"state": b"21.5", "last_updated": T1.encode()}
        outcomes = replay(source, [("last_changed", T1.encode()), *((f, fields[f]) for f in order),
                                   *ATTRIBUTES_REPLAYED])
        assert all(o.held_by is None for o in outcomes)  # acknowledged at once: the broker keeps them
        clock.now += QUIET_S
        (state,) = source.flush()
        assert (state.state, state.last_updated, state.attributes) == ("21.5", T1, LIVING_ROOM_ATTRIBUTES)
        assert source.replays_dropped == 0


def test_a_replayed_state_without_its_last_updated_is_never_a_point_at_receipt_time() -> None:
    clock = FakeClock()
    source = StatestreamSource(BASE, clock=clock)
    publish_state_change(source, b"21.5")  # live: the entity publishes timestamps
    clock.now += QUIET_S
    assert [s.last_updated for s in source.flush()] == [T1]
    replay(source, [("state", b"21.5"), *ATTRIBUTES_REPLAYED])  # its last_updated topic never replayed
    clock.now += UNDESCRIBED_HOLD_S
    assert source.flush() == ()
    assert source.replays_dropped == 1


def test_a_replayed_state_nothing_describes_is_dropped_and_does_not_mark_its_entity_bare() -> None:
    clock = FakeClock()
    source = StatestreamSource(BASE, clock=clock)
    replay(source, [("state", b"91"), ("last_updated", T1.encode())], entity="sensor/door_battery")
    clock.now += UNDESCRIBED_HOLD_S
    assert source.flush() == ()  # under `state` it would be a second series of its entity
    assert source.replays_dropped == 1
    # Its live states still wait for their attributes as an undescribed entity's do.
    source.handle(topic("state", "sensor/door_battery"), b"90")
    source.handle(topic("last_updated", "sensor/door_battery"), T2.encode())
    clock.now += QUIET_S
    assert source.flush() == ()
    source.handle(topic("unit_of_measurement", "sensor/door_battery"), b'"%"')
    clock.now += QUIET_S
    assert [(s.state, s.last_updated) for s in source.flush()] == [("90", T2)]


def test_a_replayed_timestamp_never_stamps_a_live_state_of_the_backlog() -> None:
    clock = FakeClock()
    source = StatestreamSource(BASE, clock=clock)
    source.handle(topic("unit_of_measurement"), b'"\\u00b0C"')
    source.handle(topic("state"), b"22.0")  # the backlog's state; its own last_updated is next in the backlog
    replay(source, [("last_updated", T1.encode()), ("state", b"21.5")])  # the replay of the previous change
    source.handle(topic("last_updated"), T2.encode())
    clock.now += QUIET_S
    assert sorted((s.state, s.last_updated) for s in source.flush()) == [("21.5", T1), ("22.0", T2)]


def test_after_a_restart_a_known_entity_is_described_by_the_home_and_does_not_wait_for_the_replay() -> None:
    """A restarted worker's cache is empty and the backlog comes before the retained attributes. An entity
    `core.entities` describes (`MetadataStore.knows`, what `open_pipeline` wires in) is released once its
    burst is over, with its own timestamp; the pipeline then takes the known description for its gaps. An
    entity the home has never described still waits for its attributes, as before."""
    metadata = MetadataStore("t", budget=10)
    battery = EntityState("sensor.door_00157_battery", "71", {**BATTERY_ATTRIBUTES}, source="statestream")
    assert metadata.admit(battery.entity_id)
    metadata.note(battery, describe(battery).measurement)
    clock = FakeClock()
    source = StatestreamSource(BASE, clock=clock, hold_s=1.0, known=metadata.knows)
    for entity in ("sensor/door_00157_battery", "sensor/door_00158_battery"):
        for field, payload in (("state", b"72"), ("last_updated", T1.encode()), ("last_changed", T1.encode())):
            source.handle(topic(field, entity), payload)
    emitted: list[EntityState] = []
    for i in range(int(UNDESCRIBED_HOLD_S)):  # the rest of the backlog: no attribute yet
        clock.now += 0.5
        source.handle(topic("state", f"sensor/other_{i}"), b"1")
        emitted += [state for state in source.flush() if state.entity_id.startswith("sensor.door")]
        if i == 0:
            assert [(s.entity_id, s.last_updated) for s in emitted] == [("sensor.door_00157_battery", T1)]
    assert [s.entity_id for s in emitted] == ["sensor.door_00157_battery"]  # the unknown one is still held
    assert normalise(metadata.described(emitted[0]), received_ns=1).measurement == "battery"


def test_a_source_without_metadata_knows_no_entity() -> None:
    clock = FakeClock()
    source = StatestreamSource(BASE, clock=clock, hold_s=1.0)
    source.handle(topic("state", "sensor/door_00157_battery"), b"72")
    clock.now += 2.0
    source.handle(topic("state", "sensor/other"), b"1")  # traffic: not settled, so undescribed means held
    assert source.flush() == ()


def test_a_known_entity_seen_first_waits_the_hold_for_its_timestamp() -> None:
    """Known from `core.entities` (or from eventstream in the same worker) but not yet heard on statestream:
    whether it publishes timestamps is unknown, so its state waits up to HOLD_S for its `last_updated` (a real
    HA 2025.4 published one 0.48 s after its state) instead of taking receipt time at QUIET_S."""
    clock = FakeClock()
    source = StatestreamSource(BASE, clock=clock, hold_s=1.0, known=lambda entity_id: True)
    source.handle(topic("state", "switch/heater"), b"on")
    clock.now += 0.48
    assert source.flush() == ()
    source.handle(topic("last_updated", "switch/heater"), T1.encode())
    clock.now += QUIET_S
    (state,) = source.flush()
    assert (state.state, state.last_updated) == ("on", T1)
    source.handle(topic("state", "switch/plain"), b"off")  # one that never sends a timestamp goes at HOLD_S
    clock.now += 0.99
    assert source.flush() == ()
    clock.now += 0.01
    (plain,) = source.flush()
    assert (plain.state, plain.last_updated) == ("off", None)
