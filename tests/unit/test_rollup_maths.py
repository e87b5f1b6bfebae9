"""Rollup maths against independent references written the slow, obvious way.

The gauge reference samples the step function once per second (at each second's midpoint) with a
plain loop; with whole-second timestamps that sampling is an exact integral, so the vectorised
time-weighted results must agree to rel 1e-9. A second reference integrates piece by piece for
nanosecond timestamps. The counter reference is a per-reading state machine written from Home
Assistant's sensor/recorder.py (reset_detected + the compile_statistics sum loop).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

from hats_assets.defs.rollups.maths import (
    COUNTER_COLUMNS,
    GAUGE_COLUMNS,
    NS_PER_S,
    RESET_RATIO,
    WINDOW_1H_NS,
    WINDOW_1M_NS,
    WINDOW_5M_NS,
    Carry,
    counter_windows,
    gauge_windows,
    reaggregate,
)

REL = 1e-9
NAN = math.nan
T0_S = 1_699_999_200  # a UTC instant aligned to 1 h (1_699_999_200 % 3600 == 0)


def s(seconds: float) -> int:
    """Nanoseconds at T0 + seconds."""
    return (T0_S * NS_PER_S) + round(seconds * NS_PER_S)


@dataclass(frozen=True)
class Row:
    mean: float
    min: float
    max: float
    count: int
    last: float
    available_s: float
    last_seen_s: float


def value_at(times_s: list[float], values: list[float], carry_value: float | None, t: float) -> float | None:
    """The step function at t (seconds since T0): None = unknown/unavailable."""
    current: float | None = None if carry_value is None or math.isnan(carry_value) else carry_value
    for ti, vi in zip(times_s, values, strict=True):
        if ti > t:
            break
        current = None if math.isnan(vi) else vi
    return current


def gauge_reference_sampled(
    times_s: list[int], values: list[float], window_s: int, n_windows: int, carry_value: float | None
) -> dict[int, Row]:
    """One sample per whole second; exact for whole-second timestamps."""
    out: dict[int, Row] = {}
    for w in range(n_windows):
        samples: list[float] = []
        for sec in range(w * window_s, (w + 1) * window_s):
            v = value_at([float(x) for x in times_s], values, carry_value, sec + 0.5)
            if v is not None:
                samples.append(v)
        if not samples:
            continue
        in_window = [(ti, vi) for ti, vi in zip(times_s, values, strict=True)
                     if w * window_s <= ti < (w + 1) * window_s]
        seen = [ti for ti, vi in in_window if not math.isnan(vi)]
        out[s(w * window_s)] = Row(
            mean=sum(samples) / len(samples),
            min=min(samples),
            max=max(samples),
            count=len(seen),
            last=samples[-1],  # the last value held while available
            available_s=float(len(samples)),
            last_seen_s=s(seen[-1]) / NS_PER_S if seen else NAN,
        )
    return out


def gauge_reference_pieces(
    times_ns: list[int], values: list[float], start_ns: int, window_ns: int, n_windows: int, carry_value: float | None
) -> dict[int, Row]:
    """Explicit piecewise integral per window for arbitrary nanosecond timestamps."""
    out: dict[int, Row] = {}
    for w in range(n_windows):
        lo, hi = start_ns + w * window_ns, start_ns + (w + 1) * window_ns
        # value holding at lo
        current = carry_value
        for ti, vi in zip(times_ns, values, strict=True):
            if ti <= lo:
                current = vi
        cuts = [lo] + [ti for ti in times_ns if lo < ti < hi] + [hi]
        integral = 0.0
        avail = 0
        seen: list[float] = []
        for a, b in itertools.pairwise(cuts):
            if a != lo:
                current = values[times_ns.index(a)]
            if current is not None and not math.isnan(current):
                integral += current * (b - a)
                avail += b - a
                seen.append(current)
        if avail == 0:
            continue
        points = [ti for ti, vi in zip(times_ns, values, strict=True) if lo <= ti < hi and not math.isnan(vi)]
        out[lo] = Row(integral / avail, min(seen), max(seen), len(points), seen[-1], avail / NS_PER_S,
                      points[-1] / NS_PER_S if points else NAN)
    return out


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as plain dicts (window_start as a Python int, the key of the reference dicts)."""
    rows = [{str(k): v for k, v in row.items()} for row in frame.to_dict("records")]
    for row in rows:
        row["window_start"] = int(row["window_start"])
    return rows


