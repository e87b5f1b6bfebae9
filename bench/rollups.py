"""Rollup speed: our 1m + 5m + 1h rollups against InfluxDB's own bare pushdown, in one run.

Data: one UTC day of 1,000 entities at a 10 s cadence (8.64 M raw points: 900 gauges in four
measurements, 100 energy meters with a reset each), written once into a bench tenant's raw policy
(kept between runs; ``--reload`` rewrites it).

1. Baseline: ``SELECT mean(value) INTO "rollup"."baseline_1m" FROM "raw"./.*/ … GROUP BY time(1m), *``
   over the day — InfluxDB's bare server-side 1 min mean (arithmetic, not time-weighted).
2. Ours: the ``rollup_1m`` → ``rollup_5m`` → ``rollup_1h`` assets for the same day, as the single-run
   backfill the UI would launch (``dg.materialize`` with the day's partition range, in process).
3. Dagster overhead: one hourly partition of ``rollup_hourly_job`` launched as a fresh process
   (``dagster job execute``, i.e. code location load + run + event log in PostgreSQL), wall time from
   launch to success.

Usage: .venv/bin/python bench/rollups.py [--reload] [--entities N]
"""

from __future__ import annotations

import argparse
import gzip
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import numpy as np
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack import influxdb, stack  # noqa: E402
from devstack.profile import load_profile  # noqa: E402
from ingest_worker.tls import client_context  # noqa: E402

TENANT = "bench_rollup"
DATABASE = f"hats_{TENANT}"
CADENCE_S = 10
METERS_SHARE = 0.1
# (measurement, level, random-walk step, plausible bounds): values stay plausible, so the checks pass.
GAUGE_KINDS = (("temperature", 21.0, 0.05, (-20.0, 40.0)), ("humidity", 50.0, 0.2, (5.0, 95.0)),
               ("power", 300.0, 15.0, (0.0, 3000.0)), ("battery", 80.0, 0.001, (0.0, 100.0)))
LINES_PER_WRITE = 100_000
TARGET_RATIO = 1.3
TARGET_DAGSTER_S = 20.0


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)  # a benchmark reports on stdout


