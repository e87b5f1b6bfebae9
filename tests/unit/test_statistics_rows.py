"""Home Assistant's statistics rows as rollup-contract lines: quantities, units, meters' change and resets."""

from __future__ import annotations

import pytest

from ingest_worker.importers.statistics_rows import Carry, KnownEntity, StatisticMeta, is_external, lines_of, plan
from ingest_worker.rejections import Reason, Rejected

HOUR = 1_700_000_000.0 - 1_700_000_000.0 % 3_600


def fields(line: str) -> dict[str, str]:
    head, values, stamp = line.split(" ")
    return dict(item.split("=", 1) for item in values.split(",")) | {"_head": head, "_time": stamp}


def test_fahrenheit_gauge_becomes_celsius_with_count_zero_and_the_whole_window_available() -> None:
    target = plan(StatisticMeta(1, "sensor.porch", "°F", has_mean=True, has_sum=False), None, "1h")
    lines, _ = lines_of(target, (HOUR, 71.6, 32.0, 212.0, None, None, None), None, "1h")
    [line] = lines
    got = fields(line)
    assert got["_head"] == "imported_gauge_1h,entity_id=sensor.porch,quantity=temperature"
    assert float(got["mean"]) == pytest.approx(22.0)
    assert [float(got["min"]), float(got["max"])] == pytest.approx([0.0, 100.0])
    assert (got["count"], got["available_s"]) == ("0i", "3600.0")
    assert int(got["_time"]) == int(HOUR) * 1_000_000_000


def test_meter_consumption_is_the_change_of_sum_in_kwh_and_the_first_row_counts_from_zero() -> None:
    target = plan(StatisticMeta(2, "sensor.meter", "Wh", has_mean=False, has_sum=True), None, "5m")
    first, carry = lines_of(target, (HOUR, None, None, None, None, 1_500.0, 500.0), None, "5m")
    second, carry = lines_of(target, (HOUR + 300, None, None, None, None, 2_250.0, 1_250.0), carry, "5m")
    one, two = fields(first[0]), fields(second[0])
    assert one["_head"] == "imported_counter_5m,entity_id=sensor.meter,quantity=energy"
    assert float(one["consumption"]) == pytest.approx(0.5)  # HA: the first row's change is its sum
    assert float(two["consumption"]) == pytest.approx(0.75)
    assert [float(two["last"]), float(two["sum"])] == pytest.approx([2.25, 1.25])
    assert (two["resets"], two["available_s"]) == ("0i", "300.0")
    assert carry == Carry(1_250.0, None, 2_250.0)


def test_a_state_drop_with_a_growing_sum_is_a_reset_and_so_is_a_moved_last_reset() -> None:
    target = plan(StatisticMeta(3, "sensor.meter", "kWh", has_mean=False, has_sum=True), None, "1h")
    carry = Carry(sum=10.0, last_reset_ts=None, state=110.0)
    dropped, carry = lines_of(target, (HOUR, None, None, None, None, 2.0, 12.0), carry, "1h")
    assert fields(dropped[0])["resets"] == "1i"
    steady, carry = lines_of(target, (HOUR + 3_600, None, None, None, None, 3.0, 13.0), carry, "1h")
    assert fields(steady[0])["resets"] == "0i"
    moved, _ = lines_of(target, (HOUR + 7_200, None, None, None, HOUR + 7_300, 4.0, 14.0), carry, "1h")
    assert fields(moved[0])["resets"] == "1i"


def test_a_net_meter_going_down_is_not_a_reset() -> None:
    target = plan(StatisticMeta(3, "sensor.net", "kWh", has_mean=False, has_sum=True), None, "1h")
    lines, _ = lines_of(target, (HOUR, None, None, None, None, 4.0, 6.0), Carry(8.0, None, 6.0), "1h")
    assert fields(lines[0])["resets"] == "0i"
    assert float(fields(lines[0])["consumption"]) == pytest.approx(-2.0)


def test_first_row_of_a_series_is_a_reset_only_when_its_last_reset_is_inside_the_window() -> None:
    target = plan(StatisticMeta(3, "sensor.m", "kWh", has_mean=False, has_sum=True), None, "1h")
    inside, _ = lines_of(target, (HOUR, None, None, None, HOUR + 60, 1.0, 1.0), None, "1h")
    before, _ = lines_of(target, (HOUR, None, None, None, HOUR - 86_400, 1.0, 1.0), None, "1h")
    assert (fields(inside[0])["resets"], fields(before[0])["resets"]) == ("1i", "0i")


def test_known_entity_decides_the_quantity_and_a_unit_that_does_not_convert_to_it_is_refused() -> None:
    known = KnownEntity("temperature", "temperature", "°C")
    ok = plan(StatisticMeta(4, "sensor.room", "K", has_mean=True, has_sum=False), known, "1h")
    assert (ok.quantity, ok.unit, ok.conversion) == ("temperature", "°C", "K->degC")
    with pytest.raises(Rejected) as refused:
        plan(StatisticMeta(4, "sensor.room", "kWh", has_mean=True, has_sum=False), known, "1h")
    assert refused.value.reason == Reason.UNCONVERTIBLE_UNIT
    assert "'kWh'" in refused.value.detail
    assert "'°C'" in refused.value.detail


def test_percent_classes_keep_their_unit_and_unknown_units_pass_as_the_live_worker_passes_them() -> None:
    humidity = plan(StatisticMeta(5, "sensor.h", "%", True, False), KnownEntity("humidity", "humidity", "%"), "1h")
    assert (humidity.quantity, humidity.unit, humidity.conversion) == ("humidity", "%", None)
    gas = plan(StatisticMeta(6, "sensor.gas", "m³", False, True), None, "1h")
    assert (gas.quantity, gas.unit, gas.conversion) == ("state", "m³", None)


def test_a_statistic_with_mean_and_sum_writes_both_kinds() -> None:
    target = plan(StatisticMeta(7, "sensor.both", "kW", True, True), None, "1h")
    lines, _ = lines_of(target, (HOUR, 1.0, 0.5, 2.0, None, 3.0, 4.0), None, "1h")
    assert [line.split(",", 1)[0] for line in lines] == ["imported_gauge_1h", "imported_counter_1h"]
    assert float(fields(lines[0])["max"]) == pytest.approx(2_000.0)


def test_rows_without_values_write_nothing_and_bad_statistics_are_refused() -> None:
    target = plan(StatisticMeta(8, "sensor.t", "°C", True, False), None, "1h")
    assert lines_of(target, (HOUR, None, None, None, None, None, None), None, "1h")[0] == []
    with pytest.raises(Rejected) as neither:
        plan(StatisticMeta(9, "sensor.t", "°C", False, False), None, "1h")
    assert neither.value.reason == Reason.SCHEMA
    with pytest.raises(Rejected) as bad:
        plan(StatisticMeta(9, "Sensor T", "°C", True, False), None, "1h")
    assert bad.value.reason == Reason.BAD_ENTITY_ID
    assert is_external("tibber:energy_home")
    assert not is_external("sensor.energy")


def test_a_value_influxdb_cannot_store_is_refused() -> None:
    target = plan(StatisticMeta(8, "sensor.t", "°C", True, False), None, "1h")
    with pytest.raises(Rejected) as refused:
        lines_of(target, (HOUR, float("inf"), 1.0, 2.0, None, None, None), None, "1h")
    assert refused.value.reason == Reason.NON_FINITE
