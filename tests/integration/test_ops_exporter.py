"""The ops exporter against real writes: rows written with the assets' own SQL (watermarks, check results,
retention audit) and the worker's ingest hours for a fresh home, a failed run in Dagster's real run storage,
then the stack's exporter scraped over HTTP and compared with what the test computes from what it wrote."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devstack import exporter
from devstack.profile import PROJECT_ROOT, Profile
from ingest_worker.contract import RAW_RP, database_for
from tests.conftest import Tenant, wait_for

pytestmark = pytest.mark.integration

DEFS = PROJECT_ROOT / "hats_assets" / "defs"
WATERMARK_SQL = (DEFS / "rollups" / "watermarks_write.sql").read_text()
RESULT_SQL = (DEFS / "quality" / "record_result.sql").read_text()
AUDIT_SQL = (DEFS / "retention" / "audit_insert.sql").read_text()
INGEST_SQL = ("INSERT INTO ops.ingest_hours (tenant_id, hour, points) VALUES (%s, %s, %s) "
              "RETURNING version")


def scrape(profile: Profile) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{exporter.url(profile)}/metrics", timeout=30).text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def of_home(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], tenant: str) -> dict[str, float]:
    """The home's samples by name (with the blocking label folded into the name)."""
    found = {}
    for (name, labels), value in samples.items():
        label = dict(labels)
        if label.get("tenant") == tenant:
            found[name + (f"[{label['blocking']}]" if "blocking" in label else "")] = value
    return found


@pytest.fixture
def pg(stack_env: dict[str, str]) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(stack_env["HATS_PG_DSN"], autocommit=True) as conn:
        yield conn


def test_exporter_reports_what_the_assets_wrote(profile: Profile, tenant: Tenant,
                                                pg: psycopg.Connection[tuple[object, ...]]) -> None:
    now = datetime.now(UTC)
    current = now.replace(minute=0, second=0, microsecond=0)
    hours = [current - timedelta(hours=n) for n in range(6, 0, -1)]  # six complete hours, oldest first
    versions: dict[datetime, int] = {}
    for hour in hours:
        written = pg.execute(INGEST_SQL, (tenant.name, hour, 100)).fetchone()
        assert written is not None
        versions[hour] = int(written[0])  # type: ignore[call-overload]
    pg.execute(INGEST_SQL, (tenant.name, current, 5))  # the current hour is never owed
    run_id = uuid.uuid4().hex
    rolled = hours[:4]
    for hour in rolled:  # the fifth-newest hour rolled up before later points came in: late data
        version = versions[hour] - 1 if hour == hours[1] else versions[hour]
        pg.execute(WATERMARK_SQL, {"tenant": tenant.name, "hour": hour, "version": version, "points": 100,
                                   "run_id": run_id})

    def result(hour: datetime, asset: str, check: str, passed: bool, severity: str = "ERROR") -> None:
        pg.execute(RESULT_SQL, {"run_id": run_id, "tenant": tenant.name, "asset": asset, "check": check,
                                "start": hour, "end": hour + timedelta(hours=1), "passed": passed,
                                "severity": severity, "failing": 0 if passed else 3, "checked": 10,
                                "details": json.dumps([])})

    result(hours[2], "rollup_1h", "plausible_ranges", passed=False)          # blocking, failing
    result(hours[3], "rollup_1h", "plausible_ranges", passed=False)          # failed, then a passing re-run
    result(hours[3], "rollup_1h", "plausible_ranges", passed=True)
    result(hours[4], "raw_points", "feed_fresh", passed=False, severity="WARN")  # not blocking
    raw_target = f"{database_for(tenant.name)}.{RAW_RP}"

    def audit(detail: str, dry_run: bool) -> None:
        pg.execute(AUDIT_SQL, {"run_id": run_id, "store": "influxdb", "action": "set_retention_policy",
                               "target": raw_target, "range_start": None, "range_end": None, "affected": None,
                               "dry_run": dry_run, "detail": detail})

    audit(f"duration 720h0m0s → 900h0m0s (extended beyond the home's 30 d: raw hours from {hours[4]:%Y-%m-%d %H:00} "
          "UTC are not rolled up yet)", dry_run=False)
    audit("duration 900h0m0s → 720h0m0s (the home's tier)", dry_run=True)  # a dry run changes nothing

    # The reference, from what was written: the newest rolled-up hour is hours[3], complete hours with data
    # after it wait; owed: hours[4], hours[5] never rolled, hours[1] rolled before its newest points.
    behind_reference = time.time() - (hours[3] + timedelta(hours=1)).timestamp()
    owed = [h for h in hours if h not in rolled or h == hours[1]]
    failing_blocking = [(h, "plausible_ranges") for h in (hours[2],)]
    refused_days = {h.date() for h, _ in failing_blocking}
    home = of_home(scrape(profile), tenant.name)
    assert abs(home.pop("hats_rollup_behind_seconds") - behind_reference) < 30
    assert home == {"hats_rollup_owed_hours": len(owed), "hats_checks_failing[true]": len(failing_blocking),
                    "hats_checks_failing[false]": 1, "hats_warehouse_refused_days": len(refused_days),
                    "hats_retention_raw_extended": 1}

    # The home catches up: every hour rolled up at its version, the check re-run passing, retention back to
    # the tier; the exporter says so at the next scrape.
    for hour in hours:
        pg.execute(WATERMARK_SQL, {"tenant": tenant.name, "hour": hour, "version": versions[hour], "points": 100,
                                   "run_id": run_id})
    result(hours[2], "rollup_1h", "plausible_ranges", passed=True)
    audit("duration 900h0m0s → 720h0m0s (the home's tier)", dry_run=False)
    home = of_home(scrape(profile), tenant.name)
    assert home == {"hats_rollup_behind_seconds": 0, "hats_rollup_owed_hours": 0, "hats_checks_failing[true]": 0,
                    "hats_checks_failing[false]": 1, "hats_warehouse_refused_days": 0,
                    "hats_retention_raw_extended": 0}
    assert scrape(profile)[("hats_exporter_up", ())] == 1


