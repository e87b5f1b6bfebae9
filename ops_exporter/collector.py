"""What the exporter reports, read at every scrape from what the assets and Dagster write (queries/*.sql).

A custom collector rather than gauges set on a timer: Prometheus decides when to look, and a value is never
older than the scrape. Every series is per home (or per job), never per entity, so 1,000 homes stay ~6,000
series. A failed read reports ``hats_exporter_up 0`` (and nothing stale) instead of failing the scrape, so the
alert says "the exporter cannot read", not "the exporter is down".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ingest_worker.contract import RAW_RP, database_for
from ops_exporter.settings import ExporterSettings

log = logging.getLogger("ops_exporter")

QUERIES = Path(__file__).parent / "queries"
TENANTS_SQL, ROLLUPS_SQL, CHECKS_SQL, RETENTION_SQL, RUN_FAILURES_SQL = (
    (QUERIES / f"{name}.sql").read_text() for name in ("tenants", "rollups", "checks", "retention", "run_failures"))
# The warehouse's gate for its daily tables (hats_assets/defs/warehouse/tables.py DAILY_GATE): a day with an
# hour failing one of these assets' blocking checks is refused.
WAREHOUSE_GATE = ("rollup_1m", "rollup_1h", "hourly_rollup")
# What the retention asset writes in an action's detail when it keeps raw data longer than the home's tier.
EXTENDED_DETAIL = "%(extended beyond %"
CONNECT_TIMEOUT_S = 5

# Every metric this exporter can report (name, type, help): one place for the collector, tests and rules.
METRICS: dict[str, tuple[str, str]] = {
    "hats_exporter_up": ("gauge", "1 when the last scrape read every source (PostgreSQL ops rows, run storage)"),
    "hats_exporter_scrape_seconds": ("gauge", "How long the last scrape's queries took"),
    "hats_rollup_behind_seconds": ("gauge", "Now minus the end of the newest rolled-up hour, while a newer "
                                            "complete hour with raw points waits (0: every hour with data rolled)"),
    "hats_rollup_owed_hours": ("gauge", "Complete hours of the lookback with raw points not rolled up (or "
                                        "written to since their rollup)"),
    "hats_checks_failing": ("gauge", "(check, hour) pairs of the lookback whose latest result failed; "
                                     "blocking=true: severity ERROR (holds the hour out of the warehouse)"),
    "hats_warehouse_refused_days": ("gauge", "UTC days of the lookback the warehouse refuses to load: an hour "
                                             "failed a blocking check of its gate"),
    "hats_retention_raw_extended": ("gauge", "1 while retention keeps the home's raw data beyond its tier "
                                             "because raw hours still wait for their rollups"),
    # Label dagster_job: `job` is the scrape's own label in Prometheus.
    "hats_dagster_run_failures": ("counter", "Dagster runs that ended in FAILURE, by Dagster job (run storage)"),
}


# Each metric's labels (the rest have none): per home or per job, never per entity.
LABELS: dict[str, tuple[str, ...]] = {
    "hats_rollup_behind_seconds": ("tenant",), "hats_rollup_owed_hours": ("tenant",),
    "hats_checks_failing": ("tenant", "blocking"), "hats_warehouse_refused_days": ("tenant",),
    "hats_retention_raw_extended": ("tenant",), "hats_dagster_run_failures": ("dagster_job",),
}


@dataclass
class Reading:
    """One scrape's values, per home (and per job for the run failures)."""

    tenants: list[str] = field(default_factory=list)
    behind_s: dict[str, float] = field(default_factory=dict)
    owed_hours: dict[str, int] = field(default_factory=dict)
    failing: dict[tuple[str, bool], int] = field(default_factory=dict)
    refused_days: dict[str, int] = field(default_factory=dict)
    raw_extended: dict[str, int] = field(default_factory=dict)
    run_failures: dict[str, int] | None = None


def _connect(dsn: str, timeout_s: float) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                           options=f"-c statement_timeout={int(timeout_s * 1000)} -c default_transaction_read_only=on")


