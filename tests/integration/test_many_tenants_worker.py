"""Registry mode against the real stack: one worker process serves the homes of its shard as rows of
`core.tenants` appear, change and are disabled — no restart — and no home's data or trouble reaches
another's (issue 11, items 2 and 4c).

Every home here is a fresh tenant whose id hashes into a shard picked for this test (`SHARDS` shards),
so rows other tests leave in the shared database are another shard's and never served by these workers.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from devstack import influxdb, mosquitto
from devstack.profile import Profile
from ingest_worker.contract import shard_of
from ingest_worker.rejections import Reason
from tenancy.secrets import generate_password
from tests.conftest import Tenant, WorkerProcess, wait_for
from tests.integration.test_worker_formats import DISCOVERY, EVENTS, sample, state_changed
from tests.mqtt import Session, session

pytestmark = pytest.mark.integration

SHARDS = 64
GOOD = 40  # good events per home
FLOOD = 3_000  # broken payloads in the noisy home
START = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
Start = Callable[..., WorkerProcess]


def _pg(env: dict[str, str], query: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(env["HATS_PG_DSN"], autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description is not None else []


class Homes:
    """Fresh homes of one shard: an InfluxDB database and a `core.tenants` row each, with an id chosen for
    its shard, dropped after the test. They publish as the stack's Home Assistant account, which may write
    every home's `hats/<home>/homeassistant/…` topics."""

    def __init__(self, profile: Profile, stack_env: dict[str, str], secrets: dict[str, str], tmp: Path) -> None:
        self.profile, self.stack_env, self.secrets = profile, stack_env, secrets
        self.secrets_dir = tmp / "tenants"
        self.made: list[Tenant] = []
        self.accounts: list[str] = []

    def add(self, shard: int, prefixed: bool = True) -> Tenant:
        name = next(n for n in (f"t{uuid.uuid4().hex[:12]}" for _ in range(100_000)) if shard_of(n, SHARDS) == shard)
        database = f"hats_{name}"
        influxdb.ensure_tenant_database(self.profile, self.secrets, database, raw_days=30, rollup_days=730)
        _pg(self.stack_env, "INSERT INTO core.tenants (tenant_id, name) VALUES (%s, 'registry test')", name)
        prefix = f"hats/{name}/"
        if prefixed:  # the registry API (hats tenant) sets it; here the row is updated as an operator could
            _pg(self.stack_env, "UPDATE core.tenants SET topic_prefix = %s WHERE tenant_id = %s", prefix, name)
        made = Tenant(name, database, prefix + EVENTS, {**self.stack_env, "HATS_TENANT": name})
        self.made.append(made)
        return made

    def publisher(self) -> AbstractContextManager[Session]:
        env = self.stack_env
        return session(int(env["HATS_MQTT_PORT"]), env["HATS_MQTT_HOMEASSISTANT_USERNAME"],
                       env["HATS_MQTT_HOMEASSISTANT_PASSWORD"])

    def own_account(self, home: Tenant) -> str:
        """The home is read through its own broker account — a reader confined to its prefix, made the
        platform's way (tenancy/broker.py) — with its password in the tenant secrets directory."""
        prefix = f"hats/{home.name}/"
        password = generate_password()
        with mosquitto.admin(self.profile, self.secrets) as admin:
            username = admin.ensure_reader_account(home.name, prefix, password).name
        self.accounts.append(username)
        folder = self.secrets_dir / home.name
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = folder / "broker_password"
        path.write_text(password)
        path.chmod(0o600)
        url = f"mqtts://127.0.0.1:{self.stack_env['HATS_MQTT_PORT']}"  # the platform broker: TLS only
        _pg(self.stack_env, "UPDATE core.tenants SET topic_prefix = %s, broker_url = %s, broker_username = %s "
            "WHERE tenant_id = %s", prefix, url, username, home.name)
        return username

    def disable(self, home: Tenant) -> None:
        _pg(self.stack_env, "UPDATE core.tenants SET status = 'disabled', disabled_at = now() WHERE tenant_id = %s",
            home.name)

    def drop(self) -> None:
        if self.accounts:
            with mosquitto.admin(self.profile, self.secrets) as admin:
                admin.remove_accounts(self.accounts)
        for home in self.made:
            _pg(self.stack_env, "DELETE FROM ops.dead_letters WHERE tenant_id = %s", home.name)
            _pg(self.stack_env, "UPDATE core.tenants SET status = 'disabled', disabled_at = coalesce(disabled_at, "
                "now()), topic_prefix = NULL, broker_url = NULL, broker_username = NULL WHERE tenant_id = %s",
                home.name)
            influxdb.query(self.profile, f'DROP DATABASE "{home.database}"',
                           self.stack_env["HATS_INFLUX_ADMIN_USERNAME"], self.stack_env["HATS_INFLUX_ADMIN_PASSWORD"])


@pytest.fixture
def homes(profile: Profile, stack_env: dict[str, str], secrets: dict[str, str], tmp_path: Path) -> Iterator[Homes]:
    made = Homes(profile, stack_env, secrets, tmp_path)
    yield made
    made.drop()


