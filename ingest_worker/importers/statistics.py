"""Home Assistant's long-term statistics into the `rollup` policy: the run, whatever the reader.

`hats import` calls `import_statistics` after the states, with a reader of the recorder's database
(`statistics_db.py`) or of its WebSocket API (`statistics_ws.py`). Per stream (`statistics` → `*_1h`,
`statistics_short_term` → `*_5m`), page by page in keyset order (`start_ts`, `id`):

1. each statistic is planned once (`statistics_rows.plan`: quantity, canonical unit); a refused one is
   one dead letter for the run, none of its rows is written; an external statistic (`<domain>:<id>`,
   no entity: nothing in the warehouse could join it) is skipped and counted;
2. rows older than the rollup policy's duration are not sent (counted): InfluxDB would refuse them. The
   duration comes from the caller when it can read it (the worker's InfluxDB account may only write);
   without it, InfluxDB's own answer (`partial write: points beyond retention policy dropped=N`, the
   rest of the batch written) counts them — the oldest N of a time-ordered batch;
3. the page's lines are written (same series and timestamp overwrite: a re-import is idempotent); then
   its dead letters and the stream's position (`ops.import_progress`) commit in one transaction. InfluxDB
   unreachable ends the run (`InfluxUnavailable`); the position holds, the next run continues there.

Meters carry the previous row of each statistic from row to row; after a resume the reader fetches the
recorder's row before the first one read, so `consumption` (HA's `change`) is the same whether the
series was imported in one run or many.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import psycopg

from ingest_worker.importers.statistics_rows import (
    WINDOW_S,
    Carry,
    KnownEntity,
    Plan,
    Row,
    StatisticMeta,
    is_external,
    lines_of,
    plan,
)
from ingest_worker.rejections import Reason, Rejected
from ingest_worker.store import deadletters, import_progress
from ingest_worker.store.deadletters import DeadLetter
from ingest_worker.store.import_progress import Position
from ingest_worker.store.influx import InfluxWriter

log = logging.getLogger(__name__)

# stream (ops.import_progress, the recorder's table) → window of the rollup contract
STREAMS = {"statistics": "1h", "statistics_short_term": "5m"}
PAGE_ROWS = 20_000
BEYOND_RETENTION = re.compile(r"partial write: points beyond retention policy dropped=(\d+)")
ROW_COLUMNS = ("start_ts", "mean", "min", "max", "last_reset_ts", "state", "sum")  # a Row's fields, in order
TOPIC_PREFIX = "import:"  # no source owns it: a replay of these dead letters leaves them as they are
SECONDS_PER_HOUR = 3_600

Key = int | str


@dataclass(frozen=True, slots=True)
class BrokenRow:
    """A row the reader could not read as numbers (a corrupt recorder file: text in a REAL column): one dead
    letter with the cells as the file holds them (`cells`, JSON-ready) and why."""

    key: Key
    cells: dict[str, object]
    rejected: Rejected


@dataclass(frozen=True, slots=True)
class Page:
    """Rows in keyset order, and the position of the last one (all of them are done once committed);
    `broken` are the page's rows that are dead letters instead."""

    rows: Sequence[tuple[Key, Row]]
    position: Position
    broken: Sequence[BrokenRow] = ()


class StatisticsReader(Protocol):
    """Where the statistics come from: the recorder's database or Home Assistant's WebSocket API."""

    async def metas(self) -> Sequence[StatisticMeta]:
        """Every statistic the recorder describes."""
        ...

    def pages(self, stream: str, after: Position | None) -> AsyncIterator[Page]:
        """The stream's rows after `after` (None: from the first), in keyset order."""
        ...

    async def previous(self, stream: str, key: Key, before_ts: float) -> Row | None:
        """The statistic's newest row that starts before `before_ts`, None when there is none."""
        ...


@dataclass
class StreamCounts:
    rows_read: int = 0
    rows_written: int = 0  # rows whose lines InfluxDB holds
    lines_written: int = 0
    beyond_retention: int = 0
    external_rows: int = 0
    dead_letter_rows: int = 0  # rows not written: their statistic, or the row itself, is a dead letter
    empty_rows: int = 0  # rows without a value (no mean/min/max, no sum/state)


