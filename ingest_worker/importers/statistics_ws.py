"""The statistics of a running Home Assistant over its WebSocket API, for `statistics.py`.

Without the database file: `recorder/list_statistic_ids` describes the statistics (2025.4 adds
`mean_type`, as the database's schema 49 does), `recorder/statistics_during_period` (period `hour` for
`statistics`, `5minute` for `statistics_short_term`) returns the rows of a time window. HA converts a
row to the entity's current display unit unless told otherwise, so each call names the statistics' own
unit per unit class (`units`): the rows are then the database's, and the same conversion rules apply.
Calls group statistics of one unit (one `units` map each), `IDS_PER_CALL` at a time.

Windows run from the oldest row (found with one `month` call per group; the short-term table only
keeps `SHORT_TERM_KEEP_S`) to Home Assistant's present. A page is one window of every statistic, in
(`start`, statistic_id) order; its position is its newest `start` (`last_id` 0): HA writes each period
once for all statistics, so what starts after it is new.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from ingest_worker.ha_client import ConnectionLost, HaClient
from ingest_worker.importers.statistics import Key, Page
from ingest_worker.importers.statistics_rows import Row, StatisticMeta
from ingest_worker.store.import_progress import Position

PERIODS = {"statistics": "hour", "statistics_short_term": "5minute"}
WINDOW_S = {"statistics": 14 * 86_400, "statistics_short_term": 86_400}
SHORT_TERM_KEEP_S = 11 * 86_400  # HA purges short-term statistics after 10 days
# A meter's previous row after a resume is looked for this far back (further: its first row counts from 0).
PREVIOUS_LOOKBACK_S = {"statistics": 31 * 86_400, "statistics_short_term": SHORT_TERM_KEEP_S}
IDS_PER_CALL = 50
TYPES = ["last_reset", "max", "mean", "min", "state", "sum"]


@dataclass(frozen=True, slots=True)
class _Described:
    meta: StatisticMeta
    unit_class: str | None


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()


def _seconds(value: object) -> float | None:
    """HA's WebSocket answers carry times as epoch milliseconds (older: ISO strings are not supported)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value / 1_000


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _row(entry: object) -> Row | None:
    if not isinstance(entry, dict):
        return None
    start = _seconds(entry.get("start"))
    if start is None:
        return None
    return (start, _number(entry.get("mean")), _number(entry.get("min")), _number(entry.get("max")),
            _seconds(entry.get("last_reset")), _number(entry.get("state")), _number(entry.get("sum")))


class WebsocketStatistics:
    """A `StatisticsReader` over an authenticated `HaClient`."""

    def __init__(self, ha: HaClient) -> None:
        self._ha = ha
        self._described: dict[str, _Described] = {}

    async def metas(self) -> Sequence[StatisticMeta]:
        result = await self._ha.result({"type": "recorder/list_statistic_ids"})
        if not isinstance(result, list):
            raise ConnectionLost(f"recorder/list_statistic_ids answered {str(result)[:200]}")
        for entry in result:
            if not isinstance(entry, dict) or not isinstance(entry.get("statistic_id"), str):
                continue
            statistic_id = entry["statistic_id"]
            unit = entry.get("statistics_unit_of_measurement")
            mean = entry["mean_type"] != 0 if "mean_type" in entry else bool(entry.get("has_mean"))
            source = entry.get("source")
            unit_class = entry.get("unit_class")
            meta = StatisticMeta(statistic_id, statistic_id, unit if isinstance(unit, str) else None, mean,
                                 bool(entry.get("has_sum")), source if isinstance(source, str) else None)
            self._described[statistic_id] = _Described(meta, unit_class if isinstance(unit_class, str) else None)
        return [described.meta for described in self._described.values()]

    def _groups(self, ids: Sequence[str] | None = None) -> list[tuple[dict[str, str], list[str]]]:
        """(units map, statistic ids) per call: one unit per unit class in each."""
        by_unit: dict[tuple[str | None, str | None], list[str]] = {}
        for statistic_id in ids if ids is not None else sorted(self._described):
            described = self._described[statistic_id]
            by_unit.setdefault((described.unit_class, described.meta.unit), []).append(statistic_id)
        groups = []
        for (unit_class, unit), members in sorted(by_unit.items(), key=str):
            units = {unit_class: unit} if unit_class is not None and unit is not None else {}
            for offset in range(0, len(members), IDS_PER_CALL):
                groups.append((units, members[offset:offset + IDS_PER_CALL]))
        return groups

    async def _rows(self, stream: str, period: str, start_s: float, end_s: float | None,
                    ids: Sequence[str] | None = None) -> list[tuple[str, Row]]:
        found: list[tuple[str, Row]] = []
        for units, members in self._groups(ids):
            command: dict[str, object] = {"type": "recorder/statistics_during_period", "start_time": _iso(start_s),
                                          "statistic_ids": members, "period": period, "types": TYPES}
            if end_s is not None:
                command["end_time"] = _iso(end_s)
            if units:
                command["units"] = units
            result = await self._ha.result(command)
            if not isinstance(result, dict):
                raise ConnectionLost(f"recorder/statistics_during_period answered {str(result)[:200]}")
            for statistic_id, entries in result.items():
                for entry in entries if isinstance(entries, list) else []:
                    row = _row(entry)
                    if row is not None:
                        found.append((str(statistic_id), row))
        return found

    async def _oldest(self, stream: str) -> float | None:
        now = time.time()
        if stream == "statistics_short_term":
            return now - SHORT_TERM_KEEP_S
        months = await self._rows(stream, "month", 0.0, None)
        return min((row[0] for _, row in months), default=None)

    async def pages(self, stream: str, after: Position | None) -> AsyncIterator[Page]:
        if not self._described:
            return
        period = PERIODS[stream]
        begin = after.last_ts if after is not None else await self._oldest(stream)
        if begin is None:
            return
        while begin <= time.time():
            end = begin + WINDOW_S[stream]
            rows = [(key, row) for key, row in await self._rows(stream, period, begin, end)
                    if after is None or row[0] > after.last_ts]
            rows.sort(key=lambda item: (item[1][0], item[0]))
            if rows:
                after = Position(rows[-1][1][0], 0)
                page: list[tuple[Key, Row]] = list(rows)
                yield Page(page, after)
            begin = end

    async def previous(self, stream: str, key: Key, before_ts: float) -> Row | None:
        statistic_id = str(key)
        if statistic_id not in self._described:
            return None
        rows = await self._rows(stream, PERIODS[stream], before_ts - PREVIOUS_LOOKBACK_S[stream], before_ts,
                                [statistic_id])
        return max((row for _, row in rows), default=None, key=lambda row: row[0])
