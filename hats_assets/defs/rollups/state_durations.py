"""Time in each state and entries into it, per window, for one series of named states: pure arithmetic.

"Door open 2 h 13 min, 14 openings" is a step function again (a state holds until the next point), so
this follows ``maths.gauge_windows``: the function is cut at every point and window edge, each piece
lies in one window and holds one state, and durations are sums per (window, state). Rules:

* Time before the first known state (no point yet and nothing carried in) is not covered: no row.
  ``unavailable``/``unknown`` are states like any other, so a window's durations sum to its covered time.
* An entry is a point whose state differs from the state held just before it (the previous point, or
  the one carried in). A repeat of the same state is not an entry; the state carried into a window is
  not an entry of that window. The first point of a series with nothing before it is NOT an entry:
  nothing was left, and counting it would make the number depend on where the stored history begins
  (raw retention, an import's start) rather than on what the entity did.
* Per window, the ``max_states`` states held longest (ties by name) are kept; the rest are summed
  into one ``OTHER_STATE`` row (time and entries), so a free-text entity cannot explode the rows.

Durations are integer nanoseconds (exact sums of differences of instants), never floats.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from hats_assets.defs.rollups.contract import (
    BINARY_WORDS,
    DEFAULT_BINARY_WORDS,
    MAX_STATES_PER_HOUR,
    OTHER_STATE,
    TWO_STATE_QUANTITIES,
)

STATE_COLUMNS: Final = ("window_start", "state", "duration_ns", "entries")
ObjectArray = npt.NDArray[np.object_]


def number_name(value: float) -> str:
    """A numeric point of a text-state entity, named as Home Assistant would print it (``3``, ``21.5``)."""
    return format(value, ".15g")


def state_names(quantity: str, entity_id: str, values: npt.ArrayLike, texts: Sequence[str | None]) -> ObjectArray:
    """Each point's state name: its text where it has one, else its value in words (two-state quantities:
    the domain's words for 0/1) or as a number. ``texts[i]`` is None exactly where ``values[i]`` is set."""
    v = np.asarray(values, dtype=np.float64)
    names = np.array(texts, dtype=object) if len(texts) else np.empty(0, dtype=object)
    if names.shape != v.shape:
        raise ValueError(f"values and texts must be of equal length, got {v.shape} and {names.shape}")
    numeric = ~np.isnan(v)
    if quantity in TWO_STATE_QUANTITIES:
        off, on = BINARY_WORDS.get(entity_id.split(".", 1)[0], DEFAULT_BINARY_WORDS)
        names[numeric & (v == 0.0)] = off
        names[numeric & (v == 1.0)] = on
        numeric &= (v != 0.0) & (v != 1.0)
    for i in np.flatnonzero(numeric):
        names[i] = number_name(float(v[i]))
    if any(name is None for name in names):
        raise ValueError("every point needs a value or a text")
    return names


