"""Every Grafana panel's query names what really exists (no Grafana server installs here): each PromQL
expression's metric names are on a real running worker's /metrics or the stack's ops exporter's, and each
SQL query (Grafana's macros replaced by a real range) runs as a home's analyst role and as the operator's
analyst on the stack's warehouse and returns rows from seeded data: a panel naming a relation the analyst
cannot read fails."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from devstack import exporter, postgres
from devstack.profile import Profile
from hats_assets.defs.warehouse.tables import month_partition
from tenancy import secrets as tenant_secrets
from tenancy.analyst_roles import analyst_role_name
from tests.conftest import Tenant, WorkerProcess, registry_for
from tests.dashboards import POSTGRES_UID, PROMETHEUS_UID, exported_names, metric_names, queries, runnable_sql

pytestmark = pytest.mark.integration

DAY = datetime.now(UTC).date() - timedelta(days=1)  # yesterday: inside every panel's range and the 7-day views
HOUR = datetime(DAY.year, DAY.month, DAY.day, 10, tzinfo=UTC)
SEEDED = ("analytics.hourly_rollup", "analytics.daily_rollup", "analytics.local_daily_rollup", "ops.ingest_hours",
          "ops.rollup_watermarks", "core.entities", "core.devices", "core.areas")


def test_every_promql_panel_names_a_metric_the_worker_or_the_exporter_exports(
        tenant: Tenant, profile: Profile, start_worker: Callable[..., WorkerProcess]) -> None:
    """The worker started here and the stack's ops exporter (the Dagster side), scraped as Prometheus does."""
    worker = start_worker(tenant.env)
    from_worker = exported_names(httpx.get(f"{worker.url}/metrics", timeout=10).text)
    from_exporter = exported_names(httpx.get(f"{exporter.url(profile)}/metrics", timeout=30).text)
    assert "hats_write_seconds_bucket" in from_worker  # histograms are seen with their suffixes
    assert "hats_rollup_behind_seconds" in from_exporter
    exported = from_worker | from_exporter
    promql = [q for q in queries() if q.datasource == PROMETHEUS_UID]
    assert len(promql) >= 10
    unknown = {str(q): sorted(metric_names(q.text) - exported) for q in promql}
    assert {q: names for q, names in unknown.items() if names} == {}
    assert all(metric_names(q.text) for q in promql), "a PromQL panel that selects no metric"


def _seed(dsn: str, dagster_dsn: str, tenant: str) -> None:
    """One home's day as the loaders leave it: devices, entities (a kWh meter, a battery, a temperature), an hour,
    the UTC day and the local day of each, the hour's ingest and rollup marks."""
    with psycopg.connect(dagster_dsn, autocommit=True) as conn:  # month partitions are the loader's (hats_dagster)
        for parent, moment in (("hourly_rollup", HOUR), ("daily_rollup", DAY), ("local_daily_rollup", DAY)):
            conn.execute(month_partition(parent, moment)[0])
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO core.areas (tenant_id, area_id, name) VALUES (%s, 'kitchen', 'Kitchen')", (tenant,))
        cur.execute("INSERT INTO core.devices (tenant_id, device_id, name, manufacturer, model, area_id) VALUES "
                    "(%s, 'plug', 'Kitchen plug', 'Maker', 'Model', 'kitchen')", (tenant,))
        entities = (("sensor.plug_energy", "energy", "kWh", "counter", 12.5),
                    ("sensor.plug_battery", "battery", "%", "gauge", 87.0),
                    ("sensor.plug_temperature", "temperature", "°C", "gauge", 21.5))
        for entity, quantity, unit, kind, value in entities:
            cur.execute("INSERT INTO core.entities (tenant_id, entity_id, device_id, domain, measurement, "
                        "unit_canonical, state_class, friendly_name, source) VALUES (%s, %s, 'plug', 'sensor', %s, "
                        "%s, %s, %s, 'statestream')",
                        (tenant, entity, quantity, unit, "total_increasing" if kind == "counter" else "measurement",
                         entity.replace("sensor.", "").replace("_", " ")))
            meter = kind == "counter"
            cur.execute("INSERT INTO analytics.hourly_rollup (tenant_id, entity_id, quantity, kind, hour, mean, min, "
                        "max, count, last, available_s, value_s, consumption, resets, last_seen) VALUES "
                        "(%s, %s, %s, %s, %s, %s, %s, %s, 60, %s, 3600, %s, %s, %s, %s)",
                        (tenant, entity, quantity, kind, HOUR, value, value, value, value, value * 3600,
                         value if meter else None, 0 if meter else None, HOUR + timedelta(minutes=59)))
            cur.execute("INSERT INTO analytics.daily_rollup (tenant_id, entity_id, quantity, kind, day, mean, min, "
                        "max, count, last, available_s, value_s, consumption, resets, imported_hours) VALUES "
                        "(%s, %s, %s, %s, %s, %s, %s, %s, 1440, %s, 86400, %s, %s, %s, 0)",
                        (tenant, entity, quantity, kind, DAY, value, value, value, value, value * 86400,
                         value if meter else None, 0 if meter else None))
            cur.execute("INSERT INTO analytics.local_daily_rollup (tenant_id, entity_id, quantity, kind, local_day, "
                        "time_zone, day_hours, hours_loaded, imported_hours, mean, min, max, count, last, "
                        "available_s, value_s, consumption, resets) VALUES "
                        "(%s, %s, %s, %s, %s, 'UTC', 24, 24, 0, %s, %s, %s, 1440, %s, 86400, %s, %s, %s)",
                        (tenant, entity, quantity, kind, DAY, value, value, value, value, value * 86400,
                         value if meter else None, 0 if meter else None))
        cur.execute("INSERT INTO ops.ingest_hours (tenant_id, hour, points) VALUES (%s, %s, 180)", (tenant, HOUR))
        cur.execute("INSERT INTO ops.rollup_watermarks (tenant_id, hour, version, points) SELECT tenant_id, hour, "
                    "version, points FROM ops.ingest_hours WHERE tenant_id = %s", (tenant,))


