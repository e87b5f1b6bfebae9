"""A worker restarted onto a large backlog in its persistent session (real Mosquitto, real worker processes).

Mosquitto sends the queued messages first (its in-flight window, then one per acknowledgement) and replays
the retained discovery configs only after all of them, so a fresh process meets zigbee2mqtt states before
the configs that make their topics owned (`ingest_worker/settling.py`). The backlog here is larger than the
broker's in-flight window (20,000), so the configs come well after the SUBACK: a window of wall time after
the SUBACK dead-letters the states a slow worker has not matched yet (thousands, on the code before).
The SUBACK itself queues behind the in-flight window, so readiness does not wait for it when the resumed
session was granted the configured filters before (`ingest_worker/session_filters.py`)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import READY_LINE, Tenant, WorkerProcess, wait_for
from tests.integration.test_worker_durability import Start, publisher
from tests.integration.test_worker_formats import statestream_topic
from tests.integration.test_worker_redelivery import DEVICES, device_topic, publish_configs, stored

pytestmark = pytest.mark.integration

# start_worker(env, ready_line): None starts it without waiting for its log of the SUBACKs.
StartAt = Callable[..., WorkerProcess]
BACKLOG = 60_000  # three in-flight windows: the retained configs are replayed after ≈40,000 post-SUBACK messages
PLAIN = 8  # statestream entities (owned by their prefix at once) between the discovery states


def door(device: int) -> str:
    return f"sensor.door_{device:02d}_battery"


def publish_backlog(tenant: Tenant, count: int, first: int = 0) -> Counter[str]:
    """`count` states without timestamps, one in four a discovery device's, the rest statestream ones; returns
    what the broker acknowledged, per entity."""
    pub = publisher(tenant)
    sent: Counter[str] = Counter()
    try:
        for i in range(first, first + count):
            if i % 4 == 0:
                device = (i // 4) % DEVICES
                pub.publish(json.dumps({"battery": i % 100, "seq": i}).encode(), topic=device_topic(tenant, device))
                sent[door(device)] += 1
            else:
                entity = f"sensor.plain_{i % PLAIN}"
                pub.publish(str(i).encode(), topic=statestream_topic(tenant, entity, "state"))
                sent[entity] += 1
    finally:
        pub.close()
    return sent


def released(worker: WorkerProcess, outcome: str) -> float:
    """`hats_parked_released_total{outcome=…}` from the worker's /metrics."""
    sample = f'hats_parked_released_total{{outcome="{outcome}"}} '
    lines = httpx.get(f"{worker.url}/metrics", timeout=10).text.splitlines()
    return sum(float(line[len(sample):]) for line in lines if line.startswith(sample))


def readiness(worker: WorkerProcess) -> tuple[int, str] | None:
    """/readyz's status and text; None while the worker's HTTP server is not listening yet."""
    try:
        answer = httpx.get(f"{worker.url}/readyz", timeout=5)
    except httpx.TransportError:
        return None
    return answer.status_code, answer.text


def first_answer_once_connected(worker: WorkerProcess) -> tuple[int, str]:
    """The first /readyz answer after the worker has connected to the broker (polled as fast as it answers)."""
    def connected() -> tuple[int, str] | None:
        answer = readiness(worker)
        return answer if answer is not None and "not connected" not in answer[1] else None

    answer: tuple[int, str] = wait_for(connected, "the worker connected to the broker", interval=0.005)
    return answer


def session_with_configs(tenant: Tenant, start: Start, env: dict[str, str] | None = None) -> Counter[str]:
    """Retained configs, a first worker that learns them and makes the persistent session, then stopped."""
    publish_configs(tenant)
    worker = start(env or tenant.env)
    published = publish_backlog(tenant, 4 * DEVICES)
    wait_for(lambda: stored(tenant) == published, "one state of every entity through the first worker")
    assert worker.stop() == 0
    return published


def test_discovery_states_queued_behind_a_large_backlog_are_stored_under_their_entities(
        tenant: Tenant, start_worker: Start) -> None:
    published = session_with_configs(tenant, start_worker)
    published += publish_backlog(tenant, BACKLOG, first=4 * DEVICES)
    worker = start_worker(tenant.env)
    wait_for(lambda: stored(tenant) == published or sum(stored(tenant).values()) >= sum(published.values())
             or worker.metric("hats_dead_letters_total") > 0,
             f"all {sum(published.values())} states after the restart", timeout=240)
    parked_owned = released(worker, "owned")
    assert worker.stop() == 0
    assert worker.counters()["dead_lettered"] == 0
    final = stored(tenant)
    assert final == published, {entity: final[entity] - count for entity, count in published.items()}
    assert parked_owned > 0  # the states did wait for their configs (not matched by luck of timing)


def test_a_worker_restarted_onto_a_backlog_is_ready_before_it_has_processed_it(tenant: Tenant,
                                                                               start_worker: StartAt) -> None:
    published = session_with_configs(tenant, start_worker)
    published += publish_backlog(tenant, BACKLOG, first=4 * DEVICES)
    worker = start_worker(tenant.env, None)
    status, text = first_answer_once_connected(worker)
    unprocessed = sum(published.values()) - sum(stored(tenant).values())
    assert status == 200, text
    assert unprocessed > 0  # ready while the backlog is still being consumed, not after it
    wait_for(lambda: stored(tenant) == published or sum(stored(tenant).values()) >= sum(published.values()),
             f"all {sum(published.values())} states after the restart", timeout=240)
    assert worker.stop() == 0
    assert stored(tenant) == published


def test_a_worker_whose_filters_changed_is_not_ready_until_the_suback(tenant: Tenant,
                                                                      start_worker: StartAt) -> None:
    # The session was made without eventstream; the restarted worker is configured with it (its default):
    # one filter the session was never granted.
    without_events = {**tenant.env, "HATS_SOURCES": "statestream,discovery,status"}
    published = session_with_configs(tenant, start_worker, without_events)
    published += publish_backlog(tenant, BACKLOG, first=4 * DEVICES)
    worker = start_worker(tenant.env, None)
    status, text = first_answer_once_connected(worker)
    assert status == 503, text
    assert "waiting for the broker to confirm the subscriptions" in text
    wait_for(lambda: (answer := readiness(worker)) is not None and answer[0] == 200, "ready once the SUBACKs came",
             timeout=240)
    wait_for(lambda: READY_LINE in worker.output(), "the worker's log of the broker's SUBACKs")
    wait_for(lambda: stored(tenant) == published or sum(stored(tenant).values()) >= sum(published.values()),
             f"all {sum(published.values())} states after the restart", timeout=240)
    assert worker.stop() == 0
    assert stored(tenant) == published