def test_exporter_counts_failed_runs_from_dagsters_run_storage(profile: Profile, stack_env: dict[str, str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in stack_env.items():
        monkeypatch.setenv(key, value)
    job_name = f"exporter_probe_{uuid.uuid4().hex[:8]}"

    @dg.asset(name=f"{job_name}_asset")
    def fails() -> None:
        raise RuntimeError("this run fails on purpose")

    job = dg.Definitions(assets=[fails], jobs=[dg.define_asset_job(job_name)]).resolve_job_def(job_name)
    with dg.DagsterInstance.get() as instance:
        for _ in range(2):
            assert not job.execute_in_process(instance=instance, raise_on_error=False).success
    with psycopg.connect(stack_env["HATS_DAGSTER_PG_URL"]) as conn:
        stored = conn.execute("SELECT count(*) FROM runs WHERE pipeline_name = %s AND status = 'FAILURE'",
                              (job_name,)).fetchone()
    assert stored == (2,)
    sample = ("hats_dagster_run_failures_total", (("dagster_job", job_name),))
    assert wait_for(lambda: scrape(profile).get(sample, 0.0), f"{job_name}'s failures on the exporter") == stored[0]


def test_exporter_role_reads_only_what_it_counts(stack_env: dict[str, str], tenant: Tenant) -> None:
    with psycopg.connect(stack_env["HATS_EXPORTER_DSN"], autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM core.tenants WHERE tenant_id = %s",
                            (tenant.name,)).fetchone() == (1,)
        for forbidden in ("SELECT name FROM core.tenants", "SELECT * FROM ops.dead_letters",
                          "SELECT * FROM core.entities", "SELECT * FROM analytics.hourly_rollup"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(forbidden)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM ops.dq_results")
    with psycopg.connect(stack_env["HATS_EXPORTER_DAGSTER_DSN"], autocommit=True) as conn:
        conn.execute("SELECT pipeline_name, status FROM runs LIMIT 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT run_body FROM runs LIMIT 1")
