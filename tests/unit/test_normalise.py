"""Normalisation rules of the data contract: measurement, units, availability, time."""

from __future__ import annotations

import pytest

from ingest_worker.normalise import EntityState, measurement_for, normalise, parse_time_ns
from ingest_worker.rejections import Reason, Rejected

RECEIVED = 1_700_000_000_000_000_000


def state(entity_id: str, value: str, **attributes: object) -> EntityState:
    return EntityState(entity_id=entity_id, state=value, attributes=attributes)


def test_fahrenheit_becomes_celsius_in_the_temperature_measurement() -> None:
    point = normalise(state("sensor.porch", "71.6", unit_of_measurement="°F", device_class="temperature"), RECEIVED)
    assert point.measurement == "temperature"
    assert point.value == pytest.approx(22.0, rel=1e-12)
    assert point.state is None


@pytest.mark.parametrize(("unit", "raw", "expected", "measurement"), [
    ("kW", "1.5", 1500.0, "power"),
    ("Wh", "2500", 2.5, "energy"),
    ("MWh", "0.002", 2.0, "energy"),
    ("K", "300.15", 27.0, "temperature"),
    ("W", "42", 42.0, "power"),
])
def test_units_are_converted_to_the_canonical_unit(unit: str, raw: str, expected: float, measurement: str) -> None:
    point = normalise(state("sensor.x", raw, unit_of_measurement=unit), RECEIVED)
    assert point.measurement == measurement
    assert point.value == pytest.approx(expected, rel=1e-12)


def test_value_is_always_a_float_even_for_integer_states() -> None:
    point = normalise(state("sensor.battery", "97", unit_of_measurement="%", device_class="battery"), RECEIVED)
    assert isinstance(point.value, float)
    assert point.measurement == "battery"


@pytest.mark.parametrize("raw", ["unavailable", "unknown"])
def test_availability_states_are_records_not_numbers(raw: str) -> None:
    point = normalise(state("sensor.t", raw, device_class="temperature"), RECEIVED)
    assert point.value is None
    assert point.state == raw
    assert point.measurement == "temperature"


def test_binary_domains_share_one_measurement_with_numeric_states() -> None:
    door = normalise(state("binary_sensor.front_door", "on", device_class="door"), RECEIVED)
    motion = normalise(state("binary_sensor.hall", "off", device_class="motion"), RECEIVED)
    assert (door.measurement, door.value) == ("binary", 1.0)
    assert (motion.measurement, motion.value) == ("binary", 0.0)


def test_non_numeric_state_is_a_string_field() -> None:
    point = normalise(state("sensor.washer_status", "spin cycle"), RECEIVED)
    assert (point.measurement, point.value, point.state) == ("state", None, "spin cycle")


@pytest.mark.parametrize("raw", ["nan", "inf", "-Infinity"])
def test_non_finite_numbers_are_rejected(raw: str) -> None:
    with pytest.raises(Rejected) as caught:
        normalise(state("sensor.t", raw), RECEIVED)
    assert caught.value.reason is Reason.NON_FINITE


@pytest.mark.parametrize("entity_id", ["sensor", "Sensor.X", "sensor.a b", "sensor.a,b", 'sensor."x"', ""])
def test_malformed_entity_ids_are_rejected(entity_id: str) -> None:
    with pytest.raises(Rejected) as caught:
        normalise(state(entity_id, "1"), RECEIVED)
    assert caught.value.reason is Reason.BAD_ENTITY_ID


def test_time_comes_from_the_state_with_microseconds_exact() -> None:
    stamped = EntityState("sensor.t", "1", {}, last_updated="2026-11-26T17:00:01.123456+00:00")
    assert normalise(stamped, RECEIVED).time_ns == 1_795_712_401_123_456_000


def test_time_falls_back_to_receipt() -> None:
    assert normalise(state("sensor.t", "1"), RECEIVED).time_ns == RECEIVED


def test_offsets_are_converted_to_utc() -> None:
    assert parse_time_ns("2026-11-26T18:00:01+01:00") == parse_time_ns("2026-11-26T17:00:01Z")


@pytest.mark.parametrize("text", ["yesterday", "2026-11-26T17:00:01", "2026-13-01T00:00:00Z"])
def test_bad_timestamps_are_rejected(text: str) -> None:
    with pytest.raises(Rejected) as caught:
        parse_time_ns(text)
    assert caught.value.reason is Reason.BAD_TIMESTAMP


def test_measurement_prefers_device_class_then_unit_then_state() -> None:
    assert measurement_for("sensor", "pm25", "µg/m³") == "pm25"
    assert measurement_for("sensor", None, "kWh") == "energy"
    assert measurement_for("sensor", None, None) == "state"
    assert measurement_for("switch", "outlet", None) == "binary"


@pytest.mark.parametrize("attributes", [{"unit_of_measurement": "°C"}, {"state_class": "measurement"},
                                        {"state_class": "total_increasing", "device_class": "energy"}])
def test_text_where_a_number_is_declared_is_rejected(attributes: dict[str, object]) -> None:
    with pytest.raises(Rejected) as caught:
        normalise(state("sensor.t", "warm", **attributes), RECEIVED)
    assert caught.value.reason is Reason.NON_NUMERIC


def test_unavailable_is_fine_even_where_a_number_is_declared() -> None:
    assert normalise(state("sensor.t", "unknown", unit_of_measurement="°C"), RECEIVED).state == "unknown"


def test_overlong_device_id_is_rejected() -> None:
    long_device = EntityState("sensor.t", "1", {}, device_id="d" * 300)
    with pytest.raises(Rejected) as caught:
        normalise(long_device, RECEIVED)
    assert caught.value.reason is Reason.TAG_TOO_LONG