def assert_gauge_matches(frame: pd.DataFrame, expected: dict[int, Row]) -> None:
    assert list(frame.columns) == list(GAUGE_COLUMNS)
    assert frame["window_start"].tolist() == sorted(expected)
    for rec in records(frame):
        want = expected[rec["window_start"]]
        assert rec["mean"] == pytest.approx(want.mean, rel=REL), rec
        assert (rec["min"], rec["max"], rec["count"]) == (want.min, want.max, want.count)
        assert rec["last"] == want.last
        assert rec["available_s"] == pytest.approx(want.available_s, rel=REL)
        if math.isnan(want.last_seen_s):
            assert math.isnan(rec["last_seen_s"])
        else:
            assert rec["last_seen_s"] == pytest.approx(want.last_seen_s, rel=1e-15)


def run_gauge_case(
    times_s: list[int], values: list[float], window_s: int, n_windows: int, carry: tuple[int, float] | None = None
) -> pd.DataFrame:
    carry_ns: Carry = None if carry is None else (s(carry[0]), carry[1])
    frame = gauge_windows(
        np.array([s(x) for x in times_s], dtype=np.int64),
        np.array(values, dtype=np.float64),
        s(0),
        s(window_s * n_windows),
        window_s * NS_PER_S,
        carry=carry_ns,
    )
    expected = gauge_reference_sampled(times_s, values, window_s, n_windows, None if carry is None else carry[1])
    assert_gauge_matches(frame, expected)
    return frame


# --- gauges: hand-made cases -------------------------------------------------------------------


def test_simple_step_mean_is_time_weighted() -> None:
    frame = run_gauge_case([0, 45], [10.0, 20.0], 60, 1)
    assert frame["mean"].iloc[0] == pytest.approx((10 * 45 + 20 * 15) / 60, rel=REL)
    assert frame["count"].iloc[0] == 2
    assert frame["last"].iloc[0] == 20.0


def test_unavailable_time_is_excluded_not_zero() -> None:
    frame = run_gauge_case([0, 20, 40], [10.0, NAN, 30.0], 60, 1)
    row = frame.iloc[0]
    assert row["mean"] == pytest.approx(20.0, rel=REL)  # (10*20 + 30*20) / 40, not / 60
    assert row["available_s"] == pytest.approx(40.0)
    assert row["count"] == 2  # the unavailable record is not a numeric point
    assert (row["min"], row["max"]) == (10.0, 30.0)


def test_carry_in_value_counts_for_mean_min_max() -> None:
    frame = run_gauge_case([30], [5.0], 60, 1, carry=(-100, 50.0))
    row = frame.iloc[0]
    assert row["mean"] == pytest.approx((50 * 30 + 5 * 30) / 60, rel=REL)
    assert (row["min"], row["max"], row["count"]) == (5.0, 50.0, 1)


def test_unavailable_carry_means_unavailable_until_first_point() -> None:
    frame = run_gauge_case([30], [5.0], 60, 1, carry=(-100, NAN))
    assert frame["available_s"].iloc[0] == pytest.approx(30.0)
    assert frame["mean"].iloc[0] == pytest.approx(5.0)


def test_series_starting_mid_window_is_unavailable_before_first_point() -> None:
    frame = run_gauge_case([150, 200], [1.0, 3.0], 60, 5)
    # windows 0 and 1 have no known value: absent, not zero
    assert frame["window_start"].tolist() == [s(120), s(180), s(240)]
    assert frame["available_s"].tolist() == pytest.approx([30.0, 60.0, 60.0])


def test_carried_value_fills_windows_without_points() -> None:
    frame = run_gauge_case([], [], 60, 3, carry=(-5, 7.0))
    assert frame["mean"].tolist() == [7.0, 7.0, 7.0]
    assert frame["count"].tolist() == [0, 0, 0]


def test_no_data_at_all_gives_an_empty_frame_with_the_columns() -> None:
    frame = run_gauge_case([], [], 60, 3)
    assert frame.empty
    assert list(frame.columns) == list(GAUGE_COLUMNS)


