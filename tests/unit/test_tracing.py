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


def test_a_batch_span_carries_its_stages_and_counts(no_otel: pytest.MonkeyPatch) -> None:
    from ingest_worker.tracing.otlp import OtlpBatchTracer

    with otlp_receiver() as receiver:
        tracer = OtlpBatchTracer(receiver.endpoint, "hats-test")
        began = time.time_ns()
        span = tracer.batch("acme", began, messages=12, parse_ns=3_000_000)
        span.durable(direct=True, lines=10, rejected=2)
        span.retrying("postgresql", "connection refused", 0.5)
        span.committed(dead_letters=4)
        span.acknowledged()
        tracer.batch("acme", time.time_ns(), messages=1, parse_ns=0).failed(RuntimeError("PostgreSQL said no"))
        tracer.replayed("acme", lines=7, rejected=1, started_ns=time.time_ns())
        exported = _exported()
        tracer.flush(30)
        batch, failed = receiver.received("ingest batch")
        [replay] = receiver.received("outbox replay")
    assert _exported() == exported + 3
    assert batch.service == "hats-test"
    assert batch.start_ns == began
    assert {key: batch.attributes[key] for key in ("hats.tenant", "hats.messages", "hats.points", "hats.durable",
                                                   "hats.influx_rejected", "hats.dead_letters")} == {
        "hats.tenant": "acme", "hats.messages": 12, "hats.points": 8, "hats.durable": "direct",
        "hats.influx_rejected": 2, "hats.dead_letters": 4}
    assert batch.attributes["hats.parse_s"] == pytest.approx(0.003)
    assert [name for name, _ in batch.events] == ["parsed", "durable", "retrying", "committed", "acknowledged"]
    assert batch.events[2][1]["hats.store"] == "postgresql"
    assert not batch.error
    assert failed.error
    assert "PostgreSQL said no" in failed.status_message
    assert [name for name, _ in failed.events] == ["parsed", "exception"]
    assert (replay.attributes["hats.points"], replay.attributes["hats.dead_letters"]) == (6, 1)


def test_a_hung_collector_costs_counted_spans_never_a_wait(no_otel: pytest.MonkeyPatch) -> None:
    from ingest_worker.tracing.otlp import OtlpBatchTracer

    no_otel.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "4")
    no_otel.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "2")
    no_otel.setenv("OTEL_BSP_SCHEDULE_DELAY", "10")
    with otlp_receiver() as receiver:
        receiver.hold()
        tracer = OtlpBatchTracer(receiver.endpoint, "hats-test")
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
        dropped = _dropped("queue_full") - before
        receiver.release()
        tracer.flush(30)
        received = len(receiver.received("ingest batch"))
    assert spent < 1.0  # the batches never waited on the collector (41 spans take about a millisecond)
    assert dropped > 0
    assert received + dropped == 41  # every span reached the collector or was counted as dropped


def test_a_dead_collector_counts_the_spans_it_lost(no_otel: pytest.MonkeyPatch) -> None:
    from ingest_worker.tracing.otlp import OtlpBatchTracer

    no_otel.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2")
    with otlp_receiver() as receiver:
        endpoint = receiver.endpoint
    tracer = OtlpBatchTracer(endpoint, "hats-test")  # the port refuses connections now
    before = _dropped("export_failed")
    for _ in range(3):
        tracer.batch("acme", time.time_ns(), 1, 0).acknowledged()
    tracer.flush(30)
    assert _dropped("export_failed") - before == 3