def state_windows(
    times_ns: npt.ArrayLike,
    states: Sequence[str] | ObjectArray,
    start_ns: int,
    end_ns: int,
    window_ns: int,
    carry: str | None = None,
    max_states: int = MAX_STATES_PER_HOUR,
) -> pd.DataFrame:
    """Per window and state: ``duration_ns`` held and ``entries`` into it (module docstring for the rules).

    ``times_ns`` strictly increasing inside ``[start_ns, end_ns)``, ``states`` one name per point,
    ``carry`` the state held at ``start_ns`` (None: no earlier point). Rows sorted by window, then by
    duration (longest first), then name; ``OTHER_STATE`` last in its window.
    """
    t = np.ascontiguousarray(times_ns, dtype=np.int64)
    names = np.asarray(states, dtype=object)
    if t.ndim != 1 or names.shape != t.shape:
        raise ValueError(f"times_ns and states must be 1-D and of equal length, got {t.shape} and {names.shape}")
    if window_ns <= 0 or end_ns <= start_ns or start_ns % window_ns or end_ns % window_ns:
        raise ValueError(f"[{start_ns}, {end_ns}) must be a non-empty range aligned to window_ns ({window_ns})")
    if t.size and (t[0] < start_ns or t[-1] >= end_ns or bool(np.any(np.diff(t) <= 0))):
        raise ValueError("points must be strictly increasing inside [start_ns, end_ns)")
    if max_states < 1:
        raise ValueError(f"max_states must be at least 1, got {max_states}")
    # Codes: 0 = not covered, 1 = the carried state, then the points' states (one code per name).
    labels = np.empty(names.size + 1, dtype=object)
    labels[0], labels[1:] = carry, names
    codes, uniques = pd.factorize(labels, use_na_sentinel=True)
    codes = codes.astype(np.int64) + 1  # NaN (no carry) → 0
    carry_code, point_code = int(codes[0]), codes[1:]

    n_windows = (end_ns - start_ns) // window_ns
    edges = start_ns + window_ns * np.arange(n_windows, dtype=np.int64)
    piece_start = np.union1d(edges, t)
    piece_end = np.append(piece_start[1:], end_ns)
    index = np.searchsorted(t, piece_start, side="right") - 1
    piece_code = np.where(index >= 0, point_code[np.maximum(index, 0)] if t.size else 0, carry_code)
    piece_window = (piece_start - start_ns) // window_ns

    before = np.concatenate(([carry_code], point_code[:-1]))
    entered = (point_code != before) & (before != 0)
    entry_window = (t - start_ns) // window_ns

    width = len(uniques) + 1
    covered = piece_code != 0
    keys = np.concatenate((piece_window[covered] * width + piece_code[covered],
                           entry_window[entered] * width + point_code[entered]))
    if keys.size == 0:
        return pd.DataFrame({c: pd.Series(dtype=d) for c, d in zip(STATE_COLUMNS, _DTYPES, strict=True)})
    unique_keys, inverse = np.unique(keys, return_inverse=True)
    n_pieces = int(covered.sum())
    # float64 sums of integer nanoseconds are exact below 2**53 ns (104 days per window and state).
    duration = np.bincount(inverse[:n_pieces], weights=(piece_end - piece_start)[covered].astype(np.float64),
                           minlength=unique_keys.size).astype(np.int64)
    entries = np.bincount(inverse[n_pieces:], minlength=unique_keys.size).astype(np.int64)
    window_start = start_ns + (unique_keys // width) * window_ns
    code = unique_keys % width - 1
    # Order within each window: longest first, ties by name (the names' sort order, as integers): numpy
    # lexsort, since a pandas sort and groupby per series cost more than all the arithmetic above.
    name_rank = np.empty(len(uniques), dtype=np.int64)
    name_rank[np.argsort(np.asarray(uniques, dtype=str), kind="stable")] = np.arange(len(uniques))
    order = np.lexsort((name_rank[code], -duration, window_start))
    window_start, code, duration, entries = window_start[order], code[order], duration[order], entries[order]
    frame = pd.DataFrame({"window_start": window_start, "state": np.asarray(uniques, dtype=object)[code],
                          "duration_ns": duration, "entries": entries})
    first_of_window = np.searchsorted(window_start, window_start, side="left")
    if bool(np.any(np.arange(window_start.size) - first_of_window >= max_states)):
        return bound_states(frame, max_states)
    return frame


_DTYPES: Final = ("int64", "object", "int64", "int64")


def bound_states(frame: pd.DataFrame, max_states: int) -> pd.DataFrame:
    """Keep each window's ``max_states`` longest-held states (ties by name); sum the rest into one
    ``OTHER_STATE`` row (its entries: entries into any of the states it merges)."""
    frame = frame.sort_values(["window_start", "duration_ns", "state"], ascending=[True, False, True],
                              kind="stable", ignore_index=True)
    rank = frame.groupby("window_start").cumcount()
    kept, rest = frame[rank < max_states], frame[rank >= max_states]
    if rest.empty:
        return frame
    other = rest.groupby("window_start", as_index=False).agg(duration_ns=("duration_ns", "sum"),
                                                             entries=("entries", "sum"))
    other.insert(1, "state", OTHER_STATE)
    merged = pd.concat([kept.assign(_other=False), other.assign(_other=True)], ignore_index=True)
    merged = merged.sort_values(["window_start", "_other"], kind="stable", ignore_index=True)
    return merged.drop(columns="_other")[list(STATE_COLUMNS)]
