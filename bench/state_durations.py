"""What the time in each state adds to a rollup run's compute step, in one run: without and with.

Data, in memory (the raw read is unchanged but for the few ``state`` rows it now keeps as text): one UTC
day of ``--entities`` numeric series at a 10 s cadence like ``bench/rollups.py`` (90 % gauges, 10 %
meters), plus ``--named`` event-driven entities with named states: doors and switches (1/0), modes and
enum sensors (text), a change every ~5 minutes on average, an unavailable stretch each.

1. Baseline: ``compute()`` of the day for the numeric series only (what a run computed before: the
   named-state series were not read as such).
2. Ours: ``compute()`` of the same day with the named-state series, i.e. rollups + ``state_1h`` rows,
   and their line protocol.
3. The meters' whole-window ``available_s`` (``compute._meter_available``) alone, per window size.

Usage: .venv/bin/python bench/state_durations.py [--entities N] [--named N] [--repeat N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hats_assets.defs.rollups.compute import (  # noqa: E402
    WINDOWS,
    _meter_available,
    _state_hours,
    compute,
    lines,
    state_lines,
)
from hats_assets.defs.rollups.maths import NS_PER_S, WINDOW_1M_NS, gauge_windows  # noqa: E402
from hats_assets.defs.rollups.raw_reader import RawSeries, RawWindow, StateSeries  # noqa: E402

DAY_NS = 86_400 * NS_PER_S
START_NS = 1_764_547_200 * NS_PER_S  # a UTC midnight
CADENCE_S = 10
METERS_SHARE = 0.1
MEAN_CHANGE_S = 300.0
MODES = np.array(["eco", "comfort", "away", "heat", "cool", "off", "idle"], dtype=object)


def numeric_window(entities: int, rng: np.random.Generator) -> tuple[list[RawSeries], frozenset[str]]:
    times = START_NS + np.arange(0, DAY_NS, CADENCE_S * NS_PER_S, dtype=np.int64)
    series, meters = [], set()
    for i in range(entities):
        if i < entities * METERS_SHARE:
            values = np.cumsum(rng.random(times.size) * 0.01) + 1000.0
            meters.add(f"sensor.meter_{i}")
            series.append(RawSeries("energy", f"sensor.meter_{i}", times, values, (START_NS - 1, 1000.0),
                                    (START_NS - 1, 1000.0)))
        else:
            values = 21.0 + np.cumsum(rng.normal(0, 0.05, times.size))
            values[rng.random(times.size) < 0.01] = np.nan
            series.append(RawSeries("temperature", f"sensor.t_{i}", times, values, (START_NS - 1, 21.0),
                                    (START_NS - 1, 21.0)))
    return series, frozenset(meters)


def named_series(count: int, rng: np.random.Generator) -> tuple[list[RawSeries], list[StateSeries]]:
    numeric, named = [], []
    for i in range(count):
        gaps = rng.exponential(MEAN_CHANGE_S, int(DAY_NS / NS_PER_S / MEAN_CHANGE_S * 1.5)) * NS_PER_S
        times = START_NS + np.unique(np.cumsum(gaps).astype(np.int64))
        times = times[times < START_NS + DAY_NS]
        if i % 2 == 0:  # a door: 1/0, also a numeric series for the gauge rollup
            values = (np.arange(times.size) % 2).astype(np.float64)
            values[times.size // 2] = np.nan
            states = np.where(values == 1.0, "on", "off").astype(object)
            states[times.size // 2] = "unavailable"
            numeric.append(RawSeries("binary", f"binary_sensor.door_{i}", times, values, (START_NS - 1, 0.0), None))
            named.append(StateSeries("binary", f"binary_sensor.door_{i}", times, states, "off"))
        else:  # a mode: text only
            states = MODES[rng.integers(0, MODES.size, times.size)]
            named.append(StateSeries("state", f"select.mode_{i}", times, states, "eco"))
    return numeric, named


def timed(repeat: int, run: object) -> float:
    assert callable(run)
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - began)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=1_000)
    parser.add_argument("--named", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    numeric, meters = numeric_window(args.entities, rng)
    binary, named = named_series(args.named, rng)
    before = RawWindow(numeric + binary, 0, 0, [])
    after = RawWindow(numeric + binary, 0, 0, named)
    end = START_NS + DAY_NS

    def run(window: RawWindow) -> None:
        result = compute(window, meters, START_NS, end)
        for name, _ in WINDOWS:
            for _ in lines(result, name):
                pass
        for _ in state_lines(result):
            pass

    # Interleaved, best of each: on a shared machine a block of one then a block of the other measures
    # the neighbours' load as much as the code.
    baseline_s = ours_s = float("inf")
    for _ in range(args.repeat):
        baseline_s = min(baseline_s, timed(1, lambda: run(before)))
        ours_s = min(ours_s, timed(1, lambda: run(after)))
    states_s = timed(args.repeat, lambda: _state_hours(after, START_NS, end))
    state_rows = len(compute(after, meters, START_NS, end).states)
    print(f"day of {args.entities} numeric series at {CADENCE_S} s + {args.named} named-state entities "
          f"(~{DAY_NS / NS_PER_S / MEAN_CHANGE_S:.0f} changes a day each), best of {args.repeat}:")
    print(f"baseline: compute + line protocol, numeric rollups only     {baseline_s:7.2f} s")
    print(f"ours:     the same + state_1h ({state_rows:,} rows)            {ours_s:7.2f} s   "
          f"ratio {ours_s / baseline_s:.3f}x")
    print(f"of which the state durations alone ({args.named} entities)          {states_s:7.2f} s")

    meter_series = [s for s in numeric if s.entity_id in meters]
    minutes = [gauge_windows(s.times_ns, s.values, START_NS, end, WINDOW_1M_NS, s.carry)[["window_start",
               "available_s"]].assign(series=i) for i, s in enumerate(meter_series)]
    import pandas as pd  # only this part needs it directly

    available = pd.concat(minutes, ignore_index=True)
    for name, window_ns in WINDOWS:
        frame = available.groupby([available["series"], available["window_start"] // window_ns * window_ns])[
            "available_s"].sum().rename_axis(["series", "window_start"]).reset_index()
        seconds = timed(args.repeat, lambda f=frame, w=window_ns: _meter_available(f.copy(), available, w))
        print(f"meters' whole-window available_s, {len(meter_series)} meters, {name}: {seconds * 1000:6.1f} ms")


if __name__ == "__main__":
    main()
