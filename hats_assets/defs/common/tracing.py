"""OpenTelemetry spans of the code location's steps: one per asset or check step, one per home inside it.

Off unless an OTLP endpoint is set, with the same variables as the worker (``TraceSettings``,
``ingest_worker/contract.py``): ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_SERVICE_NAME`` (here ``hats-dagster`` by default), ``OTEL_SDK_DISABLED``; off, no OpenTelemetry module
is imported and a step pays one read of the environment.

* ``step(context)`` wraps a step's work on its homes: a span named after the asset's op (``rollups``,
  ``hourly_rollup``, ``retention``) or the check (``rollup_1h:plausible_ranges``), with the run, job, assets,
  partition (a key, or ``first…last`` under a single-run backfill) and UTC window, and at its end the totals
  of its homes: how many were ok, failed or refused, and the sum of every number they reported.
* ``home(...)`` records one home's part of the current step (``Outcomes.guard``, ``check_homes``): a child span
  with the tenant, its outcome, the numbers the asset's ``per_tenant`` metadata shows (points read, rows
  written, rows checked…) and its error, if any.
* A run is one trace: its trace id is the run id (a UUID is 128 bits, as a trace id is), so a run's steps —
  each in its own process under the multiprocess executor — line up in one trace, found by the run id the
  Dagster UI shows.
* Export: the SDK's ``BatchSpanProcessor`` over OTLP/HTTP (protobuf). A step's process may exit right after
  the step, so its end waits for the export, at most ``FLUSH_S``: a dead collector costs a step that much and
  its spans, never the step.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field, ValidationError

from ingest_worker.contract import TraceSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import Span, Tracer

DEFAULT_SERVICE_NAME = "hats-dagster"
FLUSH_S = 2.0  # the longest a step's end waits for its spans to reach the collector
TRACER_NAME = "hats_assets"
HOME_SPAN = "home"
ATTRIBUTE_CHARS = 1_000  # a text attribute (an error, a list of hours) is cut to this


class DagsterTraceSettings(TraceSettings):
    """The worker's tracing settings with the code location's own service name."""

    otel_service_name: str = Field(DEFAULT_SERVICE_NAME, min_length=1, description="traces: the spans' `service.name`")


class TraceSettingsError(ValueError):
    """A tracing variable is invalid; the message names it."""


def trace_settings() -> DagsterTraceSettings:
    """The settings as the environment holds them now; an invalid one fails naming its variable."""
    try:
        return DagsterTraceSettings()
    except ValidationError as exc:
        problems = "; ".join(f"{str(e['loc'][0]).upper()} is invalid: {e['msg'].removeprefix('Value error, ')}"
                             for e in exc.errors())
        raise TraceSettingsError(f"tracing settings: {problems}; fix it or unset it (tracing off)") from None


trace_settings()  # an invalid value fails the code location's load, naming the variable


@dataclass(slots=True)
class _Step:
    tracer: Tracer
    span: Span
    totals: dict[str, float] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        return {"hats.tenants": sum(self.outcomes.values()),
                **{f"hats.tenants_{status}": count for status, count in sorted(self.outcomes.items())},
                **{f"hats.{key}": value for key, value in sorted(self.totals.items())}}


_STEP: ContextVar[_Step | None] = ContextVar("hats_trace_step", default=None)
_RUN_TRACE_ID: ContextVar[int | None] = ContextVar("hats_run_trace_id", default=None)


@functools.cache
def _exporting(endpoint: str, service_name: str) -> tuple[Tracer, BatchSpanProcessor]:
    """One provider per endpoint and name for the process (every step of an in-process run shares it)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class RunTraceIds(RandomIdGenerator):
        """A step's span (a root) takes its run's id as trace id; every other id is random."""

        def generate_trace_id(self) -> int:
            run = _RUN_TRACE_ID.get()
            return run if run is not None else super().generate_trace_id()

    processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint))
    # Not shut down at interpreter exit (that waits up to 30 s on a dead collector): each step flushes, bounded.
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}), id_generator=RunTraceIds(),
                              shutdown_on_exit=False)
    provider.add_span_processor(processor)
    return provider.get_tracer(TRACER_NAME), processor


def _run_trace_id(run_id: str) -> int | None:
    try:
        return uuid.UUID(run_id).int or None
    except ValueError:
        return None


def _step_attributes(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> tuple[str, dict[str, Any]]:
    attributes: dict[str, Any] = {"dagster.run_id": context.run.run_id, "dagster.job": context.job_def.name,
                                  "dagster.op": context.op_def.name}
    if isinstance(context, dg.AssetCheckExecutionContext):
        [spec] = context.check_specs
        asset = spec.asset_key.to_user_string()
        name = f"{asset}:{spec.name}"
        attributes.update({"dagster.assets": [asset], "dagster.check": spec.name})
    else:
        name = context.op_def.name
        attributes["dagster.assets"] = sorted(key.to_user_string() for key in context.assets_def.keys)
    if context.has_partition_key or context.has_partition_key_range:
        keys = context.partition_key_range
        attributes["hats.partition"] = keys.start if keys.start == keys.end else f"{keys.start}…{keys.end}"
        window = context.partition_time_window
        attributes.update({"hats.window_start": window.start.isoformat(), "hats.window_end": window.end.isoformat()})
    return name, attributes


def _flush(processor: BatchSpanProcessor) -> None:
    flushing = threading.Thread(target=processor.force_flush, name="otel-flush", daemon=True)
    flushing.start()
    flushing.join(FLUSH_S)


@contextlib.contextmanager
def step(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> Iterator[None]:
    """The span of one step (see the module docstring); nothing when tracing is off or a step is open."""
    endpoint = (settings := trace_settings()).endpoint
    if endpoint is None or _STEP.get() is not None:
        yield
        return
    from opentelemetry.trace import Status, StatusCode

    tracer, processor = _exporting(endpoint, settings.otel_service_name)
    name, attributes = _step_attributes(context)
    token = _RUN_TRACE_ID.set(_run_trace_id(context.run.run_id))
    try:
        span = tracer.start_span(name, attributes=attributes)
    finally:
        _RUN_TRACE_ID.reset(token)
    current = _Step(tracer, span)
    opened = _STEP.set(current)
    try:
        yield
    except BaseException as error:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:ATTRIBUTE_CHARS]))
        raise
    finally:
        _STEP.reset(opened)
        span.set_attributes(current.summary())
        span.end()
        _flush(processor)


def _attribute(value: Any) -> Any:
    """An attribute value OpenTelemetry takes: numbers, text and flags as they are, anything else as JSON."""
    if isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:ATTRIBUTE_CHARS]


def home(tenant: str, started_ns: int, outcome: str, numbers: Mapping[str, Any],
         error: BaseException | None = None) -> None:
    """One home's part of the current step, from ``started_ns`` (epoch ns) to now: ``outcome`` (ok, failed,
    refused; a check's passed or failing), the numbers it reported, its error. Nothing outside a traced step."""
    current = _STEP.get()
    if current is None:
        return
    from opentelemetry.trace import Status, StatusCode, set_span_in_context

    attributes = {"hats.tenant": tenant, "hats.outcome": outcome,
                  **{f"hats.{key}": _attribute(value) for key, value in numbers.items() if value is not None}}
    span = current.tracer.start_span(HOME_SPAN, context=set_span_in_context(current.span), start_time=started_ns,
                                     attributes=attributes)
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:ATTRIBUTE_CHARS]))
    span.end(end_time=time.time_ns())
    current.outcomes[outcome] += 1
    for key, value in numbers.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            current.totals[key] = current.totals.get(key, 0) + value
