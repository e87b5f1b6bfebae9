"""dagster.yaml keeps Dagster's own storage in PostgreSQL, and the UI (dagster-webserver reading
workspace.yaml) serves the code location with its lineage."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import httpx
import psycopg
import pytest

from devstack.procs import free_ports
from devstack.profile import PROJECT_ROOT
from tests.conftest import Tenant, wait_for
from tests.test_definitions import GROUPS, LINEAGE

pytestmark = pytest.mark.integration

LINEAGE_QUERY = "{ assetNodes { assetKey { path } dependencyKeys { path } groupName } }"


@pytest.fixture
def dagster_env(stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key, value in stack_env.items():
        monkeypatch.setenv(key, value)
    return stack_env


def test_runs_are_stored_in_postgres(dagster_env: dict[str, str], tenant: Tenant) -> None:
    from hats_assets.definitions import defs

    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        job = defs.resolve_job_def("observe_raw_points")
        result = job.execute_in_process(instance=instance, tags={"test": uuid.uuid4().hex})
        assert result.success
    with psycopg.connect(dagster_env["HATS_DAGSTER_PG_URL"]) as conn:
        row = conn.execute("SELECT status FROM runs WHERE run_id = %s", (result.run_id,)).fetchone()
    assert row == ("SUCCESS",)


@pytest.fixture
def webserver(dagster_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    (port,) = free_ports(1)
    log = tmp_path / "webserver.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1",
             "-p", str(port)], cwd=PROJECT_ROOT, env={**os.environ, **dagster_env}, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
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


def test_ui_serves_the_code_location_with_lineage(webserver: str) -> None:
    def nodes() -> list[dict[str, object]] | None:
        body = httpx.post(f"{webserver}/graphql", json={"query": LINEAGE_QUERY}, timeout=30).json()
        return body.get("data", {}).get("assetNodes") or None

    found = wait_for(nodes, "the code location to load in the UI", timeout=120, interval=0.5)
    edges = {"/".join(n["assetKey"]["path"]): {"/".join(d["path"]) for d in n["dependencyKeys"]}
             for n in found}
    assert edges == LINEAGE
    assert {"/".join(n["assetKey"]["path"]): n["groupName"] for n in found} == GROUPS
