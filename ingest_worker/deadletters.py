"""`python -m ingest_worker.deadletters`: list, count and replay dead letters after a fix.

Replay is not a pipeline of its own: each stored message re-enters through the door (`door.py`) as the
topic and payload it was stored with, at its exact receipt time (microseconds from `received_at`), so
today's parsers, the series budget, the entities' known descriptions (`core.entities`: a statestream
state replayed without its attribute topics gets its unit), `ops.ingest_hours` and the dead-letter store
treat it exactly as the live worker would. Messages whose meaning depends on earlier messages (a
discovery device's state needs its config) are replayed in arrival order, a chunk at a time.

Every replayed dead letter is stamped `replayed_at` in the flush that makes its outcome durable: the
point it now makes, or a NEW dead letter with the reason it fails today (same topic, payload and
`received_at`), which supersedes it. So a failure is never lost, the old row keeps the old reason for the
record, and `count`/`list` show what still waits, with today's reasons. (Superseding, not updating in
place: the worker's role may insert dead letters and set `replayed_at`, nothing else.) `--dry-run` parses
and counts but writes and stamps nothing (InfluxDB is not asked, so its refusals do not show).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import cast

import psycopg

from ingest_worker.door import Door, DoorError, offline_item
from ingest_worker.settings import ConfigError, WorkerSettings, load_settings
from ingest_worker.sources.base import Source
from ingest_worker.sources.recorder import RecorderSource
from ingest_worker.sources.registry import build_sources
from ingest_worker.sources.websocket import WebsocketSource
from ingest_worker.store.deadletters import DeadLetter
from ingest_worker.store.resume import datetime_to_us

PREVIEW_BYTES = 120
PRODUCER = "deadletters"
STAMP = "UPDATE ops.dead_letters SET replayed_at = now() WHERE id = ANY(%s)"
# Rows of one replay in id order, up to the newest that existed when it began (the dead letters the replay
# itself writes come after, and wait for the next replay).
PAGE = ("SELECT id, topic, payload, received_at FROM ops.dead_letters WHERE tenant_id = %s "
        "AND replayed_at IS NULL AND (%s::text IS NULL OR reason = %s) AND id > %s AND id <= %s "
        "ORDER BY id LIMIT %s")


def _connect(settings: WorkerSettings) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(settings.ingest_dsn.get_secret_value(), autocommit=True)


def count(settings: WorkerSettings) -> list[tuple[str, int]]:
    with _connect(settings) as conn:
        rows = conn.execute(
            "SELECT reason, count(*) FROM ops.dead_letters WHERE tenant_id = %s AND replayed_at IS NULL "
            "GROUP BY reason ORDER BY count(*) DESC, reason", (settings.tenant,)).fetchall()
    return [(cast(str, r), cast(int, n)) for r, n in rows]


def listing(settings: WorkerSettings, reason: str | None, limit: int) -> list[tuple[object, ...]]:
    with _connect(settings) as conn:
        return conn.execute(
            "SELECT id, received_at, reason, topic, detail, payload FROM ops.dead_letters "
            "WHERE tenant_id = %s AND replayed_at IS NULL AND (%s::text IS NULL OR reason = %s) "
            "ORDER BY id DESC LIMIT %s", (settings.tenant, reason, reason, limit)).fetchall()


def replay_sources(settings: WorkerSettings) -> list[Source]:
    """The worker's sources plus the ones that own no MQTT topic (their `websocket:`/`recorder:` prefixes
    cannot capture another source's traffic), so a letter from any producer can be replayed."""
    sources = build_sources(settings)
    names = {source.name for source in sources}
    if "websocket" not in names:
        sources.insert(0, WebsocketSource())
    sources.insert(0, RecorderSource())
    return sources


