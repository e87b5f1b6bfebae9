"""InfluxDB's privilege findings of issue 12, each proved closed on the real InfluxDB 1.6 of the test stack:
the action that worked before is tried and must now fail."""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from devstack import influxdb, stack
from devstack.procs import port_open
from devstack.profile import Profile
from ingest_worker.tls import client_context
from tenancy import influx as tenant_influx
from tests.conftest import Tenant, wait_for

pytestmark = pytest.mark.integration


def _admin(env: dict[str, str]) -> tenant_influx.InfluxAdmin:
    return tenant_influx.InfluxAdmin(env["HATS_INFLUX_URL"], env["HATS_INFLUX_ADMIN_USERNAME"],
                                     env["HATS_INFLUX_ADMIN_PASSWORD"],
                                     verify=client_context(env["HATS_INFLUX_CA_FILE"]))


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
                         timeout=10, verify=client_context(tenant.env["HATS_INFLUX_CA_FILE"]))
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


def _socket(profile: Profile) -> httpx.Client:
    """InfluxDB itself, on its unix socket (what only the write gate process reaches)."""
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(influxdb.socket_path(profile))),
                        base_url="http://localhost", timeout=10)


@pytest.mark.parametrize("path", ["/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/cmdline"])
def test_influxdb_serves_no_pprof(profile: Profile, path: str) -> None:
    """InfluxDB 1.6 serves /debug/pprof to anyone, auth on or not, unless `pprof-enabled = false`."""
    with _socket(profile) as influx:
        response = influx.get(path)
    assert response.status_code == 404, response.text[:200]


@pytest.mark.parametrize("path", ["/debug/vars", "/debug/requests", "/debug/pprof/", "/debug", "/debug/vars/x",
                                  "/%64ebug/vars", "/ping/../debug/vars"])
def test_no_debug_endpoint_answers_over_tcp(stack_env: dict[str, str], profile: Profile, path: str) -> None:
    """1.6 has no option for /debug/vars and /debug/requests (memory, command line, every user's request
    counts): on its socket they still answer, over TCP (the front, HATS_INFLUX_URL) they are refused, with
    credentials or without."""
    admin = (stack_env["HATS_INFLUX_ADMIN_USERNAME"], stack_env["HATS_INFLUX_ADMIN_PASSWORD"])
    for auth in (None, admin):
        response = httpx.get(f"{stack_env['HATS_INFLUX_URL']}{path}", auth=auth, timeout=10,
                             verify=client_context(stack_env["HATS_INFLUX_CA_FILE"]))
        assert response.status_code in (400, 403), response.text[:200]
        assert "memstats" not in response.text
    with _socket(profile) as influx:
        assert "memstats" in influx.get("/debug/vars").text  # the finding: InfluxDB itself still serves it


def test_the_front_forwards_influxdbs_own_accounts(stack_env: dict[str, str]) -> None:
    """Everything but /debug goes through as it is: InfluxDB authenticates, answers and streams."""
    url = f"{stack_env['HATS_INFLUX_URL']}/query"
    verify = client_context(stack_env["HATS_INFLUX_CA_FILE"])
    assert httpx.post(url, data={"q": "SHOW DATABASES"}, timeout=10, verify=verify).status_code == 401
    admin = (stack_env["HATS_INFLUX_ADMIN_USERNAME"], stack_env["HATS_INFLUX_ADMIN_PASSWORD"])
    shown = httpx.post(url, data={"q": "SHOW DATABASES"}, auth=admin, timeout=10, verify=verify)
    assert shown.status_code == 200
    assert ["hats_home"] in shown.json()["results"][0]["series"][0]["values"]
    chunked = httpx.get(url, params={"q": "SHOW DATABASES", "chunked": "true"}, auth=admin, timeout=10,
                        verify=verify)
    assert chunked.status_code == 200
    assert "hats_home" in chunked.text


def test_no_backup_without_the_backup_tools_namespace(profile: Profile, tmp_path: Path) -> None:
    """1.6 cannot switch the backup RPC off, and it answers anyone: a portable backup of the meta store (its
    users' password hashes) was taken with no credentials. Its port now exists only in InfluxDB's network
    namespace: from the host a backup fails; `influxdb.backup_tool` (the backup window) runs it there."""
    address = influxdb.rpc_address(profile)
    assert not port_open(profile.ports["influx_rpc"])
    log = tmp_path / "stolen.log"
    with log.open("wb") as out:
        # influxd backup retries a refused connection for minutes: watch it being refused, then stop it.
        thief = subprocess.Popen(["influxd", "backup", "-portable", "-host", address, str(tmp_path / "stolen")],
                                 stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "connection refused" in log.read_text() or thief.poll() is not None,
                 "the backup from the host to be refused")
    finally:
        thief.kill()
        thief.wait(timeout=30)
    assert f"dial tcp {address}: connect: connection refused" in log.read_text()
    assert not list(tmp_path.glob("stolen/*.meta"))
    assert not list(tmp_path.glob("stolen/*.manifest"))
    taken = influxdb.backup_tool(profile, ["backup", "-portable", "-host", address, str(tmp_path / "window")])
    assert taken.returncode == 0, taken.stderr
    assert list((tmp_path / "window").glob("*.meta"))
