"""The cost of tenancy on the Dagster side: one hour of many small homes against one big home.

Case ``many``: ``--tenants`` homes × 20 entities; case ``one``: one home of ``--tenants`` × 20 entities;
both at a 10 s cadence for one UTC hour (360 points per entity), the same total points. Each case runs in
its own process: the hour rolled up with its checks (``rollups`` + ``rollup_checks``, one run serving
every home of the case), then the day loaded into the warehouse with its check (``hourly_rollup``,
``daily_rollup``, ``local_daily_rollup``, ``warehouse_rows_match_rollups``). Reported: wall time of the
runs (data loading excluded) and the peak RSS of the process, and the ratio many / one (target ≤ 1.5×).

The homes are made for the bench (InfluxDB database and ``core.tenants`` row) and removed at the end.
InfluxDB 1.x keeps files open per database and shard (the test stack's limit is 20,000 open files): measured
~26 per home at 100 homes (2,900 open at the peak, ~300 idle), so 1,000 homes (~26,000) do not fit; keep
``--tenants`` at 500 or fewer on a shared stack.

Usage: .venv/bin/python bench/many_tenants_dagster.py [--tenants N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HATS_PARTITIONS_START", "2026-01-01")

from devstack import influxdb, stack  # noqa: E402
from devstack.profile import load_profile  # noqa: E402
from ingest_worker.tls import client_context  # noqa: E402

ENTITIES_PER_HOME = 20
CADENCE_S = 10
TARGET_RATIO = 1.5
HOUR = (datetime.now(UTC) - timedelta(days=1)).replace(hour=10, minute=0, second=0, microsecond=0)


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)  # a benchmark reports on stdout


def homes_of(case: str, tenants: int) -> dict[str, int]:
    """Tenant id → entities, per case."""
    if case == "one":
        return {"bench_one_home": tenants * ENTITIES_PER_HOME}
    return {f"bench_home_{i:04d}": ENTITIES_PER_HOME for i in range(tenants)}


def make(env: dict[str, str], homes: dict[str, int]) -> None:
    import httpx
    import psycopg

    profile = load_profile("test")
    secrets = stack.secrets_for(profile)
    start_ns = int(HOUR.timestamp()) * 1_000_000_000
    steps = 3600 // CADENCE_S
    with psycopg.connect(env["HATS_PG_DSN"], autocommit=True) as conn:
        for tenant, entities in homes.items():
            influxdb.ensure_tenant_database(profile, secrets, f"hats_{tenant}", raw_days=30, rollup_days=730)
            conn.execute("INSERT INTO core.tenants (tenant_id, name) VALUES (%s, 'bench') ON CONFLICT DO NOTHING",
                         (tenant,))
            lines = [f"temperature,entity_id=sensor.t{e:05d},source=bench value={20 + (e + s) % 7 / 10} "
                     f"{start_ns + s * CADENCE_S * 1_000_000_000 + e * 1000}"
                     for e in range(entities) for s in range(steps)]
            for begin in range(0, len(lines), 50_000):
                response = httpx.post(f"{env['HATS_INFLUX_URL']}/write", timeout=300,
                                      params={"db": f"hats_{tenant}", "rp": "raw"},
                                      content="\n".join(lines[begin:begin + 50_000]).encode(),
                                      auth=(env["HATS_INFLUX_ADMIN_USERNAME"], env["HATS_INFLUX_ADMIN_PASSWORD"]),
                                      verify=client_context(env["HATS_INFLUX_CA_FILE"]))
                response.raise_for_status()


def remove(env: dict[str, str], homes: dict[str, int]) -> None:
    import psycopg

    profile = load_profile("test")
    with psycopg.connect(env["HATS_PG_DSN"], autocommit=True) as conn:
        for tenant in homes:
            influxdb.query(profile, f'DROP DATABASE "hats_{tenant}"', env["HATS_INFLUX_ADMIN_USERNAME"],
                           env["HATS_INFLUX_ADMIN_PASSWORD"])
            for table in ("ops.dq_results", "ops.rollup_watermarks", "analytics.hourly_rollup",
                          "analytics.daily_rollup", "analytics.local_daily_rollup", "core.tenants"):
                conn.execute(f"DELETE FROM {table} WHERE tenant_id = %s", (tenant,))  # the tables are constants


def run_case(env: dict[str, str], homes: dict[str, int]) -> dict[str, Any]:
    """In this (child) process: the hour's rollups and checks, then the day's warehouse load."""
    import dagster as dg

    from hats_assets.defs.common.resources import InfluxDBResource, PostgresResource
    from hats_assets.defs.common.tenants import TenantSelection
    from hats_assets.defs.quality.rollup_checks import rollup_checks
    from hats_assets.defs.quality.warehouse_checks import warehouse_rows_match_rollups
    from hats_assets.defs.rollups.assets import rollups
    from hats_assets.defs.warehouse.assets import daily_rollup, hourly_rollup, local_daily_rollup

    resources = {
        "influxdb": InfluxDBResource(url=env["HATS_INFLUX_URL"], username=env["HATS_INFLUX_DAGSTER_USERNAME"],
                                     password=env["HATS_INFLUX_DAGSTER_PASSWORD"], ca_file=env["HATS_INFLUX_CA_FILE"]),
        "postgres": PostgresResource(dsn=env["HATS_DAGSTER_DSN"]),
        "tenant_selection": TenantSelection(tenants=list(homes)),
    }
    with dg.DagsterInstance.ephemeral() as instance:
        began = time.monotonic()
        rolled = dg.materialize([rollups, *rollup_checks], instance=instance, resources=resources,
                                partition_key=HOUR.strftime("%Y-%m-%d-%H:%M"), raise_on_error=False)
        rolled_s = time.monotonic() - began
        loaded = dg.materialize([hourly_rollup, daily_rollup, local_daily_rollup, warehouse_rows_match_rollups],
                                instance=instance, resources=resources, partition_key=HOUR.strftime("%Y-%m-%d"),
                                raise_on_error=False)
        total_s = time.monotonic() - began
    failed = sorted({e.check_name for r in (rolled, loaded) for e in r.get_asset_check_evaluations() if not e.passed})
    return {"rolled_s": round(rolled_s, 2), "loaded_s": round(total_s - rolled_s, 2), "total_s": round(total_s, 2),
            "success": rolled.success and loaded.success, "checks_failed": failed}


def measure(case: str, tenants: int) -> dict[str, Any]:
    """One case in a fresh process; its wall times and its peak RSS (wait4's ru_maxrss, KiB)."""
    proc = subprocess.Popen([sys.executable, __file__, "--tenants", str(tenants), "--child", case],
                            stdout=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(f"case {case} failed (status {status})")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=100, help="homes of 20 entities (default 100)")
    parser.add_argument("--child", choices=("many", "one"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    env = stack.up(load_profile("test"))
    if args.child:
        print(json.dumps(run_case(env, homes_of(args.child, args.tenants))))
        return 0
    results = {}
    for case in ("one", "many"):
        homes = homes_of(case, args.tenants)
        log(f"{case}: making {len(homes)} home(s), {sum(homes.values()):,} entities, one hour at {CADENCE_S} s")
        make(env, homes)
        try:
            results[case] = measure(case, args.tenants)
        finally:
            remove(env, homes)
        log(f"{case}: {results[case]}")
    ratio_s = results["many"]["total_s"] / results["one"]["total_s"]
    ratio_mb = results["many"]["peak_rss_mb"] / results["one"]["peak_rss_mb"]
    log(f"{args.tenants} homes × {ENTITIES_PER_HOME} vs 1 × {args.tenants * ENTITIES_PER_HOME}: wall {ratio_s:.2f}× "
        f"(target ≤ {TARGET_RATIO}×), peak memory {ratio_mb:.2f}×")
    return 0 if all(r["success"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
