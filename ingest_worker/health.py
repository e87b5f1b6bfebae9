"""`/metrics` (Prometheus), `/healthz` (the loop is alive) and `/readyz` (connected and able to take
work) on one small asyncio HTTP listener: the worker needs no web framework for three GET routes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ingest_worker.metrics import REGISTRY

REQUEST_TIMEOUT_S = 5.0


class HealthServer:
    def __init__(self, host: str, port: int, alive: Callable[[], bool], ready: Callable[[], tuple[bool, str]]) -> None:
        self._host, self._port = host, port
        self._alive, self._ready = alive, ready
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), REQUEST_TIMEOUT_S)
            parts = request.decode("latin-1").split()
            path = parts[1] if len(parts) >= 2 else ""
            if path == "/metrics":
                status, body, kind = 200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST
            elif path == "/healthz":
                ok = self._alive()
                status, body, kind = (200 if ok else 503), (b"ok\n" if ok else b"stalled\n"), "text/plain"
            elif path == "/readyz":
                ok, why = self._ready()
                status, body, kind = (200 if ok else 503), (why + "\n").encode(), "text/plain"
            else:
                status, body, kind = 404, b"try /metrics, /healthz or /readyz\n", "text/plain"
            head = (f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\nContent-Type: {kind}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