def test_long_unavailable_stretch_drops_its_windows() -> None:
    frame = run_gauge_case([0, 70, 250], [4.0, NAN, 6.0], 60, 5)
    assert frame["window_start"].tolist() == [s(0), s(60), s(240)]
    assert frame["last"].iloc[1] == 4.0  # unavailable at its end: last is the last value it held while available
    assert frame["available_s"].tolist() == pytest.approx([60.0, 10.0, 50.0])


def test_gap_holds_the_last_value() -> None:
    frame = run_gauge_case([5, 290], [2.0, 9.0], 60, 5)
    assert frame["mean"].tolist()[1:4] == [2.0, 2.0, 2.0]
    assert frame["count"].tolist() == [1, 0, 0, 0, 1]


def test_point_exactly_on_window_boundary_belongs_to_the_later_window() -> None:
    frame = run_gauge_case([0, 60], [1.0, 2.0], 60, 2)
    assert frame["count"].tolist() == [1, 1]
    assert frame["last"].tolist() == [1.0, 2.0]
    assert frame["max"].tolist() == [1.0, 2.0]


def test_irregular_nanosecond_timestamps_against_piecewise_integral() -> None:
    start = s(0)
    times = [start + 1, start + 7_123_456_789, start + 7_123_456_790, start + 59_999_999_999, start + 61_000_000_001]
    values = [1.5, NAN, -4.25, 8.0, 2.0]
    end = start + 3 * WINDOW_1M_NS
    frame = gauge_windows(np.array(times), np.array(values), start, end, WINDOW_1M_NS, (s(-1), 3.0))
    expected = gauge_reference_pieces(times, values, start, WINDOW_1M_NS, 3, 3.0)
    assert_gauge_matches(frame, expected)
    assert frame["available_s"].iloc[0] == pytest.approx(60.0 - 1e-9, rel=REL)  # one ns unavailable


# --- gauges: validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("times", "start", "end", "window", "carry"),
    [
        ([s(1), s(1)], s(0), s(60), WINDOW_1M_NS, None),  # duplicate timestamp
        ([s(2), s(1)], s(0), s(60), WINDOW_1M_NS, None),  # unsorted
        ([s(-1)], s(0), s(60), WINDOW_1M_NS, None),  # before start: that is the carry's job
        ([s(60)], s(0), s(60), WINDOW_1M_NS, None),  # end is exclusive
        ([], s(1), s(61), WINDOW_1M_NS, None),  # unaligned start
        ([], s(0), s(90), WINDOW_1M_NS, None),  # unaligned end
        ([], s(60), s(0), WINDOW_1M_NS, None),  # empty range
        ([], s(0), s(60), 0, None),  # no window
        ([], s(0), s(60), WINDOW_1M_NS, (s(0), 1.0)),  # carry not before start
    ],
)
def test_contract_violations_raise(
    times: list[int], start: int, end: int, window: int, carry: tuple[int, float] | None
) -> None:
    values = np.ones(len(times))
    with pytest.raises(ValueError, match=r"\S"):
        gauge_windows(np.array(times, dtype=np.int64), values, start, end, window, carry)
    with pytest.raises(ValueError, match=r"\S"):
        counter_windows(np.array(times, dtype=np.int64), values, start, end, window, carry)


def test_infinite_values_raise() -> None:
    with pytest.raises(ValueError, match="finite"):
        gauge_windows(np.array([s(1)]), np.array([math.inf]), s(0), s(60), WINDOW_1M_NS)


# --- gauges: consistency between window sizes and randomised comparison --------------------------


def random_series(rng: np.random.Generator, span_s: int) -> tuple[list[int], list[float], tuple[int, float] | None]:
    n = int(rng.integers(0, 120))
    times = sorted(int(x) for x in rng.choice(span_s, size=min(n, span_s), replace=False))
    values = [float(round(x, 3)) for x in rng.normal(10.0, 5.0, len(times))]
    for i in range(len(values)):
        if rng.random() < 0.15:
            values[i] = NAN
    roll = rng.random()
    carry = None if roll < 0.3 else (-int(rng.integers(1, 1000)), NAN if roll < 0.45 else float(rng.normal(10.0, 5.0)))
    return times, values, carry


def test_randomised_gauges_match_the_sampled_reference() -> None:
    rng = np.random.default_rng(20240601)
    for _ in range(50):
        window_s = int(rng.choice([60, 300]))
        n_windows = int(rng.integers(1, 7))
        times, values, carry = random_series(rng, window_s * n_windows)
        run_gauge_case(times, values, window_s, n_windows, carry)


