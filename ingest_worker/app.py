"""The worker's wiring: network thread → pipeline → durable writer, with graceful shutdown.

On SIGTERM/SIGINT it stops reading MQTT, processes what it already holds, makes it durable,
acknowledges it and disconnects, within HATS_SHUTDOWN_TIMEOUT_S; what is left unacknowledged stays in
the broker's persistent session and is redelivered on the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import Callable

import psycopg

from ingest_worker import metrics
from ingest_worker.contract import database_for
from ingest_worker.health import HealthServer
from ingest_worker.mqtt_link import LinkSettings, MqttLink
from ingest_worker.outbox import Outbox
from ingest_worker.pipeline import Pipeline
from ingest_worker.settings import WorkerSettings
from ingest_worker.sources.registry import build_sources, subscription_filters
from ingest_worker.store.durable import DurableWriter
from ingest_worker.store.influx import InfluxWriter
from ingest_worker.store.metadata import MetadataStore

log = logging.getLogger("ingest_worker")

TICK_S = 0.05
STALLED_AFTER_S = 30.0


async def run(settings: WorkerSettings) -> dict[str, int]:
    loop = asyncio.get_running_loop()
    sources = build_sources(settings)
    conn = await psycopg.AsyncConnection.connect(settings.ingest_dsn.get_secret_value(), autocommit=True)
    metadata = MetadataStore(settings.tenant, settings.series_budget)
    await metadata.load(conn)
    outbox = Outbox(settings.outbox_dir / settings.mqtt_client_id, settings.outbox_max_bytes)
    influx = InfluxWriter(settings.influx_url, database_for(settings.tenant), settings.influx_username,
                          settings.influx_password.get_secret_value(), settings.influx_timeout_s)
    wakeup = asyncio.Event()
    link = MqttLink(
        LinkSettings(settings.mqtt_host, settings.mqtt_port, settings.mqtt_username,
                     settings.mqtt_password.get_secret_value(), settings.mqtt_client_id,
                     subscription_filters(sources), settings.mqtt_share_group),
        on_batch=lambda: _call_soon(loop, wakeup.set),
    )
    writer = DurableWriter(influx, outbox)
    pipeline = Pipeline(settings.tenant, sources, writer, metadata, conn, settings.ingest_dsn.get_secret_value(),
                        link, settings.max_payload_bytes,
                        settings.batch_max_points, settings.batch_max_age_s)
    last_tick = time.monotonic()

    def ready() -> tuple[bool, str]:
        if not link.connected:
            return False, "not connected to the MQTT broker"
        if not link.subscribed:
            return False, "waiting for the broker to confirm the subscriptions"
        if refused := link.refused:
            return False, (f"the broker refused the subscription(s) {', '.join(refused)}: the account "
                           "HATS_MQTT_USERNAME may not read them (extend its ACL or fix the topic settings)")
        if writer.outbox_full:
            return False, "outbox full: holding acknowledgements until InfluxDB catches up"
        return True, "ready" + (" (InfluxDB unavailable: writing to the outbox)" if writer.degraded else "")

    health = HealthServer(settings.http_host, settings.http_port,
                          alive=lambda: time.monotonic() - last_tick < STALLED_AFTER_S, ready=ready)
    if settings.http_port:
        await health.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    link.start()
    replayer = asyncio.create_task(writer.replay_forever(pipeline.replayed), name="outbox-replay")
    # One flush in flight while the next batch is parsed: CPU work overlaps the InfluxDB round trip.
    # Batches complete in order, so acknowledgements never overtake an earlier batch's write.
    flushing: asyncio.Task[None] | None = None
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), TICK_S)
            wakeup.clear()
            last_tick = time.monotonic()
            pipeline.process(link.take())
            metrics.INBOX_DEPTH.set(link.inbox_depth())
            metrics.CONSUMER_LAG.set(pipeline.oldest_age_s())
            metrics.MQTT_CONNECTED.set(1 if link.connected else 0)
            if flushing is not None and flushing.done():
                flushing.result()  # a failed flush stops the worker (its batch stays unacknowledged)
                flushing = None
            if pipeline.full() or pipeline.due():
                if flushing is not None:
                    await flushing
                flushing = asyncio.create_task(pipeline.flush(), name="flush")
            if replayer.done():
                replayer.result()  # a crashed replayer re-raises here instead of vanishing
        log.info("stopping: draining what was received")
        link.pause_reading()
        await asyncio.wait_for(_drain(pipeline, link, flushing), settings.shutdown_timeout_s)
    finally:
        link.stop()
        replayer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await replayer
        await health.close()
        await influx.aclose()
        await pipeline.close()
    log.info("stopped: %s", json.dumps(pipeline.counters, sort_keys=True))
    return pipeline.counters


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
    loop.call_soon_threadsafe(callback)


async def _drain(pipeline: Pipeline, link: MqttLink, flushing: asyncio.Task[None] | None) -> None:
    if flushing is not None:
        await flushing
    pipeline.process(link.take(), force=True)
    await pipeline.flush()
