"""OpenTelemetry traces of the worker's batches: on when an OTLP endpoint is configured, off otherwise.

The worker stays light: this module imports no OpenTelemetry package. `batch_tracer()` answers None
when no endpoint is set (`settings.py`), and a pipeline holding None pays one branch per hand-off batch
and a few no-op calls per flush (`NO_SPAN`). With an endpoint, `otlp.py` — the SDK and its OTLP/HTTP
exporter, imported then and only then — records each batch (parse → durable → ack, with its counts and
home) and each outbox record replayed as an event of a round: one span per second or so for every home
the process serves, handed to a `BatchSpanProcessor`: a bounded queue emptied by its own thread, so the
event loop never waits on the collector, and a dead collector costs dropped spans (counted in
`hats_trace_spans_dropped_total`), never a batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from ingest_worker.tracing.settings import TraceSettings

# At exit the worker waits this long at most for the spans still queued to reach the collector.
EXIT_FLUSH_S = 2.0


class BatchSpan(Protocol):
    """One batch's record, from its first message to its acknowledgement: an event of its round's span
    (see `otlp.OtlpBatchSpan`)."""

    def durable(self, direct: bool, lines: int, rejected: int) -> None:
        """The batch is in InfluxDB (`direct`, but `rejected` lines) or in the outbox."""

    def retrying(self, what: str, error: str, delay_s: float) -> None:
        """A store was away and the batch waits for it (PostgreSQL: its dead letters and metadata)."""

    def committed(self, dead_letters: int) -> None:
        """Dead letters, metadata and ingest hours are committed in PostgreSQL."""

    def acknowledged(self) -> None:
        """The broker has the batch's acknowledgements: the batch's event joins the open round."""

    def failed(self, error: BaseException) -> None:
        """The flush raised: the error is recorded (its round's span is marked failed)."""


class BatchTracer(Protocol):
    def batch(self, tenant: str, started_ns: int, messages: int, parse_ns: int) -> BatchSpan:
        """Start the record of a batch whose first message was processed at `started_ns` (epoch ns)."""

    def replayed(self, tenant: str, lines: int, rejected: int, started_ns: int) -> None:
        """One outbox record written to InfluxDB by the replayer (`rejected` lines became dead letters)."""

    def flush(self, timeout_s: float) -> None:
        """End the open round and wait at most `timeout_s` for the queued spans to be exported."""


class _NoSpan:
    """Tracing off: every call does nothing."""

    def durable(self, direct: bool, lines: int, rejected: int) -> None:
        return

    def retrying(self, what: str, error: str, delay_s: float) -> None:
        return

    def committed(self, dead_letters: int) -> None:
        return

    def acknowledged(self) -> None:
        return

    def failed(self, error: BaseException) -> None:
        return


NO_SPAN: BatchSpan = _NoSpan()

_lock = threading.Lock()
_tracer: BatchTracer | None = None
_configured = False


def batch_tracer(settings: Callable[[], TraceSettings] = TraceSettings) -> BatchTracer | None:
    """The process's tracer of batches (one exporter for every pipeline and home), or None: tracing off.

    Settings are read once per process (they were validated at start-up by `load_settings`)."""
    global _tracer, _configured
    with _lock:
        if not _configured:
            endpoint = (chosen := settings()).endpoint
            if endpoint is not None:
                from ingest_worker.tracing.otlp import OtlpBatchTracer  # the one import of OpenTelemetry

                _tracer = OtlpBatchTracer(endpoint, chosen.otel_service_name)
            _configured = True
        return _tracer


def flush(timeout_s: float = EXIT_FLUSH_S) -> None:
    """At exit: give the queued spans a bounded moment to leave (nothing to do when tracing is off)."""
    if _tracer is not None:
        _tracer.flush(timeout_s)
