"""Read one time window of raw points out of InfluxDB as per-series numpy arrays, with carries.

The thin shell around ``maths``: everything here is fetching and reshaping. One series is one
(measurement, entity_id): the worker may have written an entity under several ``source`` tags (e.g.
statestream and eventstream at once), which InfluxDB merges under ``GROUP BY entity_id``; points at
the same instant from two sources are one observation, so duplicates keep the numeric one.

InfluxDB 1.x serialises one query's answer on one core and that is the slowest part of a rollup, so
the numeric points (``value``, decoded straight into numpy: ``InfluxDBResource.query_float_series``)
are read as ``READ_SLICES`` time slices side by side; the few ``state`` rows (unavailable, unknown,
text) and the carries are small queries in the same pool. A state row is a NaN point: not available
as a number from then on.

The same read also yields the named-state series the state durations need (``state_durations.py``):
two-state quantities (``binary``, ``availability``) and any series with a text state other than
unavailable/unknown in the window or carried into it (enum sensors, input_select, climate modes). An
entity of numbers only (a gauge, a meter) is not one.
"""

from __future__ import annotations

import functools
import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np

from hats_assets.defs.common.resources import TenantInflux, window_params
from hats_assets.defs.rollups.contract import TWO_STATE_QUANTITIES
from hats_assets.defs.rollups.maths import Carry, FloatArray, IntArray
from hats_assets.defs.rollups.state_durations import ObjectArray, state_names
from ingest_worker.contract import AVAILABILITY_STATES

HERE: Final = Path(__file__).parent
WINDOW_QUERY: Final = (HERE / "raw_window.influxql").read_text()
STATES_QUERY: Final = (HERE / "raw_states.influxql").read_text()
CARRY_LAST_QUERY: Final = (HERE / "carry_last.influxql").read_text()
CARRY_READING_QUERY: Final = (HERE / "carry_reading.influxql").read_text()
# Raw data read at once in a backfill: a day of 1,000 entities at 10 s is 8.64 M points (~140 MB of arrays).
RAW_CHUNK: Final = timedelta(days=1)
READ_SLICES: Final = 2  # measured on 2 cores: 1 query 10.8 s, 2 time slices side by side 7.9 s

SeriesKey = tuple[str, str]  # (measurement, entity_id)


@dataclass(frozen=True, slots=True)
class RawSeries:
    """One series' points inside the window (NaN value = not available as a number) and its carries."""

    measurement: str
    entity_id: str
    times_ns: IntArray
    values: FloatArray
    carry: Carry  # the last point before the window, whatever it was (NaN if unavailable)
    carry_reading: Carry  # the last numeric reading >= 0 before the window (a counter's predecessor)


@dataclass(frozen=True, slots=True)
class StateSeries:
    """One named-state series: its points' state names inside the window and the state carried in."""

    measurement: str
    entity_id: str
    times_ns: IntArray
    states: ObjectArray
    carry: str | None  # the state held at the window's start; None when the series had no earlier point


@dataclass(frozen=True, slots=True)
class RawWindow:
    series: list[RawSeries]
    points_read: int
    duplicates_dropped: int
    states: list[StateSeries]


def _key(series: dict[str, Any]) -> SeriesKey:
    return str(series["name"]), str(series["tags"]["entity_id"])


def _dedupe(times: IntArray, values: FloatArray) -> tuple[IntArray, FloatArray, int]:
    """Time order (slices and state rows arrive apart), one row per instant, the numeric one kept."""
    step = np.diff(times)
    if step.size and bool(np.all(step > 0)):
        return times, values, 0
    order = np.lexsort((np.isnan(values), times))
    times, values = times[order], values[order]
    keep = np.ones(times.size, dtype=bool)
    keep[1:] = times[1:] != times[:-1]
    return times[keep], values[keep], int((~keep).sum())


def _carries(answer: list[dict[str, Any]]) -> dict[SeriesKey, tuple[int, float]]:
    out: dict[SeriesKey, tuple[int, float]] = {}
    for series in answer:
        time_ns, value = series["values"][0][:2]
        out[_key(series)] = (int(time_ns), float("nan") if value is None else float(value))
    return out


def _carried_texts(answer: list[dict[str, Any]]) -> dict[SeriesKey, str]:
    """The ``state`` text of each carried-in point that has one (``carry_last.influxql``'s third column)."""
    return {_key(series): str(series["values"][0][2]) for series in answer if series["values"][0][2] is not None}


def _named(key: SeriesKey, texts: dict[int, str], carried_text: str | None) -> bool:
    """Whether a series' states are worth naming: a two-state quantity, or a text state that is not
    mere unavailability in the window or carried into it."""
    return (key[0] in TWO_STATE_QUANTITIES
            or any(text not in AVAILABILITY_STATES for text in texts.values())
            or (carried_text is not None and carried_text not in AVAILABILITY_STATES))


