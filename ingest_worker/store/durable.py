"""Durable writes: a batch is in InfluxDB or in the on-disk outbox before its messages are acked.

While InfluxDB answers, batches go straight to it. The first failure switches to the outbox, and
every later batch follows it there (so replay keeps arrival order) until the replayer has drained it.
When the outbox is full, `submit` waits: the pipeline stops acknowledging, the broker stops sending
(its in-flight window is full) and queues for us — backpressure instead of drops.

`submit` says whether InfluxDB took the batch now or the outbox holds it: what InfluxDB has accepted is
counted in `ops.ingest_hours`, by the flush for a direct write and by the replayer's callback (before
the outbox lets go of the record) for an outboxed one, so each accepted batch is counted by one of them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from ingest_worker import metrics
from ingest_worker.outbox import Outbox
from ingest_worker.store.influx import InfluxUnavailable, InfluxWriter, LineError, decode_body, encode_body

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Submitted:
    """A durable batch: `written` if InfluxDB took it (but `rejected`), else it waits in the outbox."""

    written: bool
    rejected: list[LineError]


class DurableWriter:
    def __init__(self, influx: InfluxWriter, outbox: Outbox) -> None:
        self._influx = influx
        self._outbox = outbox
        self._degraded = not outbox.empty
        self._work = asyncio.Event()
        self._room = asyncio.Event()
        if self._degraded:
            self._work.set()
        self._update_gauges()

    @property
    def outbox_full(self) -> bool:
        return self._outbox.full()

    @property
    def degraded(self) -> bool:
        return self._degraded

    @property
    def pending_bytes(self) -> int:
        return self._outbox.pending_bytes

    @property
    def pending_records(self) -> int:
        return self._outbox.pending_records

    def _update_gauges(self) -> None:
        metrics.OUTBOX_RECORDS.set(self._outbox.pending_records)
        metrics.OUTBOX_BYTES.set(self._outbox.pending_bytes)

    async def submit(self, lines: Sequence[str]) -> Submitted:
        """Return once every line is durable: written to InfluxDB (but the lines it rejected as invalid),
        or appended to the outbox (then the replayer writes and reports them later)."""
        if not lines:
            return Submitted(True, [])
        body = encode_body(lines)
        if not self._degraded:
            try:
                return Submitted(True, await self._influx.write(lines, retry=False, body=body))
            except InfluxUnavailable as exc:
                log.warning("InfluxDB unavailable (%s): batches go to the outbox until it is back", exc)
                self._degraded = True
        while self._outbox.full():
            log.warning("outbox full (%d bytes): holding acknowledgements until it drains",
                        self._outbox.pending_bytes)
            self._room.clear()
            await self._room.wait()
        await asyncio.to_thread(self._outbox.append, body)
        self._update_gauges()
        self._work.set()
        return Submitted(False, [])

    async def replay_forever(self, on_written: Callable[[Sequence[str], Sequence[LineError]], Awaitable[None]]
                             ) -> None:
        """Drain the outbox in order whenever it holds batches. After InfluxDB took a batch, `on_written`
        gets its lines and the ones InfluxDB rejected; the record is committed only once it returns."""
        while True:
            await self._work.wait()
            record = self._outbox.peek()
            if record is None:
                if self._degraded:
                    log.info("outbox drained: writing to InfluxDB directly again")
                self._degraded = False
                self._work.clear()
                continue
            lines = decode_body(record.body)
            rejected = await self._influx.write(lines, retry=True, body=record.body)
            await on_written(lines, rejected)
            await asyncio.to_thread(self._outbox.commit, record)
            self._update_gauges()
            self._room.set()
