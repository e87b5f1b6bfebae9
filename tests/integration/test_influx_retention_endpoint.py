"""The write gate's retention endpoint on the real stack: the Dagster code location's only admin-level way into
InfluxDB. It alters a home's ``raw``/``rollup`` durations within bounds and lists shards; every other statement,
database, policy, duration and credential is refused, and InfluxDB is left as it was."""

from __future__ import annotations

import httpx
import pytest

from influx_gate.settings import GateSettings
from ingest_worker.tls import client_context
from tests.conftest import Tenant

pytestmark = pytest.mark.integration

MAX_HOURS = int(GateSettings.model_fields["retention_max_hours"].default)  # the stack's gate leaves it unset


def _endpoint(env: dict[str, str], statement: str, auth: tuple[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{env['HATS_INFLUX_RETENTION_URL']}/query", data={"q": statement}, timeout=30,
                      verify=client_context(env["HATS_INFLUX_CA_FILE"]),
                      auth=auth or (env["HATS_INFLUX_RETENTION_USERNAME"], env["HATS_INFLUX_RETENTION_PASSWORD"]))


def _policies(tenant: Tenant) -> dict[str, str]:
    return {row[0]: row[1] for series in tenant.influx(f'SHOW RETENTION POLICIES ON "{tenant.database}"')
            for row in series["values"]}


def _databases(tenant: Tenant) -> set[str]:
    return {row[0] for series in tenant.influx("SHOW DATABASES") for row in series["values"]}


def test_alters_a_homes_raw_and_rollup_durations_within_bounds(tenant: Tenant) -> None:
    before = _policies(tenant)
    for rp, hours in (("raw", 1000), ("rollup", MAX_HOURS), ("raw", 48)):
        answer = _endpoint(tenant.env, f'ALTER RETENTION POLICY "{rp}" ON "{tenant.database}" DURATION {hours}h')
        assert answer.status_code == 200, answer.text
        assert "error" not in answer.json()["results"][0]
        assert _policies(tenant)[rp] == f"{hours}h0m0s"
    assert set(_policies(tenant)) == set(before)


def test_answers_the_shard_listing_as_the_admin_sees_it(tenant: Tenant) -> None:
    env = tenant.env
    written = httpx.post(f"{env['HATS_INFLUX_WRITE_URL']}/write", params={"db": tenant.database, "rp": "raw"},
                         content="probe,entity_id=sensor.p value=1", timeout=30,
                         verify=client_context(env["HATS_INFLUX_CA_FILE"]),
                         auth=(env["HATS_INFLUX_USERNAME"], env["HATS_INFLUX_PASSWORD"]))
    assert written.status_code == 204, written.text
    for statement in ("SHOW SHARDS", "SHOW STATS FOR 'shard'"):
        answer = _endpoint(tenant.env, statement)
        assert answer.status_code == 200, answer.text
        mine = answer.json()["results"][0].get("series", [])
        assert [series["name"] for series in mine] == [series["name"] for series in tenant.influx(statement)]
        assert tenant.database in {str(value) for series in mine for row in series.get("values", [])
                                   for value in row} | {series.get("tags", {}).get("database") for series in mine}


@pytest.mark.parametrize("template", [
    'DROP DATABASE "{db}"',
    'DROP RETENTION POLICY "raw" ON "{db}"',
    'DELETE FROM /.*/',
    'DROP SERIES FROM /.*/',
    'ALTER RETENTION POLICY "autogen" ON "{db}" DURATION 24h',
    'ALTER RETENTION POLICY "raw" ON "_internal" DURATION 24h',
    'ALTER RETENTION POLICY "raw" ON "hats_no_such_home" DURATION 24h',
    'ALTER RETENTION POLICY "raw" ON "{db}" DURATION 0h',
    'ALTER RETENTION POLICY "raw" ON "{db}" DURATION {too_long}h',
    'ALTER RETENTION POLICY "raw" ON "{db}" DURATION INF',
    'ALTER RETENTION POLICY "raw" ON "{db}" DURATION 30d',
    'ALTER RETENTION POLICY "raw" ON "{db}" DURATION 24h DEFAULT',
    'ALTER RETENTION POLICY "raw" ON "{db}" DURATION 24h REPLICATION 1',
    'ALTER RETENTION POLICY "raw" ON "{db}" DURATION 24h; DROP DATABASE "{db}"',
    'ALTER RETENTION POLICY raw ON {db} DURATION 24h',
    'CREATE RETENTION POLICY "x" ON "{db}" DURATION 24h REPLICATION 1',
    "CREATE USER intruder WITH PASSWORD 'secret' WITH ALL PRIVILEGES",
    'GRANT ALL ON "{db}" TO "hats_dagster"',
    "SHOW USERS",
    'SHOW RETENTION POLICIES ON "{db}"',
    'SELECT * FROM "raw"./.*/',
    "SHOW SHARDS; SHOW USERS",
    "",
])
def test_refuses_every_other_statement_and_leaves_influxdb_as_it_was(tenant: Tenant, template: str) -> None:
    policies, databases = _policies(tenant), _databases(tenant)
    statement = template.format(db=tenant.database, too_long=MAX_HOURS + 1)
    answer = _endpoint(tenant.env, statement)
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.json()["error"]  # says why
    assert "secret" not in answer.text  # a refused statement is never echoed whole
    assert _policies(tenant) == policies
    assert _databases(tenant) == databases


def test_refuses_a_wrong_credential(tenant: Tenant) -> None:
    env = tenant.env
    policies = _policies(tenant)
    statement = f'ALTER RETENTION POLICY "raw" ON "{tenant.database}" DURATION 48h'
    for auth in ((env["HATS_INFLUX_RETENTION_USERNAME"], env["HATS_INFLUX_RETENTION_PASSWORD"] + "x"),
                 (env["HATS_INFLUX_USERNAME"], env["HATS_INFLUX_PASSWORD"]),  # the worker's, on the same port
                 (env["HATS_INFLUX_ADMIN_USERNAME"], env["HATS_INFLUX_ADMIN_PASSWORD"]),  # InfluxDB's own admin
                 (env["HATS_INFLUX_DAGSTER_USERNAME"], env["HATS_INFLUX_DAGSTER_PASSWORD"])):
        assert _endpoint(env, statement, auth).status_code == 401
    unauthenticated = httpx.post(f"{env['HATS_INFLUX_RETENTION_URL']}/query", data={"q": statement}, timeout=30,
        verify=client_context(env["HATS_INFLUX_CA_FILE"]))
    assert unauthenticated.status_code == 401
    in_the_url = httpx.post(f"{env['HATS_INFLUX_RETENTION_URL']}/query", timeout=30,
        verify=client_context(env["HATS_INFLUX_CA_FILE"]), data={"q": statement},
                            params={"u": env["HATS_INFLUX_RETENTION_USERNAME"],
                                    "p": env["HATS_INFLUX_RETENTION_PASSWORD"]})
    assert in_the_url.status_code == 401
    assert _policies(tenant) == policies


def test_the_code_locations_own_account_reads_the_policies_and_cannot_alter_them(tenant: Tenant) -> None:
    """Why the endpoint need not answer SHOW RETENTION POLICIES, and why it must answer ALTER."""
    env = tenant.env
    dagster = (env["HATS_INFLUX_DAGSTER_USERNAME"], env["HATS_INFLUX_DAGSTER_PASSWORD"])

    def query(statement: str) -> httpx.Response:
        return httpx.post(f"{env['HATS_INFLUX_URL']}/query", data={"q": statement}, auth=dagster, timeout=30,
        verify=client_context(env["HATS_INFLUX_CA_FILE"]))

    shown = query(f'SHOW RETENTION POLICIES ON "{tenant.database}"').json()["results"][0]
    assert {row[0]: row[1] for row in shown["series"][0]["values"]} == _policies(tenant)
    altered = query(f'ALTER RETENTION POLICY "raw" ON "{tenant.database}" DURATION 48h')
    assert altered.status_code == 403 or "error" in altered.json()["results"][0], altered.text
    assert _policies(tenant)["raw"] != "48h0m0s"
