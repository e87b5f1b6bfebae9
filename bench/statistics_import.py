"""Statistics import speed: our `import_statistics` from a recorder SQLite against a plain sqlite3 scan.

Data: one year of hourly long-term statistics for 500 entities (4.38 M `statistics` rows: 400 gauges in
°F, °C and kW, 100 Wh meters with a reset each), in a recorder SQLite with Home Assistant's schema-42
`statistics`/`statistics_meta` tables and indexes, generated once and cached under `.hats/bench/`.

1. Baseline: a plain sqlite3 scan of the same rows in the same keyset order (`ORDER BY start_ts, id`).
2. Ours, dry run: reading (`RecorderStatistics` over `recorder_db`), planning and converting every row
   into rollup-contract lines, no writes.
3. Ours: the whole import into a bench tenant's `rollup` policy (InfluxDB writes, one position commit per
   page), from a fresh position.

Prints rows/s, ratios against the baseline and the process's peak RSS (target ≤ 300 MB).

Usage: .venv/bin/python bench/statistics_import.py [--regenerate] [--entities N]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import resource
import sqlite3
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack import influxdb, stack  # noqa: E402
from devstack.profile import load_profile  # noqa: E402
from ingest_worker.contract import ROLLUP_RP, database_for  # noqa: E402
from ingest_worker.importers.recorder_db import open_recorder  # noqa: E402
from ingest_worker.importers.statistics import import_statistics  # noqa: E402
from ingest_worker.importers.statistics_db import RecorderStatistics  # noqa: E402
from ingest_worker.store.influx import InfluxWriter  # noqa: E402
from ingest_worker.tls import client_context  # noqa: E402

TENANT = "bench_statistics"
HOURS = 365 * 24
METER_SHARE = 0.2
GAUGE_UNITS = ("°F", "°C", "kW")
SCHEMA = """
CREATE TABLE schema_changes (change_id INTEGER PRIMARY KEY, schema_version INTEGER, changed DATETIME);
CREATE TABLE statistics_meta (id INTEGER PRIMARY KEY, statistic_id VARCHAR(255), source VARCHAR(32),
    unit_of_measurement VARCHAR(255), has_mean BOOLEAN, has_sum BOOLEAN, name VARCHAR(255));
CREATE UNIQUE INDEX ix_statistics_meta_statistic_id ON statistics_meta (statistic_id);
CREATE TABLE statistics (id INTEGER PRIMARY KEY, created DATETIME, created_ts FLOAT, metadata_id INTEGER,
    start DATETIME, start_ts FLOAT, mean FLOAT, min FLOAT, max FLOAT, last_reset DATETIME, last_reset_ts FLOAT,
    state FLOAT, sum FLOAT);
CREATE TABLE statistics_short_term (id INTEGER PRIMARY KEY, created DATETIME, created_ts FLOAT,
    metadata_id INTEGER, start DATETIME, start_ts FLOAT, mean FLOAT, min FLOAT, max FLOAT, last_reset DATETIME,
    last_reset_ts FLOAT, state FLOAT, sum FLOAT);
