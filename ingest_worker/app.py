"""The worker's wiring: network thread → pipeline → durable writer, with graceful shutdown.

On SIGTERM/SIGINT it stops reading MQTT, processes what it already holds, makes it durable,
acknowledges it and disconnects, within HATS_SHUTDOWN_TIMEOUT_S; what is left unacknowledged stays in
the broker's persistent session and is redelivered on the next start. The WebSocket source
(`ha_link.py`) feeds the same pipeline; what it had not made durable is fetched again from Home
Assistant's recorder on the next start (its resume point). Without an MQTT source there is no MQTT link.
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

from ingest_worker import metrics, peer_certs, tracing
from ingest_worker.door import open_pipeline
from ingest_worker.ha_link import HaLink, HaLinkSettings, HomeAssistantAuthError
from ingest_worker.health import HealthServer
from ingest_worker.homes import ManyHomes
from ingest_worker.mqtt_link import Incoming, LinkSettings, MqttLink
from ingest_worker.pipeline import Pipeline
from ingest_worker.settings import WorkerSettings
from ingest_worker.sources.registry import build_sources, subscription_filters
from ingest_worker.store.hooks import FlushHook
from ingest_worker.store.registry import RegistryStore
from ingest_worker.store.resume import ResumePoint

log = logging.getLogger("ingest_worker")

TICK_S = 0.05
STALLED_AFTER_S = 30.0


async def run(settings: WorkerSettings) -> dict[str, int]:
    if settings.registry_mode:
        return await ManyHomes(settings).run()
    loop = asyncio.get_running_loop()
    registry = RegistryStore(settings.tenant)
    sources = build_sources(settings, registry.device_of)
    conn = await psycopg.AsyncConnection.connect(settings.ingest_dsn.get_secret_value(), autocommit=True)
    resume = ResumePoint(settings.tenant)
    hooks: list[FlushHook] = []
    if "websocket" in settings.source_names():
        await resume.load(conn)
        hooks = [resume, registry]
    wakeup = asyncio.Event()
    configured = [topic_filter for topic_filter, _ in subscription_filters(sources)]
    link = MqttLink(
        LinkSettings(settings.mqtt_host, settings.mqtt_port, settings.mqtt_username,
                     settings.mqtt_password.get_secret_value(), settings.mqtt_client_id,
                     subscription_filters(sources), settings.mqtt_share_group, settings.mqtt_tls_context(),
                     settings.outbox_dir / settings.mqtt_client_id),
        on_batch=lambda: _call_soon(loop, wakeup.set),
    ) if settings.mqtt_sources() else None
    ha = HaLink(HaLinkSettings(settings.ha_url, settings.ha_token.get_secret_value(), settings.ha_recorder_commit_s),
                resume, registry, on_batch=wakeup.set) if hooks else None
    # The same wiring as every offline producer's (door.py); the worker's outbox is its client id's.
    wiring = await open_pipeline(settings, conn, sources, settings.outbox_dir / settings.mqtt_client_id, link, hooks)
    writer, influx, pipeline = wiring.writer, wiring.influx, wiring.pipeline
    last_tick = time.monotonic()

    def take() -> list[Incoming]:
        items = link.take() if link is not None else []
        if ha is not None:
            items += ha.take()
        return items

    def writer_ready() -> tuple[bool, str]:
        if writer.outbox_full:
            return False, "outbox full: holding acknowledgements until InfluxDB catches up"
        return True, "ready" + (" (InfluxDB unavailable: writing to the outbox)" if writer.degraded else "")

    def ready() -> tuple[bool, str]:
        if ha is not None and not ha.connected:
            return False, ha.problem
        if link is None:
            return writer_ready()
        if not link.connected:
            return False, "not connected to the MQTT broker"
        if refused := link.refused:
            return False, (f"the broker refused the subscription(s) {', '.join(refused)}: the account "
                           "HATS_MQTT_USERNAME may not read them (extend its ACL or fix the topic settings)")
        # Granted on this connection, or held by the session it resumed (session_filters.py): a SUBACK
        # queues behind the session's backlog, and the worker is consuming meanwhile.
        if not link.confirmed(configured):
            return False, "waiting for the broker to confirm the subscriptions"
        return writer_ready()

    health = HealthServer(settings.http_host, settings.http_port,
                          alive=lambda: time.monotonic() - last_tick < STALLED_AFTER_S, ready=ready)
    if settings.http_port:
        await health.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if link is not None:
        link.start()
    tls_probe = asyncio.create_task(peer_certs.watch(settings), name="tls-probe")
    ha_task = asyncio.create_task(ha.run(), name="ha-link") if ha is not None else None
    fatal: BaseException | None = None
    replayer = asyncio.create_task(writer.replay_forever(pipeline.replayed), name="outbox-replay")
    # One flush in flight while the next batch is parsed: CPU work overlaps the InfluxDB round trip.
    # Batches complete in order, so acknowledgements never overtake an earlier batch's write.
    flushing: asyncio.Task[object] | None = None
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), TICK_S)
            wakeup.clear()
            last_tick = time.monotonic()
            pipeline.process(take())
            metrics.INBOX_DEPTH.set((link.inbox_depth() if link else 0) + (ha.inbox_depth() if ha else 0))
            metrics.CONSUMER_LAG.set(pipeline.oldest_age_s())
            if link is not None:
                metrics.MQTT_CONNECTED.set(1 if link.connected else 0)
                metrics.RECEIPTS_KEPT.set(len(link.receipts))
            metrics.READY.set(1 if ready()[0] else 0)
            if flushing is not None and flushing.done():
                flushing.result()  # a failed flush stops the worker (its batch stays unacknowledged)
                flushing = None
            if pipeline.full() or pipeline.due() or registry.has_pending:
                if flushing is not None:
                    await flushing
                flushing = asyncio.create_task(pipeline.flush(), name="flush")
            if replayer.done():
                replayer.result()  # a crashed replayer re-raises here instead of vanishing
            if ha_task is not None and ha_task.done():
                # Only a refused token ends the link: drain what was received, then exit naming the setting.
                fatal = ha_task.exception() or RuntimeError("the Home Assistant link stopped")
                log.error("%s", fatal)
                break
        log.info("stopping: draining what was received")
        if link is not None:
            link.pause_reading()
        await asyncio.wait_for(_drain(pipeline, take, flushing), settings.shutdown_timeout_s)
    finally:
        if link is not None:
            link.stop()
        if ha_task is not None:
            ha_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, HomeAssistantAuthError):
                await ha_task
        for task in (replayer, tls_probe):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await health.close()
        await influx.aclose()
        await pipeline.close()
        tracing.flush()
    log.info("stopped: %s", json.dumps(pipeline.counters, sort_keys=True))
    if fatal is not None:
        raise fatal
    return pipeline.counters


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
    loop.call_soon_threadsafe(callback)


async def _drain(pipeline: Pipeline, take: Callable[[], list[Incoming]], flushing: asyncio.Task[object] | None) -> None:
    if flushing is not None:
        await flushing
    pipeline.process(take(), force=True)
    await pipeline.flush()
