"""`python -m ingest_worker.deadletters`: list, count and replay dead letters after a fix.

Replay runs each stored message through today's parsers (so a fixed bug or a raised limit lets it
through), writes what now passes to InfluxDB and stamps `replayed_at`; what still fails stays, with
the reason it fails now. Messages whose meaning depends on earlier retained messages (a discovery
device's state needs its config; a statestream state's unit comes from its attribute topics) are
replayed with the context found among the dead letters being replayed, in arrival order.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from datetime import UTC, datetime
from typing import cast

import psycopg

from ingest_worker.contract import database_for
from ingest_worker.lineprotocol import encode
from ingest_worker.normalise import normalise
from ingest_worker.rejections import Reason, Rejected
from ingest_worker.settings import ConfigError, WorkerSettings, load_settings
from ingest_worker.sources.registry import build_sources
from ingest_worker.store.influx import InfluxWriter

PREVIEW_BYTES = 120


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


async def replay(settings: WorkerSettings, reason: str | None, dry_run: bool) -> Counter[str]:
    """Re-run stored messages through the parsers; returns counts of replayed / still-failing reasons."""
    sources = build_sources(settings)
    outcome: Counter[str] = Counter()
    with _connect(settings) as conn:
        rows = conn.execute(
            "SELECT id, topic, payload, received_at FROM ops.dead_letters WHERE tenant_id = %s "
            "AND replayed_at IS NULL AND (%s::text IS NULL OR reason = %s) ORDER BY id",
            (settings.tenant, reason, reason)).fetchall()
        lines: list[str] = []
        parsed: list[tuple[int, list[str]]] = []
        for row_id, topic, payload, received_at in rows:
            topic, payload = cast(str, topic), bytes(cast(bytes, payload))
            received_ns = int(cast(datetime, received_at).timestamp() * 1e9)
            try:
                if len(payload) > settings.max_payload_bytes:
                    raise Rejected(Reason.PAYLOAD_TOO_LARGE, "still over HATS_MAX_PAYLOAD_BYTES")
                source = next((s for s in sources if s.matches(topic)), None)
                if source is None:
                    raise Rejected(Reason.SCHEMA, "no configured source owns this topic")
                states = [*source.handle(topic, payload).states, *source.flush(force=True)]
                row_lines = [encode(normalise(state, received_ns)) for state in states]
            except Rejected as rejected:
                outcome[f"still failing: {rejected.reason}"] += 1
                continue
            lines.extend(row_lines)
            parsed.append((cast(int, row_id), row_lines))
        if dry_run or not parsed:
            outcome["would replay" if dry_run else "replayed"] = len(parsed)
            return outcome
        writer = InfluxWriter(settings.influx_url, database_for(settings.tenant), settings.influx_username,
                              settings.influx_password.get_secret_value(), settings.influx_timeout_s)
        try:
            rejected_lines = await writer.write(lines, retry=True)
        finally:
            await writer.aclose()
        refused = {error.line for error in rejected_lines}
        # A message counts as replayed only when every point it makes is in InfluxDB now.
        replayed = [row_id for row_id, row_lines in parsed if not refused.intersection(row_lines)]
        outcome["replayed"] = len(replayed)
        outcome["points written"] = len(lines) - len(rejected_lines)
        if len(replayed) < len(parsed):
            outcome["still failing: influx_rejected"] += len(parsed) - len(replayed)
        conn.execute("UPDATE ops.dead_letters SET replayed_at = %s WHERE id = ANY(%s)",
                     (datetime.now(UTC), replayed))
    return outcome


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
        result = asyncio.run(replay(settings, args.reason, args.dry_run))
        for what, n in sorted(result.items()):
            print(f"{n:>8}  {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