def read(settings: ExporterSettings, now: datetime | None = None) -> Reading:
    """Every value, from PostgreSQL (and Dagster's run storage when its DSN is set)."""
    since = (now or datetime.now(UTC)) - timedelta(days=settings.lookback_days)
    reading = Reading()
    with _connect(settings.dsn.get_secret_value(), settings.statement_timeout_s) as conn:
        reading.tenants = [str(row[0]) for row in conn.execute(TENANTS_SQL)]
        active = set(reading.tenants)
        for tenant, behind, owed in conn.execute(ROLLUPS_SQL, {"since": since}):
            reading.behind_s[tenant] = float(behind)
            reading.owed_hours[tenant] = int(owed)
        reading.failing = {(t, blocking): 0 for t in reading.tenants for blocking in (True, False)}
        reading.refused_days = dict.fromkeys(reading.tenants, 0)
        checks = conn.execute(CHECKS_SQL, {"since": since, "gate": list(WAREHOUSE_GATE)})
        for tenant, blocking, other, refused in checks:
            if tenant in active:
                reading.failing[(tenant, True)] = int(blocking)
                reading.failing[(tenant, False)] = int(other)
                reading.refused_days[tenant] = int(refused)
        targets = {f"{database_for(t)}.{RAW_RP}": t for t in reading.tenants}
        reading.raw_extended = dict.fromkeys(reading.tenants, 0)
        for target, extended in conn.execute(RETENTION_SQL, {"extended": EXTENDED_DETAIL, "raw_target": f"%.{RAW_RP}"}):
            if target in targets:
                reading.raw_extended[targets[target]] = int(bool(extended))
    if settings.dagster_dsn is not None:
        with _connect(settings.dagster_dsn.get_secret_value(), settings.statement_timeout_s) as conn:
            reading.run_failures = {str(job): int(n) for job, n in conn.execute(RUN_FAILURES_SQL)}
    return reading


def _family(name: str, labels: list[str]) -> GaugeMetricFamily | CounterMetricFamily:
    kind, doc = METRICS[name]
    if kind == "counter":
        return CounterMetricFamily(name, doc, labels=labels)
    return GaugeMetricFamily(name, doc, labels=labels)


def families(reading: Reading | None, seconds: float) -> list[Metric]:
    """The metric families of one scrape (only hats_exporter_up and the timing when the read failed)."""
    up = _family("hats_exporter_up", [])
    up.add_metric([], 0 if reading is None else 1)
    timing = _family("hats_exporter_scrape_seconds", [])
    timing.add_metric([], seconds)
    out: list[Metric] = [up, timing]
    if reading is None:
        return out
    per_home: dict[str, dict[str, float] | dict[str, int]] = {
        "hats_rollup_behind_seconds": reading.behind_s, "hats_rollup_owed_hours": reading.owed_hours,
        "hats_warehouse_refused_days": reading.refused_days, "hats_retention_raw_extended": reading.raw_extended}
    for name, values in per_home.items():
        family = _family(name, list(LABELS[name]))
        for tenant, value in sorted(values.items()):
            family.add_metric([tenant], value)
        out.append(family)
    failing = _family("hats_checks_failing", list(LABELS["hats_checks_failing"]))
    for (tenant, blocking), count in sorted(reading.failing.items()):
        failing.add_metric([tenant, "true" if blocking else "false"], count)
    out.append(failing)
    if reading.run_failures is not None:
        runs = _family("hats_dagster_run_failures", list(LABELS["hats_dagster_run_failures"]))
        for job, count in sorted(reading.run_failures.items()):
            runs.add_metric([job], count)
        out.append(runs)
    return out


class OpsCollector(Collector):
    """Reads at every scrape; describe() names the metrics without reading (registration must not query)."""

    def __init__(self, settings: ExporterSettings) -> None:
        self._settings = settings

    def describe(self) -> Iterator[Metric]:
        return iter([_family(name, []) for name in METRICS])

    def collect(self) -> Iterator[Metric]:
        started = time.monotonic()
        try:
            reading: Reading | None = read(self._settings)
        except psycopg.Error as exc:
            # The class and PostgreSQL's own message: never the DSN (psycopg's messages do not carry passwords).
            log.error("scrape failed: %s: %s", type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc) else "")
            reading = None
        return iter(families(reading, time.monotonic() - started))
