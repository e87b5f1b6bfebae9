"""The worker's traces: off without an endpoint (no OpenTelemetry module even imported), spans over real
OTLP/HTTP to a receiver when on, and every span either received or counted as dropped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from devstack.profile import PROJECT_ROOT
from ingest_worker.metrics import REGISTRY
from ingest_worker.settings import ConfigError, load_settings
from ingest_worker.tracing.settings import TraceSettings
from tests.conftest import wait_for
from tests.otlp_receiver import otlp_receiver
from tests.unit.test_settings import VALID

# Everything a worker process or an offline producer imports, a pipeline built and fed, then which
# OpenTelemetry modules are loaded.
PROBE = """
import json, sys
import ingest_worker.__main__, ingest_worker.app, ingest_worker.homes, ingest_worker.door
import ingest_worker.deadletters, ingest_worker.importers.run
from ingest_worker import tracing
from ingest_worker.pipeline import Pipeline
from ingest_worker.sources.eventstream import EventstreamSource
from ingest_worker.store.metadata import MetadataStore
pipeline = Pipeline("probe", [EventstreamSource("homeassistant/events")], None, MetadataStore("probe", 10), None, "",
                    None, 262_144, 5_000, 0.25)
pipeline.process([])
print(json.dumps({"tracing": tracing.batch_tracer() is not None,
                  "otel": sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")}))
"""


def _probe(**otel: str) -> dict[str, object]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")} | otel
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                            cwd=PROJECT_ROOT, env=env, timeout=120)
    loaded: dict[str, object] = json.loads(result.stdout)
    return loaded


def test_without_an_endpoint_the_worker_imports_no_opentelemetry() -> None:
    assert _probe() == {"tracing": False, "otel": []}
    on = _probe(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318")
    assert on["tracing"] is True
    otel = on["otel"]
    assert isinstance(otel, list)
    assert {"opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter"} <= set(otel)


@pytest.fixture
def no_otel(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in list(os.environ):
        if key.startswith(("OTEL_", "HATS_")):
            monkeypatch.delenv(key)
    return monkeypatch


def test_the_endpoint_is_the_sdks_own_variables(no_otel: pytest.MonkeyPatch) -> None:
    assert TraceSettings().endpoint is None
    no_otel.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
    assert TraceSettings().endpoint == "http://collector:4318/v1/traces"
    no_otel.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://traces.example:443/otlp/v1/traces")
    assert TraceSettings().endpoint == "https://traces.example:443/otlp/v1/traces"  # the signal's own URL wins
    assert TraceSettings().otel_service_name == "hats-ingest-worker"
    no_otel.setenv("OTEL_SERVICE_NAME", "ingest-eu-1")
    assert TraceSettings().otel_service_name == "ingest-eu-1"
    no_otel.setenv("OTEL_SDK_DISABLED", "true")
    assert TraceSettings().endpoint is None


def test_an_invalid_endpoint_stops_the_worker_naming_it(no_otel: pytest.MonkeyPatch) -> None:
    for key, value in VALID.items():
        no_otel.setenv(key, value)
    no_otel.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_ENDPOINT is invalid: must start with http"):
        load_settings()


def _dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("hats_trace_spans_dropped_total", {"reason": reason}) or 0.0


def _exported() -> float:
    return REGISTRY.get_sample_value("hats_trace_spans_exported_total") or 0.0


def test_a_round_is_one_span_with_an_event_per_batch(no_otel: pytest.MonkeyPatch) -> None:
    from ingest_worker.tracing.otlp import ROUND_SPAN, OtlpBatchTracer

    with otlp_receiver() as receiver:
        tracer = OtlpBatchTracer(receiver.endpoint, "hats-test", round_s=60)  # one round, ended by the flush
        began = time.time_ns()
        span = tracer.batch("acme", began, messages=12, parse_ns=3_000_000)
        span.durable(direct=True, lines=10, rejected=2)
        span.retrying("postgresql", "connection refused", 0.5)
        span.committed(dead_letters=4)
        span.acknowledged()
        other = tracer.batch("other", time.time_ns(), messages=3, parse_ns=0)
        other.durable(direct=False, lines=3, rejected=0)
        other.committed(dead_letters=0)
        other.acknowledged()
        tracer.batch("acme", time.time_ns(), messages=1, parse_ns=0).failed(RuntimeError("PostgreSQL said no"))
        tracer.replayed("other", lines=7, rejected=1, started_ns=time.time_ns())
        exported = _exported()
        tracer.flush(30)
        [round_] = receiver.received(ROUND_SPAN)
    assert _exported() == exported + 1
    assert receiver.received() == [round_]
    assert round_.service == "hats-test"
    assert round_.start_ns == began  # its first batch's first message
    assert {key: value for key, value in round_.attributes.items() if key != "hats.latency_max_s"} == {
        "hats.batches": 3, "hats.messages": 16, "hats.points": 8 + 3, "hats.dead_letters": 4 + 1,
        "hats.influx_rejected": 2, "hats.outbox_batches": 1, "hats.failed": 1, "hats.replayed_points": 6,
        "hats.tenants": ["acme", "other"]}
    assert round_.error
    assert round_.status_message == "acme: RuntimeError: PostgreSQL said no"
    assert [name for name, _ in round_.events] == ["retrying", "batch", "batch", "exception", "replayed"]
    retrying, acme, other_batch, failed, replayed = (attributes for _, attributes in round_.events)
    assert (retrying["hats.tenant"], retrying["hats.store"]) == ("acme", "postgresql")
    line = acme.pop("hats.batch")
    assert acme == {"hats.tenant": "acme", "hats.messages": 12, "hats.dead_letters": 4, "hats.influx_rejected": 2}
    assert line.startswith("8 points, ")
    assert " s from its first message: parse 3.0 ms, durable " in line
    assert round_.attributes["hats.latency_max_s"] >= float(line.split(", ")[1].split(" s ")[0])
    line = other_batch.pop("hats.batch")
    assert line.startswith("3 points, ")
    assert ", outbox " in line
    assert other_batch == {"hats.tenant": "other", "hats.messages": 3, "hats.durable": "outbox"}
    assert failed == {"hats.tenant": "acme", "hats.messages": 1, "exception.type": "RuntimeError",
                      "exception.message": "PostgreSQL said no"}
    assert replayed == {"hats.tenant": "other", "hats.points": 6, "hats.dead_letters": 1}


def test_a_round_ends_when_full_or_a_moment_after_its_first_batch(no_otel: pytest.MonkeyPatch) -> None:
    from ingest_worker.tracing.otlp import ROUND_SPAN, OtlpBatchTracer

    no_otel.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    with otlp_receiver() as receiver:
        tracer = OtlpBatchTracer(receiver.endpoint, "hats-test", max_events=3, round_s=0.2)
        for index in range(7):
            tracer.batch(f"home{index}", time.time_ns(), 1, 0).acknowledged()
        # No flush: the last round ends by itself, round_s after its batch.
        wait_for(lambda: sum(len(s.events) for s in receiver.received(ROUND_SPAN)) == 7, "all 7 batches exported")
        rounds = sorted(receiver.received(ROUND_SPAN), key=lambda s: s.start_ns)
    assert [len(s.events) for s in rounds] == [3, 3, 1]
    assert [s.attributes["hats.tenants"] for s in rounds] == [["home0", "home1", "home2"],
                                                              ["home3", "home4", "home5"], ["home6"]]


def test_a_hung_collector_costs_counted_spans_never_a_wait(no_otel: pytest.MonkeyPatch) -> None:
    from ingest_worker.tracing.otlp import ROUND_SPAN, OtlpBatchTracer

    no_otel.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "4")
    no_otel.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2")
    no_otel.setenv("OTEL_BSP_SCHEDULE_DELAY", "10")
    with otlp_receiver() as receiver:
        receiver.hold()
        tracer = OtlpBatchTracer(receiver.endpoint, "hats-test", max_events=1)  # a round per batch
        before = _dropped("queue_full")
        tracer.batch("acme", time.time_ns(), 1, 0).acknowledged()
        wait_for(lambda: receiver.arrived == 1, "the exporter's first request, left unanswered")
        started = time.monotonic()
        for _ in range(40):
            span = tracer.batch("acme", time.time_ns(), 1, 0)
            span.durable(True, 1, 0)
            span.committed(0)
            span.acknowledged()
        spent = time.monotonic() - started
        wait_for(lambda: _dropped("queue_full") > before, "spans dropped on the full queue")
        receiver.release()
        tracer.flush(30)
        dropped = _dropped("queue_full") - before
        received = len(receiver.received(ROUND_SPAN))
    assert spent < 1.0  # the batches never waited on the collector (41 records take well under a millisecond)
    assert received + dropped == 41  # every span reached the collector or was counted as dropped


def test_a_dead_collector_counts_the_spans_it_lost(no_otel: pytest.MonkeyPatch) -> None:
    from ingest_worker.tracing.otlp import OtlpBatchTracer

    no_otel.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2")
    with otlp_receiver() as receiver:
        endpoint = receiver.endpoint
    tracer = OtlpBatchTracer(endpoint, "hats-test", max_events=1)  # the port refuses connections now
    before = _dropped("export_failed")
    for _ in range(3):
        tracer.batch("acme", time.time_ns(), 1, 0).acknowledged()
    tracer.flush(30)
    assert _dropped("export_failed") - before == 3
