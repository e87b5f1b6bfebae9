"""The partitions start on the first day any home has data, resolved when the code location loads.

Against the stack's PostgreSQL (shared by every test's homes, so the reference is computed from it): an
ingested hour, a rollup watermark or an import older than any other home's data moves the start back;
PostgreSQL unreachable fails naming the override. Then a real dagster-webserver serving
``workspace.yaml`` (no override): an import reaching before its partitions makes the import sensor reload
the code location through the webserver's GraphQL, and the older partitions appear.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import httpx
import psycopg
import pytest

from devstack.procs import free_port
from devstack.profile import PROJECT_ROOT
from hats_assets.definitions import defs
from hats_assets.defs.imports.reload import URL_ENV
from hats_assets.defs.imports.sensors import import_sensor
from hats_assets.partitions import (
    DSN_ENV,
    PARTITIONS_START_ENV,
    PartitionsStartError,
    first_data_day,
    partitions_start,
)
from tests.conftest import Tenant, wait_for
from tests.homeassistant import asset_resources

pytestmark = pytest.mark.integration

TODAY = datetime.now(UTC).date()
FIRST_KEYS_QUERY = """{ assetNodeOrError(assetKey: {path: ["local_daily_rollup"]}) {
  ... on AssetNode { partitionKeysByDimension { partitionKeys } } } }"""


def superuser(tenant: Tenant, statement: str, *params: object) -> None:
    with psycopg.connect(tenant.env["HATS_PG_DSN"], autocommit=True) as conn:
        conn.execute(statement, params)


def resolve(tenant: Tenant) -> date:
    return partitions_start({DSN_ENV: tenant.env["HATS_DAGSTER_DSN"]}, TODAY)


def earliest_of_every_home(tenant: Tenant, *own: datetime) -> date:
    """The reference: the first UTC day with data of any home on the (shared) stack, and ``own`` moments."""
    with psycopg.connect(tenant.env["HATS_PG_DSN"]) as conn:
        rows = conn.execute("SELECT min(hour) FROM ops.ingest_hours UNION ALL SELECT min(hour) FROM "
                            "ops.rollup_watermarks UNION ALL SELECT min(least(first_at, hours_from)) FROM "
                            "ops.imports").fetchall()
    moments = [row[0] for row in rows if row[0] is not None] + list(own)
    first: date = min([TODAY, *(moment.astimezone(UTC).date() for moment in moments)])
    return first


@pytest.fixture
def forget_rows(tenant: Tenant) -> Iterator[None]:
    """The ops rows this test plants move every code location's first partition: removed afterwards."""
    yield
    for table in ("ingest_hours", "rollup_watermarks", "imports"):
        superuser(tenant, f"DELETE FROM ops.{table} WHERE tenant_id = %s", tenant.name)


def test_the_first_day_with_data_of_any_home(tenant: Tenant, forget_rows: None) -> None:
    assert resolve(tenant) == earliest_of_every_home(tenant)  # this home has no data yet: the others' first day
    # Far older than any other test's data: this home's rows become the first day of every home.
    ingested = datetime(2019, 3, 5, 23, tzinfo=UTC)
    superuser(tenant, "INSERT INTO ops.ingest_hours (tenant_id, hour, points) VALUES (%s, %s, 3)", tenant.name,
              ingested)
    assert resolve(tenant) == earliest_of_every_home(tenant) == date(2019, 3, 5)  # the UTC day of the hour
    rolled = datetime(2019, 3, 1, tzinfo=UTC)
    superuser(tenant, "INSERT INTO ops.rollup_watermarks (tenant_id, hour, version, points) VALUES (%s, %s, 1, 1)",
              tenant.name, rolled)
    assert resolve(tenant) == date(2019, 3, 1)
    superuser(tenant, "INSERT INTO ops.imports (tenant_id, source_kind, source, source_key, status, hours_from, "
              "hours_to) VALUES (%s, 'sqlite', 'x', 'x', 'complete', %s, %s)", tenant.name,
              datetime(2019, 2, 1, 22, tzinfo=UTC), datetime(2019, 2, 2, tzinfo=UTC))
    assert resolve(tenant) == date(2019, 2, 1)
    superuser(tenant, "INSERT INTO ops.imports (tenant_id, source_kind, source, source_key, status, first_at) "
              "VALUES (%s, 'sqlite', 'x', 'x', 'failed', %s)", tenant.name, datetime(2019, 1, 4, 5, tzinfo=UTC))
    assert resolve(tenant) == earliest_of_every_home(tenant) == date(2019, 1, 4)