def some_shard() -> int:
    return int.from_bytes(os.urandom(2), "big") % SHARDS


def registry_worker(start_worker: Start, homes: Homes, shard: int, client: str) -> WorkerProcess:
    env = {**homes.stack_env, "HATS_TENANT_MODE": "registry", "HATS_SHARDS": str(SHARDS), "HATS_SHARD": str(shard),
           "HATS_TENANT_SECRETS_DIR": str(homes.secrets_dir), "HATS_MQTT_CLIENT_ID": f"hats-test-{client}",
           "HATS_LOG_FORMAT": "text", "HATS_TENANT_REREAD_S": "600"}  # changes must arrive by NOTIFY
    return start_worker(env, ready_line="registry mode: shard")


def serving(worker: WorkerProcess, home: Tenant) -> None:
    wait_for(lambda: f"tenant {home.name}: serving" in worker.output() or worker.proc.poll() is not None,
             f"the worker serving {home.name}")
    assert worker.proc.poll() is None, worker.output()


def entity(home: Tenant, i: int) -> str:
    return f"sensor.{home.name}_{i % 5}"


def publish_good(homes: Homes, home: Tenant, count: int, first: int = 0) -> dict[tuple[str, int], float]:
    """`count` state changes on the home's eventstream; what InfluxDB must then hold: (entity, ns) → value."""
    expected: dict[tuple[str, int], float] = {}
    with homes.publisher() as pub:
        for i in range(first, first + count):
            at = START + timedelta(seconds=i)
            value = round(15 + i * 0.25, 2)
            assert not pub.publish(home.topic, state_changed(entity(home, i), str(value), at,
                                                             unit_of_measurement="°C", device_class="temperature",
                                                             state_class="measurement")).is_failure
            expected[(entity(home, i), int(at.timestamp() * 1e9))] = value
    return expected


def stored(home: Tenant) -> dict[tuple[str, int], float]:
    found: dict[tuple[str, int], float] = {}
    for series in home.influx('SELECT "value", "entity_id" FROM raw./.*/'):
        columns = series["columns"]
        for row in series["values"]:
            record = dict(zip(columns, row, strict=True))
            found[(str(record["entity_id"]), int(record["time"]))] = float(record["value"])
    return found


def complete(home: Tenant, expected: dict[tuple[str, int], float]) -> Callable[[], bool]:
    return lambda: stored(home) == expected


def letters(env: dict[str, str], home: Tenant) -> list[tuple[object, ...]]:
    return _pg(env, "SELECT tenant_id::text, topic, reason, detail FROM ops.dead_letters WHERE tenant_id = %s "
               "OR topic LIKE %s", home.name, f"hats/{home.name}/%")


def test_homes_added_at_run_time_stay_apart(homes: Homes, start_worker: Start, stack_env: dict[str, str]) -> None:
    shard = some_shard()
    worker = registry_worker(start_worker, homes, shard, f"reg-{uuid.uuid4().hex[:8]}")
    noisy, quiet = homes.add(shard), homes.add(shard)
    own = homes.add(shard, prefixed=False)
    reader = homes.own_account(own)
    for home in (noisy, quiet, own):
        serving(worker, home)
    assert f"tenant {own.name}: starting (own broker mqtts://127.0.0.1:" in worker.output()
    assert f"as {reader}, subscribing to" in worker.output()  # its own session, under its own account

    # A flood of broken payloads in one home, then every home's good states.
    with homes.publisher() as pub:
        for i in range(FLOOD):
            pub.client.publish(noisy.topic, b'{"event_type": "state_changed", "event_data": ' + str(i).encode(), qos=1)
        # A discovery config of the noisy home that points into the quiet home's prefix.
        foreign = f"hats/{quiet.name}/homeassistant/stolen/state"
        config = {"state_topic": foreign, "value_template": "{{ value_json.t }}", "unit_of_measurement": "°C",
                  "device_class": "temperature", "object_id": "stolen", "unique_id": "stolen-1"}
        assert not pub.publish(f"hats/{noisy.name}/{DISCOVERY}/sensor/stolen/config",
                               json.dumps(config).encode()).is_failure
    expected = {home.name: publish_good(homes, home, GOOD) for home in (noisy, quiet, own)}
    for home in (quiet, own, noisy):
        wait_for(complete(home, expected[home.name]), f"{home.name}'s {GOOD} points")
    wait_for(lambda: len(letters(stack_env, noisy)) == FLOOD + 1, f"{FLOOD + 1} dead letters of the noisy home")

    # Each home's points are in its own database only, exactly as published.
    for home in (noisy, quiet, own):
        assert stored(home) == expected[home.name]
    noisy_letters = letters(stack_env, noisy)
    assert {row[0] for row in noisy_letters} == {noisy.name}
    assert sorted(str(row[2]) for row in noisy_letters) == sorted([Reason.INVALID_JSON.value] * FLOOD
                                                                  + [Reason.FOREIGN_TOPIC.value])
    refused = next(row for row in noisy_letters if row[2] == Reason.FOREIGN_TOPIC.value)
    assert foreign in str(refused[3])
    assert letters(stack_env, quiet) == []
    assert letters(stack_env, own) == []
    assert sample(worker, "hats_tenant_dead_letters_total", tenant=quiet.name) == 0

    # The refused config was not subscribed: a state on that topic of the quiet home reaches nobody.
    with homes.publisher() as pub:
        assert not pub.publish(foreign, b'{"t": 99.5}').is_failure
    barrier = publish_good(homes, noisy, 1, first=GOOD)  # once this later point lands, the state was seen or not
    wait_for(lambda: set(barrier) <= set(stored(noisy)), "the noisy home's barrier point")
    assert not any(key[0].endswith("stolen") for home in (noisy, quiet) for key in stored(home))
    assert letters(stack_env, quiet) == []

    # Disabling a home stops it at once: what is published after its stop lands nowhere.
    served = sample(worker, "hats_tenants_served")  # ours, and any other row that hashes into this shard
    homes.disable(quiet)
    wait_for(lambda: f"tenant {quiet.name}: stopped (disabled or removed)" in worker.output(), "the quiet home's stop")
    before = stored(quiet)
    publish_good(homes, quiet, 10, first=GOOD)
    barrier = publish_good(homes, own, 10, first=GOOD)
    wait_for(lambda: set(barrier) <= set(stored(own)), "the own-account home's later points")
    assert stored(quiet) == before
    assert worker.proc.poll() is None
    wait_for(lambda: sample(worker, "hats_tenants_served") == served - 1, "one home fewer served")


