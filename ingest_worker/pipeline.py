"""Messages in, durable points and dead letters out; acknowledgements only after both are stored.

`process` is the CPU-bound part (parse → normalise → validate → encode) and runs on each hand-off
batch from the network thread; `flush` makes everything durable (InfluxDB or the outbox, then dead
letters, metadata and the points InfluxDB accepted per hour (`ops.ingest_hours`) in one PostgreSQL
transaction) and only then acknowledges the messages. A message that contributed to a state its source
still holds (statestream, `Outcome.held_by`) is acknowledged with the batch that state is emitted in,
never before: the held acknowledgements are kept per held state's origin and join the current batch when
the source emits it (written, dead-lettered or a duplicate alike). A batch that went to the outbox is counted per
hour when the replayer has written it (`replayed`), before the outbox lets go of it. With an OTLP endpoint
configured (`tracing/`), each batch is traced from its first message to its acknowledgement.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg

from ingest_worker import metrics, tracing
from ingest_worker.lineprotocol import encode, series_key
from ingest_worker.mqtt_link import Incoming, MqttLink
from ingest_worker.normalise import EntityState, Series, describe, point_of
from ingest_worker.rejections import Reason, Rejected
from ingest_worker.settling import SettleWindow
from ingest_worker.sources.base import Source
from ingest_worker.store import deadletters, ingest_hours
from ingest_worker.store.connection import OpsConnection
from ingest_worker.store.deadletters import DeadLetter
from ingest_worker.store.durable import DurableWriter
from ingest_worker.store.hooks import FlushHook
from ingest_worker.store.influx import LineError
from ingest_worker.store.ingest_hours import NS_PER_HOUR, Hours
from ingest_worker.store.metadata import MetadataStore
from ingest_worker.store.resume import us_to_datetime

log = logging.getLogger(__name__)

MAX_TOPIC_CHARS = 1024
PG_RETRY_INITIAL_S = 0.5
PG_RETRY_MAX_S = 30.0
REPLAY_TOPIC = "(outbox replay)"
# Event age is observed for one point in this many: a histogram sample per message costs more than the
# parse, and a 1-in-16 sample describes the distribution as well.
EVENT_AGE_SAMPLE_EVERY = 16
SeriesKey = tuple[str, str | None, str | None, str | None, str | None, str | None]
DUPLICATE_STATE = "duplicate_state"
# After (re)connecting, a message no source owns yet waits (parked, unacknowledged) for the retained
# discovery config that may explain it, until the broker's retained replay is processed (settling.py).
MAX_PARKED = 200_000  # beyond it an unowned message is a dead letter at once, as it is once settled


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class Origin:
    topic: str
    payload: bytes
    received_ns: int


def _received_at(received_ns: int) -> datetime:
    """Exact to the microsecond (a float division is not): a replayed dead letter that fails again keeps
    the receipt time it was stored with."""
    return us_to_datetime(received_ns // 1_000)


class Pipeline:
    def __init__(self, tenant: str, sources: Sequence[Source], writer: DurableWriter, metadata: MetadataStore,
                 conn: psycopg.AsyncConnection[tuple[object, ...]] | OpsConnection, dsn: str, link: MqttLink | None,
                 max_payload_bytes: int, batch_max_points: int, batch_max_age_s: float,
                 hooks: Sequence[FlushHook] = ()) -> None:
        self._tenant = tenant
        self._hooks = tuple(hooks)  # more to commit with each flush (store/hooks.py)
        self._sources = sources
        self._writer = writer
        self._metadata = metadata
        # A connection of its own (closed by `close`), or one shared with other homes' pipelines.
        self._owns_conn = not isinstance(conn, OpsConnection)
        self._ops = conn if isinstance(conn, OpsConnection) else OpsConnection(conn, dsn)
        self._link = link
        self._max_payload = max_payload_bytes
        self._max_points = batch_max_points
        self._max_age_s = batch_max_age_s
        self._lines: list[str] = []
        self._origins: list[Origin] = []
        self._hours: Hours = {}  # points of `_lines` per UTC hour of their timestamps
        self._letters: list[DeadLetter] = []
        self._acks: list[Incoming] = []
        # Released held groups, each its state's message first: acknowledged in that order (`_release`).
        self._groups: list[list[Incoming]] = []
        self._grouped = 0  # messages in `_groups`: the unacknowledged gauge is set per hand-off batch
        self._parked: list[Incoming] = []  # unowned while the retained replay is awaited (`_window`)
        self._window = SettleWindow(link)
        # Acknowledgements waiting for a state a source holds, by that state's origin (see `_release`).
        self._held: dict[tuple[str, bytes, int], list[Incoming]] = {}
        self._held_count = 0
        self._oldest = 0.0
        self._series: dict[SeriesKey, tuple[Series, str]] = {}
        self._last_lines: dict[str, str] = {}  # the line last written per entity: a copy of it is a duplicate
        self._max_cached_series = 4 * metadata.budget
        self._received_by_source: dict[str, int] = {}
        self._ignored: dict[tuple[str, str], int] = {}
        self._emitted = 0
        # Traces (tracing/): None when off, and then the only cost is the `is not None` tests below.
        self._tracer = tracing.batch_tracer()
        self._started_ns = 0  # when the batch's first message was processed (epoch ns), for its span
        self._parse_ns = 0  # time spent in `process` for the batch
        self.counters: dict[str, int] = {"received": 0, "written": 0, "ignored": 0, "dead_lettered": 0}

    @property
    def sources(self) -> Sequence[Source]:
        return self._sources

    # -- CPU part ---------------------------------------------------------------------------------
    def process(self, items: Sequence[Incoming], force: bool = False) -> None:
        """Parse a hand-off batch (possibly empty: held states may have become complete meanwhile)."""
        began = time.perf_counter_ns() if self._tracer is not None else 0
        if items and not self._acks and not self._groups and not self._lines and not self._letters:
            self._oldest = time.monotonic()
            if self._tracer is not None:
                self._started_ns = time.time_ns()
        # A drain (`force`: shutdown, or a home stopped while its platform connection goes on) handles the
        # parked messages as they are: left unacknowledged on a shared connection they would hold its window.
        opening = 0 if force else self._window.closes_at(items, holding=self._held_count > 0)
        if opening:
            self._process_items(items[:opening], settling=True)
        if self._parked and (force or not self._window.open):
            self._release_parked()
        self._process_items(items[opening:] if opening else items, settling=False)
        for source in self._sources:
            for state in source.flush(force):
                origin = state.origin or (f"{source.name}:{state.entity_id}", state.state.encode(), time.time_ns())
                self._emit(state, Origin(*origin))
        metrics.UNACKED.set(len(self._acks) + self._grouped + self._held_count)
        # Prometheus is updated once per hand-off batch: a labelled inc per message costs more than a parse.
        for name, count in self._received_by_source.items():
            metrics.RECEIVED.labels(name).inc(count)
        self._received_by_source.clear()
        for (name, why), count in self._ignored.items():
            metrics.IGNORED.labels(name, why).inc(count)
        self._ignored.clear()
        if self._tracer is not None:
            self._parse_ns += time.perf_counter_ns() - began

    def _release_parked(self) -> None:
        """The retained replay is processed: the parked messages, in the order they came, owned now or
        dead letters; acknowledged like any other once what they produced is durable."""
        parked, self._parked = self._parked, []
        owned = sum(1 for item in parked if self._route(item.topic) is not None)
        metrics.PARKED.dec(len(parked))
        metrics.PARKED_RELEASED.labels("owned").inc(owned)
        metrics.PARKED_RELEASED.labels("unowned").inc(len(parked) - owned)
        log.info("%d parked message(s) handled in order, %d of them owned now", len(parked), owned)
        self._process_items(parked, settling=False)

    def _process_items(self, items: Sequence[Incoming], settling: bool) -> None:
        parked, over_bound = len(self._parked), 0
        for item in items:
            if settling and self._route(item.topic) is None:
                if len(self._parked) < MAX_PARKED:
                    self._parked.append(item)  # handled (and acknowledged) once the replay is processed
                    continue
                over_bound += 1
            self.counters["received"] += 1
            held_by = None
            try:
                held_by = self._handle(item)
            except Rejected as rejected:
                self._reject(item.topic, item.payload, item.received_ns, rejected.reason, rejected.detail)
            except Exception as exc:  # a parser bug must cost one message (kept, with its reason), not the worker
                log.exception("unexpected error on topic %s", item.topic[:200])
                self._reject(item.topic, item.payload, item.received_ns, Reason.INTERNAL_ERROR,
                             f"{type(exc).__name__}: {str(exc)[:500]}")
            if held_by is None:
                self._acks.append(item)
            else:
                self._held.setdefault(held_by, []).append(item)
                self._held_count += 1
        if settling:
            metrics.PARKED.inc(len(self._parked) - parked)
            if over_bound:
                metrics.PARKED_RELEASED.labels("over_bound").inc(over_bound)

    def _release(self, origin: Origin) -> None:
        """The state from `origin` is emitted: the messages that waited for it join the current batch, to be
        acknowledged once it (or its dead letter) is durable, as a group: the state's own message (the first,
        it was handled first) before its timestamp and attributes, so a crash can never leave the timestamp
        acknowledged and bring the state back without it (`ack_order.py`)."""
        waiting = self._held.pop((origin.topic, origin.payload, origin.received_ns), None)
        if waiting is not None:
            self._groups.append(waiting)
            self._grouped += len(waiting)
            self._held_count -= len(waiting)

    def _handle(self, item: Incoming) -> tuple[str, bytes, int] | None:
        """Handle one message; returns the origin of the held state its acknowledgement waits for."""
        source = self._route(item.topic)
        name = source.name if source else "none"
        self._received_by_source[name] = self._received_by_source.get(name, 0) + 1
        if len(item.topic) > MAX_TOPIC_CHARS:
            raise Rejected(Reason.SCHEMA, f"topic of {len(item.topic)} chars, over {MAX_TOPIC_CHARS}")
        if len(item.payload) > self._max_payload:
            raise Rejected(Reason.PAYLOAD_TOO_LARGE, f"{len(item.payload)} bytes, over {self._max_payload}")
        if source is None:
            raise Rejected(Reason.SCHEMA, f"no configured source owns topic {item.topic[:200]!r}")
        outcome = source.handle(item.topic, item.payload, item.received_ns, item.retain)
        if self._link is not None:
            for topic_filter in outcome.subscribe:
                self._link.add_subscription(topic_filter)
            for topic_filter in outcome.unsubscribe:
                self._link.remove_subscription(topic_filter)
        for rejected in source.take_rejections():
            self._reject(item.topic, item.payload, item.received_ns, rejected.reason, rejected.detail)
        if outcome.ignored is not None:
            self._count_ignored(source.name, outcome.ignored)
        origin = Origin(item.topic, item.payload, item.received_ns)
        for state in outcome.states:
            self._emit(state, Origin(*state.origin) if state.origin is not None else origin)
        return outcome.held_by

    def _count_ignored(self, source: str, why: str) -> None:
        self.counters["ignored"] += 1
        self._ignored[(source, why)] = self._ignored.get((source, why), 0) + 1

    def _route(self, topic: str) -> Source | None:
        for source in self._sources:
            if source.matches(topic):
                return source
        return None

    def _emit(self, state: EntityState, origin: Origin) -> None:
        if self._held:
            self._release(origin)
        state = self._metadata.described(state)
        attrs = state.attributes
        key: SeriesKey = (state.entity_id, state.device_id, _str(attrs.get("unit_of_measurement")),
                          _str(attrs.get("device_class")), _str(attrs.get("state_class")),
                          _str(attrs.get("friendly_name")))
        try:
            cached = self._series.get(key)
            if cached is None:
                cached = self._describe(key, state)
            point = point_of(cached[0], state, origin.received_ns)
            line = encode(point, cached[1])
        except Rejected as rejected:
            self._reject(origin.topic, origin.payload, origin.received_ns, rejected.reason, rejected.detail)
            return
        if self._last_lines.get(state.entity_id) == line:
            # The same state change through a second source (statestream and eventstream both on): one
            # point. A copy that arrives after a newer change still lands on the same series and instant,
            # which InfluxDB stores once.
            self._count_ignored(state.source, DUPLICATE_STATE)
            return
        if len(self._last_lines) >= self._max_cached_series:
            self._last_lines.clear()
        self._last_lines[state.entity_id] = line
        self._emitted += 1
        if self._emitted % EVENT_AGE_SAMPLE_EVERY == 0:
            metrics.EVENT_AGE.observe(max(0.0, (origin.received_ns - point.time_ns) / 1e9))
        self._lines.append(line)
        self._origins.append(origin)
        hour = point.time_ns // NS_PER_HOUR
        self._hours[hour] = self._hours.get(hour, 0) + 1

    def _describe(self, key: SeriesKey, state: EntityState) -> tuple[Series, str]:
        """First sight of an entity (or of a change in its attributes): budget, series, metadata."""
        series = describe(state)  # an invalid entity is refused before it can use up the budget
        if not self._metadata.admit(state.entity_id):
            raise Rejected(Reason.SERIES_BUDGET,
                           f"{state.entity_id} would exceed the tenant's budget of {self._metadata.budget} "
                           "entities (core.tenants.series_budget: `hats tenant change --series-budget`)")
        cached = (series, series_key(series.measurement, series.tags))
        self._metadata.note(state, series.measurement)
        if len(self._series) >= self._max_cached_series:
            self._series.clear()
        self._series[key] = cached
        return cached

    def _reject(self, topic: str, payload: bytes, received_ns: int, reason: str, detail: str) -> None:
        self.counters["dead_lettered"] += 1
        self.counters[f"dead_letter:{reason}"] = self.counters.get(f"dead_letter:{reason}", 0) + 1
        metrics.DEAD_LETTERED.labels(reason).inc()
        self._letters.append(DeadLetter(_received_at(received_ns), self._tenant, topic, payload, reason, detail))

    def discard(self) -> tuple[int, list[DeadLetter]]:
        """Drop the batch instead of flushing it (a dry run): the number of points it held and the dead
        letters it would have stored."""
        dropped, letters = len(self._lines), self._letters
        self._lines, self._origins, self._hours, self._letters, self._acks, self._groups = [], [], {}, [], [], []
        self._grouped = 0
        return dropped, letters

    # -- durable part -----------------------------------------------------------------------------
    def full(self) -> bool:
        return len(self._lines) >= self._max_points

    def due(self) -> bool:
        waiting = bool(self._acks or self._groups or self._lines or self._letters)
        return waiting and time.monotonic() - self._oldest >= self._max_age_s

    def holding(self) -> bool:
        """Whether anything waits for a flush (or for the subscriptions to settle, or a held state)."""
        return bool(self._acks or self._groups or self._lines or self._letters or self._parked or self._held)

    def oldest_age_s(self) -> float:
        return time.monotonic() - self._oldest if self._acks or self._groups else 0.0

    async def flush(self) -> list[DeadLetter]:
        """Make the batch durable and acknowledge it; returns the dead letters it stored (InfluxDB's
        refusals included), so an offline producer can tell which of its items failed."""
        lines, origins, self._lines, self._origins = self._lines, self._origins, [], []
        hours, self._hours = self._hours, {}
        acks, self._acks = self._acks, []
        groups, self._groups = self._groups, []
        grouped, self._grouped = self._grouped, 0
        marks = [(hook, mark) for hook in self._hooks if (mark := hook.snapshot()) is not None]
        span = tracing.NO_SPAN
        if self._tracer is not None:
            if acks or groups or lines or self._letters:  # a flush with nothing to make durable is no batch
                span = self._tracer.batch(self._tenant, self._started_ns or time.time_ns(),
                                          len(acks) + grouped, self._parse_ns)
            self._started_ns = self._parse_ns = 0
        try:
            if self._link is not None:
                # Before the write: a redelivery after a crash keeps its receipt time.
                self._link.persist([*acks, *(message for group in groups for message in group)])
            letters = await self._make_durable(lines, origins, hours, marks, span)
            if self._link is not None:
                self._link.ack(acks, groups)
        except BaseException as error:
            span.failed(error)
            raise
        span.acknowledged()
        metrics.UNACKED.set(self._held_count)
        return letters

    async def _make_durable(self, lines: list[str], origins: list[Origin], hours: Hours,
                            marks: Sequence[tuple[FlushHook, object]], span: tracing.BatchSpan) -> list[DeadLetter]:
        submitted = await self._writer.submit(lines)
        rejected = submitted.rejected
        span.durable(submitted.written, len(lines), len(rejected))
        self.counters["written"] += len(lines) - len(rejected)
        if rejected:
            by_line = dict(zip(lines, origins, strict=True))
            for error in rejected:
                origin = by_line[error.line]
                self._reject(origin.topic, origin.payload, origin.received_ns, Reason.INFLUX_REJECTED, error.error)
            ingest_hours.count_lines((error.line for error in rejected), sign=-1, hours=hours)
        if not submitted.written:
            hours = {}  # in the outbox, not in InfluxDB yet: `replayed` counts them once it is
        letters, self._letters = self._letters, []
        await self._store_ops(letters, hours, marks, span)
        span.committed(len(letters))
        return letters

    async def _store_ops(self, letters: Sequence[DeadLetter], hours: Hours,
                         marks: Sequence[tuple[FlushHook, object]] = (),
                         span: tracing.BatchSpan = tracing.NO_SPAN) -> None:
        """Dead letters, metadata and the per-hour counts of points InfluxDB accepted in one transaction;
        while PostgreSQL is away, retry (the batch's acknowledgements, or the outbox record's commit,
        wait, so the broker or the outbox keeps the batch) and reconnect."""
        async with self._ops.lock:  # the flush and the outbox replayer (and maybe other homes) share it
            delay = PG_RETRY_INITIAL_S
            while True:
                conn = self._ops.conn
                try:
                    async with conn.transaction(), conn.cursor() as cur:
                        await deadletters.insert(cur, letters)
                        await self._metadata.flush(cur)
                        await ingest_hours.upsert(cur, self._tenant, hours)
                        for hook, mark in marks:
                            await hook.store(cur, mark)
                    break
                except psycopg.OperationalError as exc:
                    log.warning("PostgreSQL unavailable (%s); retrying in %.1f s", str(exc).strip()[:200], delay)
                    span.retrying("postgresql", str(exc).strip(), delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, PG_RETRY_MAX_S)
                    if self._ops.conn is conn:  # not yet replaced by another pipeline sharing it
                        await self._ops.reconnect()
            self._metadata.committed()
        if letters:
            log.info("dead-lettered %d message(s): %s", len(letters),
                     ", ".join(sorted({letter.reason for letter in letters})))

    async def close(self) -> None:
        if self._owns_conn:
            await self._ops.close()

    async def replayed(self, lines: Sequence[str], errors: Sequence[LineError]) -> None:
        """A batch from the outbox is in InfluxDB: count its points per hour (from the lines' timestamps)
        and dead-letter the lines InfluxDB refused, before the outbox lets go of it. The source messages
        are long acked, so a refused line itself is what its dead letter keeps."""
        began = time.time_ns()
        hours = ingest_hours.count_lines(lines)
        letters: list[DeadLetter] = []
        if errors:
            ingest_hours.count_lines((e.line for e in errors), sign=-1, hours=hours)
            now = time.time_ns()
            letters = [DeadLetter(_received_at(now), self._tenant, REPLAY_TOPIC, e.line.encode(),
                                  Reason.INFLUX_REJECTED, e.error) for e in errors]
            self.counters["dead_lettered"] += len(letters)
            metrics.DEAD_LETTERED.labels(Reason.INFLUX_REJECTED).inc(len(letters))
        await self._store_ops(letters, hours)
        if self._tracer is not None:
            self._tracer.replayed(self._tenant, len(lines), len(errors), began)
