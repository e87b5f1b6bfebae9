"""The worker's spans over OTLP/HTTP (protobuf), imported only when an endpoint is configured.

One span `ingest batches` per round: the batches acknowledged within `ROUND_S` (at most `ROUND_MAX_EVENTS`),
of every home the process serves. Each batch is an event `batch` at its acknowledgement, carrying its home
(`hats.tenant`), counts and stage timings (parse, durable — InfluxDB or the outbox —, committed — dead letters,
metadata, ingest hours in PostgreSQL —, acknowledged); `retrying` (a store away), `exception` (a failed flush,
which also marks the span's status) and `replayed` (an outbox record the replayer wrote) are events of the
round too. Why rounds, not a span per batch: a registry-mode worker serving hundreds of quiet homes flushes
hundreds of batches of a few messages a second, and an SDK span per batch cost ≈9–10 % of its CPU (a
4-message batch's span 243–271 µs against ≈2.7 ms of the worker's CPU per batch, `bench/tracing_overhead.py`
parts 2 and 3); a batch is now a few plain values on the event loop and one lean event, the SDK objects made
once per round by the round's own thread: 41–63 µs a batch, ≈2 %.

Export never touches the event loop: the SDK's `BatchSpanProcessor` keeps ended spans in a bounded queue
(`OTEL_BSP_MAX_QUEUE_SIZE`, 2,048 rounds) and its own thread sends them. When the collector is away the thread
waits on it (the exporter's retries, at most `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, 10 s, per request), the
queue fills and the newest spans push out the oldest: `hats_trace_spans_dropped_total{reason}` counts
spans lost that way (`queue_full`) and in failed requests (`export_failed`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

from ingest_worker import metrics
from ingest_worker.tracing import BatchSpan

log = logging.getLogger(__name__)

TRACER_NAME = "ingest_worker"
ROUND_SPAN = "ingest batches"
BATCH_EVENT = "batch"
RETRY_EVENT = "retrying"
FAILED_EVENT = "exception"  # OpenTelemetry's name for an exception event
REPLAY_EVENT = "replayed"
ERROR_CHARS = 500
# A round ends this long after its first event, or at this many events (the SDK's default limit of events per
# span, set explicitly so that OTEL_SPAN_EVENT_COUNT_LIMIT cannot cut a round short).
ROUND_S = 1.0
ROUND_MAX_EVENTS = 128
# What a round's span sums over its events.
ROUND_TOTALS = ("hats.batches", "hats.messages", "hats.points", "hats.dead_letters", "hats.influx_rejected",
                "hats.outbox_batches", "hats.failed", "hats.replayed_points")


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


@dataclass(frozen=True, slots=True)
class _Event:
    """One event of a round, as plain values until the round's thread makes it an SDK event."""

    name: str
    at_ns: int
    attributes: dict[str, AttributeValue]
    started_ns: int  # the round's span starts at its earliest event's start (a batch: its first message)
    latency_s: float = 0.0  # a batch's, from its first message to its acknowledgement
    points: int = 0  # a batch's, for its round's sum (its event has them in words)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


