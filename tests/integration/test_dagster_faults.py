"""The Dagster side when a store vanishes in the middle of a step, on the real stack (``tests/faults.py``
stops the test stack's own InfluxDB or PostgreSQL at a counted point of the step, not after a sleep).

Each test runs two homes through a clean run and two other homes with the same input through the faulty
one, and compares what the faulty homes end with against the clean homes: every rollup point, watermark,
data-quality row, warehouse row and retention policy (tenant ids and load times aside). Each failure's
headline names the store, its address, what was interrupted and what to do; a store outage is retried with
backoff (the test profile: ``HATS_DAGSTER_STEP_RETRIES=2`` from 0.5 s).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import httpx
import psycopg
import pytest

from devstack import influxdb, postgres
from devstack.profile import Profile
from hats_assets.defs.common.faults import DELAY_ENV, RETRIES_ENV, STEP_RETRY_POLICY, longest_wait
from hats_assets.defs.common.resources import PostgresResource
from hats_assets.defs.common.tenants import TenantSelection
from hats_assets.defs.quality.results import failed_hours
from hats_assets.defs.retention.assets import WAREHOUSE_TABLES, retention
from hats_assets.defs.rollups.assets import ROLLUP_MEASUREMENTS, rollups
from hats_assets.defs.warehouse.assets import daily_rollup, hourly_rollup, local_daily_rollup
from hats_assets.defs.warehouse.states import state_hourly, state_local_daily
from ingest_worker.tls import client_context
from tests.conftest import Tenant, new_tenant, remove_tenant
from tests.faults import FAULTS, INFLUXDB, POSTGRESQL, Fault, FaultyInfluxDB, FaultyInfluxRetention, FaultyPostgres
from tests.homeassistant import asset_resources
from tests.runs import failures

pytestmark = pytest.mark.integration

HOUR = (datetime.now(UTC) - timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)
PARTITION = HOUR.strftime("%Y-%m-%d-%H:%M")
DAY = HOUR.strftime("%Y-%m-%d")
WAREHOUSE = [hourly_rollup, daily_rollup, local_daily_rollup, state_hourly, state_local_daily]
Pair = tuple[Tenant, Tenant]
# The most a run here may wait between attempts in all (the test profile's policy waits at most 3 s).
RETRY_WAIT_BUDGET_S = 30.0


@pytest.fixture
def pairs(profile: Profile, stack_env: dict[str, str], secrets: dict[str, str]) -> Iterator[tuple[Pair, Pair]]:
    """Two homes for the clean run and two for the faulty one (each pair in id order: the order a run
    serves them); both stores are running again after the test, whatever it stopped."""
    made = sorted((new_tenant(profile, stack_env, secrets) for _ in range(4)), key=lambda t: t.name)
    try:
        yield (made[0], made[2]), (made[1], made[3])
    finally:
        influxdb.start(profile, secrets)
        postgres.start(profile, secrets)
        for tenant in made:
            remove_tenant(tenant.name)


def seed(tenant: Tenant) -> None:
    """An hour of two sensors and a door, and the worker's ops.ingest_hours row for it."""
    at = [int((HOUR + timedelta(minutes=5 * i)).timestamp() * 1e9) for i in range(12)]
    lines = [*(f"temperature,entity_id=sensor.room,source=t value={20 + i / 10} {t}" for i, t in enumerate(at)),
             *(f"humidity,entity_id=sensor.bath,source=t value={50 + i} {t}" for i, t in enumerate(at)),
             *(f"binary,entity_id=binary_sensor.door,source=t value={float(i % 2)} {t}" for i, t in enumerate(at))]
    response = httpx.post(f"{tenant.env['HATS_INFLUX_WRITE_URL']}/write", params={"db": tenant.database, "rp": "raw"},
                          content="\n".join(lines),
                          auth=(tenant.env["HATS_INFLUX_USERNAME"], tenant.env["HATS_INFLUX_PASSWORD"]),
                          verify=client_context(tenant.env["HATS_INFLUX_CA_FILE"]))
    assert response.status_code == 204, response.text
    with psycopg.connect(tenant.env["HATS_PG_DSN"], autocommit=True) as conn:
        conn.execute("INSERT INTO ops.ingest_hours (tenant_id, hour, points) VALUES (%s, %s, %s)",
                     (tenant.name, HOUR, len(lines)))


