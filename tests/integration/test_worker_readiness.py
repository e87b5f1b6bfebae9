"""A subscription the broker refuses keeps the worker unready, against a real broker that refuses one.

The stack's Mosquitto (`acl_file`) grants every subscription, so this test runs its own Mosquitto with
the dynamic security plugin (tests/dynsec_broker.py), whose worker account may subscribe to the tenant's
eventstream and status topics but not to its statestream. InfluxDB and PostgreSQL are the stack's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from devstack.procs import free_port
from ha_simulator.publish import Publisher, Target
from ingest_worker.tls import mqtt_context
from tests.conftest import Tenant, WorkerProcess, wait_for
from tests.dynsec_broker import Account, DynsecBroker, dynsec_broker
from tests.integration.test_worker_durability import event, points

pytestmark = pytest.mark.integration

WORKER, WORKER_PASSWORD = "hats_dynsec_worker", "worker-secret"
PUBLISHER, PUBLISHER_PASSWORD = "hats_dynsec_publisher", "publisher-secret"
REFUSED_LINE = "the broker refused the subscription to"
CONFIRMED_LINE = "subscriptions confirmed by the broker"
ANSWERED_LINE = "subscriptions answered by the broker"

StartWorker = Callable[..., WorkerProcess]  # tests/conftest.py's start_worker(env, ready_line=...)


def statestream_filter(tenant: Tenant) -> str:
    return f"{tenant.env['HATS_TOPIC_PREFIX']}homeassistant/statestream/+/+/+"


@pytest.fixture
def broker(tmp_path: Path, tenant: Tenant) -> Iterator[DynsecBroker]:
    prefix = tenant.env["HATS_TOPIC_PREFIX"]
    accounts = [
        # Eventstream and status, exactly; the statestream filter matches neither, so it is refused.
        Account(WORKER, WORKER_PASSWORD, [("subscribeLiteral", tenant.topic),
                                          ("subscribeLiteral", f"{prefix}homeassistant/status")]),
        Account(PUBLISHER, PUBLISHER_PASSWORD, [("publishClientSend", f"{prefix}#")]),
    ]
    with dynsec_broker(tmp_path / "dynsec", free_port(), accounts) as running:
        yield running


def worker_env(tenant: Tenant, broker: DynsecBroker, sources: str) -> dict[str, str]:
    return {**tenant.env, "HATS_MQTT_HOST": broker.host, "HATS_MQTT_PORT": str(broker.port),
            "HATS_MQTT_USERNAME": WORKER, "HATS_MQTT_PASSWORD": WORKER_PASSWORD, "HATS_SOURCES": sources}


def readyz(worker: WorkerProcess) -> httpx.Response:
    return httpx.get(f"{worker.url}/readyz", timeout=5)


def statestream_state(tenant: Tenant, entity: str, state: str) -> tuple[str, bytes]:
    domain, object_id = entity.split(".", 1)
    return f"{tenant.env['HATS_TOPIC_PREFIX']}homeassistant/statestream/{domain}/{object_id}/state", state.encode()


def test_refused_subscription_keeps_the_worker_unready_and_the_rest_flowing(
        tenant: Tenant, broker: DynsecBroker, start_worker: StartWorker) -> None:
    refused = statestream_filter(tenant)
    worker = start_worker(worker_env(tenant, broker, "eventstream,statestream"), ready_line=None)
    # Logged once every SUBACK is in (refused or not), so /readyz has its final answer after it.
    wait_for(lambda: ANSWERED_LINE in worker.output() or CONFIRMED_LINE in worker.output()
             or worker.proc.poll() is not None, "the broker's answer to every subscription")
    assert CONFIRMED_LINE not in worker.output()
    assert f"{REFUSED_LINE} {refused} " in worker.output()
    assert f"the MQTT account {WORKER} may not read it" in worker.output()
    assert f"{ANSWERED_LINE}; refused: {refused}\n" in worker.output()

    answer = readyz(worker)
    assert answer.status_code == 503, answer.text
    assert f"the broker refused the subscription(s) {refused}:" in answer.text, answer.text
    assert "HATS_MQTT_USERNAME" in answer.text, answer.text
    assert tenant.topic not in answer.text  # the granted one is not blamed
    assert httpx.get(f"{worker.url}/healthz", timeout=5).status_code == 200  # alive, just not ready

    # What the account may read still flows: a statestream state published first never arrives (the
    # broker holds no subscription for it), the eventstream change after it becomes a point.
    pub = Publisher(Target(broker.host, broker.port, PUBLISHER, PUBLISHER_PASSWORD, tenant.topic,
                           tls=mqtt_context(tenant.env)),
                    f"pub-{tenant.name}")
    topic, payload = statestream_state(tenant, "sensor.refused_probe", "12.5")
    pub.publish(payload, topic=topic)
    pub.publish(event(0))
    pub.close()
    wait_for(lambda: points(tenant) == 1, "the eventstream change written to InfluxDB")
    assert worker.metric("hats_points_written_total") == 1
    assert worker.metric("hats_messages_received_total") == 1  # the eventstream message only
    assert not tenant.influx("SELECT * FROM raw./.*/ WHERE entity_id = 'sensor.refused_probe'")

    still = readyz(worker)
    assert (still.status_code, refused in still.text) == (503, True), still.text
    assert worker.stop() == 0
    assert CONFIRMED_LINE not in worker.output()
    assert worker.counters()["dead_lettered"] == 0

    # The same broker grants what the account may read: a worker of only those sources becomes ready.
    allowed = start_worker({**worker_env(tenant, broker, "eventstream,status"),
                            "HATS_MQTT_CLIENT_ID": f"hats-test-{tenant.name}-allowed"})
    ok = readyz(allowed)  # start_worker waited for CONFIRMED_LINE
    assert (ok.status_code, ok.text.strip()) == (200, "ready")
    assert REFUSED_LINE not in allowed.output()
    assert allowed.stop() == 0
    # The broker's own log (`log_type subscribe` lists what it granted): never the statestream filter.
    granted = broker.output()
    assert f" 1 {tenant.topic}" in granted, granted
    assert refused not in granted, granted
