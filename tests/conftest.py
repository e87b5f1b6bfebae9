"""Shared fixtures: the real test stack, a fresh tenant per test, and the worker as a real process.

The test stack (`hats --profile test up`, started by `make test` or here on demand) has its own ports,
state and secrets, so tests never touch a developer's running demo. Isolation inside it comes from
unique names: every test gets its own tenant (InfluxDB database), topic and MQTT client id.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest

from devstack import envfile, stack
from devstack.procs import free_port
from devstack.profile import PROJECT_ROOT, Profile, load_profile
from ingest_worker.tls import client_context
from tenancy import secrets as tenant_secrets
from tenancy.broker import account_name
from tenancy.registry import TenantRegistry
from tenancy.settings import load_settings
from tenancy.spec import TenantSpec

DEADLINE_S = 60.0
# Property tests (hypothesis) are deterministic by default: the same examples on every run and in CI, no
# example database carried between runs. `pytest --hypothesis-profile=explore` searches afresh with 20
# times the examples (tests scale theirs with `tests.ha_strategies.examples`); a failure prints its
# example: keep it as an `@example` beside the fix.
hypothesis.settings.register_profile("deterministic", derandomize=True, database=None, deadline=None,
                                     print_blob=True)
hypothesis.settings.register_profile("explore", max_examples=2_000, deadline=None, print_blob=True)
hypothesis.settings.load_profile("deterministic")
# The code location's partitions start on the first day any home has data, read from PostgreSQL when
# hats_assets loads (hats_assets/partitions.py); tests load it once for many fresh tenants and without
# PostgreSQL in unit tests, so they fix the start (tests/integration/test_partitions_start.py tests the lookup).
TEST_PARTITIONS_START = "2026-01-01"
os.environ.setdefault("HATS_PARTITIONS_START", TEST_PARTITIONS_START)
# The steps' retry policy is bound when hats_assets loads, from this process's environment: `make test` (CI)
# does not source the test profile's env file, so without these the suite ran on the code location's
# defaults (4 retries from 15 s; from 30 s, a run whose store stays down waited 780 ± 120 s and passed
# pytest's 600 s timeout). The test profile's values, from where the env file gets them.
for _name, _value in envfile.TEST_STEP_RETRIES.items():
    os.environ.setdefault(_name, _value)


def wait_for(condition: Callable[[], Any], what: str, timeout: float = DEADLINE_S, interval: float = 0.1) -> Any:
    """Poll until `condition()` is truthy; fail naming `what` at the deadline. Never a bare sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def profile() -> Profile:
    return load_profile("test")


@pytest.fixture(scope="session")
def stack_env(profile: Profile) -> dict[str, str]:
    """The test stack's settings; starts it if `make test` did not (idempotent)."""
    return stack.up(profile)


@pytest.fixture(scope="session")
def secrets(profile: Profile, stack_env: dict[str, str]) -> dict[str, str]:
    return stack.secrets_for(profile)


@dataclass(frozen=True)
class Tenant:
    name: str
    database: str
    topic: str
    env: dict[str, str]

    def influx(self, query: str) -> list[dict[str, Any]]:
        """Query the tenant's database as the admin (tests read everything)."""
        response = httpx.post(
            f"{self.env['HATS_INFLUX_URL']}/query",
            data={"q": query, "db": self.database, "epoch": "ns"},
            auth=(self.env["HATS_INFLUX_ADMIN_USERNAME"], self.env["HATS_INFLUX_ADMIN_PASSWORD"]),
            timeout=30, verify=client_context(self.env["HATS_INFLUX_CA_FILE"]),
        )
        response.raise_for_status()
        series: list[dict[str, Any]] = []
        for result in response.json()["results"]:
            assert "error" not in result, result["error"]
            series.extend(result.get("series", []))
        return series


# Tenants `new_tenant` made and nobody has removed yet, with the registry of the stack each was made on:
# InfluxDB 1.x keeps several files open per database and shard, and a suite's hundreds of tenants once
# reached the stack's 20,000 open files and hung it; their broker accounts and analyst roles add up too.
_MADE: dict[str, TenantRegistry] = {}
# One registry per stack, kept for the session. Its broker admin connects per operation: tests restart
# Mosquitto, and a connection kept for the session would lose its subscription to the control answers.
_REGISTRIES: dict[str, TenantRegistry] = {}