@dataclass
class StatisticsReport:
    """What the run did, for `ops.imports` (statistic_rows, dead_lettered, hours_from/hours_to)."""

    streams: dict[str, StreamCounts] = field(default_factory=dict)
    dead_lettered: int = 0
    external_statistics: set[str] = field(default_factory=set)
    hours_from: datetime | None = None  # first UTC hour with an imported row
    hours_to: datetime | None = None  # exclusive end

    @property
    def rows_read(self) -> int:
        return sum(c.rows_read for c in self.streams.values())

    @property
    def rows_written(self) -> int:
        return sum(c.rows_written for c in self.streams.values())

    @property
    def beyond_retention(self) -> int:
        return sum(c.beyond_retention for c in self.streams.values())

    def cover(self, first_ts: float, last_end_ts: float) -> None:
        start = datetime.fromtimestamp(first_ts // SECONDS_PER_HOUR * SECONDS_PER_HOUR, UTC)
        end = datetime.fromtimestamp(-(-last_end_ts // SECONDS_PER_HOUR) * SECONDS_PER_HOUR, UTC)
        self.hours_from = start if self.hours_from is None else min(self.hours_from, start)
        self.hours_to = end if self.hours_to is None else max(self.hours_to, end)

    def summary(self) -> str:
        parts = [f"{stream}: {c.rows_read} read, {c.rows_written} written, {c.beyond_retention} beyond the rollup "
                 f"retention, {c.external_rows} external, {c.dead_letter_rows} dead-lettered, {c.empty_rows} empty"
                 for stream, c in self.streams.items()]
        hours = (f"; hours {self.hours_from:%Y-%m-%d %H:%M}..{self.hours_to:%Y-%m-%d %H:%M} UTC"
                 if self.hours_from and self.hours_to else "")
        skipped = len(self.external_statistics)
        external = f"; {skipped} external statistic(s) skipped" if skipped else ""
        return "; ".join(parts) + hours + external


async def known_entities(conn: psycopg.AsyncConnection[tuple[object, ...]], tenant: str) -> dict[str, KnownEntity]:
    """What core.entities says of each entity of the tenant (its quantity decides the statistic's)."""
    cur = await conn.execute("SELECT entity_id, measurement, device_class, unit_canonical FROM core.entities "
                             "WHERE tenant_id = %s", (tenant,))
    return {str(e): KnownEntity(str(m), None if d is None else str(d), None if u is None else str(u))
            for e, m, d, u in await cur.fetchall()}


@dataclass
class _Stream:
    """One stream's state during a run."""

    name: str
    window: str
    resumed: bool
    metas: dict[Key, StatisticMeta]
    known: dict[str, KnownEntity]
    counts: StreamCounts
    plans: dict[Key, Plan | Rejected | None] = field(default_factory=dict)
    carries: dict[Key, Carry | None] = field(default_factory=dict)
    lettered: set[Key] = field(default_factory=set)

    def plan_of(self, key: Key) -> Plan | Rejected | None:
        """The statistic's plan; None for an external one; a Rejected one is a dead letter."""
        if key in self.plans:
            return self.plans[key]
        meta = self.metas.get(key)
        target: Plan | Rejected | None
        if meta is None:
            target = Rejected(Reason.SCHEMA, f"row of metadata_id {key!r}, which statistics_meta does not describe")
        elif is_external(meta.statistic_id):
            target = None
        else:
            try:
                target = plan(meta, self.known.get(meta.statistic_id), self.window)
            except Rejected as rejected:
                target = rejected
        self.plans[key] = target
        return target


async def import_statistics(conn: psycopg.AsyncConnection[tuple[object, ...]], influx: InfluxWriter, tenant: str,
                            source_key: str, reader: StatisticsReader, *, retention_s: float | None = None,
                            dry_run: bool = False, say: Callable[[str], None] = log.info,
                            streams: Sequence[str] = tuple(STREAMS)) -> StatisticsReport:
    """Import every stream from its position; `influx` writes to the `rollup` policy of the tenant's
    database; `retention_s` is that policy's duration when the caller knows it (None: learnt from InfluxDB's
    answers). A dry run reads and converts but writes nothing and commits no position."""
    metas = {meta.key: meta for meta in await reader.metas()}
    known = await known_entities(conn, tenant)
    report = StatisticsReport()
    for name in streams:
        position = await import_progress.load(conn, tenant, source_key, name)
        stream = _Stream(name, STREAMS[name], position is not None, metas, known, StreamCounts())
        report.streams[name] = stream.counts
        async for page in reader.pages(name, position):
            await _page(conn, influx, tenant, source_key, reader, stream, page, report, retention_s, dry_run)
        external = {meta.statistic_id for key, meta in metas.items() if stream.plans.get(key, 0) is None}
        report.external_statistics |= external
        say(f"{name}: {stream.counts.rows_read} row(s) read, {stream.counts.rows_written} written"
            + (f", {stream.counts.beyond_retention} beyond the rollup retention" if stream.counts.beyond_retention
               else ""))
    return report


async def _page(conn: psycopg.AsyncConnection[tuple[object, ...]], influx: InfluxWriter, tenant: str,
                source_key: str, reader: StatisticsReader, stream: _Stream, page: Page, report: StatisticsReport,
                retention_s: float | None, dry_run: bool) -> None:
    counts = stream.counts
    window_s = WINDOW_S[stream.window]
    cutoff = time.time() - retention_s if retention_s is not None else None
    if stream.resumed:
        await _seed_carries(reader, stream, page)
    now = datetime.now(UTC)
    letters: list[DeadLetter] = []
    lines: list[str] = []
    line_rows: list[int] = []  # per line, the index of its row among the page's converted rows
    starts: list[float] = []  # per converted row, its start
    for broken in page.broken:
        counts.rows_read += 1
        counts.dead_letter_rows += 1
        letters.append(_broken_letter(now, tenant, stream, broken))
    for key, row in page.rows:
        counts.rows_read += 1
        target = stream.plan_of(key)
        if target is None:
            counts.external_rows += 1
            continue
        if isinstance(target, Rejected):
            counts.dead_letter_rows += 1
            if key not in stream.lettered:
                stream.lettered.add(key)
                letters.append(_letter(now, tenant, stream, key, target, row))
            continue
        try:
            row_lines, stream.carries[key] = lines_of(target, row, stream.carries.get(key), stream.window)
        except Rejected as rejected:
            counts.dead_letter_rows += 1
            letters.append(_letter(now, tenant, stream, key, rejected, row))
            continue
        if cutoff is not None and row[0] < cutoff:
            counts.beyond_retention += 1  # converted all the same: the next row's consumption needs its sum
            continue
        if not row_lines:
            counts.empty_rows += 1
            continue
        index = len(starts)
        starts.append(row[0])
        lines.extend(row_lines)
        line_rows.extend([index] * len(row_lines))
    written = starts
    if lines and not dry_run:
        written = await _write(influx, lines, line_rows, starts, counts)
    if written:
        counts.rows_written += len(written)
        report.cover(min(written), max(written) + window_s)
    report.dead_lettered += len(letters)
    if dry_run:
        return
    async with conn.transaction(), conn.cursor() as cur:
        await deadletters.insert(cur, letters)
        await import_progress.advance(cur, tenant, source_key, stream.name, page.position, len(page.rows))


async def _write(influx: InfluxWriter, lines: list[str], line_rows: list[int], starts: list[float],
                 counts: StreamCounts) -> list[float]:
    """Write the page's lines; return the starts of the rows InfluxDB holds now."""
    status, answer = await influx.post(lines, retry=False)
    if status == 204:
        counts.lines_written += len(lines)
        return starts
    dropped = BEYOND_RETENTION.search(answer)
    if dropped is not None and "field type conflict" not in answer and "unable to parse" not in answer:
        # Lines are in time order: the N oldest were beyond the policy's duration, the rest is written.
        count = int(dropped.group(1))
        beyond = set(line_rows[:count])
        counts.beyond_retention += len(beyond)
        counts.lines_written += len(lines) - count
        return [start for index, start in enumerate(starts) if index not in beyond]
    # Anything else InfluxDB refuses would be a contract bug (our own lines): stop, the position holds.
    raise RuntimeError(f"InfluxDB refused imported statistics ({status}): {answer[:500]}")


async def _seed_carries(reader: StatisticsReader, stream: _Stream, page: Page) -> None:
    """After a resume, a meter's first row needs the recorder's row before it (its sum, last_reset, state)."""
    for key, row in page.rows:
        if key in stream.carries:
            continue
        target = stream.plan_of(key)
        if not isinstance(target, Plan) or target.counter_head is None:
            stream.carries[key] = None
            continue
        before = await reader.previous(stream.name, key, row[0])
        stream.carries[key] = None if before is None else Carry(before[6], before[4], before[5])


def _letter(now: datetime, tenant: str, stream: _Stream, key: Key, rejected: Rejected, row: Row) -> DeadLetter:
    return _row_letter(now, tenant, stream, key, rejected, dict(zip(ROW_COLUMNS, row, strict=True)))


def _broken_letter(now: datetime, tenant: str, stream: _Stream, broken: BrokenRow) -> DeadLetter:
    return _row_letter(now, tenant, stream, broken.key, broken.rejected, broken.cells)


def _row_letter(now: datetime, tenant: str, stream: _Stream, key: Key, rejected: Rejected,
                cells: dict[str, object]) -> DeadLetter:
    meta = stream.metas.get(key)
    statistic_id = meta.statistic_id if meta is not None else str(key)
    payload = {"stream": stream.name, "statistic_id": statistic_id, "start_ts": cells["start_ts"], "row": cells}
    if meta is not None:
        payload |= {"unit_of_measurement": meta.unit, "has_mean": meta.has_mean, "has_sum": meta.has_sum,
                    "source": meta.source}
    return DeadLetter(now, tenant, f"{TOPIC_PREFIX}{stream.name}:{statistic_id}",
                      json.dumps(payload, ensure_ascii=False).encode(), rejected.reason, rejected.detail)
