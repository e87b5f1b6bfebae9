"""OpenTelemetry traces through the real stack, received by a real OTLP/HTTP receiver (tests/otlp_receiver.py).

Published messages → the worker's batch spans, whose counts are what InfluxDB and ops.dead_letters hold; a
rollup, a check and a warehouse load of those points → one trace per run, a span per step and per home with
the numbers the stores hold; and a collector that is dead or hung costs spans (counted), never a point.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import psycopg
import pytest

from hats_assets.defs.quality.rollup_checks import raw_points_all_rolled_up
from hats_assets.defs.rollups.assets import rollups
from hats_assets.defs.warehouse.assets import hourly_rollup
from ingest_worker.tracing import EXIT_FLUSH_S
from ingest_worker.tracing.otlp import ROUND_SPAN
from tests.conftest import Tenant, WorkerProcess, wait_for
from tests.homeassistant import asset_resources, publish, state_changed
from tests.integration.test_worker_durability import Start, event, points
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiver

pytestmark = pytest.mark.integration

HOUR = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
PARTITION = HOUR.strftime("%Y-%m-%d-%H:00")
DAY = HOUR.strftime("%Y-%m-%d")
ENTITIES = 5
BAD_PAYLOADS = [b"{not json", b'{"event_type": "state_changed", "event_data": 7}', b"\xff\xfe"]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as live:
        yield live


def traced(tenant: Tenant, endpoint: str) -> dict[str, str]:
    # A short schedule delay: the spans of a quiet worker leave within 0.2 s instead of the default 5 s.
    return {**tenant.env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200"}


def batches(receiver: OtlpReceiver, tenant: Tenant) -> list[ReceivedSpan]:
    """The rounds of batches holding the tenant's (a single-tenant worker's rounds hold only its own)."""
    return [s for s in receiver.received(ROUND_SPAN) if tenant.name in s.attributes["hats.tenants"]]


def dead_letters(tenant: Tenant) -> int:
    with psycopg.connect(tenant.env["HATS_PG_DSN"]) as conn:
        row = conn.execute("SELECT count(*) FROM ops.dead_letters WHERE tenant_id = %s", (tenant.name,)).fetchone()
    assert row is not None
    return int(row[0])


def total(spans: list[ReceivedSpan], attribute: str) -> int:
    return sum(int(s.attributes.get(attribute, 0)) for s in spans)


def test_batch_spans_count_what_the_stores_hold(tenant: Tenant, start_worker: Start, receiver: OtlpReceiver) -> None:
    worker = start_worker(traced(tenant, receiver.endpoint))
    good = [event(i) for i in range(3_000)]
    bad = BAD_PAYLOADS * 4
    publish(tenant, good[:1_500] + bad + good[1_500:])
    wait_for(lambda: points(tenant) == len(good), f"{len(good)} points in InfluxDB")
    wait_for(lambda: dead_letters(tenant) == len(bad), f"{len(bad)} dead letters")
    published = len(good) + len(bad)
    wait_for(lambda: total(batches(receiver, tenant), "hats.messages") == published,
             f"batch spans for all {published} messages")
    spans = batches(receiver, tenant)
    assert total(spans, "hats.outbox_batches") == 0  # InfluxDB was up throughout
    assert total(spans, "hats.points") == points(tenant) == len(good)
    assert total(spans, "hats.dead_letters") == dead_letters(tenant) == len(bad)
    assert total(spans, "hats.influx_rejected") == total(spans, "hats.failed") == 0
    events = [attributes for span in spans for _, attributes in span.events]
    for span in spans:
        assert span.service == "hats-ingest-worker"
        assert span.attributes["hats.tenants"] == [tenant.name]
        assert {name for name, _ in span.events} == {"batch"}
        assert span.attributes["hats.batches"] == len(span.events)
        assert not span.error
        assert span.parent_span_id == ""
        assert span.start_ns < span.end_ns
    # Each batch is an event naming its home, whose counts add up to the stores' too.
    assert {e["hats.tenant"] for e in events} == {tenant.name}
    assert sum(int(e["hats.messages"]) for e in events) == published
    assert sum(int(e["hats.batch"].split(" points, ")[0]) for e in events) == len(good)
    assert sum(int(e.get("hats.dead_letters", 0)) for e in events) == len(bad)
    assert len({s.trace_id for s in spans}) == len(spans)  # one trace per round
    assert len(receiver.received()) == len(spans)  # nothing but this worker's rounds
    assert worker.stop() == 0


def test_the_worker_counts_exported_and_dropped_spans(tenant: Tenant, start_worker: Start,
                                                       receiver: OtlpReceiver) -> None:
    worker = start_worker(traced(tenant, receiver.endpoint))
    publish(tenant, [event(i) for i in range(500)])
    wait_for(lambda: points(tenant) == 500, "500 points in InfluxDB")
    wait_for(lambda: worker.metric("hats_trace_spans_exported_total") == len(receiver.received())
             and total(batches(receiver, tenant), "hats.messages") == 500, "the worker's spans counted as exported")
    assert worker.metric("hats_trace_spans_dropped_total") == 0


@pytest.mark.parametrize("collector", ["dead", "hung"])
def test_a_dead_or_hung_collector_costs_spans_never_points(tenant: Tenant, start_worker: Start,
                                                           receiver: OtlpReceiver, collector: str) -> None:
    if collector == "dead":
        receiver.close()  # the port refuses connections
    else:
        receiver.hold()  # requests are read and never answered
    worker = start_worker({**traced(tenant, receiver.endpoint), "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "3"})
    publish(tenant, [event(i) for i in range(3_000)])
    wait_for(lambda: points(tenant) == 3_000, "all 3000 points in InfluxDB while the collector is " + collector)
    wait_for(lambda: worker.metric("hats_trace_spans_dropped_total") > 0, "the lost spans to be counted")
    assert worker.metric("hats_trace_spans_exported_total") == 0
    stopping = time.monotonic()
    assert worker.stop() == 0
    # The exit waits for the export queue EXIT_FLUSH_S at most (plus a loaded machine's drain and exit).
    assert time.monotonic() - stopping < EXIT_FLUSH_S + 15
    assert worker.counters()["written"] == 3_000
    assert receiver.received() == []


def hour_payloads() -> list[bytes]:
    """A reading a minute of each of ENTITIES thermometers through HOUR."""
    return [state_changed(f"sensor.trace_{e}", f"{20 + e + m / 100:.2f}", HOUR + timedelta(minutes=m, seconds=e),
                          unit_of_measurement="°C", device_class="temperature", state_class="measurement")
            for m in range(60) for e in range(ENTITIES)]


def step_and_homes(receiver: OtlpReceiver, name: str, run_id: str) -> tuple[ReceivedSpan, list[ReceivedSpan]]:
    [step] = [s for s in receiver.received(name) if s.attributes["dagster.run_id"] == run_id]
    homes = [s for s in receiver.received("home") if s.parent_span_id == step.span_id]
    return step, homes


def influx_count(tenant: Tenant, query: str) -> int:
    return sum(int(s["values"][0][1]) for s in tenant.influx(query))


def test_a_rollup_run_is_one_trace_with_a_span_per_step_and_home(
        tenant: Tenant, start_worker: Start, receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    worker: WorkerProcess = start_worker(traced(tenant, receiver.endpoint))
    payloads = hour_payloads()
    publish(tenant, payloads)
    wait_for(lambda: points(tenant) == len(payloads), f"{len(payloads)} points in InfluxDB")
    wait_for(lambda: total(batches(receiver, tenant), "hats.points") == len(payloads), "the worker's batch spans")
    assert worker.stop() == 0

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.endpoint)
    resources = asset_resources(tenant)
    with dg.DagsterInstance.ephemeral() as instance:
        rolled = dg.materialize([rollups, raw_points_all_rolled_up], partition_key=PARTITION, resources=resources,
                                instance=instance)
        loaded = dg.materialize([hourly_rollup], partition_key=DAY, resources=resources, instance=instance)
    assert rolled.success
    assert loaded.success

    window = f"time >= '{HOUR.isoformat()}' AND time < '{(HOUR + timedelta(hours=1)).isoformat()}'"
    raw = influx_count(tenant, f'SELECT count("value") FROM "raw"./.*/ WHERE {window}')
    rows_1m = influx_count(tenant, f'SELECT count("count") FROM "rollup"."gauge_1m" WHERE {window}')
    assert raw == len(payloads)
    assert rows_1m == 60 * ENTITIES

    step, [home] = step_and_homes(receiver, "rollups", rolled.run_id)
    assert step.trace_id == uuid.UUID(rolled.run_id).hex  # the run's trace: its id is the run id
    assert step.parent_span_id == ""
    assert step.service == "hats-dagster"
    assert (step.attributes["hats.partition"], step.attributes["dagster.job"]) == (PARTITION, rolled.job_def.name)
    assert step.attributes["dagster.assets"] == ["rollup_1h", "rollup_1m", "rollup_5m", "rollup_states_1h"]
    assert step.attributes["hats.window_start"] == HOUR.isoformat()
    assert (step.attributes["hats.tenants"], step.attributes["hats.tenants_ok"]) == (1, 1)
    assert step.attributes["hats.points_read"] == raw
    assert home.trace_id == step.trace_id
    assert (home.attributes["hats.tenant"], home.attributes["hats.outcome"]) == (tenant.name, "ok")
    assert (home.attributes["hats.points_read"], home.attributes["hats.rows_written"]) == (raw, rows_1m)
    assert not step.error
    assert not home.error

    check, [checked] = step_and_homes(receiver, "rollup_1m:raw_points_all_rolled_up", rolled.run_id)
    assert check.trace_id == step.trace_id  # the run's steps share its trace
    assert check.attributes["dagster.check"] == "raw_points_all_rolled_up"
    assert (checked.attributes["hats.outcome"], checked.attributes["hats.raw_points"]) == ("passed", raw)
    assert checked.attributes["hats.entities_checked"] == ENTITIES

    with psycopg.connect(tenant.env["HATS_PG_DSN"]) as conn:
        row = conn.execute("SELECT count(*) FROM analytics.hourly_rollup WHERE tenant_id = %s",
                           (tenant.name,)).fetchone()
    assert row is not None
    load, [loaded_home] = step_and_homes(receiver, "hourly_rollup", loaded.run_id)
    assert load.trace_id == uuid.UUID(loaded.run_id).hex
    assert load.attributes["hats.partition"] == DAY
    assert loaded_home.attributes["hats.rows_upserted"] == int(row[0]) == ENTITIES

    # A dead collector: the run still succeeds, and its step waits for the export at most FLUSH_S.
    receiver.close()
    with dg.DagsterInstance.ephemeral() as instance:
        assert dg.materialize([rollups], partition_key=PARTITION, resources=resources, instance=instance).success
    assert influx_count(tenant, f'SELECT count("count") FROM "rollup"."gauge_1m" WHERE {window}') == rows_1m