def test_shards_serve_disjoint_homes(homes: Homes, start_worker: Start) -> None:
    first = some_shard()
    second = (first + 1) % SHARDS
    workers = {s: registry_worker(start_worker, homes, s, f"shard{s}-{uuid.uuid4().hex[:8]}") for s in (first, second)}
    mine = {s: homes.add(s) for s in (first, second)}
    for shard, home in mine.items():
        serving(workers[shard], home)
    expected = {s: publish_good(homes, home, GOOD) for s, home in mine.items()}
    for shard, home in mine.items():
        wait_for(complete(home, expected[shard]), f"{home.name}'s points")
    for shard, worker in workers.items():
        other = mine[second if shard == first else first]
        assert f"tenant {other.name}: starting" not in worker.output()
        assert f"tenant {mine[shard].name}: starting" in worker.output()
        wait_for(lambda worker=worker, shard=shard: sample(  # type: ignore[misc]
            worker, "hats_tenant_messages_received_total", tenant=mine[shard].name) == GOOD, "its home's count")
        assert sample(worker, "hats_tenant_messages_received_total", tenant=other.name) == 0


def test_replicas_of_a_shard_split_a_home_without_loss_or_duplicates(homes: Homes, start_worker: Start) -> None:
    shard = some_shard()
    replicas = [registry_worker(start_worker, homes, shard, f"replica{i}-{uuid.uuid4().hex[:8]}") for i in range(2)]
    home = homes.add(shard)
    for replica in replicas:
        serving(replica, home)
    count = 400
    expected = publish_good(homes, home, count)
    wait_for(lambda: stored(home) == expected, f"{count} points of the shared home")
    wait_for(lambda: sum(sample(r, "hats_tenant_messages_received_total", tenant=home.name) for r in replicas) == count,
             "both replicas' counts")
    received = [sample(r, "hats_tenant_messages_received_total", tenant=home.name) for r in replicas]
    assert all(n > 0 for n in received), received  # the shared subscription split the load
    assert sum(received) == count  # each message reached exactly one replica


def test_a_home_whose_database_is_gone_waits_in_its_own_outbox(homes: Homes, start_worker: Start,
                                                              profile: Profile, secrets: dict[str, str]) -> None:
    """InfluxDB refusing one home's writes (its database dropped) sends that home to its outbox; the other
    home's points keep landing, and once the database is back the outbox delivers every point."""
    shard = some_shard()
    worker = registry_worker(start_worker, homes, shard, f"gone-{uuid.uuid4().hex[:8]}")
    broken, fine = homes.add(shard), homes.add(shard)
    for home in (broken, fine):
        serving(worker, home)
    env = homes.stack_env
    influxdb.query(profile, f'DROP DATABASE "{broken.database}"', env["HATS_INFLUX_ADMIN_USERNAME"],
                   env["HATS_INFLUX_ADMIN_PASSWORD"])
    lost = publish_good(homes, broken, GOOD)
    kept = publish_good(homes, fine, GOOD)
    wait_for(complete(fine, kept), "the other home's points")
    wait_for(lambda: sample(worker, "hats_tenant_outbox_bytes", tenant=broken.name) > 0, "the broken home's outbox")
    assert sample(worker, "hats_tenant_outbox_bytes", tenant=fine.name) == 0
    influxdb.ensure_tenant_database(profile, secrets, broken.database, raw_days=30, rollup_days=730)
    wait_for(complete(broken, lost), "the broken home's points from its outbox", timeout=120)
    wait_for(lambda: sample(worker, "hats_tenant_outbox_bytes", tenant=broken.name) == 0, "its outbox drained")
    assert worker.proc.poll() is None
    assert letters(env, broken) == []
    assert letters(env, fine) == []
