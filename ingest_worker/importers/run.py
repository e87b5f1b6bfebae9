"""`hats import <path-or-url>`: a Home Assistant's history into the tenant's stores, resumable.

The CLI (`devstack/cli.py`) only parses arguments and calls `main`. A run: open and check where the
history is (`history.py` chooses by the location: a recorder database, `recorder_db.py`, nothing written
if it cannot be read, is corrupted or too old; or a running Home Assistant, `history_ws.py`, nothing
written if it cannot be reached or refuses the token), record the run in `ops.imports` (`running`), the
home's time zone when the location knows it, import the states through the door (`states.py` or
`history_ws.py`: raw points, dead letters, ingest hours, `ops.import_progress`), wait until InfluxDB holds
what the door's outbox kept, then the long-term statistics (`statistics.py` with `statistics_db.py` or
`statistics_ws.py`: imported rollup rows; it reports the UTC hours it filled), and
close the run's row (`complete`, `failed` or, on SIGINT/SIGTERM, `interrupted` after the page in hand is
durable). Progress goes to stderr (rows, rows/s, ETA), then one summary; every error says what to do
next. Settings are the worker's (`WorkerSettings`: InfluxDB, `HATS_INGEST_DSN`, `HATS_TENANT`, and
`HATS_HA_TOKEN` for a running Home Assistant).

Runs of one tenant are serialised by the door's lock, so a row still `running` when a run starts belongs
to a run that was killed: it is marked `interrupted`, and this run continues from its committed position.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO, cast

import psycopg

from ingest_worker.contract import ROLLUP_RP, TENANT_PATTERN, database_for
from ingest_worker.door import Door, DoorError
from ingest_worker.ha_client import ConnectionLost
from ingest_worker.importers.history import History, open_history
from ingest_worker.importers.recorder_db import RecorderError
from ingest_worker.importers.states import StatesProgress, StatesReport, raw_retention_days
from ingest_worker.settings import ConfigError, WorkerSettings, load_settings
from ingest_worker.store.influx import InfluxUnavailable, InfluxWriter

if TYPE_CHECKING:
    from ingest_worker.importers.statistics import StatisticsReport

PRODUCER = "import"
PROGRESS_EVERY_S = 1.0
EXIT_FAILED, EXIT_CONFIG, EXIT_INTERRUPTED = 1, 2, 130
START = ("INSERT INTO ops.imports (tenant_id, source_kind, source, source_key) VALUES (%s, %s, %s, %s) "
         "RETURNING import_id")
ABANDONED = ("UPDATE ops.imports SET status = 'interrupted', finished_at = now(), detail = coalesce(detail || '; ', "
             "'') || 'found still running by a later run (the process was killed)' "
             "WHERE tenant_id = %s AND status = 'running'")
FINISH = ("UPDATE ops.imports SET status = %s, finished_at = now(), states_read = %s, points_written = %s, "
          "dead_lettered = %s, statistic_rows = %s, first_at = %s, last_at = %s, hours_from = %s, hours_to = %s, "
          "detail = %s WHERE import_id = %s")
DEAD_LETTER_HINT = "python -m ingest_worker.deadletters count"


@dataclass
class Options:
    location: str
    tenant: str | None = None
    states: bool = True
    statistics: bool = True
    dry_run: bool = False


@dataclass
class Progress:
    """Progress lines on stderr: at most one a second, `\\r`-rewritten on a terminal."""

    out: TextIO = sys.stderr
    started: float = field(default_factory=time.monotonic)
    _last: float = 0.0

    def say(self, line: str) -> None:
        self._end_bar()
        print(f"hats import: {line}", file=self.out, flush=True)

    def states(self, report: StatesReport) -> None:
        now = time.monotonic()
        done = report.rows_read >= report.total
        if now - self._last < PROGRESS_EVERY_S and not done:
            return
        self._last = now
        elapsed = max(now - self.started, 1e-6)
        rate = report.rows_read / elapsed
        left = max(report.total - report.rows_read, 0)
        eta = f"{left / rate:,.0f} s" if rate > 0 else "?"
        share = 100.0 * report.rows_read / report.total if report.total else 100.0
        line = (f"states {report.rows_read:,}/{report.total:,} ({share:.1f}%), {rate:,.0f} rows/s, ETA {eta}")
        if self.out.isatty():
            print(f"\rhats import: {line}", end="", file=self.out, flush=True)
        else:
            print(f"hats import: {line}", file=self.out, flush=True)

    def _end_bar(self) -> None:
        if self.out.isatty() and self._last:
            print(file=self.out)


@dataclass
class Outcome:
    status: str = "running"
    states: StatesReport = field(default_factory=StatesReport)
    statistics: StatisticsReport | None = None
    detail: str = ""
    raw_days: int = 0  # the home's raw retention the states were cut at


def _at(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def summary(outcome: Outcome, raw_days: int, dry_run: bool) -> str:
    """The closing line(s): what was read and written, and what to do next."""
    report = outcome.states
    counters = report.counters
    written = (f"{counters.get('would_write', 0):,} points would be written" if dry_run
               else f"{counters.get('written', 0):,} points written")
    parts = [f"{report.rows_read:,} states read, {written}, "
             f"{counters.get('dead_lettered', 0):,} dead-lettered, {counters.get('ignored', 0):,} ignored"]
    if report.older:
        parts.append(f"{report.older:,} states older than the home's raw retention ({raw_days} d, "
                     "core.tenants.raw_days) left to the statistics")
    if report.first_ts is not None:
        parts.append(f"states {_at(report.first_ts):%Y-%m-%d %H:%M:%S}..{_at(report.last_ts):%Y-%m-%d %H:%M:%S} UTC")
    if outcome.statistics is not None:
        parts.append("statistics: " + outcome.statistics.summary())
    if counters.get("dead_lettered"):
        parts.append(f"see the dead letters with `{DEAD_LETTER_HINT}`")
    return "; ".join(parts)


async def run_import(settings: WorkerSettings, options: Options, progress: Progress) -> Outcome:
    """The whole run; raises `RecorderError`/`DoorError`/`ConfigError` before anything is written."""
    raw_days = await raw_retention_days(settings)
    history = await open_history(options.location, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        dry = " — dry run" if options.dry_run else ""
        progress.say(f"{history.headline} into tenant {settings.tenant}{dry}")
        states_progress = StatesProgress(settings.tenant, history.source_key)
        async with Door(settings, PRODUCER, [history.door_source()], hooks=[states_progress],
                        dry_run=options.dry_run) as door:
            import_id = None if options.dry_run else await _start(door.conn, settings.tenant, history)
            outcome = Outcome(raw_days=raw_days)
            try:
                await _run(settings, options, history, door, states_progress, raw_days, outcome, progress,
                           stop.is_set)
                outcome.status = "interrupted" if stop.is_set() else "complete"
            except (InfluxUnavailable, DoorError, RecorderError, ConnectionLost, psycopg.Error) as exc:
                outcome.status, outcome.detail = "failed", f"{type(exc).__name__}: {exc}"
            except BaseException as exc:
                outcome.status, outcome.detail = "failed", f"{type(exc).__name__}: {exc}"
                if import_id is not None:
                    await _finish(door.conn, import_id, outcome, raw_days, options.dry_run)
                raise
            if import_id is not None:
                await _finish(door.conn, import_id, outcome, raw_days, options.dry_run)
        return outcome
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await history.aclose()


async def _run(settings: WorkerSettings, options: Options, history: History, door: Door,
               states_progress: StatesProgress, raw_days: int, outcome: Outcome, progress: Progress,
               stopping: Callable[[], bool]) -> None:
    if not options.dry_run:
        await history.import_home(door.conn, settings.tenant)
    if options.states:
        await history.import_states(door, states_progress, raw_days, settings.batch_max_points, outcome.states,
                                    progress.states, stopping)
        await door.finish(progress.say)
    if options.statistics and not stopping():
        # Imported here: the statistics import is its own module, loaded only by runs that use it.
        from ingest_worker.importers.statistics import import_statistics

        influx = InfluxWriter(settings.influx_write_url, database_for(settings.tenant), settings.influx_username,
                              settings.influx_password.get_secret_value(), settings.influx_timeout_s, rp=ROLLUP_RP,
                              verify=settings.influx_verify())
        try:
            outcome.statistics = await import_statistics(
                door.conn, influx, settings.tenant, history.source_key, history.statistics(),
                dry_run=options.dry_run, say=progress.say)
        finally:
            await influx.aclose()


async def _start(conn: psycopg.AsyncConnection[tuple[object, ...]], tenant: str, history: History) -> int:
    await conn.execute(ABANDONED, (tenant,))
    cur = await conn.execute(START, (tenant, history.kind, history.source, history.source_key))
    row = await cur.fetchone()
    assert row is not None
    return cast(int, row[0])


async def _finish(conn: psycopg.AsyncConnection[tuple[object, ...]], import_id: int, outcome: Outcome,
                  raw_days: int, dry_run: bool) -> None:
    states, statistics = outcome.states, outcome.statistics
    counters = states.counters
    detail = outcome.detail or summary(outcome, raw_days, dry_run)
    await conn.execute(FINISH, (
        outcome.status, states.rows_read, counters.get("written", 0),
        counters.get("dead_lettered", 0) + (statistics.dead_lettered if statistics else 0),
        statistics.rows_written if statistics else 0, _at(states.first_ts), _at(states.last_ts),
        statistics.hours_from if statistics else None, statistics.hours_to if statistics else None,
        detail[:4000], import_id))


def settings_for(tenant: str | None) -> WorkerSettings:
    settings = load_settings()
    if tenant is None:
        return settings
    if not TENANT_PATTERN.match(tenant):
        raise ConfigError(f"--tenant {tenant!r} must match {TENANT_PATTERN.pattern}")
    return settings.model_copy(update={"tenant": tenant})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`hats import`'s arguments (the CLI adds them to its subcommand)."""
    parser.add_argument("location", help="the recorder: a SQLite file (home-assistant_v2.db, read in place, "
                                         "also while Home Assistant runs), a postgresql:// or a mysql:// URL; "
                                         "or a running Home Assistant: http://host:8123 (its WebSocket API, "
                                         "token from HATS_HA_TOKEN)")
    parser.add_argument("--tenant", help="the tenant to import into (default: HATS_TENANT)")
    parser.add_argument("--states", action=argparse.BooleanOptionalAction, default=True,
                        help="import the recorded states as raw points (default: yes)")
    parser.add_argument("--statistics", action=argparse.BooleanOptionalAction, default=True,
                        help="import the long-term statistics as imported rollup rows (default: yes)")
    parser.add_argument("--dry-run", action="store_true", help="read and convert everything, write nothing")


def main(args: argparse.Namespace, progress: Progress | None = None) -> int:
    """Run `hats import` from parsed arguments; the exit code (0 complete, 1 failed, 2 settings, 130 stopped)."""
    shown = progress or Progress()
    options = Options(args.location, args.tenant, args.states, args.statistics, args.dry_run)
    try:
        settings = settings_for(options.tenant)
        outcome = asyncio.run(run_import(settings, options, shown))
    except ConfigError as exc:
        print(f"hats import: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (RecorderError, DoorError) as exc:
        print(f"hats import: {exc}", file=sys.stderr)
        return EXIT_FAILED
    raw_days = outcome.raw_days
    if outcome.status == "failed":
        shown.say(f"failed: {outcome.detail}. What is committed stays; fix the cause and run the same command "
                  "again: it continues where this run stopped")
        return EXIT_FAILED
    shown.say(f"{outcome.status}: {summary(outcome, raw_days, options.dry_run)}")
    if outcome.status == "interrupted":
        shown.say("stopped; run the same command again to continue where it stopped")
        return EXIT_INTERRUPTED
    return 0
