"""InfluxDB's privilege findings of issue 12, each proved closed on the real InfluxDB 1.6 of the test stack:
the action that worked before is tried and must now fail."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from devstack import stack
from tenancy import influx as tenant_influx
from tests.conftest import Tenant

pytestmark = pytest.mark.integration


def _admin(env: dict[str, str]) -> tenant_influx.InfluxAdmin:
    return tenant_influx.InfluxAdmin(env["HATS_INFLUX_URL"], env["HATS_INFLUX_ADMIN_USERNAME"],
                                     env["HATS_INFLUX_ADMIN_PASSWORD"])


def test_a_home_database_has_no_autogen_policy_and_a_write_to_it_fails(tenant: Tenant) -> None:
    admin = _admin(tenant.env)
    try:
        policies = admin.retention_policies(tenant.database)
    finally:
        admin.close()
    assert set(policies) == {"raw", "rollup"}
    assert policies["raw"][1], "raw must stay the default policy"
    now = time.time_ns()
    refused = httpx.post(f"{tenant.env['HATS_INFLUX_URL']}/write",
                         params={"db": tenant.database, "rp": "autogen", "precision": "ns"},
                         content=f"autogen_probe value=1.0 {now}".encode(),
                         auth=(tenant.env["HATS_INFLUX_ADMIN_USERNAME"], tenant.env["HATS_INFLUX_ADMIN_PASSWORD"]),
                         timeout=10)
    # InfluxDB 1.6 answers a missing policy with a 500 (the error names it), not a 4xx.
    assert refused.status_code == 500, refused.text
    assert "retention policy not found: autogen" in refused.text
    assert tenant.influx("SELECT count(value) FROM autogen_probe") == []


def test_hats_up_drops_autogen_from_a_database_made_before(stack_env: dict[str, str]) -> None:
    """A hats database that still has the policy InfluxDB makes with it (one made before this change) loses it
    at the next `hats up`; a database that is not a home's is left alone."""
    suffix = uuid.uuid4().hex[:10]
    old, other = f"hats_old{suffix}", f"other{suffix}"
    admin = _admin(stack_env)
    try:
        for database in (old, other):
            admin.query(f"CREATE DATABASE {tenant_influx.ident(database)}")
        assert "autogen" in admin.retention_policies(old)
        stack.ensure_default_tenant(stack_env)
        assert "autogen" not in admin.retention_policies(old)
        assert "autogen" in admin.retention_policies(other)
    finally:
        for database in (old, other):
            admin.query(f"DROP DATABASE {tenant_influx.ident(database)}")
        admin.close()


@pytest.mark.parametrize("path", ["/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/cmdline"])
def test_influxdb_serves_no_pprof(stack_env: dict[str, str], path: str) -> None:
    """InfluxDB 1.6 serves /debug/pprof to anyone, auth on or not, unless `pprof-enabled = false`."""
    response = httpx.get(f"{stack_env['HATS_INFLUX_URL']}{path}", timeout=10)
    assert response.status_code == 404, response.text[:200]
