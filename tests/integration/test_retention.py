"""Retention on the real stores: exactly the expired partitions and ops rows go, the audit says so,
a dry run plans exactly what the real run then does, and raw retention is extended — with a failing
check — while a raw hour near the boundary is not rolled up, then returns to the home's 30 days (its tier,
core.tenants.raw_days)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import psycopg
import pytest

from hats_assets.defs.retention.assets import CHECK_NAME, RetentionSettings, retention
from hats_assets.defs.retention.plan import months_before
from hats_assets.defs.warehouse.tables import month_partition
from tests.conftest import Tenant
from tests.homeassistant import asset_resources

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
EXPIRED_MONTH = months_before(NOW, 26)  # wholly before the 24-month cutoff
KEPT_MONTH = months_before(NOW, 23)
HOUR = timedelta(hours=1)


def run(tenant: Tenant, dry_run: bool, as_of: datetime | None = None) -> dg.ExecuteInProcessResult:
    resources = {**asset_resources(tenant), "retention_settings": RetentionSettings()}
    config = {"dry_run": dry_run, "as_of": as_of.isoformat() if as_of else None}
    return dg.materialize([retention], resources=resources, run_config={"ops": {"retention": {"config": config}}})


def unverified(check: dg.AssetCheckEvaluation, tenant: Tenant) -> Any:
    """The check's unverified raw hours of one home (it lists them per home)."""
    value: Any = check.metadata["unverified_hours"].value
    return value[tenant.name]