def resources(pair: Pair, fault: Fault, name: str) -> dict[str, object]:
    """The code location's resources for these two homes, through the fault ``name``."""
    FAULTS[name] = fault
    env = pair[0].env
    return {
        **asset_resources(pair[0]),
        "tenant_selection": TenantSelection(tenants=[t.name for t in pair]),
        "influxdb": FaultyInfluxDB(url=env["HATS_INFLUX_URL"], username=env["HATS_INFLUX_DAGSTER_USERNAME"],
                                   password=env["HATS_INFLUX_DAGSTER_PASSWORD"], ca_file=env["HATS_INFLUX_CA_FILE"],
                                   fault=name),
        "influxdb_retention": FaultyInfluxRetention(url=env["HATS_INFLUX_RETENTION_URL"],
                                                    username=env["HATS_INFLUX_RETENTION_USERNAME"],
                                                    password=env["HATS_INFLUX_RETENTION_PASSWORD"],
                                                    ca_file=env["HATS_INFLUX_CA_FILE"], fault=name),
        "postgres": FaultyPostgres(dsn=env["HATS_DAGSTER_DSN"], fault=name),
    }


def rollup_points(tenant: Tenant) -> list[Any]:
    out = []
    for name in ROLLUP_MEASUREMENTS:
        for series in tenant.influx(f'SELECT * FROM "rollup"."{name}" GROUP BY *'):
            out.append((name, sorted(series.get("tags", {}).items()), series["values"]))
    return sorted(out, key=json.dumps)


def rows(tenant: Tenant, query: str) -> list[Any]:
    with psycopg.connect(tenant.env["HATS_PG_DSN"]) as conn:
        return sorted(json.dumps(r[0], sort_keys=True, default=str)
                       for r in conn.execute(query, {"tenant": tenant.name}).fetchall())


def ops_state(tenant: Tenant) -> dict[str, list[Any]]:
    """A home's watermarks (the version: whether it is the hour's ingest version) and data-quality rows."""
    return {
        "watermarks": rows(tenant, "SELECT jsonb_build_object('hour', w.hour, 'points', w.points, 'current', "
                                   "w.version = i.version) FROM ops.rollup_watermarks w LEFT JOIN ops.ingest_hours i "
                                   "USING (tenant_id, hour) WHERE w.tenant_id = %(tenant)s"),
        "dq_results": rows(tenant, "SELECT to_jsonb(r) - 'id' - 'run_id' - 'tenant_id' - 'checked_at' "
                                   "FROM ops.dq_results r WHERE tenant_id = %(tenant)s"),
    }


def warehouse_state(tenant: Tenant) -> dict[str, list[Any]]:
    return {table: rows(tenant, f"SELECT to_jsonb(x) - 'tenant_id' - 'loaded_at' FROM analytics.{table} x "
                                "WHERE tenant_id = %(tenant)s") for table in WAREHOUSE_TABLES}


def policies(tenant: Tenant) -> dict[str, str]:
    [series] = tenant.influx(f'SHOW RETENTION POLICIES ON "{tenant.database}"')
    return {str(row[0]): str(row[1]) for row in series["values"]}


