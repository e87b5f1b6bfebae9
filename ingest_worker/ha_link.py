"""The connection to Home Assistant's WebSocket API (`/api/websocket`), beside `mqtt_link.py`.

It runs on the worker's event loop (aiohttp) and hands the pipeline items shaped like MQTT messages
(`Incoming`, topic `websocket:…`, payload the message's JSON), which `sources/websocket.py` parses: one
pipeline for every source. Per connection:

1. `auth_required` → `auth` with the long-lived token → `auth_ok`; `auth_invalid` stops the worker with
   an error naming HATS_HA_TOKEN (retrying a bad token would get the address banned by HA's
   `ip_ban_enabled`). Then `supported_features` `{"coalesce_messages": 1}`: frames may be JSON arrays.
2. `subscribe_events` for `state_changed` (plus the three `*_registry_updated` events), live events held
   back from here on.
3. The registries, the home's time zone (`get_config`, to core.tenants), `get_states`, and the gap
   since the resume point from `history/history_during_period` (`significant_changes_only: false`,
   `minimal_response: false`, `no_attributes: false`, `include_start_time_state: true`), for the
   entities whose current state is
   newer than the point plus registry entries without a state, in chunks of `HISTORY_IDS_PER_CALL` ids
   and `HISTORY_WINDOW_S` windows (windows overlap by 1 µs: HA's window is `start < last_updated < end`).
   The start-time rows (`lu` equal to the window's start: HA's synthetic state at the start, not a
   change) are not written.
4. The held live events are released, then, once the recorder has committed what was changed before
   the subscription, the history is read once more from the newest row of step 3: the same "fetch again
   after the recorder synced" that HA's own `history/stream` does. Committed means: at least
   `HATS_HA_RECORDER_COMMIT_S` + 1 s (HA's `commit_interval`) after subscribing, and the first live
   change is in the recorder's database (it writes in order; a loaded HA's recorder lags by seconds),
   or, with no live change, `recorder/info` reports an empty backlog. Only then is the gap closed and
   the resume point may advance.

Why `subscribe_events` and not `subscribe_entities`: it sends each change as the full `new_state` — all
attributes (unit, device_class, state_class, friendly_name decide a point's series) and `last_updated`
as an ISO string — the shape mqtt_eventstream publishes, so parsing and normalisation are shared.
`subscribe_entities` sends compressed diffs: attributes only when they change (`+`/`-`), `lu` only when
it differs from `lc`, float epoch times. Using it means mirroring every entity's full state in the worker
and replaying diffs exactly; a missed or misapplied diff silently changes a unit. Its bandwidth advantage
matters to browsers, not to a worker on the same network.

Keepalive: HA's `ping` every `PING_INTERVAL_S`; no `pong` within `PONG_TIMEOUT_S` and nothing else
received for `SILENT_S` closes the connection (an overloaded HA answers late but keeps sending).
Reconnects back off exponentially with jitter. Backpressure: past `MAX_INBOX` queued items the link
stops reading; HA then drops a client that cannot keep up, and the next connection fills the gap from the
resume point — nothing is acknowledged to HA, so nothing is lost by being dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import aiohttp

from ingest_worker import metrics
from ingest_worker.ha_client import (
    CONNECT_TIMEOUT_S,
    REQUEST_TIMEOUT_S,
    ConnectionLost,
    HaLinkSettings,
    HomeAssistantAuthError,
    authenticate,
    call,
    parse,
)
from ingest_worker.ha_history import (
    HISTORY_IDS_PER_CALL,
    HISTORY_WINDOW_S,
    history_items,
    iso,
    recorded_request,
    request,
    row_us,
    valid_ids,
)
from ingest_worker.mqtt_link import Incoming
from ingest_worker.normalise import parse_time_ns
from ingest_worker.rejections import Rejected
from ingest_worker.sources import websocket as ws_source
from ingest_worker.sources.base import json_bytes
from ingest_worker.store.registry import RegistryStore, parse_areas, parse_devices, parse_entities
from ingest_worker.store.resume import ResumePoint
from ingest_worker.store.time_zone import home_time_zone

log = logging.getLogger(__name__)

RECONNECT_INITIAL_S = 0.5
RECONNECT_MAX_S = 30.0
PING_INTERVAL_S = 20.0
PONG_TIMEOUT_S = 10.0
# A late pong while frames keep arriving means a busy Home Assistant, not a dead connection.
SILENT_S = 30.0
# How long the tail read waits for the recorder to catch up (a loaded HA's recorder lags by seconds).
RECORDER_WAIT_S = 600.0
RECORDER_POLL_S = 0.5
# The fill starts this long before the resume point: duplicates are harmless, a clock step is not.
OVERLAP_US = 2_000_000
MAX_INBOX = 100_000
HISTORY_INBOX_LOW = 20_000  # a history chunk is requested only when the pipeline has caught up to this
REGISTRY_DEBOUNCE_S = 2.0
MAX_KNOWN_ENTITIES = 100_000
REGISTRY_EVENTS = {"area_registry_updated": "areas", "device_registry_updated": "devices",
                   "entity_registry_updated": "entities"}
REGISTRY_LISTS = {"areas": "config/area_registry/list", "devices": "config/device_registry/list",
                  "entities": "config/entity_registry/list"}


__all__ = ["ConnectionLost", "HaLink", "HaLinkSettings", "HomeAssistantAuthError"]


@dataclass
class _Connection:
    ws: aiohttp.ClientWebSocketResponse
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    pending: dict[int, asyncio.Future[dict[str, object]]] = field(default_factory=dict)
    state_sub: int | None = None
    registry_subs: dict[int, str] = field(default_factory=dict)
    holding: bool = True
    held: list[tuple[Incoming, int | None]] = field(default_factory=list)
    first_live: tuple[str, int] | None = None  # the first state change after subscribing: a recorder probe
    last_received: float = field(default_factory=time.monotonic)


def _item(topic: str, payload: bytes) -> Incoming:
    return Incoming(topic, payload, 0, 0, 0, time.time_ns())


def _live_entity(message: Mapping[str, object]) -> str | None:
    event = message.get("event")
    data = event.get("data") if isinstance(event, dict) else None
    entity_id = data.get("entity_id") if isinstance(data, dict) else None
    return entity_id if isinstance(entity_id, str) else None


def _live_us(message: Mapping[str, object]) -> int | None:
    """`new_state.last_updated` of a state_changed message in µs, best effort (the source validates)."""
    event = message.get("event")
    data = event.get("data") if isinstance(event, dict) else None
    return _state_us(data.get("new_state") if isinstance(data, dict) else None)


def _state_us(state: object) -> int | None:
    if not isinstance(state, dict) or not isinstance(state.get("last_updated"), str):
        return None
    try:
        return parse_time_ns(str(state["last_updated"])) // 1_000
    except Rejected:
        return None


class HaLink:
    """Owns the WebSocket session; the worker's loop calls `take()` like MqttLink's."""

    def __init__(self, settings: HaLinkSettings, resume: ResumePoint, registry: RegistryStore,
                 on_batch: Callable[[], None]) -> None:
        self._settings = settings
        self._resume = resume
        self._registry = registry
        self._on_batch = on_batch
        self._inbox: list[Incoming] = []
        self._inbox_newest_us: int | None = None
        self._close_at_take = False
        self._drained = asyncio.Event()
        self._conn: _Connection | None = None
        self._subscribed = False
        self._problem = f"not connected to Home Assistant at {settings.url} yet (connecting)"
        self._refreshing: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.ha_version: str | None = None
        self.fills = 0

    # -- the worker's side -------------------------------------------------------------------------
    def take(self) -> list[Incoming]:
        batch, self._inbox = self._inbox, []
        self._resume.taken(self._inbox_newest_us, close=self._close_at_take)
        self._inbox_newest_us, self._close_at_take = None, False
        self._drained.set()
        return batch

    def inbox_depth(self) -> int:
        return len(self._inbox)

    @property
    def connected(self) -> bool:
        return self._subscribed

    @property
    def problem(self) -> str:
        """Why the link is not subscribed, for /readyz."""
        return self._problem

    async def run(self) -> None:
        """Connect, serve, reconnect with jittered exponential backoff; only a refused token ends it."""
        delay = RECONNECT_INITIAL_S
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                started = time.monotonic()
                try:
                    await self._serve(session)
                    reason = "Home Assistant closed the connection"
                except HomeAssistantAuthError:
                    raise
                except (aiohttp.ClientError, OSError, TimeoutError, ConnectionLost) as exc:
                    reason = f"{type(exc).__name__}: {str(exc)[:300] or 'connection failed'}"
                finally:
                    self._lost()
                if time.monotonic() - started > 2 * RECONNECT_MAX_S:
                    delay = RECONNECT_INITIAL_S  # it served a while: start the backoff afresh
                wait = delay * random.uniform(0.5, 1.5)  # noqa: S311 (jitter, not crypto)
                self._problem = (f"not connected to Home Assistant at {self._settings.url} ({reason}); "
                                 f"retrying in {wait:.1f} s")
                log.warning("%s", self._problem)
                metrics.HA_RECONNECTS.inc()
                await asyncio.sleep(wait)
                delay = min(delay * 2, RECONNECT_MAX_S)

    # -- one connection ----------------------------------------------------------------------------
    async def _serve(self, session: aiohttp.ClientSession) -> None:
        async with session.ws_connect(self._settings.ws_url, max_msg_size=0, autoping=True,
                                      timeout=aiohttp.ClientWSTimeout(ws_close=5.0)) as ws:
            await self._authenticate(ws)
            conn = self._conn = _Connection(ws)
            reader = asyncio.create_task(self._read(conn), name="ha-reader")
            keepalive = asyncio.create_task(self._keepalive(conn), name="ha-keepalive")
            tasks = [reader, keepalive]
            try:
                await self._call(conn, {"type": "supported_features", "features": {"coalesce_messages": 1}})
                await self._subscribe(conn)
                tasks.append(asyncio.create_task(self._fill(conn), name="ha-fill"))
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    task.result()  # the reader's, the fill's or the keepalive's failure ends this connection
                await reader
            finally:
                tasks += self._tasks
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                for future in conn.pending.values():
                    if not future.done():
                        future.set_exception(ConnectionLost("connection closed"))

    async def _authenticate(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ha_version = await authenticate(ws, self._settings)

    async def _subscribe(self, conn: _Connection) -> None:
        conn.state_sub = next(conn.ids)  # known before the result: events may follow it in the same frame
        await self._call(conn, {"type": "subscribe_events", "event_type": "state_changed"}, conn.state_sub)
        for event_type, kind in REGISTRY_EVENTS.items():
            call_id = next(conn.ids)
            conn.registry_subs[call_id] = kind
            await self._call(conn, {"type": "subscribe_events", "event_type": event_type}, call_id)
        self._subscribed = True
        self._problem = "ready"
        metrics.HA_CONNECTED.set(1)
        log.info("subscribed to Home Assistant %s at %s (state_changed, registry updates)", self.ha_version,
                 self._settings.url)

    def _lost(self) -> None:
        self._subscribed = False
        self._conn = None
        self._resume.reopen()
        metrics.HA_CONNECTED.set(0)

    async def _call(self, conn: _Connection, payload: dict[str, object], call_id: int | None = None,
                    wait_s: float = REQUEST_TIMEOUT_S) -> dict[str, object]:
        """Send one command and wait for its answer; an error answer is raised as ConnectionLost."""
        return await call(conn.ws, conn.ids, conn.pending, payload, call_id, wait_s)

    # -- reading -------------------------------------------------------------------------------------
    async def _read(self, conn: _Connection) -> None:
        while True:
            if len(self._inbox) > MAX_INBOX:
                self._drained.clear()
                await self._drained.wait()  # the pipeline is behind: let HA's queue take the wait
                continue
            message = await conn.ws.receive()
            conn.last_received = time.monotonic()
            if message.type == aiohttp.WSMsgType.TEXT:
                text: str = message.data
                self._frame(conn, text, await self._parse(text))
            elif message.type == aiohttp.WSMsgType.BINARY:
                self._queue(_item(ws_source.FRAME_TOPIC, bytes(message.data)), None)
            elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                raise ConnectionLost(f"closed by Home Assistant ({conn.ws.close_code})")
            elif message.type == aiohttp.WSMsgType.ERROR:
                raise ConnectionLost(f"WebSocket error: {conn.ws.exception()}")

    @staticmethod
    async def _parse(text: str) -> object:
        try:
            return await parse(text)
        except (ValueError, RecursionError):
            return _NOT_JSON

    def _frame(self, conn: _Connection, text: str, parsed: object) -> None:
        if parsed is _NOT_JSON:
            self._queue(_item(ws_source.FRAME_TOPIC, text.encode()), None)  # dead-lettered: invalid_json
            return
        if isinstance(parsed, list):
            for element in parsed:
                self._message(conn, element, None)
        else:
            self._message(conn, parsed, text)

    def _message(self, conn: _Connection, message: object, text: str | None) -> None:
        def payload() -> bytes:
            return text.encode() if text is not None else json_bytes(message)

        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            self._queue(_item(ws_source.FRAME_TOPIC, payload()), None)
            return
        kind, call_id = message["type"], message.get("id")
        if kind in ("result", "pong"):
            future = conn.pending.get(call_id) if isinstance(call_id, int) else None
            if future is not None and not future.done():
                future.set_result(message)
            return
        if kind == "event":
            if call_id == conn.state_sub:
                item, stamp = _item(ws_source.EVENT_TOPIC, payload()), _live_us(message)
                entity_id = _live_entity(message)
                self._know(entity_id)
                if conn.first_live is None and entity_id is not None and stamp is not None:
                    conn.first_live = (entity_id, stamp)
                if conn.holding:
                    conn.held.append((item, stamp))
                else:
                    self._queue(item, stamp)
            elif isinstance(call_id, int) and call_id in conn.registry_subs:
                self._schedule_refresh(conn, conn.registry_subs[call_id])
            return
        self._queue(_item(ws_source.PREFIX + kind[:64], payload()), None)

    def _know(self, entity_id: object) -> None:
        known = self._resume.known_entities
        if isinstance(entity_id, str) and entity_id not in known and len(known) < MAX_KNOWN_ENTITIES:
            known.add(entity_id)

    def _queue(self, item: Incoming, stamp_us: int | None) -> None:
        self._inbox.append(item)
        if stamp_us is not None and (self._inbox_newest_us is None or stamp_us > self._inbox_newest_us):
            self._inbox_newest_us = stamp_us
        self._on_batch()

    async def _keepalive(self, conn: _Connection) -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL_S)
            try:
                await self._call(conn, {"type": "ping"}, wait_s=PONG_TIMEOUT_S)
            except ConnectionLost:
                if conn.ws.closed or time.monotonic() - conn.last_received > SILENT_S:
                    raise
                log.info("Home Assistant is slow to answer pings but still sending; keeping the connection")

    # -- registries ----------------------------------------------------------------------------------
    async def _load_registry(self, conn: _Connection, kind: str) -> None:
        try:
            answer = await self._call(conn, {"type": REGISTRY_LISTS[kind]})
        except ConnectionLost as exc:
            if conn.ws.closed:
                raise
            log.warning("could not list Home Assistant's %s registry: %s", kind, exc)
            return
        result = answer.get("result")
        if kind == "areas":
            self._registry.replace_areas(parse_areas(result))
        elif kind == "devices":
            self._registry.replace_devices(parse_devices(result))
        else:
            self._registry.replace_entities(parse_entities(result))
        self._on_batch()  # the next flush writes what changed

    async def _load_time_zone(self, conn: _Connection) -> None:
        """The home's time zone (`get_config`), for core.tenants with the next flush."""
        try:
            answer = await self._call(conn, {"type": "get_config"})
        except ConnectionLost as exc:
            if conn.ws.closed:
                raise
            log.warning("could not read Home Assistant's configuration (time zone): %s", exc)
            return
        zone = home_time_zone(answer.get("result"))
        if zone is not None:
            self._registry.set_time_zone(zone)
            self._on_batch()

    def _schedule_refresh(self, conn: _Connection, kind: str) -> None:
        if kind in self._refreshing:
            return
        self._refreshing.add(kind)

        async def refresh() -> None:
            try:
                await asyncio.sleep(REGISTRY_DEBOUNCE_S)  # one list for a burst of updates
                self._refreshing.discard(kind)
                await self._load_registry(conn, kind)
            finally:
                self._refreshing.discard(kind)

        task = asyncio.create_task(refresh(), name=f"ha-registry-{kind}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the gap -------------------------------------------------------------------------------------
    async def _fill(self, conn: _Connection) -> None:
        started = time.monotonic()
        subscribed_at = started
        for kind in REGISTRY_LISTS:
            await self._load_registry(conn, kind)
        await self._load_time_zone(conn)
        answer = await self._call(conn, {"type": "get_states"})
        states = answer.get("result")
        if not isinstance(states, list):
            raise ConnectionLost(f"get_states answered {str(states)[:200]}")
        point = self._resume.committed_us
        rows = 0
        for state in states:
            self._know(state.get("entity_id") if isinstance(state, dict) else None)
        if point is None:
            # First connection of this tenant: the current states, not the recorder's whole history.
            for state in states:
                self._queue(_item(ws_source.STATE_TOPIC, json_bytes(state)),
                            _state_us(state))
            self._release(conn)
            log.info("first connection for this tenant: %d current states queued, no history fetched", len(states))
        else:
            start = point - OVERLAP_US
            current = {str(s["entity_id"]): _state_us(s) for s in states
                       if isinstance(s, dict) and isinstance(s.get("entity_id"), str)}
            absent = (set(self._registry.entity_ids) | self._resume.known_entities) - set(current)
            ids = valid_ids([*(e for e, stamp in current.items() if stamp is None or stamp > start), *absent])
            rows, newest = await self._history(conn, ids, start)
            self._release(conn)
            # What changed just before the subscription may not have been in the recorder's database for
            # the first read (commit interval, backlog): read again from the newest row once it is.
            await self._recorder_caught_up(conn, subscribed_at)
            tail, _ = await self._history(conn, ids, max(start, (newest or start) - OVERLAP_US))
            rows += tail
            log.info("gap since %s filled: %d state(s) of %d entities from the recorder in %.1f s",
                     iso(point), rows, len(ids), time.monotonic() - started)
        self._close_at_take = True
        self._on_batch()
        self.fills += 1
        metrics.HA_GAP_FILL_SECONDS.set(time.monotonic() - started)

    async def _recorder_caught_up(self, conn: _Connection, subscribed_at: float) -> None:
        """Until the recorder has committed every state changed before the subscription. It writes in
        order, so once the first live change is in its database, everything before it is; with no live
        change yet, its queue must be empty (`recorder/info` backlog 0). Then its commit interval."""
        commit_s = self._settings.recorder_commit_s + 1.0
        await asyncio.sleep(max(0.0, subscribed_at + commit_s - time.monotonic()))
        deadline = time.monotonic() + RECORDER_WAIT_S
        while time.monotonic() < deadline:
            if conn.first_live is not None:
                if await self._recorded(conn, *conn.first_live):
                    return
            else:
                info = (await self._call(conn, {"type": "recorder/info"})).get("result")
                if isinstance(info, dict) and info.get("backlog") == 0:
                    await asyncio.sleep(commit_s)  # emptied now: what it held is committed within this
                    return
            await asyncio.sleep(RECORDER_POLL_S)
        log.warning("Home Assistant's recorder has not caught up in %.0f s; the gap is filled with what it "
                    "has committed", RECORDER_WAIT_S)

    async def _recorded(self, conn: _Connection, entity_id: str, stamp_us: int) -> bool:
        answer = await self._call(conn, recorded_request(entity_id, stamp_us))
        result = answer.get("result")
        rows = result.get(entity_id) if isinstance(result, dict) else None
        return isinstance(rows, list) and any(row_us(row) == stamp_us for row in rows)

    def _release(self, conn: _Connection) -> None:
        held, conn.held, conn.holding = conn.held, [], False
        for item, stamp in held:
            self._queue(item, stamp)

    async def _history(self, conn: _Connection, entity_ids: list[str], start_us: int) -> tuple[int, int | None]:
        """Queue every state of `entity_ids` after `start_us`; return how many and the newest's µs."""
        rows, newest = 0, None
        now_us = time.time_ns() // 1_000
        window_us = HISTORY_WINDOW_S * 1_000_000
        windows: list[tuple[int, int | None]] = []
        begin = start_us
        while begin + window_us < now_us:
            windows.append((begin, begin + window_us + 1))
            begin += window_us
        windows.append((begin, None))  # open-ended: up to Home Assistant's now, whatever our clock says
        for window_start, window_end in windows:
            for offset in range(0, len(entity_ids), HISTORY_IDS_PER_CALL):
                while len(self._inbox) > HISTORY_INBOX_LOW:
                    self._drained.clear()
                    await self._drained.wait()
                command = request(entity_ids[offset:offset + HISTORY_IDS_PER_CALL], window_start, window_end,
                                  include_start_time_state=True)
                answer = await self._call(conn, command)
                found, last = self._queue_history(answer.get("result"), window_start)
                rows += found
                if last is not None and (newest is None or last > newest):
                    newest = last
        metrics.HA_HISTORY_ROWS.inc(rows)
        return rows, newest

    def _queue_history(self, result: object, window_start_us: int) -> tuple[int, int | None]:
        rows, newest = 0, None
        for item in history_items(result, window_start_us):
            self._queue(_item(item.topic, item.payload), item.stamp_us)
            rows += item.row
            if item.stamp_us is not None and (newest is None or item.stamp_us > newest):
                newest = item.stamp_us
        return rows, newest


class _NotJson:
    pass


_NOT_JSON = _NotJson()
