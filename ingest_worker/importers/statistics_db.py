"""The statistics of a recorder database (SQLite, PostgreSQL or MySQL, schema ≥ 38), for `statistics.py`.

Both schemas we meet are read the same way: `statistics` and `statistics_short_term` have `id`,
`metadata_id`, `start_ts` (float epoch s, indexed), `mean`, `min`, `max`, `last_reset_ts`, `state`, `sum`
(schema 50, HA 2025.4, adds `mean_weight`, which only circular means use for HA's own day/week
reductions: not read); `statistics_meta` has `statistic_id`, `source`, `unit_of_measurement`,
`has_mean`, `has_sum`, and from schema 49 `mean_type` (0 none, 1 arithmetic, 2 circular), which replaces
`has_mean` (HA then sets it NULL). Pages follow the keyset (`start_ts`, `id`) — the order HA writes
hours in, served as a range of the `start_ts` index, whose ties are in `id` (rowid) order.

A cell that is not a number (a damaged SQLite file, `recorder_cells.py`) makes its row a `BrokenRow`: a
dead letter with its cells and the column named, the page's other rows import.

`fetch` runs one statement with `?` placeholders and returns all rows (`recorder_db.Recorder.qmark`, on
SQLite, PostgreSQL or MySQL alike); pages are bounded (`PAGE_ROWS`), so memory is too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import cast

from ingest_worker.importers.recorder_cells import is_number, json_cell, number
from ingest_worker.importers.statistics import PAGE_ROWS, ROW_COLUMNS, STREAMS, BrokenRow, Key, Page
from ingest_worker.importers.statistics_rows import Row, StatisticMeta
from ingest_worker.rejections import Reason, Rejected
from ingest_worker.store.import_progress import Position

Fetch = Callable[[str, Sequence[object]], Sequence[Sequence[object]]]
MEAN_TYPE_SCHEMA = 49  # statistics_meta.mean_type from this schema version on
COLUMNS = "start_ts, mean, min, max, last_reset_ts, state, sum"
FIRST_PAGE = (f"SELECT id, metadata_id, {COLUMNS} FROM {{table}} WHERE start_ts IS NOT NULL "
              "ORDER BY start_ts, id LIMIT ?")
# A range on start_ts (`>=`, the tie excluded), not `start_ts > ? OR (…)`: SQLite scans the whole index
# from its start for the OR form (0.7 s a page halfway through 4.38 M rows, against 0.03 s).
NEXT_PAGE = (f"SELECT id, metadata_id, {COLUMNS} FROM {{table}} WHERE start_ts >= ? AND NOT (start_ts = ? AND id <= ?) "
             "ORDER BY start_ts, id LIMIT ?")
PREVIOUS = f"SELECT {COLUMNS} FROM {{table}} WHERE metadata_id = ? AND start_ts < ? ORDER BY start_ts DESC LIMIT 1"
METAS = "SELECT id, statistic_id, source, unit_of_measurement, has_mean, has_sum{mean_type} FROM statistics_meta"


TIME_COLUMNS = {"start_ts", "last_reset_ts"}


def _row(values: Sequence[object], table: str) -> Row:
    """The cells as numbers; raises Rejected naming the first cell that is not one."""
    cells = [number(value, f"{table}.{column}", Reason.BAD_TIMESTAMP if column in TIME_COLUMNS else Reason.NON_NUMERIC)
             for column, value in zip(ROW_COLUMNS, values, strict=True)]
    start_ts, mean, low, high, last_reset_ts, state, total = cells
    if start_ts is None:
        raise Rejected(Reason.BAD_TIMESTAMP, f"recorder column {table}.start_ts is NULL")
    return start_ts, mean, low, high, last_reset_ts, state, total


def _key(value: object) -> Key:
    """metadata_id as the file holds it: a text one is a key statistics_meta does not describe (a letter)."""
    return int(cast(int, value)) if is_number(value) else str(json_cell(value))


class RecorderStatistics:
    """A `StatisticsReader` over an open recorder database."""

    def __init__(self, fetch: Fetch, schema_version: int, page_rows: int = PAGE_ROWS) -> None:
        self._fetch = fetch
        self._schema = schema_version
        self._page_rows = page_rows

    async def metas(self) -> Sequence[StatisticMeta]:
        with_mean_type = self._schema >= MEAN_TYPE_SCHEMA
        rows = self._fetch(METAS.format(mean_type=", mean_type" if with_mean_type else ""), ())
        metas = []
        for row in rows:
            key, statistic_id, source, unit, has_mean, has_sum = row[:6]
            mean = bool(row[6]) if with_mean_type else bool(has_mean)
            metas.append(StatisticMeta(int(cast(int, key)), str(statistic_id), None if unit is None else str(unit),
                                       mean, bool(has_sum), None if source is None else str(source)))
        return metas

    async def pages(self, stream: str, after: Position | None) -> AsyncIterator[Page]:
        table = _table(stream)
        while True:
            if after is None:
                rows = self._fetch(FIRST_PAGE.format(table=table), (self._page_rows,))
            else:
                rows = self._fetch(NEXT_PAGE.format(table=table),
                                   (after.last_ts, after.last_ts, after.last_id, self._page_rows))
            if not rows:
                return
            page: list[tuple[Key, Row]] = []
            broken: list[BrokenRow] = []
            for r in rows:
                key = _key(r[1])
                try:
                    page.append((key, _row(r[2:], table)))
                except Rejected as rejected:
                    broken.append(BrokenRow(key, {"id": r[0], **dict(zip(ROW_COLUMNS, map(json_cell, r[2:]),
                                                                          strict=True))}, rejected))
            timed = [r for r in rows if is_number(r[2])]  # the rest sort after every number (recorder_cells.py)
            if timed:
                after = Position(float(cast(float, timed[-1][2])), int(cast(int, timed[-1][0])))
            if after is None:  # the stream's first page holds only rows without a time: nothing to resume from
                after = Position(float("-inf"), -1)
            yield Page(page, after, broken)
            if len(rows) < self._page_rows or len(timed) < len(rows):
                return

    async def previous(self, stream: str, key: Key, before_ts: float) -> Row | None:
        rows = self._fetch(PREVIOUS.format(table=_table(stream)), (key, before_ts))
        if not rows:
            return None
        try:
            return _row(rows[0], _table(stream))
        except Rejected:
            return None  # that row is a dead letter of its own page: the meter starts afresh after it


def _table(stream: str) -> str:
    if stream not in STREAMS:
        raise ValueError(f"no statistics stream {stream!r}")
    return stream  # the recorder's table is named like the stream