def registry_for(profile: Profile, stack_env: dict[str, str]) -> TenantRegistry:
    """The tenant registry of the stack whose settings are `stack_env`: tests make homes the one way."""
    if profile.name not in _REGISTRIES:
        _REGISTRIES[profile.name] = TenantRegistry(load_settings(stack_env))
    return _REGISTRIES[profile.name]


def remove_tenant(name: str) -> None:
    """Remove a tenant `new_tenant` made: its rows (not billing's), database, accounts and secrets."""
    registry = _MADE.pop(name, None)
    if registry is not None:
        registry.remove(name, dry_run=False)


def drop_tenant_database(profile: Profile, stack_env: dict[str, str], database: str) -> None:
    """The name tests used before tenants were made through the registry: removes the whole tenant."""
    remove_tenant(database.removeprefix("hats_"))


@pytest.fixture(scope="session", autouse=True)
def _remove_tenants() -> Iterator[None]:
    """At the end of the session, remove what tests made with `new_tenant` directly (the `tenant` fixture
    removes its own after each test). Each tenant keeps the registry of the stack it was made on: the
    session's own fixtures are torn down by then, and a run of unit tests must not start the stack."""
    yield
    for name in list(_MADE):
        remove_tenant(name)


@pytest.fixture
def tenant(profile: Profile, stack_env: dict[str, str], secrets: dict[str, str]) -> Iterator[Tenant]:
    made = new_tenant(profile, stack_env, secrets)
    yield made
    remove_tenant(made.name)


def new_tenant(profile: Profile, stack_env: dict[str, str], secrets: dict[str, str]) -> Tenant:
    """A fresh tenant added through the registry (`hats tenant add`'s API) with prefix `hats/<name>/`: its
    own InfluxDB database, `core.tenants` row, broker accounts, analyst role and client id. Its env
    publishes as the home's Home Assistant account, the one account that may write under its prefix."""
    name = f"t{uuid.uuid4().hex[:12]}"
    prefix = f"hats/{name}/"
    registry = registry_for(profile, stack_env)
    record = registry.add(TenantSpec(id=name, name="test tenant", topic_prefix=prefix))
    _MADE[name] = registry
    publisher = account_name(name, "ha")
    password = registry.secrets.read(name, tenant_secrets.MQTT_HOMEASSISTANT)
    assert password is not None, f"the registry wrote no {tenant_secrets.MQTT_HOMEASSISTANT} secret for {name}"
    env = {**stack_env, "HATS_TENANT": name, "HATS_TOPIC_PREFIX": prefix, "HATS_MQTT_CLIENT_ID": f"hats-test-{name}",
           # The broker binds the account to client id = its name (tenancy/broker.py): publish with that id.
           "HATS_MQTT_PUBLISHER_USERNAME": publisher, "HATS_MQTT_PUBLISHER_PASSWORD": password,
           "HATS_LOG_FORMAT": "text"}
    return Tenant(name, record.database, prefix + "homeassistant/events", env)


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    log: Path
    url: str

    def metric(self, name: str) -> float:
        """Sum of a Prometheus metric's samples (all label sets) from the worker's /metrics."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name) and (line[len(name)] in " {"))

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def counters(self) -> dict[str, int]:
        """The counters the worker logs when it stops (`stopped: {...}`)."""
        line = next(line for line in self.output().splitlines() if "stopped: " in line)
        parsed: dict[str, int] = json.loads(line.split("stopped: ", 1)[1])
        return parsed


READY_LINE = "subscriptions confirmed by the broker"


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `python -m ingest_worker` for real; wait until it logs `ready_line` (default: it has subscribed
    to the broker; a WebSocket-only worker logs "subscribed to Home Assistant"; None: do not wait)."""
    started: list[WorkerProcess] = []

    def start(env: dict[str, str], ready_line: str | None = READY_LINE) -> WorkerProcess:
        log = tmp_path / f"worker-{len(started)}.log"
        port = free_port()
        defaults = {"HATS_HTTP_PORT": str(port), "HATS_OUTBOX_DIR": str(tmp_path / "outbox")}
        with log.open("ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "ingest_worker"], env={**os.environ, **defaults, **env},
                                    stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT)
        worker = WorkerProcess(proc, log, f"http://127.0.0.1:{env.get('HATS_HTTP_PORT', port)}")
        started.append(worker)
        if ready_line is not None:
            wait_for(lambda: ready_line in worker.output() or proc.poll() is not None,
                     f"the worker's log line {ready_line!r}")
        assert proc.poll() is None, f"the worker exited early:\n{worker.output()}"
        return worker

    yield start
    for worker in started:
        worker.stop()
