"""Registry mode (`HATS_TENANT_MODE=registry`): one worker serves every active home of its shard.

Each home (a row of `core.tenants`, `tenants.py`) gets what a single-tenant worker has: its sources under
its prefix, its `MetadataStore` with the row's `series_budget`, its dead letters, `ops.ingest_hours`,
InfluxDB database (`database_for`), outbox directory (`<HATS_OUTBOX_DIR>/<client id>/<tenant>`) and
replayer. Homes on the platform broker share one MQTT connection: their filters are subscribed as
`$share/<shard's group>/<filter>` (`share_group_of`), so replicas of a shard split the load with no
configuration; a topic reaches its home through `TenantRouter` (a dict lookup per `/`). A home with its
own broker account (`broker_url`) has its own `MqttLink` (client id = `broker_username`, which the
platform binds its reader accounts to: its own persistent session, in-flight window and broker queue —
one session per account, so one replica at a time holds it); one with `ha_url` its own `HaLink`.

No home stalls another:
* Fair processing: each tick a home parses at most `QUANTUM` of its queued messages, so a flood of bad
  payloads in one home delays another's points by one quantum, not by the flood.
* Backpressure per home: a home whose flush is still running (InfluxDB slow, its outbox full) with a
  full batch stops parsing — its messages wait in its own queue and stay unacknowledged — while the
  others keep flushing; nothing waits for another home's flush.
* A crash in a home's flush or replayer (a PostgreSQL error on its rows, …) stops that home only; it is
  started again `RETRY_FAILED_S` later. A dropped InfluxDB database sends only that home to its outbox.
* The shared connection's in-flight window (Mosquitto `max_inflight_messages`, 20,000 here) is the one
  resource platform homes share: the network thread keeps reading (a blocked home's messages wait in
  its own queue in memory, not in the socket), but a blocked home's unacknowledged QoS 1 messages hold
  slots of that window until its outbox drains. A home that must never share it gets its own broker
  account (`broker_url`): its own session, window and broker queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import psycopg

from ingest_worker import metrics, peer_certs, tracing
from ingest_worker.contract import shard_of, share_group_of
from ingest_worker.door import Wiring, open_pipeline
from ingest_worker.ha_link import HaLink, HaLinkSettings
from ingest_worker.health import HealthServer
from ingest_worker.mqtt_link import Incoming, LinkSettings, MqttLink
from ingest_worker.routing import TenantRouter
from ingest_worker.settings import WorkerSettings
from ingest_worker.sources.discovery import DiscoverySource
from ingest_worker.sources.registry import build_sources, subscription_filters
from ingest_worker.store.connection import OpsConnection
from ingest_worker.store.hooks import FlushHook
from ingest_worker.store.influx import open_client
from ingest_worker.store.registry import RegistryStore
from ingest_worker.store.resume import ResumePoint
from ingest_worker.tenants import (
    BROKER_PASSWORD,
    HA_TOKEN,
    TenantConfigError,
    TenantRow,
    TenantWatcher,
    active_tenants,
    read_secret,
)
from ingest_worker.tls import client_context

log = logging.getLogger("ingest_worker")

TICK_S = 0.05
STALLED_AFTER_S = 30.0
QUANTUM = 1_000  # messages a home parses per tick before the next home's turn
# A home's own broker (core.tenants.broker_url): its scheme's default port; mqtts:// is TLS.
MQTT_PORTS = {"mqtt": 1883, "mqtts": 8883}
IDLE_TICK_S = 0.25  # homes with nothing queued are still ticked (held statestream states, batch age)
METRICS_EVERY_S = 1.0
RETRY_FAILED_S = 30.0
UNSUBSCRIBE_WAIT_S = 10.0
STOP_DRAIN_S = 10.0
NO_TENANT = "no_tenant"


@dataclass
class Home:
    row: TenantRow
    settings: WorkerSettings
    wiring: Wiring
    link: MqttLink | None  # its own broker connection; None: the platform link (or none: WebSocket only)
    platform: MqttLink | None
    filters: list[tuple[str, bool]]
    ha: HaLink | None = None
    registry: RegistryStore | None = None
    inbox: deque[Incoming] = field(default_factory=deque)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    flushing: asyncio.Task[object] | None = None
    serving_logged: bool = False
    last_tick: float = 0.0
    reported: dict[str, int] = field(default_factory=dict)

    @property
    def tenant(self) -> str:
        return self.row.tenant_id

    def broker(self) -> MqttLink | None:
        return self.link or self.platform

    def all_filters(self) -> list[str]:
        """Its start filters and the state topics its discovery configs made it subscribe."""
        sources = self.wiring.pipeline.sources
        learned = [t for s in sources if isinstance(s, DiscoverySource) for t in s.state_topics()]
        return [f for f, _ in self.filters] + learned

    def ready(self) -> tuple[bool, str]:
        if self.ha is not None and not self.ha.connected:
            return False, self.ha.problem
        broker = self.broker()
        if self.filters and broker is not None:
            if refused := [f for f in broker.refused if f in {f for f, _ in self.filters}]:
                return False, f"the broker refused {', '.join(refused)}"
            if not broker.confirmed([f for f, _ in self.filters]):
                return False, "waiting for the broker to confirm its subscriptions"
        if self.wiring.writer.outbox_full:
            return False, "outbox full: holding its acknowledgements until InfluxDB catches up"
        return True, "ready" + (" (InfluxDB unavailable: writing to its outbox)" if self.wiring.writer.degraded else "")

    def blocked(self) -> bool:
        """Its flush is still running and the next batch is full: parse no more of its queue."""
        return self.flushing is not None and not self.flushing.done() and self.wiring.pipeline.full()


class ManyHomes:
    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.group = share_group_of(settings.shard, settings.shards)
        self.homes: dict[str, Home] = {}
        self._busy: dict[str, Home] = {}  # homes with something to do before the next sweep
        self.failed: dict[str, tuple[TenantRow, float, str]] = {}
        self.router = TenantRouter()
        self.wakeup = asyncio.Event()
        self.watcher = TenantWatcher(settings.ingest_dsn.get_secret_value())
        self.platform: MqttLink | None = None
        self._ops: list[OpsConnection] = []
        self._influx: httpx.AsyncClient | None = None
        self._reader: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self.counters: dict[str, int] = {"received": 0, "written": 0, "ignored": 0, "dead_lettered": 0,
                                         NO_TENANT: 0}
        self.last_tick = time.monotonic()

    # -- homes ------------------------------------------------------------------------------------
    def _home_settings(self, row: TenantRow) -> WorkerSettings:
        names = list(self.settings.mqtt_sources()) if (row.topic_prefix is not None or row.broker_url) else []
        if row.ha_url:
            names.append("websocket")
        update: dict[str, object] = {"tenant": row.tenant_id, "topic_prefix": row.topic_prefix or ""}
        if names:
            update["sources"] = ",".join(names)
        if row.ha_url:
            update["ha_url"] = row.ha_url.rstrip("/").removesuffix("/api/websocket")
        return self.settings.model_copy(update=update)

    async def _start_home(self, row: TenantRow) -> Home:
        settings = self._home_settings(row)
        chosen = settings.source_names() if (row.topic_prefix is not None or row.broker_url or row.ha_url) else ()
        if not chosen:
            raise TenantConfigError(f"tenant {row.tenant_id}: no topic_prefix, broker_url or ha_url: nothing to read")
        registry = RegistryStore(row.tenant_id)
        sources = build_sources(settings, registry.device_of)
        filters = subscription_filters(sources)
        link: MqttLink | None = None
        platform: MqttLink | None = None
        if filters and row.broker_url:
            link = self._own_link(row, filters)
        elif filters:
            platform = self._platform_link()
        ops = self._ops[shard_of(row.tenant_id, len(self._ops))]
        hooks: list[FlushHook] = []
        ha: HaLink | None = None
        if "websocket" in chosen:
            token = read_secret(self.settings.tenant_secrets_dir, row.tenant_id, HA_TOKEN)
            resume = ResumePoint(row.tenant_id)
            async with ops.lock:
                await resume.load(ops.conn)
            hooks = [resume, registry]
            ha = HaLink(HaLinkSettings(settings.ha_url, token, settings.ha_recorder_commit_s), resume, registry,
                        on_batch=self.wakeup.set)
        outbox = self.settings.outbox_dir / self.settings.mqtt_client_id / row.tenant_id
        wiring = await open_pipeline(settings, ops, sources, outbox, link or platform, hooks, self._influx)
        home = Home(row, settings, wiring, link, platform, filters, ha, registry if ha else None)
        home.tasks.append(asyncio.create_task(wiring.writer.replay_forever(wiring.pipeline.replayed),
                                              name=f"outbox-replay-{row.tenant_id}"))
        if ha is not None:
            home.tasks.append(asyncio.create_task(ha.run(), name=f"ha-link-{row.tenant_id}"))
        if link is not None:
            link.start()
        elif platform is not None:
            assert row.topic_prefix is not None
            self.router.add(row.topic_prefix, row.tenant_id)
            for topic_filter, shared in filters:
                platform.add_subscription(topic_filter, shared)
        log.info("tenant %s: starting (%s; sources %s)", row.tenant_id,
                 f"own broker {row.broker_url}" if link else f"prefix {row.topic_prefix!r}" if platform else "no MQTT",
                 settings.sources)
        return home

    def _platform_link(self) -> MqttLink:
        if self.platform is None:
            s = self.settings
            self.platform = MqttLink(LinkSettings(s.mqtt_host, s.mqtt_port, s.mqtt_username,
                                                  s.mqtt_password.get_secret_value(), s.mqtt_client_id, [],
                                                  self.group, s.mqtt_tls_context(), s.outbox_dir / s.mqtt_client_id),
                                     on_batch=self._wake_threadsafe)
            self.platform.start()
        return self.platform

    def _own_link(self, row: TenantRow, filters: list[tuple[str, bool]]) -> MqttLink:
        assert row.broker_url is not None
        assert row.broker_username is not None
        url = urlsplit(row.broker_url)
        if url.scheme not in MQTT_PORTS:
            raise TenantConfigError(f"tenant {row.tenant_id}: broker_url {row.broker_url!r}: use mqtts:// (TLS, "
                                    "verified with HATS_MQTT_CA_FILE or the system's trust store) or mqtt://")
        password = read_secret(self.settings.tenant_secrets_dir, row.tenant_id, BROKER_PASSWORD)
        # Client id = the account's name: the platform binds a home's reader account to it (tenancy/broker.py),
        # so no other client can take over its session; it is the home's one session on that broker, so its
        # filters are plain ones (a reader confined to `<prefix>#` is refused `$share/…`, measured).
        tls = client_context(self.settings.mqtt_ca_file) if url.scheme == "mqtts" else None
        # Its receipt journal beside the home's outbox: the session (and so the redeliveries) are the home's.
        journal = self.settings.outbox_dir / self.settings.mqtt_client_id / row.tenant_id
        return MqttLink(LinkSettings(url.hostname or "", url.port or MQTT_PORTS[url.scheme], row.broker_username,
                                     password, row.broker_username, filters, tls=tls, journal_dir=journal),
                        on_batch=self._wake_threadsafe)

    @staticmethod
    async def _end_tasks_and_link(home: Home) -> None:
        """Its replayer and link tasks cancelled and awaited, its own broker connection closed."""
        for task in home.tasks:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if home.link is not None:
            home.link.stop()

    async def _stop_home(self, home: Home, why: str) -> None:
        """Stop reading its topics, make durable what it holds, acknowledge it, let it go."""
        if home.platform is not None and home.row.topic_prefix is not None:
            for topic_filter in home.all_filters():
                home.platform.remove_subscription(topic_filter)
            deadline = time.monotonic() + UNSUBSCRIBE_WAIT_S
            # The UNSUBACK arrives on the network thread: polled, bounded (no event crosses the thread).
            while home.platform.removing(home.all_filters()) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(TICK_S)
            self.router.remove(home.row.topic_prefix)
        elif home.link is not None:
            home.link.pause_reading()
        if home.ha is not None:
            home.inbox.extend(home.ha.take())
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._drain(home), STOP_DRAIN_S)
        await self._end_tasks_and_link(home)
        await home.wiring.influx.aclose()
        await home.wiring.pipeline.close()
        with contextlib.suppress(KeyError):  # never reported ready; else its last 1 would outlive the home
            metrics.TENANT_READY.remove(home.tenant)
        log.info("tenant %s: stopped (%s) %s", home.tenant, why, json.dumps(home.wiring.pipeline.counters,
                                                                           sort_keys=True))

    async def _drain(self, home: Home) -> None:
        if home.flushing is not None:
            await home.flushing
        if home.link is not None:
            home.inbox.extend(home.link.take())
        pipeline = home.wiring.pipeline
        pipeline.process(list(home.inbox), force=True)
        home.inbox.clear()
        await pipeline.flush()

    async def reconcile(self) -> None:
        """Start the homes that are new, restart the changed, stop the disabled, retry the failed."""
        assert self._reader is not None
        try:
            wanted = await active_tenants(self._reader, self.settings.shard, self.settings.shards)
        except psycopg.OperationalError as exc:
            log.warning("cannot read core.tenants (%s); serving the homes known so far", str(exc).strip()[:200])
            with contextlib.suppress(psycopg.Error):
                await self._reader.close()
            with contextlib.suppress(psycopg.OperationalError):
                self._reader = await psycopg.AsyncConnection.connect(self.settings.ingest_dsn.get_secret_value(),
                                                                     autocommit=True)
            return
        for tenant, home in list(self.homes.items()):
            row = wanted.get(tenant)
            if row != home.row:
                del self.homes[tenant]
                self._busy.pop(tenant, None)
                await self._stop_home(home, "disabled or removed" if row is None else "changed")
        for tenant in list(self.failed):
            row, since, _ = self.failed[tenant]
            if wanted.get(tenant) != row or time.monotonic() - since >= RETRY_FAILED_S:
                del self.failed[tenant]
        for tenant, row in wanted.items():
            if tenant in self.homes or tenant in self.failed:
                continue
            try:
                self.homes[tenant] = self._busy[tenant] = await self._start_home(row)
            except (TenantConfigError, psycopg.Error, OSError, ValueError) as exc:
                self._fail(row, str(exc))
        metrics.TENANTS.set(len(self.homes))

    def _fail(self, row: TenantRow, why: str) -> None:
        log.error("tenant %s: not served (%s); retrying in %.0f s or when its row changes", row.tenant_id,
                  why[:500], RETRY_FAILED_S)
        self.failed[row.tenant_id] = (row, time.monotonic(), why[:500])
        metrics.TENANT_FAILURES.labels(row.tenant_id).inc()
        # The retry must not wait for the next NOTIFY or re-read (HATS_TENANT_REREAD_S may be far longer): a
        # home whose secret file is written later is served RETRY_FAILED_S after its failure, as logged.
        self._loop.call_later(RETRY_FAILED_S + TICK_S, self._retry)

    def _retry(self) -> None:
        """Reconcile on the next tick: a failed home's retry is due."""
        self._changes.set()
        self.wakeup.set()

    # -- the loop ---------------------------------------------------------------------------------
    def _wake_threadsafe(self) -> None:
        self._loop.call_soon_threadsafe(self.wakeup.set)

    def _route(self) -> None:
        if self.platform is None:
            return
        unowned: list[Incoming] = []
        homes, route = self.homes, self.router.route
        for item in self.platform.take():
            tenant = route(item.topic)
            home = homes.get(tenant) if tenant is not None else None
            if home is None or home.platform is None:
                unowned.append(item)  # a home stopped meanwhile: acknowledged, or it would hold the window
            else:
                home.inbox.append(item)
                self._busy[home.tenant] = home
        if unowned:
            self.counters[NO_TENANT] += len(unowned)
            metrics.IGNORED.labels("none", NO_TENANT).inc(len(unowned))
            self.platform.ack(unowned)

    def _serve(self, home: Home, now: float) -> bool:
        """One turn of one home; True if it has more queued than it parsed."""
        if home.link is not None:
            home.inbox.extend(home.link.take())
        if home.ha is not None:
            home.inbox.extend(home.ha.take())
        pipeline = home.wiring.pipeline
        if home.flushing is not None and home.flushing.done():
            failure = home.flushing.exception()
            home.flushing = None
            if failure is not None:
                raise failure
        for task in home.tasks:
            if task.done():
                raise task.exception() or RuntimeError(f"{task.get_name()} stopped")
        more = False
        if home.inbox and not home.blocked():
            count = min(len(home.inbox), QUANTUM)
            pipeline.process([home.inbox.popleft() for _ in range(count)])
            more = bool(home.inbox)
            home.last_tick = now
        elif now - home.last_tick >= IDLE_TICK_S:
            pipeline.process([])
            home.last_tick = now
        if home.flushing is None and (pipeline.full() or pipeline.due()
                                      or (home.registry is not None and home.registry.has_pending)):
            home.flushing = asyncio.create_task(pipeline.flush(), name=f"flush-{home.tenant}")
            home.flushing.add_done_callback(functools.partial(self._flushed, home))
        if not home.serving_logged and home.ready()[0]:
            home.serving_logged = True
            log.info("tenant %s: serving (subscriptions confirmed)", home.tenant)
        # A batch waiting for its age is left to the sweep (at most IDLE_TICK_S late): with 1,000 homes each
        # holding a small batch, serving them all on every network batch cost 4× the CPU per message (measured).
        if home.inbox or not home.serving_logged or home.link is not None or home.ha is not None:
            self._busy[home.tenant] = home
        else:
            self._busy.pop(home.tenant, None)
        return more

    def _flushed(self, home: Home, _: asyncio.Task[object]) -> None:
        """A flush ended: serve the home on the next tick (its result, a blocked queue, the next batch)."""
        if self.homes.get(home.tenant) is home:
            self._busy[home.tenant] = home
            self.wakeup.set()

    def _update_metrics(self) -> None:
        for home in self.homes.values():
            counters = home.wiring.pipeline.counters
            for key, metric in (("received", metrics.TENANT_RECEIVED), ("written", metrics.TENANT_WRITTEN),
                                ("dead_lettered", metrics.TENANT_DEAD_LETTERS)):
                delta = counters.get(key, 0) - home.reported.get(key, 0)
                if delta:
                    metric.labels(home.tenant).inc(delta)
                    home.reported[key] = counters.get(key, 0)
            metrics.TENANT_QUEUED.labels(home.tenant).set(len(home.inbox))
            metrics.TENANT_OUTBOX_BYTES.labels(home.tenant).set(home.wiring.writer.pending_bytes)
            metrics.TENANT_READY.labels(home.tenant).set(1 if home.ready()[0] else 0)
        if self.platform is not None:
            metrics.MQTT_CONNECTED.set(1 if self.platform.connected else 0)
            metrics.INBOX_DEPTH.set(self.platform.inbox_depth() + sum(len(h.inbox) for h in self.homes.values()))
        links = [home.link for home in self.homes.values() if home.link is not None]
        if self.platform is not None:
            links.append(self.platform)
        metrics.RECEIPTS_KEPT.set(sum(len(link.receipts) for link in links))
        metrics.READY.set(1 if self.ready()[0] else 0)

    def ready(self) -> tuple[bool, str]:
        """Ready while the worker can serve its homes (the platform broker, the registry); a home that is not
        is named in the answer and in `hats_tenant_ready`, without taking the others out of service."""
        if self.platform is not None and not self.platform.connected:
            return False, "not connected to the MQTT broker"
        if not self.watcher.listening:
            return False, "not listening to core.tenants changes (PostgreSQL unreachable?)"
        problems = [f"{t}: {answer[1]}" for t, h in sorted(self.homes.items()) if not (answer := h.ready())[0]]
        problems += [f"{t}: not served: {why}" for t, (_, _, why) in sorted(self.failed.items())]
        head = f"ready: {len(self.homes)} home(s) of shard {self.settings.shard}/{self.settings.shards}"
        return True, head + ("; not ready: " + "; ".join(problems[:50]) if problems else "")

    async def run(self) -> dict[str, int]:
        self._loop = asyncio.get_running_loop()
        s = self.settings
        dsn = s.ingest_dsn.get_secret_value()
        self._reader = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        self._ops = [await OpsConnection.open(dsn) for _ in range(s.pg_connections)]
        self._influx = open_client(s.influx_write_url, s.influx_username, s.influx_password.get_secret_value(),
                                   s.influx_verify(),
                                   s.influx_timeout_s, shared=True)
        health = HealthServer(s.http_host, s.http_port, ready=self.ready,
                              alive=lambda: time.monotonic() - self.last_tick < STALLED_AFTER_S)
        if s.http_port:
            await health.start()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, stop.set)
        watching = asyncio.create_task(self.watcher.run(), name="tenant-watcher")
        reread = asyncio.create_task(self._reread_forever(stop), name="tenant-reread")
        tls_probe = asyncio.create_task(peer_certs.watch(s), name="tls-probe")
        log.info("registry mode: shard %d of %d, share group %s", s.shard, s.shards, self.group)
        metrics_at = swept = 0.0
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), TICK_S)
                self.wakeup.clear()
                now = self.last_tick = time.monotonic()
                if self._changes.is_set():
                    self._changes.clear()
                    await self.reconcile()
                self._route()
                more = False
                # Every home each IDLE_TICK_S (held statestream states, batch age, its tasks' health); in
                # between only the busy ones: a tick costs the homes with traffic, not all 1,000.
                sweep = now - swept >= IDLE_TICK_S
                if sweep:
                    swept = now
                for home in list((self.homes if sweep else self._busy).values()):
                    try:
                        more = self._serve(home, now) or more
                    except Exception as exc:  # one home's failure is that home's, never the process's
                        log.exception("tenant %s failed", home.tenant)
                        del self.homes[home.tenant]
                        self._busy.pop(home.tenant, None)
                        home.flushing = None
                        await self._stop_home(home, "failed")
                        self._fail(home.row, f"{type(exc).__name__}: {exc}")
                if more:
                    self.wakeup.set()
                if now - metrics_at >= METRICS_EVERY_S:
                    metrics_at = now
                    self._update_metrics()
                if watching.done():
                    watching.result()
            log.info("stopping: draining every home")
            for link in [self.platform, *(h.link for h in self.homes.values())]:
                if link is not None:
                    link.pause_reading()
            self._route()
            await asyncio.wait_for(asyncio.gather(*(self._drain(h) for h in self.homes.values())),
                                   s.shutdown_timeout_s)
        finally:
            for task in (watching, reread, tls_probe):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for home in self.homes.values():
                await self._end_tasks_and_link(home)
            if self.platform is not None:
                self.platform.stop()
            await health.close()
            if self._influx is not None:
                await self._influx.aclose()
            for ops in self._ops:
                await ops.close()
            await self._reader.close()
            tracing.flush()
        for home in self.homes.values():
            for key, value in home.wiring.pipeline.counters.items():
                self.counters[key] = self.counters.get(key, 0) + value
        log.info("stopped: %s", json.dumps(self.counters, sort_keys=True))
        return self.counters

    @property
    def _changes(self) -> asyncio.Event:
        return self.watcher.changed

    async def _reread_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self.settings.tenant_reread_s)
            self.watcher.changed.set()
            self.wakeup.set()