def test_the_override_and_what_fails_loudly(tenant: Tenant) -> None:
    assert partitions_start({PARTITIONS_START_ENV: "2025-02-03"}, TODAY) == date(2025, 2, 3)
    for bad, message in (("2025-13-01", "is not a date"), ("01.02.2025", "is not a date"),
                         (f"{TODAY + timedelta(days=1)}", "is after today")):
        with pytest.raises(PartitionsStartError, match=f"{PARTITIONS_START_ENV}.*{message}"):
            partitions_start({PARTITIONS_START_ENV: bad}, TODAY)
    with pytest.raises(PartitionsStartError, match=f"{DSN_ENV} not set.*{PARTITIONS_START_ENV}"):
        partitions_start({}, TODAY)
    unreachable = f"postgresql://hats_dagster:x@127.0.0.1:{free_port()}/hats"
    with pytest.raises(PartitionsStartError, match=f"(?s)PostgreSQL \\({DSN_ENV}\\).*set {PARTITIONS_START_ENV}"):
        first_data_day(unreachable, TODAY)


@contextlib.contextmanager
def webserver(tenant: Tenant, tmp_path: Path) -> Iterator[str]:
    """dagster-webserver on workspace.yaml for ``tenant``, its partitions resolved from PostgreSQL."""
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if k != PARTITIONS_START_ENV}, **tenant.env}
    log = tmp_path / "webserver.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1",
             "-p", str(port)], cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return httpx.get(f"{url}/server_info", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(ready, "dagster-webserver", timeout=120, interval=0.5)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def first_daily_key(url: str) -> str | None:
    body = httpx.post(f"{url}/graphql", json={"query": FIRST_KEYS_QUERY}, timeout=60).json()
    node = (body.get("data") or {}).get("assetNodeOrError") or {}
    dimensions = node.get("partitionKeysByDimension") or []
    return dimensions[0]["partitionKeys"][0] if dimensions and dimensions[0]["partitionKeys"] else None


def test_an_older_import_reloads_the_code_location(tenant: Tenant, tmp_path: Path, forget_rows: None,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    three_days_ago = datetime.combine(TODAY - timedelta(days=3), datetime.min.time(), UTC)
    superuser(tenant, "INSERT INTO ops.ingest_hours (tenant_id, hour, points) VALUES (%s, %s, 1)", tenant.name,
              three_days_ago)
    with webserver(tenant, tmp_path) as url:
        assert wait_for(lambda: first_daily_key(url), "the code location in the UI", timeout=120) == (
            f"{earliest_of_every_home(tenant)}")
        # Before this process's partitions (the tests' override) and before any other home's data.
        older = datetime(2018, 12, 20, 6, tzinfo=UTC)
        superuser(tenant, "INSERT INTO ops.imports (tenant_id, source_kind, source, source_key, status, first_at, "
                  "last_at, finished_at) VALUES (%s, 'sqlite', 'x', 'x', 'complete', %s, %s, now())", tenant.name,
                  older, older + timedelta(days=2))
        monkeypatch.setenv(URL_ENV, url)
        result = import_sensor(dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), definitions=defs,
                                                       resources=asset_resources(tenant)))
        assert isinstance(result, dg.SensorResult)
        assert result.skip_reason is not None
        assert "reload the code location" in (result.skip_reason.skip_message or "")
        assert (result.cursor, result.run_requests) == ("0", [])  # stays on the import for the next tick
        assert first_daily_key(url) == "2018-12-20"  # the reload is done when the mutation answers
