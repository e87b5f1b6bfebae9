"""`hats import` of a large recorder: states/s against a plain SQLite scan, and the importer's peak memory.

1. A recorder-shaped SQLite (tests/recorder_file.py: HA's tables and indexes, a few hundred entities with a
   few attribute sets each) of N states, generated in chunks and cached under `.hats/bench/` by size (a
   cached file older than `MAX_AGE_DAYS` is made again: its states must stay inside the raw retention).
2. Baseline: one `sqlite3` scan of the same rows in the same keyset order with the same joins
   (`states_meta`, `state_attributes`), every column touched: the floor any importer pays to read them.
3. Ours: `hats import <file> --no-statistics` as its own process into a throwaway tenant of the test stack
   (InfluxDB and PostgreSQL as a worker uses them), its wall time, and its peak RSS (`wait4` rusage).
   Printed: both rates, ours / baseline, and the peak RSS against the 300 MB target. The tenant's InfluxDB
   database and PostgreSQL rows are removed afterwards.

Usage: .venv/bin/python bench/recorder_import.py [--states 5000000] [--entities 300]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack import influxdb, stack  # noqa: E402
from devstack.profile import load_profile  # noqa: E402
from tests.recorder_file import RecorderShape, create_recorder  # noqa: E402

MAX_AGE_DAYS = 20
STEP_S = 10.0
RSS_TARGET_MB = 300
BASELINE_SQL = (
    "SELECT s.state_id, s.last_updated_ts, s.last_changed_ts, s.state, a.shared_attrs, m.entity_id "
    "FROM states s LEFT JOIN states_meta m ON m.metadata_id = s.metadata_id "
    "LEFT JOIN state_attributes a ON a.attributes_id = s.attributes_id ORDER BY s.last_updated_ts, s.state_id")
TENANT_TABLES = ("core.entities", "core.devices", "ops.ingest_hours", "ops.import_progress", "ops.imports",
                 "ops.dead_letters")


def recorder_file(states: int, entities: int) -> Path:
    path = ROOT / ".hats" / "bench" / f"recorder-{states}-{entities}.db"
    if path.exists() and time.time() - path.stat().st_mtime < MAX_AGE_DAYS * 86_400:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    per_entity = states // entities
    shape = RecorderShape(entities=entities, states_per_entity=per_entity, step_s=STEP_S,
                          start_ts=time.time() - per_entity * STEP_S - 600)
    started = time.monotonic()
    create_recorder(path.with_suffix(".tmp"), shape)
    path.with_suffix(".tmp").replace(path)
    print(f"generated {per_entity * entities:,} states of {entities} entities in {time.monotonic() - started:.1f} s "
          f"({path.stat().st_size / 1e6:.0f} MB): {path}", file=sys.stderr)
    return path


def baseline(path: Path) -> tuple[int, float]:
    import sqlite3

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    started = time.monotonic()
    rows = 0
    for state_id, updated, changed, state, attrs, entity in conn.execute(BASELINE_SQL):
        rows += 1 if (state_id, updated, changed, state, attrs, entity) else 0
    elapsed = time.monotonic() - started
    conn.close()
    return rows, elapsed


def ours(path: Path, env: dict[str, str]) -> tuple[float, int, str]:
    """Wall time, peak RSS (bytes) and the summary line of one `hats import` process."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "devstack.cli", "import", str(path), "--no-statistics"], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line.rstrip())
        if "rows/s" not in line:
            print(f"  {line.rstrip()}", file=sys.stderr)
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit("hats import failed:\n" + "\n".join(lines[-20:]))
    return elapsed, usage.ru_maxrss * 1024, next((line for line in lines if "complete:" in line), "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=5_000_000)
    parser.add_argument("--entities", type=int, default=300)
    args = parser.parse_args()
    profile = load_profile("test")
    env = stack.up(profile)
    secrets = stack.secrets_for(profile)
    path = recorder_file(args.states, args.entities)

    rows, scan_s = baseline(path)
    print(f"baseline sqlite3 scan: {rows:,} rows in {scan_s:.1f} s = {rows / scan_s:,.0f} rows/s")

    tenant = f"bench{uuid.uuid4().hex[:8]}"
    database = f"hats_{tenant}"
    influxdb.ensure_tenant_database(profile, secrets, database, raw_days=30, rollup_days=730)
    try:
        run_env = {**os.environ, **env, "HATS_TENANT": tenant, "HATS_LOG_FORMAT": "text",
                   "HATS_OUTBOX_DIR": str(ROOT / ".hats" / "bench" / "outbox")}
        elapsed, rss, summary = ours(path, run_env)
        print(f"hats import: {rows:,} states in {elapsed:.1f} s = {rows / elapsed:,.0f} states/s "
              f"(process start, file check and counts included)")
        print(f"  {summary.split('complete: ', 1)[-1]}")
        print(f"ratio ours / baseline: {(rows / elapsed) / (rows / scan_s):.3f}")
        print(f"peak RSS of the importer: {rss / 1e6:.0f} MB (target <= {RSS_TARGET_MB} MB: "
              f"{'met' if rss <= RSS_TARGET_MB * 1e6 else 'MISSED'})")
    finally:
        influxdb.query(profile, f'DROP DATABASE "{database}"', env["HATS_INFLUX_ADMIN_USERNAME"],
                       env["HATS_INFLUX_ADMIN_PASSWORD"])
        with psycopg.connect(env["HATS_PG_DSN"], autocommit=True) as conn:
            for table in TENANT_TABLES:
                conn.execute(f"DELETE FROM {table} WHERE tenant_id = %s", (tenant,))
            conn.execute("DELETE FROM core.tenants WHERE tenant_id = %s", (tenant,))


if __name__ == "__main__":
    main()
