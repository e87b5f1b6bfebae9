"""The worker's event loop: subscribe, feed the pipeline, flush on size or age, stop cleanly.

On SIGTERM or SIGINT it stops reading, flushes what it holds and exits; a lost broker connection is
retried with jittered exponential backoff, and the fixed client id with a persistent session lets
the broker keep QoS 1 messages for it meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal

import aiomqtt

from ingest_worker.contract import database_for
from ingest_worker.pipeline import Pipeline
from ingest_worker.settings import WorkerSettings
from ingest_worker.store.deadletters import DeadLetterStore
from ingest_worker.store.influx import InfluxWriter

log = logging.getLogger("ingest_worker")

RECONNECT_INITIAL_S = 0.5
RECONNECT_MAX_S = 30.0
TICK_S = 0.05


async def _consume(settings: WorkerSettings, pipeline: Pipeline) -> None:
    delay = RECONNECT_INITIAL_S
    while True:
        try:
            async with aiomqtt.Client(
                settings.mqtt_host, settings.mqtt_port,
                username=settings.mqtt_username, password=settings.mqtt_password.get_secret_value(),
                identifier=settings.mqtt_client_id, clean_session=False,
            ) as client:
                await client.subscribe(settings.eventstream_topic, qos=1)
                log.info("subscribed to %s on %s:%s", settings.eventstream_topic, settings.mqtt_host,
                         settings.mqtt_port)
                delay = RECONNECT_INITIAL_S
                async for message in client.messages:
                    payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
                    pipeline.accept(message.topic.value, payload)
                    if pipeline.full():
                        await pipeline.flush()
        except aiomqtt.MqttError as exc:
            wait = delay * random.uniform(0.5, 1.5)  # noqa: S311 (jitter)
            log.warning("MQTT connection lost (%s); reconnecting in %.1f s", exc, wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2, RECONNECT_MAX_S)


async def _flush_by_age(pipeline: Pipeline) -> None:
    while True:
        await asyncio.sleep(TICK_S)
        if pipeline.due():
            await pipeline.flush()


async def run(settings: WorkerSettings) -> dict[str, int]:
    writer = InfluxWriter(settings.influx_url, database_for(settings.tenant), settings.influx_username,
                          settings.influx_password.get_secret_value())
    dead_letters = await DeadLetterStore.connect(settings.ingest_dsn.get_secret_value())
    pipeline = Pipeline(settings, writer, dead_letters)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        tasks = [asyncio.create_task(_consume(settings, pipeline)), asyncio.create_task(_flush_by_age(pipeline))]
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
        for task in (*tasks, waiter):
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for task in done - {waiter}:
            task.result()  # a crashed task re-raises here instead of vanishing
        await pipeline.flush()
    finally:
        await writer.aclose()
        await dead_letters.aclose()
    log.info("stopped: %s", dict(pipeline.counters))
    return dict(pipeline.counters)
