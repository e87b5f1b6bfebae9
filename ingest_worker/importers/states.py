"""The recorder's `states` into raw points, through the door, resumable page by page.

Rows are read in keyset order on (`last_updated_ts`, `state_id`) — the index Home Assistant keeps on
`last_updated_ts` carries the row id — joined to `states_meta` for the entity; attributes come from
`state_attributes.shared_attrs` by `attributes_id` through a bounded cache (a few hundred entities share a
few thousand attribute sets across millions of rows). A NULL `last_changed_ts` means "same as
last_updated" (the recorder stores it only when it differs); `last_reported_ts` is not read (a point is at
`last_updated`, as live and through the history API).

Each page becomes items of the recorder source (`sources/recorder.py`) pushed through the door in one
flush; the page's keyset position is committed to `ops.import_progress` in that flush's transaction
(`StatesProgress`, a FlushHook), with its dead letters and ingest hours, so a killed run continues after
the last committed page and a second run reads nothing. Only states inside the raw retention
(the home's `core.tenants.raw_days`, as the retention asset keeps them, less a margin) become points; older ones
are left to the long-term statistics and counted.

A time cell that is not a number (a damaged SQLite file, `recorder_cells.py`) goes into the row's payload as
the file holds it, so the recorder source refuses it as a dead letter (`bad_timestamp`) naming the field;
a page that meets a `last_updated_ts` that is not a number is the stream's last (SQLite sorts such rows
after every number, where no position can pass them).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import psycopg

from ingest_worker.door import Door, DoorError, offline_item
from ingest_worker.importers.recorder_cells import is_number, json_cell
from ingest_worker.importers.recorder_db import Recorder, placeholders
from ingest_worker.mqtt_link import Incoming
from ingest_worker.settings import ConfigError, WorkerSettings
from ingest_worker.sources.recorder import row_payload, state_topic
from ingest_worker.store import import_progress
from ingest_worker.store.import_progress import Position

STREAM = "states"
RAW_DAYS_SQL = "SELECT raw_days FROM core.tenants WHERE tenant_id = %s"
# A state this close to the retention edge would expire before the hour is rolled up: the statistics
# cover it instead (and InfluxDB could refuse it by the time the page is written).
RETENTION_MARGIN_S = 3_600.0
SECONDS_PER_DAY = 86_400
ATTRIBUTE_CACHE = 20_000  # attribute sets kept (each a JSON text of a few hundred bytes)
ATTRIBUTE_CHUNK = 500  # ids per `IN (…)` (SQLite's oldest bound is 999 parameters)
START_ID = -1  # before any state_id

PAGE_SQL = (
    "SELECT s.state_id, s.last_updated_ts, s.last_changed_ts, s.state, s.attributes_id, m.entity_id "
    "FROM states s LEFT JOIN states_meta m ON m.metadata_id = s.metadata_id "
    "WHERE s.last_updated_ts >= :after_ts AND NOT (s.last_updated_ts = :after_ts AND s.state_id <= :after_id) "
    "ORDER BY s.last_updated_ts, s.state_id LIMIT :limit")
COUNT_SQL = ("SELECT count(*) FROM states s WHERE s.last_updated_ts >= :after_ts "
             "AND NOT (s.last_updated_ts = :after_ts AND s.state_id <= :after_id)")
OLDER_SQL = "SELECT count(*) FROM states WHERE last_updated_ts < :cutoff"
ATTRIBUTES_SQL = "SELECT attributes_id, shared_attrs FROM state_attributes WHERE attributes_id IN ({ids})"


async def raw_retention_days(settings: WorkerSettings) -> int:
    """The home's raw retention, its tier's `core.tenants.raw_days`: states older than that (less the
    margin) would expire before they are rolled up, so the statistics cover them instead."""
    try:
        async with await psycopg.AsyncConnection.connect(settings.ingest_dsn.get_secret_value()) as conn:
            cur = await conn.execute(RAW_DAYS_SQL, (settings.tenant,))
            row = await cur.fetchone()
    except psycopg.OperationalError as exc:
        raise DoorError(f"cannot connect to PostgreSQL (HATS_INGEST_DSN): {str(exc).strip()[:300]}") from None
    if row is None:
        raise ConfigError(f"tenant {settings.tenant!r} is not in core.tenants (HATS_TENANT / --tenant): add the "
                          "home first with `hats tenant add`")
    return int(str(row[0]))


def retention_cutoff(raw_days: int, now: float | None = None) -> float:
    """The oldest `last_updated_ts` imported as a raw point."""
    return (time.time() if now is None else now) - raw_days * SECONDS_PER_DAY + RETENTION_MARGIN_S


def start_after(position: Position | None, cutoff: float) -> Position:
    """Where reading begins: after the committed position, but never before the retention cutoff."""
    if position is None or position.last_ts < cutoff:
        return Position(cutoff, START_ID)
    return position


class AttributeCache:
    """`attributes_id` → `shared_attrs` text, bounded (cleared when full: the working set refills it)."""

    def __init__(self, recorder: Recorder, limit: int = ATTRIBUTE_CACHE) -> None:
        self._recorder = recorder
        self._limit = limit
        self._texts: dict[int, str | None] = {}

    async def load(self, ids: set[int]) -> dict[int, str | None]:
        """The texts of `ids` (None for an id the table no longer has)."""
        missing = sorted(i for i in ids if i not in self._texts)
        if len(self._texts) + len(missing) > self._limit:
            self._texts = {i: t for i, t in self._texts.items() if i in ids}
        for start in range(0, len(missing), ATTRIBUTE_CHUNK):
            chunk = missing[start:start + ATTRIBUTE_CHUNK]
            marks, params = placeholders("a", chunk)
            rows = await self._recorder.fetch(ATTRIBUTES_SQL.format(ids=marks), params)
            found = {int(row[0]): (None if row[1] is None else str(row[1])) for row in rows}
            for attributes_id in chunk:
                self._texts[attributes_id] = found.get(attributes_id)
        return self._texts


@dataclass(frozen=True, slots=True)
class StatesPage:
    items: list[Incoming]
    position: Position
    first_ts: float
    last_ts: float


def page_items(rows: Sequence[tuple[Any, ...]], texts: dict[int, str | None], received_ns: int) -> list[Incoming]:
    """Rows `(state_id, last_updated_ts, last_changed_ts, state, attributes_id, entity_id)` as items."""
    items = []
    for _state_id, updated, changed, state, attributes_id, entity_id in rows:
        attrs = texts.get(int(attributes_id)) if is_number(attributes_id) else None
        payload = row_payload(None if state is None else str(json_cell(state)), attrs, _time(updated),
                              None if changed is None else _time(changed))
        items.append(offline_item(state_topic("" if entity_id is None else str(entity_id)), payload, received_ns))
    return items


def _time(cell: object) -> float | object:
    """A time cell as a float, or as the file holds it (the source's parser refuses it by name)."""
    return float(cast(float, cell)) if is_number(cell) else json_cell(cell)


class StatesProgress:
    """FlushHook: the keyset position (and rows) of the page the starting flush makes durable."""

    def __init__(self, tenant: str, source_key: str) -> None:
        self._tenant = tenant
        self._source_key = source_key
        self._pending: tuple[Position, int] | None = None

    def advance(self, position: Position, rows: int) -> None:
        self._pending = (position, rows)

    def snapshot(self) -> tuple[Position, int] | None:
        pending, self._pending = self._pending, None
        return pending

    async def store(self, cur: psycopg.AsyncCursor[tuple[object, ...]], snapshot: object) -> None:
        position, rows = cast(tuple[Position, int], snapshot)
        await import_progress.advance(cur, self._tenant, self._source_key, STREAM, position, rows)


@dataclass
class StatesReport:
    """What the states part of a run did (`ops.imports` columns and the summary line)."""

    total: int = 0  # rows to read when the run began
    rows_read: int = 0
    older: int = 0  # rows older than the raw retention, left to the statistics
    first_ts: float | None = None
    last_ts: float | None = None
    counters: dict[str, int] = field(default_factory=dict)

    def saw(self, first_ts: float, last_ts: float) -> None:
        self.first_ts = first_ts if self.first_ts is None else min(self.first_ts, first_ts)
        self.last_ts = last_ts if self.last_ts is None else max(self.last_ts, last_ts)


async def import_states(recorder: Recorder, door: Door, progress: StatesProgress, raw_days: int,
                        page_rows: int, report: StatesReport, tick: Callable[[StatesReport], None],
                        stop: Callable[[], bool] = lambda: False) -> StatesReport:
    """Read every state after the committed position (and inside retention) into the door."""
    settings = door.settings
    committed = await import_progress.load(door.conn, settings.tenant, recorder.source_key, STREAM)
    cutoff = retention_cutoff(raw_days)
    after = start_after(committed, cutoff)
    report.older = int((await recorder.fetch(OLDER_SQL, {"cutoff": cutoff}))[0][0])
    report.total = int((await recorder.fetch(COUNT_SQL, {"after_ts": after.last_ts,
                                                         "after_id": after.last_id}))[0][0])
    cache = AttributeCache(recorder)
    tick(report)
    while not stop():
        rows = await recorder.fetch(PAGE_SQL, {"after_ts": after.last_ts, "after_id": after.last_id,
                                               "limit": page_rows})
        if not rows:
            break
        texts = await cache.load({int(row[4]) for row in rows if is_number(row[4])})
        items = page_items(rows, texts, time.time_ns())
        timed = [row for row in rows if is_number(row[1])]  # the rest sort after every number
        if timed:
            after = Position(float(timed[-1][1]), int(timed[-1][0]))
        progress_mark = functools.partial(progress.advance, after, len(rows))
        await door.push(items, marked=progress_mark)
        report.rows_read += len(rows)
        if timed:
            report.saw(float(timed[0][1]), float(timed[-1][1]))
        tick(report)
        if len(timed) < len(rows):
            break
    report.counters = {**door.counters, "would_write": door.would_write}
    return report
