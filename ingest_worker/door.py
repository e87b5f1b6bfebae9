"""The one way data enters: every producer feeds the same `Pipeline`, wired here once.

The live worker (`app.py`) and the offline producers — the dead-letter replay (`deadletters.py`) and
the recorder import (`importers/`) — all go through `open_pipeline`: the tenant's `MetadataStore`
(series budget, `core.entities` descriptions), an InfluxDB writer behind a durable outbox, and the
flush that commits dead letters, metadata, `ops.ingest_hours` and the producer's own `FlushHook`s in one
PostgreSQL transaction. So a replayed or imported point is normalised, budgeted, counted per hour (the
late-data sensor and the retention guard see it) and described exactly like a live one.

`Door` is that pipeline for an offline producer: its own outbox directory (locked, so it is never shared
with a live worker or a second run), one flush per `push` (the producer's hooks mark what that flush
covers), and `finish`, which waits until InfluxDB holds everything the outbox kept or fails saying how to
resume. A dry run parses and counts but writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx
import psycopg

from ingest_worker import tracing
from ingest_worker.contract import database_for
from ingest_worker.mqtt_link import Incoming, MqttLink
from ingest_worker.outbox import Outbox
from ingest_worker.pipeline import Pipeline
from ingest_worker.settings import WorkerSettings
from ingest_worker.sources.base import Source
from ingest_worker.sources.statestream import StatestreamSource
from ingest_worker.store.connection import OpsConnection
from ingest_worker.store.deadletters import DeadLetter
from ingest_worker.store.durable import DurableWriter
from ingest_worker.store.hooks import FlushHook
from ingest_worker.store.influx import InfluxWriter
from ingest_worker.store.metadata import DEFAULT_BUDGET, MetadataStore

log = logging.getLogger(__name__)

LOCK_FILE = "door.lock"
# How long `finish` waits for InfluxDB to take what the outbox holds before it gives up (the outbox keeps
# it; the next run of the same command replays it first).
DRAIN_TIMEOUT_S = 300.0
DRAIN_REPORT_S = 5.0


class DoorError(Exception):
    """The producer cannot go on; the message says why and what to do next."""


@dataclass
class Wiring:
    """What `open_pipeline` built: the caller closes `influx` and `pipeline` (`Pipeline.close`)."""

    metadata: MetadataStore
    influx: InfluxWriter
    writer: DurableWriter
    pipeline: Pipeline


async def open_pipeline(settings: WorkerSettings,
                        conn: psycopg.AsyncConnection[tuple[object, ...]] | OpsConnection,
                        sources: Sequence[Source], outbox_dir: Path, link: MqttLink | None = None,
                        hooks: Sequence[FlushHook] = (), influx_client: httpx.AsyncClient | None = None) -> Wiring:
    """The tenant's pipeline on `conn` (autocommit; an `OpsConnection` when homes share it), with its outbox
    in `outbox_dir`; `influx_client` when homes share one pool of InfluxDB connections."""
    metadata = MetadataStore(settings.tenant, DEFAULT_BUDGET)  # load() takes the row's
    if isinstance(conn, OpsConnection):
        async with conn.lock:
            await metadata.load(conn.conn)
    else:
        await metadata.load(conn)
    for source in sources:
        if isinstance(source, StatestreamSource):  # a restarted worker's states of known entities need not wait
            source.known = metadata.knows
    influx = InfluxWriter(settings.influx_write_url, database_for(settings.tenant), settings.influx_username,
                          settings.influx_password.get_secret_value(), settings.influx_timeout_s,
                          client=influx_client, verify=settings.influx_verify())
    writer = DurableWriter(influx, Outbox(outbox_dir, settings.outbox_max_bytes))
    pipeline = Pipeline(settings.tenant, sources, writer, metadata, conn, settings.ingest_dsn.get_secret_value(),
                        link, settings.max_payload_bytes, settings.batch_max_points, settings.batch_max_age_s, hooks)
    return Wiring(metadata, influx, writer, pipeline)


def offline_item(topic: str, payload: bytes, received_ns: int) -> Incoming:
    """An item no broker delivered: nothing to acknowledge."""
    return Incoming(topic, payload, 0, 0, 0, received_ns)


def door_outbox(settings: WorkerSettings, producer: str) -> Path:
    """The producer's own outbox, beside the live worker's (`<HATS_OUTBOX_DIR>/<client id>`)."""
    return settings.outbox_dir / f"{producer}-{settings.tenant}"


class Door:
    """`async with Door(...) as door`: push items, then `await door.finish(...)`."""

    def __init__(self, settings: WorkerSettings, producer: str, sources: Sequence[Source],
                 hooks: Sequence[FlushHook] = (), dry_run: bool = False) -> None:
        self.settings = settings
        self.outbox_dir = door_outbox(settings, producer)
        self._producer = producer
        self._sources = sources
        self._hooks = hooks
        self.dry_run = dry_run
        self.would_write = 0  # points a dry run would have written
        self._lock: IO[str] | None = None
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._wiring: Wiring | None = None
        self._replayer: asyncio.Task[None] | None = None

    @property
    def pipeline(self) -> Pipeline:
        assert self._wiring is not None, "async with Door(...) first"
        return self._wiring.pipeline

    @property
    def conn(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        """The pipeline's PostgreSQL connection (autocommit), for the producer's own bookkeeping."""
        assert self._conn is not None, "async with Door(...) first"
        return self._conn

    @property
    def counters(self) -> dict[str, int]:
        return self.pipeline.counters

    async def __aenter__(self) -> Door:
        self.outbox_dir.mkdir(parents=True, exist_ok=True)
        self._lock = (self.outbox_dir / LOCK_FILE).open("a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            self._lock = None
            raise DoorError(f"another {self._producer} of tenant {self.settings.tenant} is running "
                            f"(it holds {self.outbox_dir / LOCK_FILE}); wait for it to finish") from None
        try:
            self._conn = await psycopg.AsyncConnection.connect(self.settings.ingest_dsn.get_secret_value(),
                                                               autocommit=True)
        except psycopg.OperationalError as exc:
            await self._release()
            raise DoorError(f"cannot connect to PostgreSQL (HATS_INGEST_DSN): {str(exc).strip()[:300]}") from None
        self._wiring = await open_pipeline(self.settings, self._conn, self._sources, self.outbox_dir,
                                           hooks=self._hooks)
        if not self.dry_run:
            self._replayer = asyncio.create_task(self._wiring.writer.replay_forever(self.pipeline.replayed),
                                                 name=f"{self._producer}-outbox-replay")
        return self

    async def push(self, items: Sequence[Incoming], marked: Callable[[], None] | None = None) -> list[DeadLetter]:
        """Process `items` (sources drain what they hold) and make them durable in one flush; returns the
        dead letters they became (a dry run: would have become).

        `marked` runs after the items are processed and before the flush starts: the producer sets there
        what its hooks should commit with exactly these items (a keyset position, the replayed ids)."""
        self.pipeline.process(items, force=True)
        if self.dry_run:
            points, letters = self.pipeline.discard()
            self.would_write += points
            return letters
        if marked is not None:
            marked()
        letters = await self.pipeline.flush()
        self._check_replayer()
        return letters

    def _check_replayer(self) -> None:
        if self._replayer is not None and self._replayer.done():
            self._replayer.result()  # a crashed replayer re-raises here instead of vanishing

    async def finish(self, say: Callable[[str], None], timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        """Return once InfluxDB holds every point this door took; else raise naming how to resume."""
        if self.dry_run or self._wiring is None:
            return
        writer = self._wiring.writer
        if not writer.degraded:
            return
        deadline = time.monotonic() + timeout_s
        report = 0.0
        while writer.degraded:
            self._check_replayer()
            now = time.monotonic()
            if now > deadline:
                raise DoorError(
                    f"InfluxDB ({self.settings.influx_write_url}) did not take the outbox's "
                    f"{writer.pending_records} batch(es) within {timeout_s:.0f} s. They are safe in "
                    f"{self.outbox_dir}; once InfluxDB is back, run the same command again: it writes them first")
            if now >= report:
                say(f"waiting for InfluxDB to take {writer.pending_records} batch(es) from the outbox "
                    f"{self.outbox_dir}")
                report = now + DRAIN_REPORT_S
            await asyncio.sleep(0.1)  # polls the replayer task on this loop; not a test synchronisation

    async def _release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        if self._replayer is not None:
            self._replayer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replayer
        if self._wiring is not None:
            await self._wiring.influx.aclose()
            await self._wiring.pipeline.close()
        elif self._conn is not None:
            await self._conn.close()
        await self._release()
        tracing.flush()
