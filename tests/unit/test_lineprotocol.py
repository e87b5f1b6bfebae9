"""Line protocol escaping, checked against the InfluxDB 1.x rules (and in integration, the server)."""

from __future__ import annotations

import pytest

from ingest_worker.contract import Point
from ingest_worker.lineprotocol import encode
from ingest_worker.rejections import Reason, Rejected


def test_float_value_line() -> None:
    point = Point("temperature", (("domain", "sensor"), ("entity_id", "sensor.t")), 5, value=21.5)
    assert encode(point) == "temperature,domain=sensor,entity_id=sensor.t value=21.5 5"


def test_integral_value_is_written_as_a_float_never_an_integer_field() -> None:
    assert encode(Point("battery", (), 1, value=97.0)) == "battery value=97.0 1"


def test_escapes_measurement_tags_and_strings() -> None:
    point = Point("my measure,x", (("entity_id", "a b,c=d"),), 7, state='say "hi" \\ bye')
    assert encode(point) == r'my\ measure\,x,entity_id=a\ b\,c\=d state="say \"hi\" \\ bye" 7'


def test_large_and_tiny_floats_use_notation_influx_accepts() -> None:
    assert encode(Point("power", (), 1, value=1e20)) == "power value=1e+20 1"
    assert encode(Point("power", (), 1, value=-2.5e-7)) == "power value=-2.5e-07 1"


@pytest.mark.parametrize("point", [
    Point("temp", (("entity_id", "a\nb"),), 1, value=1.0),
    Point("temp\n", (), 1, value=1.0),
    Point("temp", (), 1, state="line one\nline two"),
    Point("temp", (("entity_id", ""),), 1, value=1.0),
    Point("temp", (("entity_id", "ends\\"),), 1, value=1.0),
])
def test_unwritable_text_is_rejected(point: Point) -> None:
    with pytest.raises(Rejected) as caught:
        encode(point)
    assert caught.value.reason is Reason.UNWRITABLE


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_rejected(value: float) -> None:
    with pytest.raises(Rejected) as caught:
        encode(Point("temp", (), 1, value=value))
    assert caught.value.reason is Reason.NON_FINITE


def test_point_without_value_or_state_is_rejected() -> None:
    with pytest.raises(Rejected):
        encode(Point("temp", (), 1))
