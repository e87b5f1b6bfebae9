"""What operators watch: /healthz, /readyz, /metrics and JSON logs of a real worker process."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import Tenant, WorkerProcess, wait_for
from tests.integration.test_worker_durability import Start, event, points, publisher

pytestmark = pytest.mark.integration


def test_health_ready_and_metrics(tenant: Tenant, start_worker: Start) -> None:
    worker: WorkerProcess = start_worker({**tenant.env, "HATS_LOG_FORMAT": "json"})
    assert httpx.get(f"{worker.url}/healthz", timeout=5).status_code == 200
    ready = httpx.get(f"{worker.url}/readyz", timeout=5)
    assert (ready.status_code, ready.text.strip()) == (200, "ready")
    assert httpx.get(f"{worker.url}/nothing", timeout=5).status_code == 404

    pub = publisher(tenant)
    for i in range(300):
        pub.publish(event(i))
    pub.publish(b"{broken")
    pub.close()
    wait_for(lambda: points(tenant) == 300, "300 points")
    wait_for(lambda: worker.metric("hats_dead_letters_total") == 1, "the dead letter counted")
    assert worker.metric("hats_messages_received_total") == 301
    assert worker.metric("hats_points_written_total") == 300
    assert worker.metric("hats_batch_points_count") >= 1
    assert worker.metric("hats_mqtt_connected") == 1
    assert worker.metric("hats_outbox_batches") == 0

    assert worker.stop() == 0
    lines = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
    assert {"ts", "level", "logger", "msg"} <= set(lines[0])
    assert any(entry["msg"].startswith("stopped: ") for entry in lines)
