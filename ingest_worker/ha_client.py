"""Home Assistant's WebSocket API, the protocol part shared by the live link and the import.

`authenticate` (`auth_required` → `auth` → `auth_ok`; a refused token is `HomeAssistantAuthError`, never
retried: HA's `ip_ban_enabled` bans an address that keeps trying) and `call` (one command with its id,
its answer through the `pending` futures the connection's reader resolves) are what `ha_link.HaLink`
uses on its long-lived, subscribed connection. `HaClient` is the same protocol for a caller that only
sends commands and reads their results (`hats import http://host:8123`): one connection, one reader task
that routes `result` messages (coalesced frames too) to the waiting call.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from dataclasses import dataclass
from types import TracebackType

import aiohttp

CONNECT_TIMEOUT_S = 10.0
AUTH_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 120.0  # a history chunk of a busy hour takes seconds to query and serialise
# Frames larger than this are parsed on a thread so the event loop keeps serving.
THREAD_PARSE_BYTES = 1 << 20


class HomeAssistantAuthError(Exception):
    """Home Assistant refused the token: a setting to fix, not an outage to wait out."""


class ConnectionLost(Exception):
    """The connection ended or Home Assistant answered something the caller cannot go on from."""


@dataclass(frozen=True)
class HaLinkSettings:
    url: str
    token: str
    recorder_commit_s: float = 5.0

    @property
    def ws_url(self) -> str:
        base = self.url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        return base + "/api/websocket"


async def receive_one(ws: aiohttp.ClientWebSocketResponse) -> dict[str, object]:
    message = await ws.receive(timeout=AUTH_TIMEOUT_S)
    if message.type != aiohttp.WSMsgType.TEXT:
        raise ConnectionLost(f"during authentication: {message.type.name} {str(message.data)[:200]}")
    try:
        parsed = json.loads(message.data)
    except ValueError:
        raise ConnectionLost(f"during authentication, not JSON: {str(message.data)[:200]}") from None
    if not isinstance(parsed, dict):
        raise ConnectionLost(f"during authentication, not an object: {str(message.data)[:200]}")
    return parsed


async def authenticate(ws: aiohttp.ClientWebSocketResponse, settings: HaLinkSettings) -> str:
    """Authenticate the fresh connection with the long-lived token; returns Home Assistant's version."""
    hello = await receive_one(ws)
    if hello.get("type") != "auth_required":
        raise ConnectionLost(f"expected auth_required, got {str(hello)[:200]}")
    await ws.send_str(json.dumps({"type": "auth", "access_token": settings.token}))
    answer = await receive_one(ws)
    if answer.get("type") == "auth_invalid":
        raise HomeAssistantAuthError(
            f"Home Assistant at {settings.url} refused the access token ({answer.get('message')}): "
            "set HATS_HA_TOKEN to a valid long-lived access token (HA: your profile → Security → "
            "Long-lived access tokens)")
    if answer.get("type") != "auth_ok":
        raise ConnectionLost(f"expected auth_ok, got {str(answer)[:200]}")
    return str(hello.get("ha_version"))


async def call(ws: aiohttp.ClientWebSocketResponse, ids: itertools.count[int],
               pending: dict[int, asyncio.Future[dict[str, object]]], payload: dict[str, object],
               call_id: int | None = None, wait_s: float = REQUEST_TIMEOUT_S) -> dict[str, object]:
    """Send one command and wait for its answer (the reader resolves `pending[id]`); an error answer is
    raised as ConnectionLost."""
    call_id = next(ids) if call_id is None else call_id
    future: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
    pending[call_id] = future
    await ws.send_str(json.dumps({"id": call_id, **payload}))
    try:
        answer = await asyncio.wait_for(future, wait_s)
    except TimeoutError:
        raise ConnectionLost(f"no answer to {payload['type']} within {wait_s:.0f} s") from None
    finally:
        pending.pop(call_id, None)
    if answer.get("type") == "result" and not answer.get("success"):
        error = answer.get("error")
        raise ConnectionLost(f"Home Assistant refused {payload['type']}: {error}")
    return answer


async def parse(text: str) -> object:
    """JSON of a frame (on a thread when large); a frame that is not JSON raises ValueError."""
    if len(text) > THREAD_PARSE_BYTES:
        return await asyncio.to_thread(json.loads, text)
    return json.loads(text)


class HaClient:
    """`async with HaClient(settings) as ha: result = await ha.result({"type": …})`: commands only."""

    def __init__(self, settings: HaLinkSettings) -> None:
        self.settings = settings
        self.ha_version: str | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, object]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> HaClient:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S))
        try:
            self._ws = await self._session.ws_connect(self.settings.ws_url, max_msg_size=0, autoping=True)
            self.ha_version = await authenticate(self._ws, self.settings)
            self._reader = asyncio.create_task(self._read(self._ws), name="ha-client-reader")
            await self.result({"type": "supported_features", "features": {"coalesce_messages": 1}})
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self._close()

    async def result(self, payload: dict[str, object], wait_s: float = REQUEST_TIMEOUT_S) -> object:
        """The `result` of one command."""
        if self._ws is None:
            raise ConnectionLost("not connected (use `async with HaClient(...)`)")
        if self._reader is not None and self._reader.done():
            self._reader.result()
            raise ConnectionLost("the connection to Home Assistant ended")
        answer = await call(self._ws, self._ids, self._pending, payload, wait_s=wait_s)
        return answer.get("result")

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            while True:
                message = await ws.receive()
                if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                                    aiohttp.WSMsgType.ERROR):
                    raise ConnectionLost(f"closed by Home Assistant ({ws.close_code}): {ws.exception()}")
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    parsed = await parse(message.data)
                except (ValueError, RecursionError):
                    continue  # no command of ours can be answered by it
                for element in parsed if isinstance(parsed, list) else [parsed]:
                    if not isinstance(element, dict):
                        continue
                    call_id = element.get("id")
                    future = self._pending.get(call_id) if isinstance(call_id, int) else None
                    if future is not None and not future.done():
                        future.set_result(element)
        except ConnectionLost as lost:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(lost)
            raise

    async def _close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionLost):
                await self._reader
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