class OtlpBatchSpan:
    """A batch's record while it flushes: its numbers and its stage clock, no SDK object. Its event is lean —
    each attribute costs the SDK and the export ~4 µs, and a dozen of them per batch would be a few % of a
    quiet home's flush (measured) — so points and stage timings travel as one readable line (`hats.batch`) and
    the rarer counts only when not 0; the round's span carries the sums and the slowest batch as numbers."""

    __slots__ = ("_commit_s", "_dead_letters", "_direct", "_durable_s", "_mark", "_messages", "_parse_s",
                 "_points", "_rejected", "_rounds", "_started_ns", "_tenant")


    def __init__(self, rounds: Rounds, tenant: str, started_ns: int, messages: int, parse_ns: int) -> None:
        self._rounds, self._tenant, self._started_ns, self._messages = rounds, tenant, started_ns, messages
        self._parse_s = parse_ns / 1e9
        self._mark = time.time_ns()  # the flush starts: the batch is parsed
        self._direct, self._points, self._rejected, self._dead_letters = True, 0, 0, 0
        self._durable_s = self._commit_s = 0.0

    def _lap(self) -> tuple[int, float]:
        now = time.time_ns()
        seconds, self._mark = (now - self._mark) / 1e9, now
        return now, seconds

    def durable(self, direct: bool, lines: int, rejected: int) -> None:
        _, self._durable_s = self._lap()
        self._direct, self._points, self._rejected = direct, lines - rejected, rejected

    def retrying(self, what: str, error: str, delay_s: float) -> None:
        self._rounds.add(_Event(RETRY_EVENT, time.time_ns(), {
            "hats.tenant": self._tenant, "hats.store": what, "exception.message": error[:ERROR_CHARS],
            "hats.retry_in_s": delay_s}, self._started_ns))

    def committed(self, dead_letters: int) -> None:
        _, self._commit_s = self._lap()
        self._dead_letters = dead_letters

    def acknowledged(self) -> None:
        now, ack_s = self._lap()
        latency_s = (now - self._started_ns) / 1e9
        attributes: dict[str, AttributeValue] = {
            "hats.tenant": self._tenant, "hats.messages": self._messages,
            "hats.batch": f"{self._points} points, {latency_s:.3f} s from its first message: parse "
                          f"{_ms(self._parse_s)}, {'durable' if self._direct else 'outbox'} {_ms(self._durable_s)}, "
                          f"commit {_ms(self._commit_s)}, ack {_ms(ack_s)}"}
        if self._dead_letters:
            attributes["hats.dead_letters"] = self._dead_letters
        if self._rejected:
            attributes["hats.influx_rejected"] = self._rejected
        if not self._direct:
            attributes["hats.durable"] = "outbox"
        self._rounds.add(_Event(BATCH_EVENT, now, attributes, self._started_ns, latency_s, self._points))

    def failed(self, error: BaseException) -> None:
        self._rounds.add(_Event(FAILED_EVENT, time.time_ns(), {
            "hats.tenant": self._tenant, "hats.messages": self._messages, "exception.type": type(error).__name__,
            "exception.message": str(error)[:ERROR_CHARS]}, self._started_ns))


