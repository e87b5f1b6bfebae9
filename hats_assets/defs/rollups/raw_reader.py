"""Read one time window of raw points out of InfluxDB as per-series numpy arrays, with carries.

The thin shell around ``maths``: everything here is fetching and reshaping. One series is one
(measurement, entity_id): the worker may have written an entity under several ``source`` tags (e.g.
statestream and eventstream at once), which InfluxDB merges under ``GROUP BY entity_id``; points at
the same instant from two sources are one observation, so duplicates keep the numeric one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hats_assets.defs.common.resources import InfluxDBResource
from hats_assets.defs.rollups.maths import Carry, FloatArray, IntArray

HERE: Final = Path(__file__).parent
WINDOW_QUERY: Final = (HERE / "raw_window.influxql").read_text()
CARRY_LAST_QUERY: Final = (HERE / "carry_last.influxql").read_text()
CARRY_READING_QUERY: Final = (HERE / "carry_reading.influxql").read_text()
VALUE_AND_STATE: Final = {"value": pa.float64(), "state": pa.string()}
VALUE_ONLY: Final = {"value": pa.float64()}
TAG_PREFIX: Final = "entity_id="

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
class RawWindow:
    series: list[RawSeries]
    points_read: int
    duplicates_dropped: int


def _entity(tags: str) -> str:
    if not tags.startswith(TAG_PREFIX):
        raise ValueError(f"unexpected tag set {tags!r} from InfluxDB (GROUP BY entity_id)")
    return tags[len(TAG_PREFIX):]


def _series_arrays(table: pa.Table) -> tuple[list[SeriesKey], IntArray, IntArray, FloatArray]:
    """Series keys and, per row, the series code, time and value (NaN where the row had no number)."""
    name = table.column("name").combine_chunks()
    tags = table.column("tags").combine_chunks()
    if not isinstance(name, pa.DictionaryArray) or not isinstance(tags, pa.DictionaryArray):
        raise TypeError("name and tags must be dictionary-encoded")
    name_index = name.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    tags_index = tags.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    names = name.dictionary.to_pylist()
    tag_sets = [_entity(t) for t in tags.dictionary.to_pylist()]
    raw_code = name_index * max(len(tag_sets), 1) + tags_index
    unique_codes, code = np.unique(raw_code, return_inverse=True)
    keys = [(names[c // max(len(tag_sets), 1)], tag_sets[c % max(len(tag_sets), 1)]) for c in unique_codes.tolist()]
    times = table.column("time").to_numpy().astype(np.int64)
    values = pc.fill_null(table.column("value"), np.nan).to_numpy()
    return keys, code.astype(np.int64), times, np.asarray(values, dtype=np.float64)


def _numeric(carry: Carry) -> bool:
    return carry is not None and not np.isnan(carry[1])


def _carries(table: pa.Table) -> dict[SeriesKey, tuple[int, float]]:
    keys, code, times, values = _series_arrays(table)
    return {keys[c]: (int(t), float(v)) for c, t, v in zip(code.tolist(), times.tolist(), values.tolist(), strict=True)}


def read_window(influxdb: InfluxDBResource, start: datetime, end: datetime) -> RawWindow:
    """All raw series with a point in ``[start, end)`` or a carried-in point before it.

    A series with only a carry (a quiet sensor, a door that stayed shut) still holds its state through
    the window, so it is rolled up too; one with nothing numeric in or before the window is text only
    and is left out.
    """
    params = {"start": start.isoformat(), "end": end.isoformat()}
    table = influxdb.query_table(WINDOW_QUERY, params, VALUE_AND_STATE)
    carry_last = _carries(influxdb.query_table(CARRY_LAST_QUERY, params, VALUE_AND_STATE))
    carry_reading = _carries(influxdb.query_table(CARRY_READING_QUERY, params, VALUE_ONLY))

    keys, code, times, values = _series_arrays(table)
    # Group by series, time order inside, numeric row first among duplicates of one instant.
    order = np.lexsort((np.isnan(values), times, code))
    code, times, values = code[order], times[order], values[order]
    duplicate = np.zeros(code.size, dtype=bool)
    duplicate[1:] = (code[1:] == code[:-1]) & (times[1:] == times[:-1])
    keep = ~duplicate
    code, times, values = code[keep], times[keep], values[keep]
    bounds = np.searchsorted(code, np.arange(len(keys) + 1))

    series: list[RawSeries] = []
    seen: set[SeriesKey] = set()
    for index, key in enumerate(keys):
        lo, hi = int(bounds[index]), int(bounds[index + 1])
        seen.add(key)
        carry, reading = carry_last.get(key), carry_reading.get(key)
        if bool(np.any(~np.isnan(values[lo:hi]))) or _numeric(carry) or reading is not None:
            series.append(RawSeries(key[0], key[1], times[lo:hi], values[lo:hi], carry, reading))
    empty_t, empty_v = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    for key, carry in carry_last.items():
        if key not in seen and _numeric(carry):
            series.append(RawSeries(key[0], key[1], empty_t, empty_v, carry, carry_reading[key]))
    return RawWindow(series=series, points_read=table.num_rows, duplicates_dropped=int(duplicate.sum()))
