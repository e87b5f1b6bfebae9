"""An independent reference for the rollups, written the other way round from ``maths.py``.

``maths.py`` cuts a step function with numpy ``union1d``/``bincount``/``reduceat``; this reference
builds the same step function with pandas ``merge_asof`` (value in force at each cut) and plain
``groupby`` sums, and runs meters through a per-reading loop written from Home Assistant's
``sensor/recorder.py`` (their available time by a loop over the intervals). Both see the same raw
points; agreement to 1e-9 relative is the test for sums of floats, equality for counts and instants
(``last_seen_s`` is the float nearest to the point's integer nanoseconds: Python's ``int / int``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

NS = 1_000_000_000
Event = tuple[int, float]  # (time ns, value; NaN = unavailable)


def gauge_reference(events: Sequence[Event], start_ns: int, end_ns: int, window_ns: int) -> pd.DataFrame:
    """Per window: time-weighted mean over available time, min, max, count, last, available_s, last_seen_s."""
    raw = pd.DataFrame(events, columns=["t", "v"]).sort_values("t", kind="stable")
    cuts = sorted(set(range(start_ns, end_ns, window_ns)) | {t for t in raw["t"] if start_ns <= t < end_ns})
    grid = pd.DataFrame({"t": np.array(cuts, dtype=np.int64)})
    grid = pd.merge_asof(grid, raw, on="t", direction="backward")  # the value in force from each cut on
    grid["duration"] = np.diff(np.append(grid["t"].to_numpy(), end_ns))
    grid["window"] = start_ns + (grid["t"] - start_ns) // window_ns * window_ns
    available = grid[grid["v"].notna()]
    inside = raw[(raw["t"] >= start_ns) & (raw["t"] < end_ns) & raw["v"].notna()].copy()
    inside["window"] = start_ns + (inside["t"] - start_ns) // window_ns * window_ns
    rows = []
    for window, part in available.groupby("window"):
        points = inside[inside["window"] == window]
        rows.append({
            "window_start": int(str(window)),
            "mean": float((part["v"] * part["duration"]).sum() / part["duration"].sum()),
            "min": float(part["v"].min()),
            "max": float(part["v"].max()),
            "count": len(points),
            "last": float(part["v"].iloc[-1]),
            "available_s": float(part["duration"].sum()) / NS,
            "last_seen_s": int(points["t"].max()) / NS if len(points) else math.nan,
        })
    return pd.DataFrame(rows)


def available_reference(events: Sequence[Event], start_ns: int, end_ns: int, window_ns: int) -> dict[int, float]:
    """Seconds per window during which the series held a value (a point that is not NaN, until the next)."""
    ordered = sorted(events)
    totals: dict[int, int] = {}
    for (t, v), following in zip(ordered, [*ordered[1:], (end_ns, math.nan)], strict=True):
        a, b = max(t, start_ns), min(following[0], end_ns)
        if math.isnan(v):
            continue
        while a < b:
            window = start_ns + (a - start_ns) // window_ns * window_ns
            cut = min(b, window + window_ns)
            totals[window] = totals.get(window, 0) + cut - a
            a = cut
    return {window: total / NS for window, total in totals.items()}


def counter_reference(events: Sequence[Event], start_ns: int, end_ns: int, window_ns: int) -> pd.DataFrame:
    """Per window with readings: consumption, count, resets, last, available_s (the meter's available
    time in the whole window, readings or not), last_seen_s.

    Home Assistant's rule: unavailable and negative readings are skipped; a reading below 0.9 x the
    previous one starts a new meter cycle that counts from zero; within a cycle only growth above its
    highest reading counts (a dip and its recovery add nothing).
    """
    totals: dict[int, dict[str, float]] = {}
    previous: float | None = None
    high = 0.0
    for t, v in sorted(events):
        if math.isnan(v) or v < 0:
            continue
        reset = False
        if previous is None:
            increase, high = 0.0, v
        elif v < 0.9 * previous:
            increase, high, reset = v, v, True
        else:
            increase = max(0.0, v - high)
            high = max(high, v)
        previous = v
        if start_ns <= t < end_ns:
            window = start_ns + (t - start_ns) // window_ns * window_ns
            row = totals.setdefault(window, {"consumption": 0.0, "count": 0, "resets": 0})
            row["consumption"] += increase
            row["count"] += 1
            row["resets"] += reset
            row["last"] = v
            row["last_seen_s"] = t / NS
    available = available_reference(events, start_ns, end_ns, window_ns)
    return pd.DataFrame([{"window_start": w, **row, "available_s": available.get(w, 0.0)}
                         for w, row in sorted(totals.items())])


StateRows = dict[tuple[int, str], tuple[int, int]]  # (window start, state) → (duration ns, entries)


def state_reference(events: Sequence[tuple[int, str]], start_ns: int, end_ns: int, window_ns: int,
                    carry: str | None = None, max_states: int | None = None, other: str = "(other)") -> StateRows:
    """Time in each state and entries into it per window, from intervals walked one at a time.

    A state holds from its point to the next; nothing is covered before the first known state; an entry
    is a point whose state differs from the one held just before it (``carry`` for the first). With
    ``max_states``, each window keeps the states held longest (ties by name) and sums the rest as ``other``.
    """
    held, since = carry, start_ns
    intervals: list[tuple[int, int, str]] = []
    entries: dict[tuple[int, str], int] = {}
    for t, state in sorted(events):
        if held is not None:
            intervals.append((since, t, held))
            if state != held:
                key = (start_ns + (t - start_ns) // window_ns * window_ns, state)
                entries[key] = entries.get(key, 0) + 1
        held, since = state, t
    if held is not None:
        intervals.append((since, end_ns, held))
    totals: dict[tuple[int, str], list[int]] = {}
    for a, b, state in intervals:
        window = start_ns + (a - start_ns) // window_ns * window_ns
        while a < b:
            cut = min(b, window + window_ns)
            totals.setdefault((window, state), [0, 0])[0] += cut - a
            a, window = cut, window + window_ns
    for key, n in entries.items():
        totals.setdefault(key, [0, 0])[1] += n
    rows = {key: (d, n) for key, (d, n) in totals.items() if d > 0}
    return rows if max_states is None else bound_reference(rows, max_states, other)


def bound_reference(rows: StateRows, max_states: int, other: str = "(other)") -> StateRows:
    """Per window: the ``max_states`` longest-held states (ties by name; an ``other`` row already there is
    never one of them), the rest summed into ``other``."""
    out: StateRows = {}
    for window in sorted({w for w, _ in rows}):
        ranked = sorted(((s, v) for (w, s), v in rows.items() if w == window and s != other),
                        key=lambda item: (-item[1][0], item[0]))
        rest = ranked[max_states:] + [(other, v) for (w, s), v in rows.items() if w == window and s == other]
        out.update({(window, s): v for s, v in ranked[:max_states]})
        if rest:
            out[(window, other)] = (sum(d for _, (d, _) in rest), sum(n for _, (_, n) in rest))
    return out
