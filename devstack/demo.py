"""`hats run`: the platform with demo data, end to end, in one command.

Stack up → ingest worker → a simulated fleet replays a few hours of history (then keeps publishing
live) → every replayed message is waited for in InfluxDB → the complete hours are materialised into the
warehouse (before the Dagster daemon starts, so its sensors find them rolled up) → Dagster UI, so the UI
and the analyst views have something to show at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from devstack import influxdb, prometheus, stack
from devstack.procs import Managed, StackError, ensure_port_free, wait_until
from devstack.profile import LOOPBACK, PROJECT_ROOT, Profile

DEMO_DEVICES = 50
DRAIN_TIMEOUT_S = 300.0
PYTHON = str(Path(sys.executable))


def _count_points(profile: Profile, secrets: dict[str, str], database: str, since: datetime) -> int:
    """Numeric points since `since` (what the simulator's `points` statistic counts)."""
    statement = f"SELECT count(value) FROM \"{database}\".\"raw\"./.*/ WHERE time >= '{since.isoformat()}'"
    body = influxdb.query(profile, statement, influxdb.ADMIN_USER, secrets["influx_admin"])
    total = 0
    for result in body.get("results", []):  # type: ignore[attr-defined]
        for series in result.get("series", []):
            total += sum(int(v) for v in series["values"][0][1:] if v is not None)
    return total


def _start(proc: Managed, argv: list[str], env: dict[str, str]) -> None:
    if proc.running():
        stack.progress(f"{proc.name} already running (pid {proc.pid()})")
        return
    proc.start(argv, env=env, cwd=PROJECT_ROOT)
    stack.progress(f"{proc.name} started (log: {proc.log})")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 (loopback)
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def default_backfill_hours(now: datetime) -> int:
    """Hours since 00:00 UTC yesterday: a complete day for the warehouse plus today's complete hours."""
    start = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    return int((now - start).total_seconds() // 3600) + 1


def run(profile: Profile, backfill_hours: int | None) -> None:
    started = time.monotonic()
    backfill_hours = backfill_hours or default_backfill_hours(datetime.now(UTC))
    print(f"hats run: 1/5 stack ({profile.state_dir})", file=sys.stderr)
    env = stack.up(profile)
    secrets = stack.secrets_for(profile)
    procs = {proc.name: proc for proc in stack.app_processes(profile)}
    child_env = {**env, "PYTHONUNBUFFERED": "1"}

    print("hats run: 2/5 ingest worker", file=sys.stderr)
    worker_url = f"http://{LOOPBACK}:{profile.ports['worker']}"
    _start(procs["worker"], [PYTHON, "-m", "ingest_worker"],
           {**child_env, "HATS_HTTP_PORT": str(profile.ports["worker"]),
            "HATS_OUTBOX_DIR": str(profile.path("outbox"))})
    # Until the broker has confirmed the worker's subscriptions, it would discard the fleet's messages.
    wait_until(lambda: procs["worker"].running() and _http_ok(f"{worker_url}/readyz"),
               "the ingest worker to be ready", timeout=60, log=procs["worker"].log)
    prometheus.register_worker(profile, "worker", profile.ports["worker"])

    print(f"hats run: 3/5 simulated fleet: {DEMO_DEVICES} devices, {backfill_hours} h of history "
          "(about a minute)", file=sys.stderr)
    since = datetime.now(UTC) - timedelta(hours=backfill_hours)
    database = f"hats_{env['HATS_TENANT']}"
    before = _count_points(profile, secrets, database, since)
    stats_file = profile.path("run", "backfill-stats.json")
    result = subprocess.run(
        [PYTHON, "-m", "ha_simulator", "--devices", str(DEMO_DEVICES), "--backfill-hours", str(backfill_hours),
         "--duration", "0", "--seed", str(int(time.time())), "--stats-json", str(stats_file)],
        env={**os.environ, **child_env}, cwd=PROJECT_ROOT, capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise StackError(f"the simulator failed:\n{result.stderr}")
    stats = json.loads(stats_file.read_text())
    expected = int(stats["points"])
    stack.progress(f"published {stats['mqtt_messages']} MQTT messages in statestream, eventstream and discovery "
                   f"formats ({expected} values); waiting until InfluxDB holds every value")
    wait_until(lambda: _count_points(profile, secrets, database, since) >= before + expected,
               f"InfluxDB to hold all {expected} published values", timeout=DRAIN_TIMEOUT_S,
               log=procs["worker"].log)
    stack.progress(f"all {expected} values are in InfluxDB {database}")
    _start(procs["simulator"], [PYTHON, "-m", "ha_simulator", "--devices", str(DEMO_DEVICES)], child_env)

    # Before the Dagster daemon starts: its late-data sensor would otherwise find the replayed hours never
    # rolled up and ask for each one as its own run, beside this single-run backfill of them all.
    print(f"hats run: 4/5 rolling up the last {backfill_hours - 1} complete hours, loading their days",
          file=sys.stderr)
    with profile.path("logs", "first_runs.log").open("ab") as run_log:
        subprocess.run([PYTHON, "-m", "devstack.first_runs", str(backfill_hours - 1)], env={**os.environ, **child_env},
                       cwd=PROJECT_ROOT, check=True, stderr=run_log)

    # The daily backup (backups/scheduler.py): operator-side, so its REPLICATION role stays out of Dagster.
    _start(procs["backups"], [PYTHON, "-m", "backups.scheduler"], child_env)

    print("hats run: 5/5 Dagster UI", file=sys.stderr)
    port = profile.ports["dagster"]
    ui = f"http://{LOOPBACK}:{port}"
    if not procs["dagster"].running():
        ensure_port_free(port, "HATS_DAGSTER_PORT", "the Dagster UI")
    _start(procs["dagster"], [str(Path(PYTHON).parent / "dagster"), "dev", "-w", "workspace.yaml",
                              "-h", LOOPBACK, "-p", str(port)], child_env)
    wait_until(lambda: _http_ok(f"{ui}/server_info"), "the Dagster UI", timeout=120, log=procs["dagster"].log)
    print(
        f"\nhats is running ({time.monotonic() - started:.0f} s).\n"
        f"  Dagster UI:      {ui}\n"
        f"  worker metrics:  {worker_url}/metrics  (/healthz, /readyz)\n"
        f"  Prometheus:      {prometheus.url(profile)}  (alerts: {prometheus.url(profile)}/alerts)\n"
        f"  analyst views:   . .hats/env && psql \"$HATS_ANALYST_DSN\" -c 'TABLE analytics.entity_daily LIMIT 5'\n"
        f"  logs:            {profile.path('logs')}/\n"
        f"  stop everything: make down\n",
        file=sys.stderr,
    )
