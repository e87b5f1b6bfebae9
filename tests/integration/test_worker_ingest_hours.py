"""`ops.ingest_hours`, the rollups' late-data signal: per UTC hour of the points' own timestamps, how many
points InfluxDB accepted, with a version that rises on every write. Real broker, real worker process."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from devstack import influxdb
from devstack.profile import Profile
from tests.conftest import Tenant, WorkerProcess, wait_for
from tests.integration.test_worker_durability import Start, points, publisher
from tests.integration.test_worker_formats import pg_rows, state_changed

pytestmark = pytest.mark.integration

# Two recent whole hours (inside the raw retention), so the points fall into exactly these two rows.
HOUR_A = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
HOUR_B = HOUR_A + timedelta(hours=1)


def send(tenant: Tenant, hour: datetime, count: int, first: int = 0) -> None:
    """`count` state changes (each its own point: its own entity/timestamp) stamped inside `hour`."""
    pub = publisher(tenant)
    try:
        for i in range(first, first + count):
            at = hour + timedelta(seconds=i % 3_000, microseconds=i // 3_000 + 1)
            pub.publish(state_changed(f"sensor.hours_{i % 7}", f"{i % 500}.5", at,
                                      unit_of_measurement="W", device_class="power"))
    finally:
        pub.close()


def hours(tenant: Tenant) -> dict[datetime, tuple[int, int]]:
    """The tenant's rows: hour → (points, version)."""
    rows = pg_rows(tenant, "SELECT hour, points, version FROM ops.ingest_hours WHERE tenant_id = %s", tenant.name)
    return {hour: (points_, version) for hour, points_, version in rows}


def counts(tenant: Tenant) -> dict[datetime, int]:
    return {hour: points_ for hour, (points_, _) in hours(tenant).items()}


def processed(worker: WorkerProcess, messages: int) -> bool:
    return worker.metric("hats_messages_received_total") >= messages and worker.metric("hats_unacked_messages") == 0


def test_points_are_counted_per_hour_of_their_timestamps_and_late_points_raise_the_version(
        tenant: Tenant, start_worker: Start) -> None:
    worker = start_worker(tenant.env)
    send(tenant, HOUR_A, 120)
    send(tenant, HOUR_B, 80, first=10_000)
    pub = publisher(tenant)
    pub.publish(b"{not json")  # a dead letter: no point, not counted
    pub.close()
    wait_for(lambda: counts(tenant) == {HOUR_A: 120, HOUR_B: 80}, "120 and 80 points in ops.ingest_hours")
    assert points(tenant) == 200
    before = hours(tenant)

    send(tenant, HOUR_A, 30, first=20_000)  # late data for hour A
    wait_for(lambda: counts(tenant) == {HOUR_A: 150, HOUR_B: 80}, "the 30 late points of hour A")
    after = hours(tenant)
    assert after[HOUR_A][1] > before[HOUR_A][1]  # hour A is re-rolled
    assert after[HOUR_B] == before[HOUR_B]  # hour B is not
    assert worker.stop() == 0
    assert worker.counters()["dead_lettered"] == 1
    assert counts(tenant) == {HOUR_A: 150, HOUR_B: 80}  # the drain at shutdown counted nothing twice


def test_outboxed_points_are_counted_once_when_influxdb_has_them(
        profile: Profile, secrets: dict[str, str], tenant: Tenant, start_worker: Start) -> None:
    worker = start_worker(tenant.env)
    send(tenant, HOUR_A, 100)
    wait_for(lambda: counts(tenant) == {HOUR_A: 100}, "100 points of hour A written directly")
    version_a = hours(tenant)[HOUR_A][1]

    influxdb.stop(profile)
    try:
        send(tenant, HOUR_A, 150, first=10_000)
        send(tenant, HOUR_B, 200, first=20_000)
        wait_for(lambda: worker.metric("hats_outbox_batches") > 0 and processed(worker, 450),
                 "all 450 messages processed, the last 350 in the outbox and acked")
        # Acked and durable, but not in InfluxDB: nothing counted yet (counting them now could let a
        # rollup record the new version before it can read the points).
        assert hours(tenant) == {HOUR_A: (100, version_a)}
    finally:
        influxdb.start(profile, secrets)
    wait_for(lambda: counts(tenant) == {HOUR_A: 250, HOUR_B: 200}, "the outbox's points counted once replayed",
             timeout=120)
    wait_for(lambda: worker.metric("hats_outbox_batches") == 0, "the outbox to drain")
    assert points(tenant) == 450
    assert hours(tenant)[HOUR_A][1] > version_a
    assert worker.stop() == 0
    assert counts(tenant) == {HOUR_A: 250, HOUR_B: 200}