"""
INDEXES = """
CREATE INDEX ix_statistics_start_ts ON statistics (start_ts);
CREATE UNIQUE INDEX ix_statistics_statistic_id_start_ts ON statistics (metadata_id, start_ts);
CREATE INDEX ix_statistics_short_term_start_ts ON statistics_short_term (start_ts);
CREATE UNIQUE INDEX ix_statistics_short_term_statistic_id_start_ts ON statistics_short_term (metadata_id, start_ts);
"""
SCAN = ("SELECT id, metadata_id, start_ts, mean, min, max, last_reset_ts, state, sum FROM statistics "
        "ORDER BY start_ts, id")
TARGET_RSS_MB = 300


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)  # a benchmark reports on stdout


def generate(path: Path, entities: int) -> None:
    """HA's row order: every statistic's row of an hour, hour after hour (ids grow with start_ts)."""
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp)
    conn.executescript(SCHEMA)
    conn.execute("INSERT INTO schema_changes (schema_version, changed) VALUES (42, '2024-03-06 10:00:00.000000')")
    meters = round(entities * METER_SHARE)
    metas = []
    for i in range(entities):
        if i < meters:
            metas.append((i + 1, f"sensor.bench_meter_{i}", "recorder", "Wh", False, True))
        else:
            metas.append((i + 1, f"sensor.bench_gauge_{i}", "recorder", GAUGE_UNITS[i % 3], True, False))
    conn.executemany("INSERT INTO statistics_meta (id, statistic_id, source, unit_of_measurement, has_mean, "
                     "has_sum) VALUES (?, ?, ?, ?, ?, ?)", metas)
    first = (time.time() // 3_600 - HOURS - 1) * 3_600

    def rows() -> Iterator[tuple[object, ...]]:
        for hour in range(HOURS):
            start = first + hour * 3_600
            wave = math.sin(hour / 24 * 2 * math.pi)
            for metadata_id in range(1, entities + 1):
                if metadata_id <= meters:
                    total = hour * (100.0 + metadata_id)
                    state = total % 50_000.0  # the meter resets once it passes 50 kWh
                    yield (start, metadata_id, start, None, None, None, None, state, total)
                else:
                    mean = 20.0 + 5.0 * wave + metadata_id * 0.01
                    yield (start, metadata_id, start, mean, mean - 1.5, mean + 2.0, None, None, None)
    conn.executemany("INSERT INTO statistics (created_ts, metadata_id, start_ts, mean, min, max, last_reset_ts, "
                     "state, sum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows())
    conn.executescript(INDEXES)
    conn.commit()
    conn.close()
    tmp.rename(path)


def baseline(path: Path) -> tuple[int, float]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    started = time.perf_counter()
    count = 0
    cursor = conn.execute(SCAN)
    while batch := cursor.fetchmany(20_000):
        count += len(batch)
    elapsed = time.perf_counter() - started
    conn.close()
    return count, elapsed


async def ours(path: Path, env: dict[str, str], dry_run: bool) -> tuple[int, float]:
    recorder = open_recorder(str(path))
    influx = InfluxWriter(env["HATS_INFLUX_WRITE_URL"], database_for(TENANT), env["HATS_INFLUX_USERNAME"],
                          env["HATS_INFLUX_PASSWORD"], 60.0, rp=ROLLUP_RP,
                          verify=client_context(env["HATS_INFLUX_CA_FILE"]))
    conn = await psycopg.AsyncConnection.connect(env["HATS_INGEST_DSN"], autocommit=True)
    try:
        started = time.perf_counter()
        report = await import_statistics(conn, influx, TENANT, recorder.source_key,
                                         RecorderStatistics(recorder.qmark, recorder.schema_version),
                                         dry_run=dry_run, say=lambda _: None)
        elapsed = time.perf_counter() - started
    finally:
        await conn.close()
        await influx.aclose()
        recorder.close()
    log(f"  {report.summary()}")
    return report.rows_read, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regenerate", action="store_true", help="write the recorder file again")
    parser.add_argument("--entities", type=int, default=500)
    args = parser.parse_args()
    profile = load_profile("test")
    env = stack.up(profile)
    secrets = stack.secrets_for(profile)
    path = ROOT / ".hats" / "bench" / f"recorder_statistics_{args.entities}x{HOURS}.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    if args.regenerate or not path.exists():
        log(f"generating {args.entities} × {HOURS} hourly statistics into {path}")
        started = time.perf_counter()
        generate(path, args.entities)
        log(f"  generated in {time.perf_counter() - started:.1f} s ({path.stat().st_size / 1e6:.0f} MB)")
    admin = ("hats_admin", secrets["influx_admin"])
    influxdb.query(profile, f'DROP DATABASE "{database_for(TENANT)}"', *admin)
    influxdb.ensure_tenant_database(profile, secrets, database_for(TENANT), 30, 730)
    with psycopg.connect(env["HATS_PG_DSN"], autocommit=True) as conn:
        conn.execute("INSERT INTO core.tenants (tenant_id, name) VALUES (%s, 'statistics bench') "
                     "ON CONFLICT DO NOTHING", (TENANT,))
        conn.execute("DELETE FROM ops.import_progress WHERE tenant_id = %s", (TENANT,))
    rows, base_s = baseline(path)
    log(f"baseline: plain sqlite3 scan, {rows:,} rows in {base_s:.2f} s = {rows / base_s:,.0f} rows/s")
    dry_rows, dry_s = asyncio.run(ours(path, env, dry_run=True))
    log(f"ours, dry run (read + convert): {dry_rows:,} rows in {dry_s:.2f} s = {dry_rows / dry_s:,.0f} rows/s "
        f"({dry_s / base_s:.1f}× the baseline's time)")
    full_rows, full_s = asyncio.run(ours(path, env, dry_run=False))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    log(f"ours, full import into InfluxDB: {full_rows:,} rows in {full_s:.2f} s = {full_rows / full_s:,.0f} rows/s "
        f"({full_s / base_s:.1f}× the baseline's time)")
    verdict = "PASS" if rss_mb <= TARGET_RSS_MB else "FAIL"
    log(f"peak RSS of this process: {rss_mb:.0f} MB (target ≤ {TARGET_RSS_MB} MB): {verdict}")
    return 0 if full_rows == rows and verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
