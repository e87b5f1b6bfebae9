"""A home served over Home Assistant's WebSocket API in registry mode, made the operator's way, against a
real Home Assistant (both versions of tests/ha_peer.py).

`hats tenant add <id> --ha-url … --ha-token-env VAR` (a subprocess, the token in its environment only)
while a registry-mode worker of the home's shard runs: the worker starts the home's own WebSocket link
without a restart. Home Assistant's own history is the reference, as in test_websocket_source: each change
it reports is one point in that home's database, and none in the other home the worker serves. `hats
tenant disable` ends the link (the worker holds no connection to Home Assistant any more) and later
changes are not written; `hats tenant remove --yes` deletes the home. A home whose token file is missing
is not served — /readyz names the file to create — while the other home is, and once the file is written
(the flat `<tenant>.ha_token` a Kubernetes Secret mounted whole has) the worker's retry serves it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from devstack.profile import Profile
from ingest_worker.contract import database_for, shard_of
from tenancy.registry import TenantRegistry
from tenancy.settings import load_settings
from tests.conftest import Tenant, WorkerProcess, wait_for
from tests.ha_peer import HaPeer
from tests.integration.test_many_tenants_worker import (
    GOOD,
    SHARDS,
    Homes,
    Start,
    _pg,
    complete,
    publish_good,
    registry_worker,
    serving,
    some_shard,
    stored,
)
from tests.integration.test_tenants import hats
from tests.integration.test_websocket_source import (
    all_stored,
    assert_exactly_once,
    change_all,
    entity_ids,
    expected_points,
    stored_points,
)
from tests.integration.test_worker_formats import sample

pytestmark = pytest.mark.integration

TOKEN_VARIABLE = "HOME_HA_TOKEN"  # the name of the variable the CLI reads the token from
RETRY_S = 120.0  # the worker retries a home it could not start after 30 s; the link then connects
TCP_ESTABLISHED = "01"


class OperatorHomes:
    """Homes made with `hats tenant add` as a subprocess, with the worker's tenant secrets directory;
    whatever a test left is removed through the registry afterwards."""

    def __init__(self, homes: Homes) -> None:
        self.homes = homes
        self.env = {**homes.stack_env, "HATS_TENANT_SECRETS_DIR": str(homes.secrets_dir)}
        self.made: list[str] = []

    def add(self, shard: int, ha: HaPeer, token: str | None) -> Tenant:
        home = next(n for n in (f"w{uuid.uuid4().hex[:12]}" for _ in range(100_000)) if shard_of(n, SHARDS) == shard)
        self.made.append(home)
        args = ["add", home, "--name", f"WebSocket home {home}", "--ha-url", ha.url]
        env = dict(self.env)
        if token is not None:
            args += ["--ha-token-env", TOKEN_VARIABLE]
            env[TOKEN_VARIABLE] = token
        result = hats(env, *args)
        assert result.returncode == 0, result.stderr
        assert token is None or token not in result.stdout + result.stderr
        return Tenant(home, database_for(home), "", self.homes.stack_env)

    def run(self, *args: str) -> str:
        result = hats(self.env, *args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def exists(self, home: str) -> bool:
        return bool(_pg(self.env, "SELECT 1 FROM core.tenants WHERE tenant_id = %s", home))

    def databases(self) -> set[str]:
        with TenantRegistry(load_settings(self.env)) as registry:
            return set(registry.influx.databases())

    def remove_left(self) -> None:
        with TenantRegistry(load_settings(self.env)) as registry:
            for home in self.made:
                if self.exists(home):
                    registry.remove(home, dry_run=False)


@pytest.fixture
def homes(profile: Profile, stack_env: dict[str, str], secrets: dict[str, str], tmp_path: Path) -> Iterator[Homes]:
    made = Homes(profile, stack_env, secrets, tmp_path)
    yield made
    made.drop()


@pytest.fixture
def operator(homes: Homes) -> Iterator[OperatorHomes]:
    made = OperatorHomes(homes)
    yield made
    made.remove_left()


def connections_to(pid: int, port: int) -> int:
    """Established TCP connections the process `pid` holds to `port`: its sockets (/proc/<pid>/fd) found in
    the kernel's TCP tables — what the worker really holds open, whatever it logs."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # an fd closed meanwhile
            target = str(fd.readlink())
            if target.startswith("socket:["):
                inodes.add(target.removeprefix("socket:[").removesuffix("]"))
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote, state, inode = fields[2], fields[3], fields[9]
            if state == TCP_ESTABLISHED and inode in inodes and int(remote.rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def ha_port(ha: HaPeer) -> int:
    port = urlsplit(ha.url).port
    assert port is not None, ha.url
    return port


def metrics_of(worker: WorkerProcess, name: str) -> str:
    """The worker's /metrics sample lines of `name`."""
    text = httpx.get(f"{worker.url}/metrics", timeout=10).text
    return "\n".join(line for line in text.splitlines() if line.startswith(name + "{"))


def readyz(worker: WorkerProcess) -> tuple[int, str]:
    answer = httpx.get(f"{worker.url}/readyz", timeout=5)
    return answer.status_code, answer.text.strip()


def test_a_home_added_with_hats_tenant_is_served_over_its_websocket_until_disabled(
        home_assistant: HaPeer, homes: Homes, operator: OperatorHomes, start_worker: Start) -> None:
    shard = some_shard()
    worker = registry_worker(start_worker, homes, shard, f"ws-{uuid.uuid4().hex[:8]}")
    other = homes.add(shard)  # a home on the platform broker, served by the same worker
    serving(worker, other)
    home = operator.add(shard, home_assistant, home_assistant.token)  # while the worker runs: no restart
    serving(worker, home)
    assert f"tenant {home.name}: starting (no MQTT; sources websocket)" in worker.output()
    assert home_assistant.token not in worker.output()
    assert connections_to(worker.proc.pid, ha_port(home_assistant)) >= 1
    assert worker.metric("hats_ha_connected") == 1
    wait_for(lambda: sample(worker, "hats_tenant_ready", tenant=home.name) == 1, "the home's ready gauge")

    start = datetime.now(UTC) - timedelta(seconds=1)
    for step in range(6):
        change_all(home_assistant, home, step)
    kept = publish_good(homes, other, GOOD)  # the other home's points, while Home Assistant's arrive
    expected = expected_points(home_assistant, home, start)
    assert all(len(points) == 6 for points in expected.values()), expected
    wait_for(lambda: all_stored(home, expected), "every change of HA's history in the home's database")
    assert_exactly_once(home, expected)
    wait_for(complete(other, kept), "the other home's points")
    assert stored(other) == kept  # its own points only: nothing of Home Assistant's
    for entity in expected:
        assert stored_points(other, entity) == (set(), [])

    # Disabled: the worker stops the home and ends its link; what changes afterwards is not written.
    assert "is disabled" in operator.run("disable", home.name)
    wait_for(lambda: f"tenant {home.name}: stopped (disabled or removed)" in worker.output(), "the home's stop")
    wait_for(lambda: connections_to(worker.proc.pid, ha_port(home_assistant)) == 0,
             "the worker's WebSocket to Home Assistant closed")
    assert worker.metric("hats_ha_connected") == 0
    assert home.name not in readyz(worker)[1]
    assert f'tenant="{home.name}"' not in metrics_of(worker, "hats_tenant_ready")  # no readiness of a stopped home
    before = {entity: sorted(stored_points(home, entity)[1]) for entity in expected}
    for step in range(6, 8):
        change_all(home_assistant, home, step)
    barrier = publish_good(homes, other, 5, first=GOOD)  # the worker still serves the other home meanwhile
    wait_for(lambda: set(barrier) <= set(stored(other)), "the other home's later points")
    everything = expected_points(home_assistant, home, start)
    assert all(len(points) == 8 for points in everything.values()), everything  # HA has the later changes…
    assert {entity: sorted(stored_points(home, entity)[1]) for entity in expected} == before  # …the home not
    assert worker.proc.poll() is None

    plan = operator.run("remove", home.name, "--yes")
    assert f"tenant {home.name}: removed" in plan
    assert not operator.exists(home.name)
    assert home.database not in operator.databases()
    assert not (homes.secrets_dir / home.name).exists()


def test_a_home_without_its_token_file_is_named_and_served_once_the_file_is_written(
        home_assistant: HaPeer, homes: Homes, operator: OperatorHomes, start_worker: Start) -> None:
    shard = some_shard()
    worker = registry_worker(start_worker, homes, shard, f"tok-{uuid.uuid4().hex[:8]}")
    other = homes.add(shard)
    home = operator.add(shard, home_assistant, token=None)  # its token never handed over
    serving(worker, other)
    wanted = homes.secrets_dir / home.name / "ha_token"
    problem = f"{home.name}: not served: tenant {home.name}: {wanted} (or {home.name}.ha_token) is missing"
    wait_for(lambda: problem in readyz(worker)[1], "/readyz naming the missing token file")
    assert readyz(worker)[0] == 200  # the worker still serves its other home
    assert f"{wanted} (or {home.name}.ha_token) is missing" in worker.output()
    kept = publish_good(homes, other, GOOD)
    wait_for(complete(other, kept), "the other home's points while this one waits for its token")
    assert connections_to(worker.proc.pid, ha_port(home_assistant)) == 0

    # The token arrives as a Kubernetes Secret mounted whole delivers a new key: `<dir>/<tenant>.ha_token`,
    # written whole (renamed into place) and 0600. No row changes: the worker's retry picks it up.
    flat = homes.secrets_dir / f"{home.name}.ha_token"
    partial = flat.with_name(f".{flat.name}.tmp")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(home_assistant.token)
    partial.rename(flat)
    wait_for(lambda: f"tenant {home.name}: serving" in worker.output(), "the home served once its token is there",
             timeout=RETRY_S)
    assert problem not in readyz(worker)[1]
    start = datetime.now(UTC) - timedelta(seconds=1)
    for step in range(2):
        change_all(home_assistant, home, step)
    expected = expected_points(home_assistant, home, start)
    assert all(len(points) == 2 for points in expected.values()), expected
    wait_for(lambda: all_stored(home, expected), "the home's changes in its database")
    assert_exactly_once(home, expected)
    assert set(entity_ids(home).values()) == set(expected)
    assert home_assistant.token not in worker.output()