@pytest.fixture
def seeded_homes(two_homes: tuple[Tenant, Tenant], stack_env: dict[str, str]) -> Iterator[tuple[str, str]]:
    """Two homes with the same day seeded: a home's analyst must see its own rows only."""
    names = (two_homes[0].name, two_homes[1].name)
    for name in names:
        _seed(stack_env["HATS_PG_DSN"], stack_env["HATS_DAGSTER_DSN"], name)
    yield names
    with psycopg.connect(stack_env["HATS_PG_DSN"]) as conn:
        for relation in SEEDED:
            conn.execute(f"DELETE FROM {relation} WHERE tenant_id = ANY(%s)", (list(names),))


def _home_analyst(profile: Profile, stack_env: dict[str, str], tenant: str) -> str:
    password = registry_for(profile, stack_env).secrets.read(tenant, tenant_secrets.PG_ANALYST)
    assert password is not None, f"no analyst password for {tenant}"
    return postgres.dsn(profile, analyst_role_name(tenant), password)


def _run(dsn: str, text: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(text).fetchall()


def test_every_sql_panel_runs_as_the_analysts_and_returns_seeded_rows(
        seeded_homes: tuple[str, str], profile: Profile, stack_env: dict[str, str]) -> None:
    mine, other = seeded_homes
    home_analyst = _home_analyst(profile, stack_env, mine)
    start = datetime.combine(DAY - timedelta(days=6), datetime.min.time(), UTC)
    end = datetime.now(UTC)
    sql_queries = [q for q in queries() if q.datasource == POSTGRES_UID]
    assert len(sql_queries) >= 5
    for dsn in (home_analyst, stack_env["HATS_ANALYST_DSN"]):
        for query in sql_queries:
            rows = _run(dsn, runnable_sql(query.text, start, end, [mine]))
            assert rows, f"no rows for {query}"
    # The home variable lists what the role may read: the home's analyst its home, the operator's both.
    [variable] = [q for q in sql_queries if q.panel == "$tenant"]
    assert _run(home_analyst, variable.text) == [(mine,)]
    assert {mine, other} <= {row[0] for row in _run(stack_env["HATS_ANALYST_DSN"], variable.text)}
    # Asked for the other home, the home's analyst gets nothing from any panel (row-level security).
    for query in sql_queries:
        if query.panel != "$tenant":
            assert _run(home_analyst, runnable_sql(query.text, start, end, [other])) == [], str(query)


def test_a_panel_on_a_relation_the_analyst_cannot_read_fails(seeded_homes: tuple[str, str], profile: Profile,
                                                             stack_env: dict[str, str]) -> None:
    """What the test above would report for a panel reading ops.* (the analyst reads `analytics` only)."""
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        _run(_home_analyst(profile, stack_env, seeded_homes[0]),
             runnable_sql("SELECT count(*) FROM ops.dead_letters WHERE $__timeFilter(received_at)",
                          datetime.now(UTC) - timedelta(days=1), datetime.now(UTC), [seeded_homes[0]]))