class Bench:
    def __init__(self, entities: int) -> None:
        self.entities = entities
        self.profile = load_profile("test")
        self.env = stack.up(self.profile)
        self.secrets = stack.secrets_for(self.profile)
        self.admin = (self.env["HATS_INFLUX_ADMIN_USERNAME"], self.env["HATS_INFLUX_ADMIN_PASSWORD"])
        self.day = (datetime.now(UTC) - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
        self.points = entities * 86_400 // CADENCE_S

    def influx(self, q: str, rp: str = "raw") -> list[dict[str, object]]:
        response = httpx.post(f"{self.env['HATS_INFLUX_URL']}/query", data={"q": q, "db": DATABASE, "rp": rp},
                              auth=self.admin, timeout=900, verify=client_context(self.env["HATS_INFLUX_CA_FILE"]))
        response.raise_for_status()
        result = response.json()["results"][0]
        if "error" in result:
            raise RuntimeError(f"{result['error']} ({q})")
        return list(result.get("series", []))

    def window(self) -> str:
        end = self.day + timedelta(days=1)
        return f"time >= '{self.day:%Y-%m-%dT%H:%M:%SZ}' AND time < '{end:%Y-%m-%dT%H:%M:%SZ}'"

    def raw_points(self) -> int:
        series = self.influx(f'SELECT count("value") FROM "raw"./.*/ WHERE {self.window()}')
        return sum(int(s["values"][0][1]) for s in series)  # type: ignore[index,misc]

    # -- data -----------------------------------------------------------------------------------
    def load(self, reload: bool) -> None:
        influxdb.ensure_tenant_database(self.profile, self.secrets, DATABASE, 30, 730)
        self.register_entities()
        if not reload and self.raw_points() == self.points:
            log(f"raw data present: {self.points:,} points on {self.day:%Y-%m-%d}")
            return
        influxdb.query(self.profile, f'DROP DATABASE "{DATABASE}"', *self.admin)
        influxdb.ensure_tenant_database(self.profile, self.secrets, DATABASE, 30, 730)
        rng = np.random.default_rng(7)
        steps = 86_400 // CADENCE_S
        day_ns = int(self.day.timestamp()) * 1_000_000_000
        times = [str(day_ns + i * CADENCE_S * 1_000_000_000 + 1_000_000) for i in range(steps)]
        began, written = time.monotonic(), 0
        pending: list[str] = []
        for entity in range(self.entities):
            if entity < self.meters:
                values = np.cumsum(rng.uniform(0, 0.002, steps)) + 1000.0
                values[steps // 2:] -= values[steps // 2] - 0.5  # a meter replaced at noon: a reset
                head = f"energy,entity_id=sensor.bench_meter_{entity:04d},source=bench value="
            else:
                name, level, step, (low, high) = GAUGE_KINDS[entity % len(GAUGE_KINDS)]
                values = np.clip(level + np.cumsum(rng.normal(0, step, steps)), low, high)
                head = f"{name},entity_id=sensor.bench_{name}_{entity:04d},source=bench value="
            pending.extend(f"{head}{v!r} {t}" for v, t in zip(values.round(4).tolist(), times, strict=True))
            if len(pending) >= LINES_PER_WRITE or entity == self.entities - 1:
                self.write(pending)
                written += len(pending)
                pending = []
                rate = written / (time.monotonic() - began)
                log(f"loading raw: {written:,}/{self.points:,} points ({rate:,.0f}/s)")
        influxdb.query(self.profile, f'ALTER RETENTION POLICY "raw" ON "{DATABASE}" DURATION 30d', *self.admin)

    @property
    def meters(self) -> int:
        return int(self.entities * METERS_SHARE)

    def write(self, lines: list[str]) -> None:
        for begin in range(0, len(lines), 50_000):
            body = gzip.compress("\n".join(lines[begin:begin + 50_000]).encode(), compresslevel=1)
            response = httpx.post(f"{self.env['HATS_INFLUX_URL']}/write", params={"db": DATABASE, "rp": "raw"},
                                  content=body, headers={"Content-Encoding": "gzip"}, auth=self.admin, timeout=300,
                                  verify=client_context(self.env["HATS_INFLUX_CA_FILE"]))
            if response.status_code != 204:
                raise RuntimeError(f"write refused: {response.text[:300]}")

    def register_entities(self) -> None:
        """The meters' state_class is what makes the rollup treat them as meters (from core.entities)."""
        with psycopg.connect(self.env["HATS_PG_DSN"], autocommit=True) as conn:
            conn.execute("INSERT INTO core.tenants (tenant_id, name) VALUES (%s, 'rollup bench') "
                         "ON CONFLICT DO NOTHING", (TENANT,))
            conn.execute("DELETE FROM core.entities WHERE tenant_id = %s", (TENANT,))
            with conn.cursor().copy("COPY core.entities (tenant_id, entity_id, domain, measurement, state_class, "
                                    "unit_canonical, source) FROM STDIN") as copy:
                for entity in range(self.meters):
                    copy.write_row((TENANT, f"sensor.bench_meter_{entity:04d}", "sensor", "energy",
                                    "total_increasing", "kWh", "bench"))

    # -- measurements ---------------------------------------------------------------------------------
    def baseline(self) -> float:
        self.influx('DROP MEASUREMENT "baseline_1m"', rp="rollup") if self.has_baseline() else None
        began = time.monotonic()
        self.influx(f'SELECT mean("value") INTO "rollup"."baseline_1m" FROM "raw"./.*/ WHERE {self.window()} '
                    'GROUP BY time(1m), *')
        return time.monotonic() - began

    def has_baseline(self) -> bool:
        return any(s for s in self.influx('SHOW MEASUREMENTS WITH MEASUREMENT = "baseline_1m"'))

    def resources(self) -> dict[str, Any]:
        from hats_assets.defs.common.resources import InfluxDBResource, PostgresResource
        from hats_assets.defs.common.tenants import TenantSelection

        return {
            "influxdb": InfluxDBResource(url=self.env["HATS_INFLUX_URL"],
                                         username=self.env["HATS_INFLUX_DAGSTER_USERNAME"],
                                         password=self.env["HATS_INFLUX_DAGSTER_PASSWORD"],
                                         ca_file=self.env["HATS_INFLUX_CA_FILE"]),
            "postgres": PostgresResource(dsn=self.env["HATS_DAGSTER_DSN"]),
            "tenant_selection": TenantSelection(tenants=[TENANT]),  # the bench home alone
        }

    def day_tags(self) -> dict[str, str]:
        key = f"{self.day:%Y-%m-%d}"
        return {"dagster/asset_partition_range_start": f"{key}-00:00",
                "dagster/asset_partition_range_end": f"{key}-23:00"}

    def with_checks(self) -> tuple[float, float, float]:
        """The same day's rollup run with its data-quality checks: wall time, and the seconds spent inside
        great-expectations validations (the rest of the checks' time is their queries and arithmetic)."""
        from hats_assets.defs.quality import expectations, rollup_checks
        from hats_assets.defs.rollups.assets import rollups

        spent = [0.0]
        validate = expectations.failing_rows

        def timed(*args: Any, **kwargs: Any) -> list[int]:
            began = time.perf_counter()
            try:
                return validate(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - began

        # Expectations.validate looks the function up in its module when it runs: patched there, every
        # check's validations are timed.
        expectations.failing_rows = timed  # type: ignore[assignment]
        try:
            with dg.DagsterInstance.ephemeral() as instance:
                began = time.monotonic()
                result = dg.materialize([rollups, *rollup_checks.rollup_checks], instance=instance,
                                        resources=self.resources(), tags=self.day_tags(), raise_on_error=False)
                wall = time.monotonic() - began
        finally:
            expectations.failing_rows = validate  # type: ignore[assignment]
        failed = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
        log(f"checks over the day: {len(result.get_asset_check_evaluations())} evaluated, failed: {failed or 'none'}")
        return wall, spent[0], gx_import_s()

    def ours(self) -> tuple[float, dict[str, float], dict[str, object]]:
        from hats_assets.defs.rollups.assets import rollups

        resources, tags = self.resources(), self.day_tags()
        with dg.DagsterInstance.ephemeral() as instance:
            began = time.monotonic()
            result = dg.materialize([rollups], instance=instance, resources=resources,
                                    tags=tags)
            wall = time.monotonic() - began
        steps = {name: float(str(_meta(result, name)["duration_s"].value))
                 for name in ("rollup_1m", "rollup_5m", "rollup_1h")}
        meta = _meta(result, "rollup_1m")
        return wall, steps, {k: meta[k].value for k in ("points_read", "rows_written", "series_gauges",
                                                            "series_meters", "meter_resets")}

    def dagster_run(self) -> float:
        """One hourly partition launched as its own process against a PostgreSQL-backed instance."""
        key = f"{self.day:%Y-%m-%d}-12:00"
        with tempfile.TemporaryDirectory() as home:
            Path(home, "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
            env = {**os.environ, **self.env, "DAGSTER_HOME": home}
            began = time.monotonic()
            subprocess.run(
                [str(ROOT / ".venv/bin/dagster"), "job", "execute", "-m", "hats_assets.definitions",
                 "-j", "rollup_hourly_job", "--tags", f'{{"dagster/partition": "{key}", "hats/tenants": "{TENANT}"}}'],
                check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            return time.monotonic() - began



def _meta(result: dg.ExecuteInProcessResult, asset: str) -> Any:
    return next(e.materialization.metadata for e in result.get_asset_materialization_events()
                if e.asset_key == dg.AssetKey(asset) and e.materialization is not None)


def gx_import_s() -> float:
    """What a fresh run process pays once to import great-expectations (checks import it lazily)."""
    began = time.monotonic()
    subprocess.run([sys.executable, "-c", "import great_expectations"], check=True, capture_output=True)
    python_alone = time.monotonic()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return (python_alone - began) - (time.monotonic() - python_alone)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--entities", type=int, default=1_000)
    parser.add_argument("--reload", action="store_true", help="rewrite the raw day even if it is there")
    args = parser.parse_args()
    bench = Bench(args.entities)
    bench.load(args.reload)
    points = bench.raw_points()
    log(f"raw day {bench.day:%Y-%m-%d}: {points:,} points of {args.entities} entities")

    log("baseline: bare SELECT mean(value) INTO … GROUP BY time(1m), * …")
    baseline_s = bench.baseline()
    log(f"baseline: {baseline_s:.1f} s ({points / baseline_s:,.0f} points/s)")
    log("ours: rollup_1m → rollup_5m → rollup_1h, one single-run backfill of the day …")
    ours_s, steps, meta = bench.ours()
    log(f"ours: {ours_s:.1f} s (steps: " + ", ".join(f"{k} {v:.1f} s" for k, v in steps.items()) + f"); {meta}")
    log("ours + data-quality checks, same day, one run …")
    checked_s, gx_s, gx_import = bench.with_checks()
    log("Dagster: one hourly partition of rollup_hourly_job (rollups + checks), launched as a process …")
    dagster_s = bench.dagster_run()

    ratio = ours_s / baseline_s
    print()
    print(f"raw points                       {points:>12,}")
    print(f"baseline (1m mean INTO, InfluxDB) {baseline_s:>10.1f} s")
    print(f"ours (1m + 5m + 1h, exact)        {ours_s:>10.1f} s   ratio {ratio:.2f}x "
          f"(target <= {TARGET_RATIO}x: {'PASS' if ratio <= TARGET_RATIO else 'FAIL'})")
    added = (checked_s - ours_s) / ours_s
    print(f"ours + checks (GE 1.x)            {checked_s:>10.1f} s   checks add {100 * added:.0f} % "
          f"(target <= 25 %: {'PASS' if added <= 0.25 else 'FAIL'}); inside GX validations {gx_s:.2f} s, "
          f"queries and arithmetic {max(checked_s - ours_s - gx_s, 0):.1f} s; GX import per run process "
          f"{gx_import:.1f} s")
    print(f"hourly run, launch to success      {dagster_s:>10.1f} s   "
          f"(target <= {TARGET_DAGSTER_S:.0f} s: {'PASS' if dagster_s <= TARGET_DAGSTER_S else 'FAIL'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