def audit(tenant: Tenant, run_id: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(tenant.env["HATS_PG_DSN"]) as conn:
        return conn.execute("SELECT store, action, target, range_start, range_end, affected, detail, dry_run "
                            "FROM ops.retention_audit WHERE run_id = %s ORDER BY id", (run_id,)).fetchall()


def raw_policy(tenant: Tenant) -> str:
    [series] = tenant.influx(f'SHOW RETENTION POLICIES ON "{tenant.database}"')
    return next(str(row[1]) for row in series["values"] if row[0] == "raw")


@pytest.fixture
def seeded(tenant: Tenant) -> Iterator[dict[str, Any]]:
    """Warehouse partitions on both sides of the cutoff, old and recent ops rows, and raw hours: one
    verified and recent, one old and purged with its raw data, one near the boundary NOT rolled up."""
    marker = f"retention-test-{tenant.name}"
    lagging = (NOW - timedelta(days=29, hours=12)).replace(minute=0, second=0, microsecond=0)
    drop_test_months(tenant)  # no other test writes months this old; a crashed run may have left them
    with psycopg.connect(tenant.env["HATS_DAGSTER_DSN"], autocommit=True) as conn:
        for month in (EXPIRED_MONTH, KEPT_MONTH):
            ddl, _ = month_partition("hourly_rollup", month)
            conn.execute(ddl)
            for i in range(3 if month == EXPIRED_MONTH else 2):
                conn.execute("INSERT INTO analytics.hourly_rollup (tenant_id, entity_id, quantity, kind, hour, count) "
                             "VALUES (%s, %s, 'temperature', 'gauge', %s, 1)",
                             (tenant.name, f"sensor.r{i}", month + timedelta(hours=i)))
    with psycopg.connect(tenant.env["HATS_PG_DSN"], autocommit=True) as conn:  # as the worker would
        conn.execute("INSERT INTO ops.dead_letters (received_at, tenant_id, topic, payload, reason) VALUES "
                     "(%s, %s, %s, '', 'invalid_json'), (%s, %s, %s, '', 'invalid_json')",
                     (months_before(NOW, 13), tenant.name, marker, NOW - timedelta(days=300), tenant.name, marker))
        conn.execute("INSERT INTO ops.retention_audit (executed_at, store, action, target, detail) VALUES "
                     "(%s, 'postgresql', 'test', %s, 'old'), (%s, 'postgresql', 'test', %s, 'recent')",
                     (months_before(NOW, 14), marker, NOW - timedelta(days=10), marker))
        hours = {"old": (NOW - timedelta(days=45)).replace(minute=0, second=0, microsecond=0),
                 "recent": (NOW - timedelta(days=2)).replace(minute=0, second=0, microsecond=0),
                 "lagging": lagging}
        for name, hour in hours.items():
            version = conn.execute("INSERT INTO ops.ingest_hours (tenant_id, hour, points) VALUES (%s, %s, 10) "
                                   "RETURNING version", (tenant.name, hour)).fetchone()
            assert version is not None
            if name != "lagging":
                conn.execute("INSERT INTO ops.rollup_watermarks (tenant_id, hour, version, points) "
                             "VALUES (%s, %s, %s, 10)", (tenant.name, hour, version[0]))
    yield {"marker": marker, "hours": hours}
    drop_test_months(tenant)


def drop_test_months(tenant: Tenant) -> None:
    with psycopg.connect(tenant.env["HATS_PG_DSN"], autocommit=True) as conn:
        for month in (EXPIRED_MONTH, KEPT_MONTH):
            conn.execute(f"DROP TABLE IF EXISTS analytics.hourly_rollup_p{month:%Y_%m}")


def state(tenant: Tenant, marker: str) -> dict[str, Any]:
    with psycopg.connect(tenant.env["HATS_PG_DSN"]) as conn:
        partitions = {row[0] for row in conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'analytics.hourly_rollup'::regclass").fetchall()}
        return {
            "expired_partition": f"hourly_rollup_p{EXPIRED_MONTH:%Y_%m}" in partitions,
            "kept_rows": conn.execute(f"SELECT count(*) FROM analytics.hourly_rollup_p{KEPT_MONTH:%Y_%m}").fetchone(),
            "dead_letters": conn.execute("SELECT count(*) FROM ops.dead_letters WHERE topic = %s",
                                         (marker,)).fetchone(),
            "audit": conn.execute("SELECT detail FROM ops.retention_audit WHERE target = %s ORDER BY 1",
                                  (marker,)).fetchall(),
            "ingest_hours": conn.execute("SELECT count(*) FROM ops.ingest_hours WHERE tenant_id = %s",
                                         (tenant.name,)).fetchone(),
            "raw": raw_policy(tenant),
        }


def test_dry_run_plans_exactly_what_retention_then_does(tenant: Tenant, seeded: dict[str, Any]) -> None:
    marker = seeded["marker"]
    before = state(tenant, marker)
    assert before == {"expired_partition": True, "kept_rows": (2,), "dead_letters": (2,),
                      "audit": [("old",), ("recent",)], "ingest_hours": (3,), "raw": "720h0m0s"}

    as_of = datetime.now(UTC)  # the same instant for both, so the plans can be compared exactly
    planned = run(tenant, dry_run=True, as_of=as_of)
    assert state(tenant, marker) == before  # a dry run changes nothing
    plan = audit(tenant, planned.run_id)
    assert plan
    assert all(row[-1] for row in plan)

    done = run(tenant, dry_run=False, as_of=as_of)
    actions = audit(tenant, done.run_id)
    assert [row[:-1] for row in actions] == [row[:-1] for row in plan]
    assert not any(row[-1] for row in actions)

    by_target = {row[2]: row for row in actions}
    assert by_target[f"analytics.hourly_rollup_p{EXPIRED_MONTH:%Y_%m}"][1:6] == (
        "drop_partition", f"analytics.hourly_rollup_p{EXPIRED_MONTH:%Y_%m}", EXPIRED_MONTH,
        months_before(EXPIRED_MONTH, -1), 3)
    assert f"analytics.hourly_rollup_p{KEPT_MONTH:%Y_%m}" not in by_target
    assert by_target["ops.dead_letters"][5] >= 1
    assert by_target["ops.retention_audit"][5] >= 1
    assert by_target[f"ops.ingest_hours ({tenant.name})"][5] == 1  # the home's own rows, by its raw days
    assert by_target[f"ops.rollup_watermarks ({tenant.name})"][5] == 1
    raw_action = by_target[f"{tenant.database}.raw"]
    assert "extended beyond the home's 30 d" in raw_action[6]

    after = state(tenant, marker)
    lagging_day = seeded["hours"]["lagging"].replace(hour=0)
    raw_hours = int(after["raw"].split("h")[0])
    assert NOW + timedelta(hours=30) - timedelta(hours=raw_hours) <= lagging_day  # its shard group survives
    assert after == {"expired_partition": False, "kept_rows": (2,), "dead_letters": (1,),
                     "audit": [("recent",)], "ingest_hours": (2,), "raw": after["raw"]}
    [check] = done.get_asset_check_evaluations()
    assert (check.check_name, check.passed) == (CHECK_NAME, False)
    assert unverified(check, tenant) == [f"{seeded['hours']['lagging']:%Y-%m-%d-%H:00}"]

    # Once the lagging hour is rolled up, raw retention returns to the home's 30 days and the
    # check passes.
    with psycopg.connect(tenant.env["HATS_DAGSTER_DSN"], autocommit=True) as conn:
        conn.execute("INSERT INTO ops.rollup_watermarks (tenant_id, hour, version, points) "
                     "SELECT tenant_id, hour, version, points FROM ops.ingest_hours WHERE tenant_id = %s AND hour = %s",
                     (tenant.name, seeded["hours"]["lagging"]))
    caught_up = run(tenant, dry_run=False)
    assert state(tenant, marker)["raw"] == "720h0m0s"
    [check] = caught_up.get_asset_check_evaluations()
    assert check.passed

    # A rolled-up hour whose latest blocking data-quality result failed is not verified either: it will
    # be re-rolled from its raw data, so that raw data is kept; a passing re-check releases it.
    failed_hour = seeded["hours"]["lagging"] + HOUR
    with psycopg.connect(tenant.env["HATS_DAGSTER_DSN"], autocommit=True) as conn:
        conn.execute("INSERT INTO ops.dq_results (tenant_id, asset, check_name, window_start, window_end, passed, "
                     "severity) VALUES (%s, 'rollup_1h', 'plausible_ranges', %s, %s, false, 'ERROR')",
                     (tenant.name, failed_hour, failed_hour + HOUR))
    blocked = run(tenant, dry_run=False)
    [check] = blocked.get_asset_check_evaluations()
    assert unverified(check, tenant) == [f"{failed_hour:%Y-%m-%d-%H:00}"]
    assert state(tenant, marker)["raw"] != "720h0m0s"
    with psycopg.connect(tenant.env["HATS_DAGSTER_DSN"], autocommit=True) as conn:
        conn.execute("INSERT INTO ops.dq_results (tenant_id, asset, check_name, window_start, window_end, passed, "
                     "severity) VALUES (%s, 'rollup_1h', 'plausible_ranges', %s, %s, true, 'ERROR')",
                     (tenant.name, failed_hour, failed_hour + HOUR))
    run(tenant, dry_run=False)
    assert state(tenant, marker)["raw"] == "720h0m0s"
    assert "(the home's tier)" in {row[2]: row for row in audit(tenant, caught_up.run_id)}[f"{tenant.database}.raw"][6]