class Rounds:
    """The open round's events (appended by the event loop under a lock) and the thread that ends rounds:
    `ROUND_S` after their first event or at `ROUND_MAX_EVENTS`, whichever is first, so a quiet worker's batch
    reaches the collector within a second or so, and a busy one's rounds stay within the span event limit."""

    def __init__(self, tracer: Tracer, max_events: int = ROUND_MAX_EVENTS, round_s: float = ROUND_S) -> None:
        self._tracer = tracer
        self._max_events = max_events
        self._round_s = round_s
        self._events: list[_Event] = []
        self._opened = 0.0
        self._wake = threading.Condition(threading.Lock())
        self._thread = threading.Thread(target=self._end_rounds, name="otel-rounds", daemon=True)
        self._thread.start()

    def add(self, event: _Event) -> None:
        with self._wake:
            if not self._events:
                self._opened = time.monotonic()
                self._wake.notify()
            self._events.append(event)
            if len(self._events) >= self._max_events:
                self._wake.notify()

    def _take(self) -> list[_Event]:
        events, self._events = self._events[:self._max_events], self._events[self._max_events:]
        self._opened = time.monotonic()
        return events

    def _end_rounds(self) -> None:
        while True:
            with self._wake:
                while not self._events:
                    self._wake.wait()
                while len(self._events) < self._max_events and (left := self._opened + self._round_s
                                                                - time.monotonic()) > 0:
                    self._wake.wait(left)
                events = self._take()
            if events:  # `end_all` may have taken them meanwhile
                self._emit(events)

    def end_all(self) -> None:
        """End every open round now (at exit, before the export queue's flush)."""
        while True:
            with self._wake:
                events = self._take()
            if not events:
                return
            self._emit(events)

    def _emit(self, events: list[_Event]) -> None:
        """One round as one span: its events, the sums of their counts, its slowest batch, the homes it holds."""
        totals = dict.fromkeys(ROUND_TOTALS, 0)
        tenants: set[str] = set()
        latency_max = 0.0
        error = ""
        for event in events:
            attributes = event.attributes
            tenants.add(str(attributes["hats.tenant"]))
            if event.name == REPLAY_EVENT:
                totals["hats.replayed_points"] += _int(attributes, "hats.points")
                totals["hats.dead_letters"] += _int(attributes, "hats.dead_letters")
                continue
            if event.name not in (BATCH_EVENT, FAILED_EVENT):
                continue
            totals["hats.batches"] += 1
            totals["hats.points"] += event.points
            for key in ("hats.messages", "hats.dead_letters", "hats.influx_rejected"):
                totals[key] += _int(attributes, key)
            totals["hats.outbox_batches"] += attributes.get("hats.durable") == "outbox"
            latency_max = max(latency_max, event.latency_s)
            if event.name == FAILED_EVENT:
                totals["hats.failed"] += 1
                error = error or ": ".join(str(attributes[key]) for key in
                                           ("hats.tenant", "exception.type", "exception.message"))
        span = self._tracer.start_span(ROUND_SPAN, start_time=min(e.started_ns for e in events), attributes={
            **totals, "hats.latency_max_s": latency_max, "hats.tenants": sorted(tenants)})
        for event in events:
            span.add_event(event.name, event.attributes, timestamp=event.at_ns)
        if error:
            span.set_status(Status(StatusCode.ERROR, error[:ERROR_CHARS]))
        span.end(end_time=max(e.at_ns for e in events))


def _int(attributes: dict[str, AttributeValue], key: str) -> int:
    value = attributes.get(key, 0)
    return value if isinstance(value, int) else 0


class OtlpBatchTracer:
    """One provider, exporter, processor and round for the process; every pipeline (every home) shares them."""

    def __init__(self, endpoint: str, service_name: str, max_events: int = ROUND_MAX_EVENTS,
                 round_s: float = ROUND_S) -> None:
        self._processor = counting_processor(OTLPSpanExporter(endpoint=endpoint))
        # Not shut down at interpreter exit (its shutdown waits up to 30 s on a dead collector): `flush` is bounded.
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}), shutdown_on_exit=False,
                                  span_limits=SpanLimits(max_events=max_events))
        provider.add_span_processor(self._processor)
        self._rounds = Rounds(provider.get_tracer(TRACER_NAME), max_events, round_s)
        for reason in ("queue_full", "export_failed"):  # present from the start, so a rate can be taken at once
            metrics.TRACE_SPANS_DROPPED.labels(reason)
        log.info("tracing: every batch, in rounds of %.0f s, goes to %s (OTLP/HTTP) as service %s", round_s,
                 endpoint, service_name)

    def batch(self, tenant: str, started_ns: int, messages: int, parse_ns: int) -> BatchSpan:
        return OtlpBatchSpan(self._rounds, tenant, started_ns, messages, parse_ns)

    def replayed(self, tenant: str, lines: int, rejected: int, started_ns: int) -> None:
        attributes: dict[str, AttributeValue] = {"hats.tenant": tenant, "hats.points": lines - rejected}
        if rejected:  # refused by InfluxDB, so dead letters
            attributes["hats.dead_letters"] = rejected
        self._rounds.add(_Event(REPLAY_EVENT, time.time_ns(), attributes, started_ns))

    def flush(self, timeout_s: float) -> None:
        def end_and_export() -> None:
            self._rounds.end_all()
            self._processor.force_flush()

        flushing = threading.Thread(target=end_and_export, name="otel-flush", daemon=True)
        flushing.start()
        flushing.join(timeout_s)
