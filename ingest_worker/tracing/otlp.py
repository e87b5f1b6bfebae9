"""The worker's spans over OTLP/HTTP (protobuf), imported only when an endpoint is configured.

A batch's span runs from its first message (when the batch began) to its acknowledgement, with one event
per stage — `parsed` (the flush starts), `durable` (InfluxDB or the outbox), `committed` (dead letters,
metadata, ingest hours in PostgreSQL), `acknowledged` — and its counts as attributes. Events, not child
spans: a registry-mode worker flushes a thousand homes' small batches, and one span per batch keeps the
cost per flush to a few microseconds. An outbox record written later by the replayer has its own span.

Export never touches the event loop: the SDK's `BatchSpanProcessor` keeps ended spans in a bounded queue
(`OTEL_BSP_MAX_QUEUE_SIZE`, 2,048) and its own thread sends them. When the collector is away the thread
waits on it (the exporter's retries, at most `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, 10 s, per request), the
queue fills and the newest spans push out the oldest: `hats_trace_spans_dropped_total{reason}` counts
spans lost that way (`queue_full`) and in failed requests (`export_failed`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Span, Status, StatusCode

from ingest_worker import metrics
from ingest_worker.tracing import BatchSpan

log = logging.getLogger(__name__)

TRACER_NAME = "ingest_worker"
BATCH_SPAN = "ingest batch"
REPLAY_SPAN = "outbox replay"
ERROR_CHARS = 500


class _CountingExporter(SpanExporter):
    """The OTLP exporter, counting what reached the collector and what a failed request lost."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._inner.export(spans)
        except Exception:  # an exporter bug must cost spans, never the processor's thread
            log.exception("exporting %d span(s) failed", len(spans))
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            metrics.TRACE_SPANS_EXPORTED.inc(len(spans))
        else:
            metrics.TRACE_SPANS_DROPPED.labels("export_failed").inc(len(spans))
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


class _DropCounter:
    """The SDK processor's own hook for the spans it drops (its `ProcessorMetricsT`), as a Prometheus counter."""

    def register_queue_size(self, get_queue_size: object) -> None:
        return

    def drop_items(self, count: int, error_type: str = "queue_full") -> None:
        metrics.TRACE_SPANS_DROPPED.labels(error_type).inc(count)

    def finish_items(self, count: int) -> None:
        return  # handed to the exporter: `_CountingExporter` counts the outcome


def counting_processor(exporter: SpanExporter) -> BatchSpanProcessor:
    """A `BatchSpanProcessor` (queue and batch sizes from `OTEL_BSP_*`) whose queue drops are counted.

    The SDK reports them only to an OpenTelemetry meter, behind an opt-in variable; the worker's metrics
    are Prometheus', so the hook is replaced (pinned by tests/unit/test_tracing.py)."""
    processor = BatchSpanProcessor(_CountingExporter(exporter))
    inner = getattr(processor, "_batch_processor", None)
    if inner is not None and hasattr(inner, "_metrics"):
        inner._metrics = _DropCounter()
    else:
        log.warning("this opentelemetry-sdk hides its span queue: spans dropped on a full queue are not counted")
    return processor


class OtlpBatchSpan:
    __slots__ = ("_mark", "_span")

    def __init__(self, span: Span) -> None:
        self._span = span
        self._mark = time.time_ns()
        span.add_event("parsed", timestamp=self._mark)

    def _lap(self) -> tuple[int, float]:
        now = time.time_ns()
        seconds, self._mark = (now - self._mark) / 1e9, now
        return now, seconds

    def durable(self, direct: bool, lines: int, rejected: int) -> None:
        now, seconds = self._lap()
        path = "direct" if direct else "outbox"
        self._span.set_attributes({"hats.durable": path, "hats.points": lines - rejected,
                                   "hats.influx_rejected": rejected, "hats.durable_s": seconds})
        self._span.add_event("durable", {"hats.durable": path}, timestamp=now)

    def retrying(self, what: str, error: str, delay_s: float) -> None:
        self._span.add_event("retrying", {"hats.store": what, "exception.message": error[:ERROR_CHARS],
                                          "hats.retry_in_s": delay_s})

    def committed(self, dead_letters: int) -> None:
        now, seconds = self._lap()
        self._span.set_attributes({"hats.dead_letters": dead_letters, "hats.commit_s": seconds})
        self._span.add_event("committed", timestamp=now)

    def acknowledged(self) -> None:
        now, seconds = self._lap()
        self._span.set_attribute("hats.ack_s", seconds)
        self._span.add_event("acknowledged", timestamp=now)
        self._span.end(end_time=now)

    def failed(self, error: BaseException) -> None:
        self._span.record_exception(error)
        self._span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:ERROR_CHARS]))
        self._span.end()


class OtlpBatchTracer:
    """One provider, exporter and processor for the process; every pipeline (every home) shares them."""

    def __init__(self, endpoint: str, service_name: str) -> None:
        self._processor = counting_processor(OTLPSpanExporter(endpoint=endpoint))
        # Not shut down at interpreter exit (its shutdown waits up to 30 s on a dead collector): `flush` is bounded.
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}), shutdown_on_exit=False)
        provider.add_span_processor(self._processor)
        self._tracer = provider.get_tracer(TRACER_NAME)
        for reason in ("queue_full", "export_failed"):  # present from the start, so a rate can be taken at once
            metrics.TRACE_SPANS_DROPPED.labels(reason)
        log.info("tracing: spans of every batch go to %s (OTLP/HTTP) as service %s", endpoint, service_name)

    def batch(self, tenant: str, started_ns: int, messages: int, parse_ns: int) -> BatchSpan:
        span = self._tracer.start_span(BATCH_SPAN, start_time=started_ns, attributes={
            "hats.tenant": tenant, "hats.messages": messages, "hats.parse_s": parse_ns / 1e9})
        return OtlpBatchSpan(span)

    def replayed(self, tenant: str, lines: int, rejected: int, started_ns: int) -> None:
        span = self._tracer.start_span(REPLAY_SPAN, start_time=started_ns, attributes={
            "hats.tenant": tenant, "hats.durable": "replayed", "hats.points": lines - rejected,
            "hats.influx_rejected": rejected, "hats.dead_letters": rejected})
        span.end()

    def flush(self, timeout_s: float) -> None:
        flushing = threading.Thread(target=self._processor.force_flush, name="otel-flush", daemon=True)
        flushing.start()
        flushing.join(timeout_s)
