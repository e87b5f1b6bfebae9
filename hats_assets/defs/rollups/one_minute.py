"""Raw window -> 1 min rollup lines: picks gauge or counter maths per series and encodes the rows.

The 1 min rollup is the one computed in Python: a time-weighted mean over available time, extrema
that include the value carried into a window and Home Assistant's meter-reset rule are not
expressible in InfluxQL (``integral()`` is trapezoidal, not a step function). Coarser windows are
exact sums of these rows and are pushed down to InfluxDB (see ``assets.py``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

from hats_assets.defs.rollups.contract import Kind, measurement
from hats_assets.defs.rollups.maths import counter_windows, gauge_windows
from hats_assets.defs.rollups.raw_reader import RawSeries, RawWindow
from ingest_worker.lineprotocol import series_key


@dataclass(slots=True)
class RollupStats:
    """What a partition's metadata reports, so the UI answers "is this partition complete?"."""

    series: dict[Kind, int] = field(default_factory=lambda: {"gauge": 0, "counter": 0})
    rows: int = 0
    carried_only: int = 0  # series with no point in the window, rolled up from their carried state
    resets: int = 0
    available_s: float = 0.0


def _opt(name: str, value: float) -> str:
    return "" if math.isnan(value) else f",{name}={value!r}"


def _gauge_lines(head: str, frame: pd.DataFrame) -> Iterable[str]:
    columns = (frame[c].tolist() for c in ("window_start", "mean", "min", "max", "count", "last", "available_s",
                                           "last_seen_s"))
    for start, mean, low, high, count, last, available, seen in zip(*columns, strict=True):
        yield (f"{head} mean={mean!r},min={low!r},max={high!r},count={count}i,last={last!r},"
               f"available_s={available!r},value_s={mean * available!r}{_opt('last_seen', seen)} {start}")


def _counter_lines(head: str, frame: pd.DataFrame, available: dict[int, float]) -> Iterable[str]:
    columns = (frame[c].tolist() for c in ("window_start", "consumption", "count", "resets", "last", "last_seen_s"))
    for start, consumption, count, resets, last, seen in zip(*columns, strict=True):
        yield (f"{head} consumption={consumption!r},count={count}i,resets={resets}i,last={last!r},"
               f"available_s={available.get(start, 0.0)!r}{_opt('last_seen', seen)} {start}")


def roll_up(
    window: RawWindow, counters: frozenset[str], start_ns: int, end_ns: int, window_ns: int, window_name: str
) -> tuple[list[str], RollupStats]:
    """Line protocol for every series' windows in ``[start_ns, end_ns)``, and the partition's stats."""
    lines: list[str] = []
    stats = RollupStats()
    for series in window.series:
        kind: Kind = "counter" if series.entity_id in counters else "gauge"
        head = series_key(measurement(kind, window_name), (("entity_id", series.entity_id),
                                                           ("quantity", series.measurement)))
        before = len(lines)
        gauge = gauge_windows(series.times_ns, series.values, start_ns, end_ns, window_ns, series.carry)
        if kind == "gauge":
            lines.extend(_gauge_lines(head, gauge))
        else:
            counter = _counter(series, start_ns, end_ns, window_ns)
            available = dict(zip(gauge["window_start"].tolist(), gauge["available_s"].tolist(), strict=True))
            lines.extend(_counter_lines(head, counter, available))
            stats.resets += int(counter["resets"].sum())
        if len(lines) > before:
            stats.series[kind] += 1
            stats.carried_only += series.times_ns.size == 0
        stats.available_s += float(gauge["available_s"].sum())
    stats.rows = len(lines)
    return lines, stats


def _counter(series: RawSeries, start_ns: int, end_ns: int, window_ns: int) -> pd.DataFrame:
    return counter_windows(series.times_ns, series.values, start_ns, end_ns, window_ns, series.carry_reading)