def retry_waits_fit() -> None:
    """Before a run whose store stays down: its steps wait out every retry, so the policy must be the test
    profile's, or the test's timeout ends the run instead and the run reports no step failure."""
    wait = longest_wait(STEP_RETRY_POLICY)
    assert wait <= RETRY_WAIT_BUDGET_S, (
        f"the steps' retry policy waits up to {wait:.0f} s for a store that stays down ({RETRIES_ENV}="
        f"{STEP_RETRY_POLICY.max_retries}, {DELAY_ENV}={STEP_RETRY_POLICY.delay:g}): not the test profile's "
        f"(devstack/envfile.py TEST_STEP_RETRIES, which tests/conftest.py sets before hats_assets loads)")


def messages(error: Any) -> str:
    """A serialised error's message with its causes' (the Failure's description is one of them)."""
    out = []
    while error is not None:
        out.append(error.message)
        error = error.cause
    return "\n".join(out)


def retries(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """The message of every attempt Dagster scheduled for a retry."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY).records
    return [messages(r.event_log_entry.get_dagster_event().event_specific_data.error)  # type: ignore[union-attr]
            for r in records]


def test_influxdb_gone_mid_rollup_write_is_retried_and_leaves_what_a_clean_run_leaves(
        pairs: tuple[Pair, Pair], profile: Profile, secrets: dict[str, str]) -> None:
    clean, faulty = pairs
    for tenant in (*clean, *faulty):
        seed(tenant)
    counting = Fault(profile, secrets)
    assert dg.materialize([rollups], partition_key=PARTITION, resources=resources(clean, counting, "count")).success
    assert counting.writes == 4  # per home: the window's delete, then its lines

    between: dict[str, Any] = {}
    first = faulty[0]

    def look() -> None:  # InfluxDB is back, the retry has not read or written anything yet
        dsn = PostgresResource(dsn=first.env["HATS_DAGSTER_DSN"])
        between["held_out"] = failed_hours(dsn, first.name, HOUR, HOUR + timedelta(hours=1))
        between["ops"] = ops_state(first)

    # Stopped just before the first home's lines are written: its window is already deleted.
    fault = Fault(profile, secrets, INFLUXDB, stop_at=2, recover=look)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([rollups], partition_key=PARTITION, instance=instance,
                            resources=resources(faulty, fault, "rollup"))
    assert result.success  # a transient outage, shorter than the retries: one run
    [failure] = retries(instance, result.run_id)
    address = faulty[0].env["HATS_INFLUX_URL"]
    assert (f"InfluxDB at {address} refused the connection during the rollup (rollup_1m, rollup_5m, rollup_1h, "
            f"rollup_states_1h): home {first.name}, hours {PARTITION[:13]}:00") in failure
    assert "retried automatically in about" in failure
    assert "check `hats status`" in failure
    # Between the failure and the retry, the half-written hour was unmarked and held out of the warehouse.
    assert between["ops"]["watermarks"] == []
    assert [(hour, check) for hour, check, _ in between["held_out"]] == [(HOUR, "rollup_stored")]

    for done, reference in zip(faulty, clean, strict=True):
        assert rollup_points(done) == rollup_points(reference)
        assert rollup_points(done)  # something was rolled up at all
        assert ops_state(done) == ops_state(reference)


def test_postgresql_gone_mid_rollup_is_retried_and_leaves_what_a_clean_run_leaves(
        pairs: tuple[Pair, Pair], profile: Profile, secrets: dict[str, str]) -> None:
    clean, faulty = pairs
    for tenant in (*clean, *faulty):
        seed(tenant)
    counting = Fault(profile, secrets)
    assert dg.materialize([rollups], partition_key=PARTITION, resources=resources(clean, counting, "count")).success
    # Stopped after the middle of the step's transactions (a home's marks, reads or watermarks), back at the retry.
    fault = Fault(profile, secrets, POSTGRESQL, stop_at=counting.blocks // 2)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([rollups], partition_key=PARTITION, instance=instance,
                            resources=resources(faulty, fault, "rollup-pg"))
    assert fault.tripped
    assert result.success
    [failure] = retries(instance, result.run_id)
    assert f"PostgreSQL at 127.0.0.1:{profile.ports['pg']}/hats " in failure
    assert " during the rollup (rollup_1m, rollup_5m, rollup_1h, rollup_states_1h): " in failure
    for done, reference in zip(faulty, clean, strict=True):
        assert rollup_points(done) == rollup_points(reference)
        assert ops_state(done) == ops_state(reference)


def test_a_rollup_re_run_interrupted_between_delete_and_write_leaves_no_watermark_on_the_deleted_hour(
        two_homes: Pair, profile: Profile, secrets: dict[str, str]) -> None:
    """The root of "a watermark before its data": an hour rolled up once is rolled up again (a manual
    re-run); the run is interrupted after the window was deleted and before its lines went out, where no
    error handler runs. The hour must not keep the watermark of the data just deleted."""
    for tenant in two_homes:
        seed(tenant)
    assert dg.materialize([rollups], partition_key=PARTITION,
                          resources=resources(two_homes, Fault(profile, secrets), "first")).success
    done = [(rollup_points(t), ops_state(t)["watermarks"]) for t in two_homes]
    first = min(two_homes, key=lambda t: t.name)  # a run serves its homes in id order
    between: dict[str, Any] = {}

    def look() -> None:
        between["watermarks"] = ops_state(first)["watermarks"]
        between["points"] = rollup_points(first)
        between["held_out"] = failed_hours(PostgresResource(dsn=first.env["HATS_DAGSTER_DSN"]), first.name, HOUR,
                                           HOUR + timedelta(hours=1))

    fault = Fault(profile, secrets, INFLUXDB, stop_at=2, recover=look, crash=True)
    assert dg.materialize([rollups], partition_key=PARTITION, resources=resources(two_homes, fault, "re-run")).success
    assert fault.tripped
    assert between["points"] == []  # the window was deleted, none of its lines written
    assert between["watermarks"] == []  # ... and the hour was not left looking rolled up
    assert [(hour, check) for hour, check, _ in between["held_out"]] == [(HOUR, "rollup_stored")]
    assert [(rollup_points(t), ops_state(t)["watermarks"]) for t in two_homes] == done
    assert failed_hours(PostgresResource(dsn=first.env["HATS_DAGSTER_DSN"]), first.name, HOUR,
                        HOUR + timedelta(hours=1)) == []


def test_postgresql_gone_mid_warehouse_load_fails_cleanly_and_the_rerun_leaves_a_clean_runs_rows(
        pairs: tuple[Pair, Pair], profile: Profile, secrets: dict[str, str]) -> None:
    clean, faulty = pairs
    for pair in pairs:
        for tenant in pair:
            seed(tenant)
        assert dg.materialize([rollups], partition_key=PARTITION,
                              resources=resources(pair, Fault(profile, secrets), "setup")).success
    counting = Fault(profile, secrets)
    assert dg.materialize(WAREHOUSE, partition_key=DAY, resources=resources(clean, counting, "count")).success
    assert counting.blocks > 4

    # Down in the middle of the loads and for longer than the retries: the run fails, and says what to do.
    retry_waits_fit()
    fault = Fault(profile, secrets, POSTGRESQL, stop_at=counting.blocks // 2, comes_back=False)
    instance = dg.DagsterInstance.ephemeral()
    try:
        failed = dg.materialize(WAREHOUSE, partition_key=DAY, instance=instance, raise_on_error=False,
                                resources=resources(faulty, fault, "warehouse"))
    finally:
        postgres.start(profile, secrets)
    assert fault.tripped
    assert not failed.success
    steps = failed.get_step_failure_events()  # the step it stopped in, and those after it (PostgreSQL stays down)
    assert steps, failures(failed)
    assert len(retries(instance, failed.run_id)) == STEP_RETRY_POLICY.max_retries * len(steps)
    pg = f"127.0.0.1:{profile.ports['pg']}/hats"
    for step in steps:
        headline = step.step_failure_data.user_failure_data.description  # type: ignore[union-attr]
        assert headline is not None
        assert headline.startswith(f"PostgreSQL at {pg} ")
        assert f" during the warehouse load of analytics.{step.step_key}: " in headline
        assert f"not retried again: {STEP_RETRY_POLICY.max_retries + 1} attempts failed" in headline
        assert "check `hats status`" in headline
        assert "Traceback" not in headline
    # The attempt PostgreSQL vanished under names the home it was loading (later attempts fail before any).
    stopped_in = [message for message in retries(instance, failed.run_id) if ": home t" in message]
    assert len(stopped_in) == 1
    assert "rolled back" in stopped_in[0]

    assert dg.materialize(WAREHOUSE, partition_key=DAY,
                          resources=resources(faulty, Fault(profile, secrets), "rerun")).success
    for done, reference in zip(faulty, clean, strict=True):
        assert warehouse_state(done) == warehouse_state(reference)
        assert warehouse_state(done)["hourly_rollup"], f"nothing loaded for {done.name}: {ops_state(done)}"
        assert ops_state(done) == ops_state(reference)


def set_raw_days(tenant: Tenant, days: int) -> None:
    with psycopg.connect(tenant.env["HATS_PG_DSN"], autocommit=True) as conn:
        conn.execute("UPDATE core.tenants SET raw_days = %s WHERE tenant_id = %s", (days, tenant.name))


def audit(tenant: Tenant) -> list[tuple[Any, ...]]:
    with psycopg.connect(tenant.env["HATS_PG_DSN"]) as conn:
        return conn.execute("SELECT action, detail FROM ops.retention_audit WHERE target LIKE %s ORDER BY id",
                            (f"{tenant.database}.%",)).fetchall()


RETENTION_CONFIG = {"ops": {"retention": {"config": {"dry_run": False}}}}


def test_retention_after_influxdb_gone_mid_run_acts_on_the_state_at_the_retry(
        pairs: tuple[Pair, Pair], profile: Profile, secrets: dict[str, str]) -> None:
    clean, faulty = pairs
    for tenant in (*clean, *faulty):
        set_raw_days(tenant, 40)
    counting = Fault(profile, secrets)
    assert dg.materialize([retention], run_config=RETENTION_CONFIG,
                          resources=resources(clean, counting, "count")).success
    assert counting.writes == 2  # one ALTER RETENTION POLICY per home

    first, second = faulty

    def change() -> None:  # after the first home acted and the second failed, before the retry plans
        set_raw_days(first, 50)
        set_raw_days(second, 45)

    # InfluxDB stopped just before the second home's ALTER: the first home is done and audited.
    fault = Fault(profile, secrets, INFLUXDB, stop_at=2, recover=change)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([retention], run_config=RETENTION_CONFIG, instance=instance,
                            resources=resources(faulty, fault, "retention"))
    assert result.success
    [failure] = retries(instance, result.run_id)
    assert f"refused the connection during retention: home {second.name}" in failure
    # The retry planned from the new tiers: the first home's plan, read while the change landed, was
    # checked against a fresh read before acting and computed again (50 d, not the 40 d it already had).
    assert policies(first)["raw"] == "1200h0m0s"
    assert policies(second)["raw"] == "1080h0m0s"
    assert audit(first) == [("set_retention_policy", "duration 720h → 960h (the home's tier)"),
                            ("set_retention_policy", "duration 960h → 1200h (the home's tier)")]
    assert audit(second) == [("set_retention_policy", "duration 720h → 1080h (the home's tier)")]  # never 960h

    set_raw_days(clean[0], 50)
    set_raw_days(clean[1], 45)
    assert dg.materialize([retention], run_config=RETENTION_CONFIG,
                          resources=resources(clean, Fault(profile, secrets), "reference")).success
    for done, reference in zip(faulty, clean, strict=True):
        assert policies(done) == policies(reference)