def _state_series(key: SeriesKey, times: IntArray, values: FloatArray, texts: dict[int, str],
                  carry: Carry, carried_text: str | None) -> StateSeries:
    """Name every (deduplicated) point: a NaN value is the text written at that instant."""
    point_texts = [texts[int(t)] if np.isnan(v) else None for t, v in zip(times.tolist(), values.tolist(),
                                                                          strict=True)]
    carried: str | None = None
    if carry is not None:
        carried = carried_text if carried_text is not None else str(
            state_names(key[0], key[1], [carry[1]], [None])[0])
    return StateSeries(key[0], key[1], times, state_names(key[0], key[1], values, point_texts), carried)


def _numeric(carry: Carry) -> bool:
    return carry is not None and not np.isnan(carry[1])


@functools.cache
def _readers() -> ThreadPoolExecutor:
    """The process's threads for a window's reads (its slices, states and carries): a pool per home cost
    ~6 thread starts per home (measured ~25 ms a home at 100 homes). The tasks only wait on InfluxDB,
    never on each other, so concurrent windows may share it."""
    return ThreadPoolExecutor(max_workers=READ_SLICES + 3, thread_name_prefix="raw-read")


def read_window(influxdb: TenantInflux, start: datetime, end: datetime) -> RawWindow:
    """All raw series with a point in ``[start, end)`` or a numeric state carried in from before it.

    A series with only a carry (a quiet sensor, a door that stayed shut) still holds its state through
    the window, so it is rolled up too; one with nothing numeric in or before the window is text only
    and is left out.
    """
    step = (end - start) / READ_SLICES
    bounds = [start + step * i for i in range(READ_SLICES)] + [end]
    carry_params = {"start": start.isoformat()}
    pool = _readers()  # the reads of one window side by side, on threads kept for the process
    slices = [pool.submit(influxdb.query_float_series, WINDOW_QUERY, window_params(a, b))
              for a, b in itertools.pairwise(bounds)]
    states = pool.submit(influxdb.query_points, STATES_QUERY, window_params(start, end))
    carry_last = pool.submit(influxdb.query_points, CARRY_LAST_QUERY, carry_params)
    carry_reading = pool.submit(influxdb.query_points, CARRY_READING_QUERY, carry_params)
    pieces: dict[SeriesKey, list[tuple[IntArray, FloatArray]]] = {}
    for part in slices:
        for name, tags, times, values in part.result():
            pieces.setdefault((name, tags["entity_id"]), []).append((times, values))
    texts: dict[SeriesKey, dict[int, str]] = {}
    for series in states.result():
        times = np.array([row[0] for row in series["values"]], dtype=np.int64)
        pieces.setdefault(_key(series), []).append((times, np.full(times.size, np.nan)))
        texts.setdefault(_key(series), {}).update((int(row[0]), str(row[1])) for row in series["values"])
    answer = carry_last.result()
    last, reading, carried_texts = _carries(answer), _carries(carry_reading.result()), _carried_texts(answer)

    out: list[RawSeries] = []
    named: list[StateSeries] = []
    points = duplicates = 0
    for key, parts in pieces.items():
        times = np.concatenate([t for t, _ in parts])
        values = np.concatenate([v for _, v in parts])
        points += times.size
        times, values, dropped = _dedupe(times, values)
        duplicates += dropped
        carry, carried_reading = last.get(key), reading.get(key)
        if bool(np.any(~np.isnan(values))) or _numeric(carry) or carried_reading is not None:
            out.append(RawSeries(key[0], key[1], times, values, carry, carried_reading))
        if _named(key, texts.get(key, {}), carried_texts.get(key)):
            named.append(_state_series(key, times, values, texts.get(key, {}), carry, carried_texts.get(key)))
    empty_t, empty_v = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    for key, carry in last.items():
        if key in pieces:
            continue
        if _numeric(carry):
            out.append(RawSeries(key[0], key[1], empty_t, empty_v, carry, reading.get(key)))
        if _named(key, {}, carried_texts.get(key)):
            named.append(_state_series(key, empty_t, empty_v, {}, carry, carried_texts.get(key)))
    return RawWindow(series=out, points_read=points, duplicates_dropped=duplicates, states=named)


# Raw points a run keeps for its checks: every home of an hourly run (1,000 homes × 20 entities at 10 s are
# 7.2 M points, ~115 MB of arrays), never a backfill's many days beyond it.
RUN_CACHE_POINTS: Final = 10_000_000
_RUN_READS: dict[tuple[str, str, datetime, datetime], RawWindow] = {}


def read_window_for_run(influxdb: TenantInflux, start: datetime, end: datetime, run_id: str) -> RawWindow:
    """``read_window`` once per run, home and window: the rollup and the checks that follow it in the same
    run (in-process executor) share one read of the raw points instead of three. Reads are kept for the
    current run only (a later run always reads afresh), up to ``RUN_CACHE_POINTS`` points."""
    key = (run_id, influxdb.database, start, end)
    if key in _RUN_READS:
        return _RUN_READS[key]
    if any(other[0] != run_id for other in _RUN_READS):
        _RUN_READS.clear()
    window = read_window(influxdb, start, end)
    if sum(w.points_read for w in _RUN_READS.values()) + window.points_read <= RUN_CACHE_POINTS:
        _RUN_READS[key] = window
    return window