def test_hour_equals_its_twelve_five_minute_windows() -> None:
    rng = np.random.default_rng(7)
    start, end = s(0), s(3 * 3600)
    for _ in range(20):
        n = int(rng.integers(1, 400))
        times = np.sort(rng.choice(np.arange(start, end, 1_000_000, dtype=np.int64), size=n, replace=False))
        values = rng.normal(0.0, 3.0, n)
        values[rng.random(n) < 0.2] = np.nan
        carry = (s(-10), float(rng.normal())) if rng.random() < 0.5 else None
        hourly = gauge_windows(times, values, start, end, WINDOW_1H_NS, carry)
        five = gauge_windows(times, values, start, end, WINDOW_5M_NS, carry)
        one = gauge_windows(times, values, start, end, WINDOW_1M_NS, carry)
        assert one["count"].sum() == five["count"].sum() == hourly["count"].sum() == int((~np.isnan(values)).sum())
        five = five.assign(hour=(five["window_start"] - start) // WINDOW_1H_NS * WINDOW_1H_NS + start)
        grouped = five.assign(weighted=five["mean"] * five["available_s"]).groupby("hour")
        assert grouped.ngroups == len(hourly)
        for rec in records(hourly):
            part = grouped.get_group(rec["window_start"])
            assert rec["available_s"] == pytest.approx(part["available_s"].sum(), rel=REL)
            weighted_mean = part["weighted"].sum() / part["available_s"].sum()
            assert rec["mean"] == pytest.approx(weighted_mean, rel=REL, abs=1e-12)
            assert rec["min"] == part["min"].min()
            assert rec["max"] == part["max"].max()
            assert rec["count"] == part["count"].sum()
            assert rec["last"] == part.iloc[-1]["last"]  # what InfluxDB's last(last) computes
            assert rec["last_seen_s"] == part["last_seen_s"].max() or (
                math.isnan(rec["last_seen_s"]) and part["last_seen_s"].isna().all())


# --- counters -------------------------------------------------------------------------------------


def counter_reference(
    times_ns: list[int], values: list[float], start_ns: int, window_ns: int, carry_value: float | None
) -> dict[int, tuple[float, int, int, float]]:
    """Per-reading state machine: (consumption, count, resets, last) per window with readings."""
    previous = None if carry_value is None or not math.isfinite(carry_value) or carry_value < 0 else carry_value
    high_water = previous
    out: dict[int, tuple[float, int, int, float]] = {}
    for t, v in zip(times_ns, values, strict=True):
        if not math.isfinite(v) or v < 0:
            continue
        key = start_ns + (t - start_ns) // window_ns * window_ns
        consumption, count, resets, _ = out.get(key, (0.0, 0, 0, NAN))
        if previous is None or high_water is None:
            high_water = v  # zero point
        elif v < RESET_RATIO * previous:
            consumption += v
            resets += 1
            high_water = v
        else:
            consumption += max(0.0, v - high_water)
            high_water = max(high_water, v)
        previous = v
        out[key] = (consumption, count + 1, resets, v)
    return out


def ha_sum(values: list[float], carry_value: float | None) -> float:
    """Home Assistant's compile_statistics sum loop for total_increasing (no last_reset), transcribed."""
    old_state: float | None = None
    new_state: float | None = None
    total = 0.0
    for fstate in ([] if carry_value is None else [carry_value]) + values:
        if not math.isfinite(fstate):
            continue
        if old_state is None:
            new_state = old_state = fstate
            continue
        assert new_state is not None
        if fstate < 0:
            continue  # reset_detected raises, the loop continues
        if fstate < 0.9 * new_state:
            total += new_state - old_state
            new_state, old_state = fstate, 0.0
        else:
            new_state = fstate
    return 0.0 if new_state is None or old_state is None else total + new_state - old_state


def run_counter_case(
    times_s: list[int], values: list[float], window_s: int, n_windows: int, carry_value: float | None = None
) -> pd.DataFrame:
    times_ns = [s(x) for x in times_s]
    frame = counter_windows(
        np.array(times_ns, dtype=np.int64),
        np.array(values, dtype=np.float64),
        s(0),
        s(window_s * n_windows),
        window_s * NS_PER_S,
        carry=None if carry_value is None else (s(-1), carry_value),
    )
    expected = counter_reference(times_ns, values, s(0), window_s * NS_PER_S, carry_value)
    assert list(frame.columns) == list(COUNTER_COLUMNS)
    assert frame["window_start"].tolist() == sorted(expected)
    for rec in records(frame):
        consumption, count, resets, last = expected[rec["window_start"]]
        assert rec["consumption"] == pytest.approx(consumption, rel=REL, abs=1e-9)
        assert (rec["count"], rec["resets"], rec["last"]) == (count, resets, last)
    assert (frame["consumption"] >= 0).all()
    return frame


def test_counter_consumption_is_attributed_to_the_later_reading() -> None:
    frame = run_counter_case([10, 50, 70, 130], [100.0, 101.0, 103.5, 104.0], 60, 3, carry_value=99.0)
    assert frame["consumption"].tolist() == pytest.approx([2.0, 2.5, 0.5])
    assert frame["last"].tolist() == [101.0, 103.5, 104.0]


def test_counter_without_carry_uses_first_reading_as_zero_point() -> None:
    frame = run_counter_case([10, 50], [100.0, 101.0], 60, 1)
    assert frame["consumption"].tolist() == pytest.approx([1.0])


def test_meter_reset_starts_a_new_cycle_counting_from_zero() -> None:
    # Home Assistant's developer-docs example: 1000, 1010, 0, 5 -> sum 15
    frame = run_counter_case([0, 60, 120, 180], [1000.0, 1010.0, 0.0, 5.0], 60, 4)
    assert frame["consumption"].tolist() == pytest.approx([0.0, 10.0, 0.0, 5.0])
    assert frame["resets"].tolist() == [0, 0, 1, 0]
    assert frame["consumption"].sum() == pytest.approx(ha_sum([1000.0, 1010.0, 0.0, 5.0], None))


def test_reset_to_a_nonzero_reading_counts_that_reading() -> None:
    frame = run_counter_case([0, 30, 70], [5000.0, 5001.0, 3.0], 60, 2, carry_value=4999.0)
    assert frame["consumption"].tolist() == pytest.approx([2.0, 3.0])  # not -4998, not a huge spike
    assert frame["resets"].tolist() == [0, 1]


def test_small_dip_is_not_a_reset_and_never_negative() -> None:
    # 100 -> 95 (5 % dip, HA: no reset, only warn_dip) -> 99 -> 102
    frame = run_counter_case([0, 60, 120, 180], [100.0, 95.0, 99.0, 102.0], 60, 4, carry_value=98.0)
    assert frame["consumption"].tolist() == pytest.approx([2.0, 0.0, 0.0, 2.0])
    assert frame["resets"].sum() == 0
    assert frame["consumption"].sum() == pytest.approx(ha_sum([100.0, 95.0, 99.0, 102.0], 98.0))


def test_dip_of_exactly_ten_percent_is_not_a_reset_but_just_below_is() -> None:
    assert run_counter_case([0, 60], [100.0, 90.0], 60, 2)["resets"].sum() == 0
    assert run_counter_case([0, 60], [100.0, 89.999], 60, 2)["resets"].sum() == 1


def test_unavailable_and_negative_readings_are_skipped() -> None:
    frame = run_counter_case([0, 60, 120, 180], [10.0, NAN, -3.0, 12.0], 60, 4, carry_value=NAN)
    assert frame["window_start"].tolist() == [s(0), s(180)]
    assert frame["consumption"].tolist() == pytest.approx([0.0, 2.0])  # 12 is compared with 10
    assert frame["count"].tolist() == [1, 1]


def test_counter_with_no_readings_is_empty_with_columns() -> None:
    frame = run_counter_case([0], [NAN], 60, 2, carry_value=5.0)
    assert frame.empty
    assert list(frame.columns) == list(COUNTER_COLUMNS)


def test_counter_windows_add_up_across_sizes() -> None:
    rng = np.random.default_rng(11)
    start, end = s(0), s(2 * 3600)
    times = np.arange(start, end, 10 * NS_PER_S, dtype=np.int64)
    values = np.cumsum(rng.random(times.size))
    values[300] = 0.5  # a reset
    values[500] = values[499] * 0.97  # a dip
    values[rng.random(times.size) < 0.05] = np.nan
    totals = [
        counter_windows(times, values, start, end, w, carry=(s(-5), 0.0))["consumption"].sum()
        for w in (WINDOW_1M_NS, WINDOW_5M_NS, WINDOW_1H_NS)
    ]
    assert totals == pytest.approx([totals[0]] * 3, rel=REL)
    assert totals[0] > 0


def test_randomised_counters_match_the_reference_and_home_assistant_totals() -> None:
    rng = np.random.default_rng(4242)
    compared = 0
    for _ in range(50):
        n = int(rng.integers(1, 200))
        times = sorted(int(x) for x in rng.choice(3600, size=n, replace=False))
        steps = rng.exponential(0.5, n)
        dips = rng.random(n) < 0.05
        steps[dips] = -rng.uniform(0.0, 0.08, dips.sum()) * 50.0
        values = list(50.0 + np.cumsum(steps))
        for i in range(n):
            roll = rng.random()
            if roll < 0.03:
                values[i] = float(rng.uniform(0.0, 5.0))  # meter replaced / reset
            elif roll < 0.1:
                values[i] = NAN
        carry = None if rng.random() < 0.3 else float(values[0] if math.isfinite(values[0]) else 50.0)
        frame = run_counter_case(times, [float(v) for v in values], int(rng.choice([60, 300])), 3600 // 60, carry)
        # when every meter cycle ends at its high-water mark, our total equals HA's sum exactly
        finite = [v for v in values if math.isfinite(v) and v >= 0]
        if finite and all(cycle[-1] == max(cycle) for cycle in _cycles(finite, carry)):
            compared += 1
            assert frame["consumption"].sum() == pytest.approx(ha_sum(list(values), carry), rel=REL, abs=1e-9)
    assert compared >= 5  # the HA comparison really ran


def _cycles(readings: list[float], carry: float | None) -> list[list[float]]:
    """The readings split into meter cycles by HA's 0.9 rule, carry included."""
    chain = ([carry] if carry is not None else []) + readings
    cycles = [[chain[0]]]
    for prev, cur in itertools.pairwise(chain):
        if cur < RESET_RATIO * prev:
            cycles.append([cur])
        else:
            cycles[-1].append(cur)
    return cycles


# --- re-aggregation (what the 5 min and 1 h rollups are made of) -----------------------------------


@pytest.mark.parametrize("kind", ["gauge", "counter"])
def test_reaggregated_windows_equal_windows_computed_from_the_points(kind: str) -> None:
    """5 min and 1 h rows built from 1 min rows of many series equal those computed from the raw points."""
    rng = np.random.default_rng(11)
    start, end = s(0), s(2 * 3600)
    compute = gauge_windows if kind == "gauge" else counter_windows
    fine: list[pd.DataFrame] = []
    direct: dict[int, list[pd.DataFrame]] = {WINDOW_5M_NS: [], WINDOW_1H_NS: []}
    for series in range(12):
        n = int(rng.integers(5, 300))
        times = np.sort(rng.choice(np.arange(start, end, 1_000_000, dtype=np.int64), size=n, replace=False))
        values = (rng.normal(20.0, 3.0, n) if kind == "gauge" else np.cumsum(rng.random(n)) + 100.0)
        values[rng.random(n) < 0.15] = np.nan
        if kind == "counter":
            values[n // 2:] -= 90.0  # a meter reset
        carry = (s(-1), float(values[0] if not np.isnan(values[0]) else 1.0)) if series % 3 else None
        fine.append(compute(times, values, start, end, WINDOW_1M_NS, carry).assign(series=series))
        for window in direct:
            direct[window].append(compute(times, values, start, end, window, carry).assign(series=series))
    one = pd.concat(fine, ignore_index=True)
    if kind == "counter":
        one["available_s"] = 1.0
    for window, frames in direct.items():
        got = reaggregate(one, window, kind)
        want = pd.concat(frames, ignore_index=True)
        assert got[["series", "window_start"]].values.tolist() == want[["series", "window_start"]].values.tolist()
        columns = ["mean", "min", "max", "count", "last", "last_seen_s"] if kind == "gauge" else [
            "consumption", "count", "resets", "last", "last_seen_s"]
        for column in columns:
            assert got[column].to_numpy() == pytest.approx(want[column].to_numpy(), rel=REL, nan_ok=True), column
        if kind == "gauge":
            assert got["available_s"].to_numpy() == pytest.approx(want["available_s"].to_numpy(), rel=REL)
