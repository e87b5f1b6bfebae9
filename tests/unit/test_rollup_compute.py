"""One window's compute step: meters' available time, instants as the nearest float, state lines."""

from __future__ import annotations

import random

import numpy as np

from hats_assets.defs.rollups.compute import compute, lines, state_lines
from hats_assets.defs.rollups.maths import NS_PER_S, WINDOW_1H_NS, epoch_s
from hats_assets.defs.rollups.raw_reader import RawSeries, RawWindow, StateSeries

H = WINDOW_1H_NS
T0 = 1_764_547_200 * NS_PER_S


def test_a_meter_read_every_10_minutes_was_available_the_whole_hour() -> None:
    times = T0 + np.arange(0, H, 600 * NS_PER_S, dtype=np.int64)
    meter = RawSeries("energy", "sensor.meter", times, 100.0 + np.arange(times.size, dtype=np.float64), None, None)
    result = compute(RawWindow([meter], times.size, 0, []), frozenset({"sensor.meter"}), T0, T0 + H)
    assert result.frames["1m"]["counter"]["available_s"].tolist() == [60.0] * 6
    assert result.frames["5m"]["counter"]["available_s"].tolist() == [300.0] * 6
    assert result.frames["1h"]["counter"]["available_s"].tolist() == [3600.0]


def test_last_seen_is_the_float_nearest_to_the_instant() -> None:
    rng = random.Random(7)
    instants = [T0 + rng.randrange(10**15) for _ in range(50_000)]
    got = epoch_s(np.array(instants, dtype=np.int64)).tolist()
    assert got == [t / NS_PER_S for t in instants]  # Python's int / int rounds once, exactly


def test_state_lines_rank_each_hours_states_and_quote_their_names() -> None:
    times = np.array([T0 + 60 * NS_PER_S, T0 + 120 * NS_PER_S], dtype=np.int64)
    door = StateSeries("state", "select.mode", times, np.array(['say "hi"', "off"], dtype=object), "off")
    result = compute(RawWindow([], 0, 0, [door]), frozenset(), T0, T0 + H)
    assert list(lines(result, "1h")) == []
    assert list(state_lines(result)) == [
        f"state_1h,entity_id=select.mode,quantity=state,rank=0 state=\"off\",duration_ns={(H - 60 * NS_PER_S)}i,"
        f"entries=1i {T0}",
        f'state_1h,entity_id=select.mode,quantity=state,rank=1 state="say \\"hi\\"",duration_ns={60 * NS_PER_S}i,'
        f"entries=1i {T0}",
    ]
