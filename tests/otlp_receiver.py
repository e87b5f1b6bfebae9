"""A real OTLP/HTTP trace receiver for tests and benchmarks: what a collector's `otlp` receiver does.

No collector binary installs here, so this is the receiving half of the protocol itself: `POST /v1/traces`
with an `ExportTraceServiceRequest` in protobuf (gzip'd or not), decoded with the `opentelemetry.proto`
classes the exporter encodes with, answered `200` with an `ExportTraceServiceResponse`. It keeps every span
it received, flattened. `hold()` makes it a hung collector (requests wait, unanswered), `close()` a dead one
(connection refused).
"""

from __future__ import annotations

import gzip
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

TRACES_PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"
HOLD_LIMIT_S = 120.0  # a held request is answered after this at the latest (the test is long over)
STATUS_ERROR = 2  # opentelemetry.proto.trace.v1.Status.STATUS_CODE_ERROR


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str  # hex, as tracing UIs show it
    span_id: str
    parent_span_id: str  # "" for a root
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    error: bool
    status_message: str


class OtlpReceiver:
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.arrived = 0  # requests read (answered or held)
        self.requests = 0  # requests answered
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._released.set()
        self._closed = False
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path != TRACES_PATH or self.headers.get("Content-Type") != PROTOBUF:
                    self.send_error(404 if self.path != TRACES_PATH else 415)
                    return
                with receiver._lock:
                    receiver.arrived += 1
                receiver._released.wait(HOLD_LIMIT_S)
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver._take(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", PROTOBUF)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        """The URL for `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`."""
        return f"http://127.0.0.1:{self._server.server_address[1]}{TRACES_PATH}"

    @property
    def base_url(self) -> str:
        """The URL for `OTEL_EXPORTER_OTLP_ENDPOINT` (the exporter adds `/v1/traces`)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _take(self, request: ExportTraceServiceRequest) -> None:
        received = []
        for resource_spans in request.resource_spans:
            service = str(_attributes(resource_spans.resource.attributes).get("service.name", ""))
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(ReceivedSpan(
                        service, span.name, span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex(),
                        span.start_time_unix_nano, span.end_time_unix_nano, _attributes(span.attributes),
                        [(event.name, _attributes(event.attributes)) for event in span.events],
                        span.status.code == STATUS_ERROR, span.status.message))
        with self._lock:
            self.requests += 1
            self.spans.extend(received)

    def received(self, name: str | None = None) -> list[ReceivedSpan]:
        with self._lock:
            return [span for span in self.spans if name is None or span.name == name]

    def hold(self) -> None:
        """A hung collector: requests are read and left unanswered until `release`."""
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        """A dead collector: the port refuses connections from now on."""
        self._released.set()
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


@contextmanager
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    try:
        yield receiver
    finally:
        receiver.close()


def main() -> None:
    """`python -m tests.otlp_receiver`: a receiver in a process of its own (a benchmark's CPU time is then not
    the receiver's). Prints its endpoint, serves until standard input closes, then prints the spans received
    and their events, as `<spans> <events>`."""
    with otlp_receiver() as receiver:
        print(receiver.endpoint, flush=True)
        sys.stdin.read()
        spans = receiver.received()
        print(len(spans), sum(len(span.events) for span in spans), flush=True)


if __name__ == "__main__":
    main()
