"""An independent reference for the rollups, written the other way round from ``maths.py``.

``maths.py`` cuts a step function with numpy ``union1d``/``bincount``/``reduceat``; this reference
builds the same step function with pandas ``merge_asof`` (value in force at each cut) and plain
``groupby`` sums, and runs meters through a per-reading loop written from Home Assistant's
``sensor/recorder.py``. Both see the same raw points; agreement to 1e-9 relative is the test.
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
            "last_seen_s": float(points["t"].max()) / NS if len(points) else math.nan,
        })
    return pd.DataFrame(rows)


def counter_reference(events: Sequence[Event], start_ns: int, end_ns: int, window_ns: int) -> pd.DataFrame:
    """Per window with readings: consumption, count, resets, last, last_seen_s.

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
    return pd.DataFrame([{"window_start": w, **row} for w, row in sorted(totals.items())])
