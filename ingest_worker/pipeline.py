"""Topic + payload in, batched InfluxDB lines and dead letters out; flushed by size or age.

Kept free of MQTT so that the same path serves live traffic, replays of dead letters and tests.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from ingest_worker.lineprotocol import encode
from ingest_worker.normalise import EntityState, normalise
from ingest_worker.rejections import Reason, Rejected
from ingest_worker.settings import WorkerSettings
from ingest_worker.sources import eventstream
from ingest_worker.store.deadletters import DeadLetter, DeadLetterStore
from ingest_worker.store.influx import InfluxWriter

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class Pending:
    line: str
    topic: str
    payload: bytes
    received_at: datetime


class Pipeline:
    def __init__(self, settings: WorkerSettings, writer: InfluxWriter, dead_letters: DeadLetterStore) -> None:
        self._settings = settings
        self._writer = writer
        self._dead_letters = dead_letters
        self._pending: list[Pending] = []
        self._letters: list[DeadLetter] = []
        self._oldest = 0.0
        self.counters: Counter[str] = Counter()

    def accept(self, topic: str, payload: bytes) -> None:
        received = datetime.now(UTC)
        self.counters["received"] += 1
        if not self._pending and not self._letters:
            self._oldest = time.monotonic()
        try:
            if len(payload) > MAX_PAYLOAD_BYTES:
                raise Rejected(Reason.PAYLOAD_TOO_LARGE, f"{len(payload)} bytes, over {MAX_PAYLOAD_BYTES}")
            state = self._route(topic, payload)
            if state is None:
                self.counters["ignored"] += 1
                return
            point = normalise(state, time.time_ns())
            self._pending.append(Pending(encode(point), topic, payload, received))
        except Rejected as rejected:
            self._reject(topic, payload, received, rejected.reason, rejected.detail)

    def _route(self, topic: str, payload: bytes) -> EntityState | None:
        if topic == self._settings.eventstream_topic:
            return eventstream.parse(payload)
        raise Rejected(Reason.SCHEMA, f"no source is configured for topic {topic!r}")

    def _reject(self, topic: str, payload: bytes, received: datetime, reason: str, detail: str) -> None:
        self.counters[f"dead_letter:{reason}"] += 1
        self._letters.append(DeadLetter(received, self._settings.tenant, topic, payload, reason, detail))

    def full(self) -> bool:
        return len(self._pending) >= self._settings.batch_max_points

    def due(self) -> bool:
        waiting = bool(self._pending or self._letters)
        return waiting and time.monotonic() - self._oldest >= self._settings.batch_max_age_s

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            failed = await self._writer.write([p.line for p in pending])
            self.counters["written"] += len(pending) - len(failed)
            by_line = {p.line: p for p in pending}
            for error in failed:
                origin = by_line[error.line]
                self._reject(origin.topic, origin.payload, origin.received_at, Reason.INFLUX_REJECTED, error.error)
        letters, self._letters = self._letters, []
        await self._dead_letters.add(letters)
        if letters:
            log.info("dead-lettered %d message(s)", len(letters))
