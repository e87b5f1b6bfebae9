"""A message that reaches the broker ends in InfluxDB or the dead-letter store — never nowhere — through
InfluxDB outages, worker crashes, broker restarts and replicas (real services, real processes)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from devstack import influxdb, mosquitto
from devstack.profile import Profile
from ha_simulator.publish import Publisher, Target
from ingest_worker.tls import mqtt_context
from tests.conftest import Tenant, WorkerProcess, wait_for

pytestmark = pytest.mark.integration

START = datetime.now(UTC) - timedelta(hours=2)


def event(i: int, entities: int = 50) -> bytes:
    """The i-th state change of a small fleet; each has its own timestamp, so each is one point."""
    entity = f"sensor.dur_{i % entities:03d}"
    at = (START + timedelta(milliseconds=i)).isoformat()
    state = {"entity_id": entity, "state": f"{i % 1000 / 10:.1f}", "last_updated": at, "last_changed": at,
             "attributes": {"unit_of_measurement": "W", "device_class": "power"}}
    return json.dumps({"event_type": "state_changed", "event_data": {"entity_id": entity, "new_state": state}}).encode()


def publisher(tenant: Tenant) -> Publisher:
    """As the home's Home Assistant account, with the client id the broker binds it to (its name)."""
    env = tenant.env
    return Publisher(Target("127.0.0.1", int(env["HATS_MQTT_PORT"]), env["HATS_MQTT_PUBLISHER_USERNAME"],
                            env["HATS_MQTT_PUBLISHER_PASSWORD"], tenant.topic, tls=mqtt_context(env)))


def points(tenant: Tenant) -> int:
    return sum(int(s["values"][0][1]) for s in tenant.influx("SELECT count(value) FROM raw./.*/"))


def publish_in_background(tenant: Tenant, count: int, per_second: float | None = None,
                          stop: threading.Event | None = None,
                          published: list[int] | None = None) -> threading.Thread:
    """Publish up to `count` events (until `stop` is set, if given); `published` receives how many the
    broker acknowledged."""
    def run() -> None:
        pub = publisher(tenant)
        sent = 0
        try:
            for i in range(count):
                if stop is not None and stop.is_set():
                    break
                pub.publish(event(i))
                sent += 1
                if per_second and i % 100 == 99:
                    done.wait(100 / per_second)  # pacing of the simulated fleet, not synchronisation
        finally:
            pub.close()
            if published is not None:
                published.append(sent)

    done = threading.Event()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


Start = Callable[[dict[str, str]], WorkerProcess]


def test_influxdb_outage_of_30_s_loses_nothing(profile: Profile, secrets: dict[str, str], tenant: Tenant,
                                               start_worker: Start) -> None:
    worker = start_worker(tenant.env)
    influxdb.stop(profile)
    try:
        sender = publish_in_background(tenant, 6_000, per_second=200)  # 30 s of a fleet while InfluxDB is down
        sender.join(timeout=120)
        assert not sender.is_alive()
        wait_for(lambda: worker.metric("hats_outbox_batches") > 0, "batches in the outbox")
        ready = worker.url + "/readyz"
        assert "outbox" in __import__("httpx").get(ready, timeout=5).text
    finally:
        influxdb.start(profile, secrets)
    wait_for(lambda: points(tenant) == 6_000, "all 6000 points after InfluxDB returns", timeout=120)
    wait_for(lambda: worker.metric("hats_outbox_batches") == 0, "the outbox to drain")
    assert worker.stop() == 0
    assert worker.counters()["dead_lettered"] == 0


def test_worker_killed_five_times_loses_nothing(tenant: Tenant, start_worker: Start) -> None:
    # The fleet publishes for as long as the kills go on (a fixed count ran out on a slow machine: with
    # every point already stored, "progress before the kill" could never come).
    worker = start_worker(tenant.env)  # its first subscription creates the persistent session
    stop = threading.Event()
    published: list[int] = []
    sender = publish_in_background(tenant, 1_000_000, per_second=2_000, stop=stop, published=published)
    for kill in range(5):
        if kill:
            worker = start_worker(tenant.env)
        before = points(tenant)
        wait_for(lambda b=before: points(tenant) > b, "progress before the kill")  # type: ignore[misc]
        worker.kill()
    stop.set()
    sender.join(timeout=120)
    assert not sender.is_alive()
    total = published[0]
    assert total > 0
    worker = start_worker(tenant.env)
    wait_for(lambda: points(tenant) == total, f"all {total} points after five SIGKILLs", timeout=120)
    assert worker.stop() == 0


def test_broker_restart_mid_stream_loses_nothing(profile: Profile, secrets: dict[str, str], tenant: Tenant,
                                                 start_worker: Start) -> None:
    worker = start_worker(tenant.env)
    pub = publisher(tenant)
    for i in range(3_000):
        pub.publish(event(i))
    pub.close()
    wait_for(lambda: points(tenant) > 0, "the first points")
    mosquitto.stop(profile)
    mosquitto.start(profile, secrets)
    pub = publisher(tenant)
    for i in range(3_000, 6_000):
        pub.publish(event(i))
    pub.close()
    wait_for(lambda: points(tenant) == 6_000, "all 6000 points across the broker restart", timeout=120)
    assert worker.stop() == 0
    assert "reconnect" in worker.output().lower() or "connection lost" in worker.output().lower()


def test_two_replicas_share_the_load_and_write_each_message_once(tenant: Tenant, start_worker: Start) -> None:
    group = {"HATS_MQTT_SHARE_GROUP": f"g{tenant.name}", "HATS_SOURCES": "eventstream"}
    first = start_worker({**tenant.env, **group, "HATS_MQTT_CLIENT_ID": f"{tenant.name}-a"})
    second = start_worker({**tenant.env, **group, "HATS_MQTT_CLIENT_ID": f"{tenant.name}-b"})
    pub = publisher(tenant)
    for i in range(10_000):
        pub.publish(event(i))
    pub.close()
    wait_for(lambda: points(tenant) == 10_000, "all 10000 points")
    assert first.stop() == 0
    assert second.stop() == 0
    received = [first.counters()["received"], second.counters()["received"]]
    assert sum(received) == 10_000  # each message delivered to exactly one replica
    assert min(received) > 0  # and both took a share


def test_sigterm_flushes_and_exits_promptly(tenant: Tenant, start_worker: Start) -> None:
    worker = start_worker({**tenant.env, "HATS_BATCH_MAX_AGE_S": "60", "HATS_BATCH_MAX_POINTS": "100000"})
    pub = publisher(tenant)
    for i in range(500):
        pub.publish(event(i))
    pub.close()
    wait_for(lambda: worker.metric("hats_unacked_messages") == 500, "500 processed, held for the batch")
    assert points(tenant) == 0  # nothing flushed yet: the batch waits for size or age
    assert worker.stop() == 0
    assert points(tenant) == 500
    counters = worker.counters()
    assert counters["received"] == counters["written"] == 500