class Stamps:
    """FlushHook: the ids of the dead letters whose re-entry the starting flush makes durable."""

    def __init__(self) -> None:
        self._ids: list[int] = []

    def cover(self, ids: Sequence[int]) -> None:
        self._ids = list(ids)

    def snapshot(self) -> list[int] | None:
        ids, self._ids = self._ids, []
        return ids or None

    async def store(self, cur: psycopg.AsyncCursor[tuple[object, ...]], snapshot: object) -> None:
        assert isinstance(snapshot, list)
        await cur.execute(STAMP, (snapshot,))


def _key(topic: str, payload: bytes, received_at: datetime) -> tuple[str, bytes, int]:
    return topic, payload, datetime_to_us(received_at)


async def replay(settings: WorkerSettings, reason: str | None, dry_run: bool) -> Counter[str]:
    """Re-enter stored messages through the door; counts of replayed / still-failing (by today's reason)."""
    outcome: Counter[str] = Counter()
    stamps = Stamps()
    async with Door(settings, PRODUCER, replay_sources(settings), hooks=[stamps], dry_run=dry_run) as door:
        cur = await door.conn.execute("SELECT coalesce(max(id), 0) FROM ops.dead_letters")
        newest = cast(int, (await cur.fetchone() or (0,))[0])
        after, rows_seen, failed = 0, 0, 0
        while True:
            cur = await door.conn.execute(PAGE, (settings.tenant, reason, reason, after, newest,
                                                 settings.batch_max_points))
            rows = await cur.fetchall()
            if not rows:
                break
            ids = [cast(int, row[0]) for row in rows]
            after = ids[-1]
            keys = [_key(cast(str, topic), bytes(cast(bytes, payload)), cast(datetime, received_at))
                    for _id, topic, payload, received_at in rows]
            items = [offline_item(topic, payload, micros * 1_000) for topic, payload, micros in keys]
            letters = await door.push(items, marked=lambda ids=ids: stamps.cover(ids))  # type: ignore[misc]
            failing = _reasons_by_row(letters)
            for key in keys:
                if key in failing:
                    failed += 1
                    outcome[f"still failing: {failing[key]}"] += 1
            rows_seen += len(rows)
        await door.finish(lambda line: print(f"deadletters: {line}", file=sys.stderr))
    passed = rows_seen - failed
    if dry_run:
        outcome["would replay"] = passed
    else:
        outcome["replayed"] = passed
        if door.counters["written"]:
            outcome["points written"] = door.counters["written"]
    return outcome


def _reasons_by_row(letters: Sequence[DeadLetter]) -> dict[tuple[str, bytes, int], str]:
    """The first reason each replayed message fails with today (a message may make several letters)."""
    reasons: dict[tuple[str, bytes, int], str] = {}
    for letter in letters:
        reasons.setdefault(_key(letter.topic, letter.payload, letter.received_at), letter.reason)
    return reasons


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ingest_worker.deadletters", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("count", help="dead letters not yet replayed, by reason")
    show = sub.add_parser("list", help="the newest dead letters")
    show.add_argument("--reason")
    show.add_argument("--limit", type=int, default=20)
    again = sub.add_parser("replay", help="re-run dead letters through today's parsers and write what passes")
    again.add_argument("--reason", help="only this reason code")
    again.add_argument("--dry-run", action="store_true", help="say what would pass, write nothing")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command == "count":
        for reason, n in count(settings):
            print(f"{n:>8}  {reason}")
    elif args.command == "list":
        for row_id, received_at, why, where, detail, payload in listing(settings, args.reason, args.limit):
            preview = bytes(cast(bytes, payload))[:PREVIEW_BYTES]
            print(f"#{row_id} {received_at:%Y-%m-%d %H:%M:%S} {why} {where}\n    {detail}\n    {preview!r}")
    else:
        try:
            result = asyncio.run(replay(settings, args.reason, args.dry_run))
        except DoorError as exc:
            print(f"deadletters: {exc}", file=sys.stderr)
            return 1
        for what, n in sorted(result.items()):
            print(f"{n:>8}  {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
