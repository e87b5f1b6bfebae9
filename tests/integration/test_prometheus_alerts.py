"""The stack's Prometheus for real: it scrapes the ops exporter and a registered worker (every target up), and
real conditions fire real alerts that resolve again, read from Prometheus's /api/v1/alerts through
devstack.alerts (the API the soak uses). The test profile runs the operator's rules with every duration / 30."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from devstack import alerts, prometheus
from devstack.procs import free_port
from devstack.profile import PROJECT_ROOT, Profile
from tests.conftest import Tenant, WorkerProcess, wait_for

pytestmark = pytest.mark.integration

RESULT_SQL = (PROJECT_ROOT / "hats_assets" / "defs" / "quality" / "record_result.sql").read_text()
# Generous: with `for:` scaled to seconds, what remains is Prometheus's 1 s scrape and evaluation on a busy machine.
ALERT_TIMEOUT_S = 90.0


@pytest.fixture
def prometheus_url(profile: Profile, stack_env: dict[str, str]) -> str:
    return stack_env["HATS_PROMETHEUS_URL"]


@pytest.fixture
def registered(profile: Profile) -> Iterator[Callable[[str, int], None]]:
    names: list[str] = []

    def register(name: str, port: int) -> None:
        prometheus.register_worker(profile, name, port)
        names.append(name)

    yield register
    for name in names:
        prometheus.unregister_worker(profile, name)


def _target(url: str, instance: str) -> alerts.Target | None:
    return next((t for t in alerts.targets(url) if t.instance == instance), None)


def test_prometheus_scrapes_the_exporter_and_itself(prometheus_url: str, profile: Profile) -> None:
    def every_stack_target_up() -> bool:
        jobs = {t.job: t.health for t in alerts.targets(prometheus_url) if t.job != prometheus.WORKER_JOB}
        return jobs == {prometheus.EXPORTER_JOB: "up", "prometheus": "up"}

    wait_for(every_stack_target_up, "the exporter's and Prometheus's own targets up", timeout=ALERT_TIMEOUT_S)
    assert not alerts.firing(prometheus_url, "HatsOpsExporterDown")


def test_a_killed_worker_fires_worker_down_and_a_restarted_one_resolves_it(
        prometheus_url: str, tenant: Tenant, start_worker: Callable[..., WorkerProcess],
        registered: Callable[[str, int], None]) -> None:
    port = free_port()
    instance = f"127.0.0.1:{port}"
    env = {**tenant.env, "HATS_HTTP_PORT": str(port)}
    worker = start_worker(env)
    registered(f"test-{tenant.name}", port)
    up = wait_for(lambda: (t := _target(prometheus_url, instance)) is not None and t.health == "up" and t,
                  f"Prometheus scraping the worker at {instance}", timeout=ALERT_TIMEOUT_S)
    assert up.job == prometheus.WORKER_JOB
    assert up.labels["worker"] == f"test-{tenant.name}"
    assert {(t.job, t.health) for t in alerts.targets(prometheus_url)} == {
        (prometheus.WORKER_JOB, "up"), (prometheus.EXPORTER_JOB, "up"), ("prometheus", "up")}
    assert not alerts.firing(prometheus_url, "HatsWorkerDown", instance=instance)

    worker.kill()
    fired = wait_for(lambda: alerts.firing(prometheus_url, "HatsWorkerDown", instance=instance),
                     "HatsWorkerDown to fire for the killed worker", timeout=ALERT_TIMEOUT_S)
    assert fired[0].labels["severity"] == "critical"
    assert fired[0].annotations["runbook"] == "README.md#runbook-hatsworkerdown"
    assert instance in fired[0].annotations["summary"]

    start_worker(env)
    wait_for(lambda: not [a for a in alerts.alerts(prometheus_url)
                          if a.name == "HatsWorkerDown" and a.labels.get("instance") == instance],
             "HatsWorkerDown to resolve once the worker is back", timeout=ALERT_TIMEOUT_S)
    assert _target(prometheus_url, instance).health == "up"  # type: ignore[union-attr]


def test_a_failing_blocking_check_fires_and_its_passing_rerun_resolves(
        prometheus_url: str, tenant: Tenant, stack_env: dict[str, str]) -> None:
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    row = {"run_id": uuid.uuid4().hex, "tenant": tenant.name, "asset": "rollup_1h", "check": "plausible_ranges",
           "start": hour, "end": hour + timedelta(hours=1), "severity": "ERROR", "checked": 10,
           "details": json.dumps([])}
    with psycopg.connect(stack_env["HATS_PG_DSN"], autocommit=True) as conn:
        conn.execute(RESULT_SQL, {**row, "passed": False, "failing": 3})
        fired = wait_for(lambda: alerts.firing(prometheus_url, "HatsBlockingCheckFailing", tenant=tenant.name),
                         "HatsBlockingCheckFailing for the home", timeout=ALERT_TIMEOUT_S)
        assert fired[0].annotations["summary"] == f"Home {tenant.name} has 1 hour(s) failing a blocking check"
        conn.execute(RESULT_SQL, {**row, "passed": True, "failing": 0})
    wait_for(lambda: not [a for a in alerts.alerts(prometheus_url)
                          if a.name == "HatsBlockingCheckFailing" and a.labels.get("tenant") == tenant.name],
             "HatsBlockingCheckFailing to resolve after the passing re-run", timeout=ALERT_TIMEOUT_S)
