"""Points per UTC hour from line protocol (outbox replay, rejected lines), and the metadata a flush carries."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

import psycopg
import pytest

from ingest_worker.contract import Point
from ingest_worker.lineprotocol import encode
from ingest_worker.normalise import EntityState
from ingest_worker.store.ingest_hours import NS_PER_HOUR, count_lines, hour_start
from ingest_worker.store.metadata import MetadataStore

HOUR = int(datetime(2026, 11, 26, 17, tzinfo=UTC).timestamp()) * 1_000_000_000 // NS_PER_HOUR
TAGS = (("entity_id", "sensor.t"), ("domain", "sensor"))


def line(time_ns: int, **field: Any) -> str:
    return encode(Point("temperature", TAGS, time_ns, **(field or {"value": 21.5})))


def test_counts_points_per_hour_of_their_own_timestamps() -> None:
    start = HOUR * NS_PER_HOUR
    lines = [line(start), line(start + NS_PER_HOUR - 1), line(start + NS_PER_HOUR), line(start - 1),
             line(start + 5, state='a "quoted" state with spaces 123'), line(start + 6, state="ends in space ")]
    assert count_lines(lines) == {HOUR - 1: 1, HOUR: 4, HOUR + 1: 1}


def test_rejected_lines_are_taken_off_and_emptied_hours_dropped() -> None:
    start = HOUR * NS_PER_HOUR
    batch = [line(start + i) for i in range(3)] + [line(start + NS_PER_HOUR)]
    hours = count_lines(batch)
    assert count_lines([batch[0], batch[3]], sign=-1, hours=hours) is hours
    assert hours == {HOUR: 2}


def test_a_line_without_a_readable_timestamp_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    assert count_lines([line(HOUR * NS_PER_HOUR), "temperature value=1", ""]) == {HOUR: 1}
    assert "2 line(s) without a readable timestamp" in caplog.text


def test_hours_floor_to_utc_hour_starts_before_and_after_1970() -> None:
    assert hour_start(HOUR) == datetime(2026, 11, 26, 17, tzinfo=UTC)
    assert count_lines([line(-1)]) == {-1: 1}
    assert hour_start(-1) == datetime(1969, 12, 31, 23, tzinfo=UTC)


class SlowCursor:
    """Stands in for psycopg's cursor: each executemany waits until `go` is set."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.entities: list[str] = []

    async def executemany(self, query: str, rows: list[tuple[object, ...]]) -> None:
        await self.go.wait()
        if "core.entities" in query:
            self.entities.extend(str(row[1]) for row in rows)


def test_metadata_noted_while_a_flush_is_in_flight_is_not_forgotten() -> None:
    """The next batch is parsed while the previous flush awaits PostgreSQL: what it notes must stay pending."""

    async def scenario() -> list[str]:
        store = MetadataStore("t", budget=10)
        store.note(EntityState("sensor.a", "1"), "temperature")
        cursor = SlowCursor()
        flushing = asyncio.create_task(store.flush(cast(psycopg.AsyncCursor[tuple[object, ...]], cursor)))
        await asyncio.sleep(0)
        store.note(EntityState("sensor.b", "1"), "temperature")  # noted mid-transaction
        cursor.go.set()
        await flushing
        store.committed()
        await store.flush(cast(psycopg.AsyncCursor[tuple[object, ...]], cursor))
        store.committed()
        return cursor.entities

    assert asyncio.run(scenario()) == ["sensor.a", "sensor.b"]
