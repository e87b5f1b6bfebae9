"""Writes to the InfluxDB v1 `/write` API (served by 1.x and by 2.x/3.x compatibility).

A 400 means some lines are bad: the batch is bisected so that every good line lands and each bad line
comes back with InfluxDB's own error text for the dead-letter store. Timeouts, connection errors and
5xx either raise `InfluxUnavailable` at once (the caller moves the batch to the outbox) or are retried
with jittered exponential backoff (the outbox's replayer); a batch is never dropped.

One failure is not retried forever: an answer httpx cannot read (`RemoteProtocolError`: InfluxDB can echo
a refused line in an `X-Influxdb-Error` header with bytes HTTP does not allow, or close the connection on
a line it cannot take) that repeats `PROTOCOL_REPEATS` times on the same batch while `/ping` answers is
the batch's doing, not an outage: it is bisected like a 400, so every other line lands and the line that
provokes it comes back as a `LineError` (a dead letter with the reason). While `/ping` does not answer,
it is an outage and the batch is retried as before.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import random
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from ingest_worker import metrics
from ingest_worker.contract import RAW_RP
from ingest_worker.tls import client_context

log = logging.getLogger(__name__)

BACKOFF_INITIAL_S = 0.2
BACKOFF_MAX_S = 30.0
SHARED_CONNECTIONS = 16  # concurrent writes of a registry-mode worker: 1,000 homes do not open 1,000 connections
PROTOCOL_REPEATS = 3  # unreadable answers in a row to one batch, InfluxDB up, before the batch is bisected
UNREADABLE = 0  # the status `_post` returns for such a batch (no HTTP status was read)
GZIP_LEVEL = 1  # level 1 compresses line protocol ~8x at a fraction of level 6's CPU


class InfluxUnavailable(Exception):
    """InfluxDB did not take the batch (timeout, connection refused, 5xx, auth)."""


@dataclass(frozen=True, slots=True)
class LineError:
    line: str
    error: str


def encode_body(lines: Sequence[str]) -> bytes:
    return gzip.compress("\n".join(lines).encode(), compresslevel=GZIP_LEVEL)


def decode_body(body: bytes) -> list[str]:
    return gzip.decompress(body).decode().split("\n")


def open_client(url: str, username: str, password: str, verify: ssl.SSLContext, timeout_s: float,
                shared: bool = False) -> httpx.AsyncClient:
    """`verify`: the context an https:// InfluxDB is verified with (ingest_worker/tls.py).
    `shared`: one client for many homes' writers. Their flushes then queue for its `SHARED_CONNECTIONS`
    connections without a pool timeout: waiting for a free connection is not InfluxDB being away (with
    httpx's default, 1,000 homes' flushes timed out in the pool and sent healthy homes to their outboxes)."""
    if not shared:
        return httpx.AsyncClient(base_url=url, auth=(username, password), timeout=timeout_s, verify=verify)
    return httpx.AsyncClient(base_url=url, auth=(username, password), timeout=httpx.Timeout(timeout_s, pool=None),
                             verify=verify,
                             limits=httpx.Limits(max_connections=SHARED_CONNECTIONS,
                                                 max_keepalive_connections=SHARED_CONNECTIONS))


class InfluxWriter:
    def __init__(self, url: str, database: str, username: str, password: str, timeout_s: float,
                 rp: str = RAW_RP, client: httpx.AsyncClient | None = None,
                 verify: ssl.SSLContext | None = None) -> None:
        """`rp`: the retention policy written to (`raw`; the statistics import writes `rollup`). `client`:
        one shared by many homes' writers (registry mode: one pool of connections to InfluxDB, not one
        per home), else its own, verifying an https:// InfluxDB with `verify` (default: the system store)."""
        self._owns_client = client is None
        self._client = client or open_client(url, username, password, verify or client_context(None), timeout_s)
        self._params = {"db": database, "rp": rp, "precision": "ns"}

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def write(self, lines: Sequence[str], *, retry: bool, body: bytes | None = None) -> list[LineError]:
        """Write every line InfluxDB accepts; return the ones it rejects, with its reason."""
        if not lines:
            return []
        status, text = await self._post(body if body is not None else encode_body(lines), retry=retry)
        if status == 204:
            metrics.WRITTEN.inc(len(lines))
            metrics.BATCH_SIZE.observe(len(lines))
            return []
        if len(lines) == 1:
            return [LineError(lines[0], text)]
        middle = len(lines) // 2
        return [*await self.write(lines[:middle], retry=retry), *await self.write(lines[middle:], retry=retry)]

    async def post(self, lines: Sequence[str], *, retry: bool) -> tuple[int, str]:
        """One request for the whole batch, InfluxDB's status and answer as they are: for a caller that
        reads a partial write itself (the statistics import counts points beyond the policy's duration,
        which InfluxDB drops while writing the rest of the batch)."""
        return await self._post(encode_body(lines), retry=retry)

    async def _post(self, body: bytes, *, retry: bool) -> tuple[int, str]:
        headers = {"Content-Encoding": "gzip", "Content-Type": "text/plain; charset=utf-8"}
        delay = BACKOFF_INITIAL_S
        unreadable = 0  # answers in a row httpx could not read
        while True:
            started = time.monotonic()
            try:
                response = await self._client.post("/write", params=self._params, content=body, headers=headers)
            except httpx.TransportError as exc:
                kind, detail = type(exc).__name__, str(exc) or type(exc).__name__
                unreadable = unreadable + 1 if isinstance(exc, httpx.RemoteProtocolError) else 0
                if retry and unreadable >= PROTOCOL_REPEATS and await self._answers_ping():
                    metrics.INFLUX_ERRORS.labels(kind).inc()
                    log.warning("InfluxDB's answer to one batch could not be read %d times while /ping answers "
                                "(%s); bisecting the batch", unreadable, detail)
                    return UNREADABLE, (f"InfluxDB's answer to this line could not be read {unreadable} times in a row "
                                        f"while it answered /ping ({kind}: {detail[:200]})")
            else:
                unreadable = 0
                metrics.WRITE_LATENCY.observe(time.monotonic() - started)
                if response.status_code in (204, 400):
                    return response.status_code, response.text
                kind, detail = f"http_{response.status_code}", response.text[:200]
                if response.status_code in (401, 403):
                    log.error("InfluxDB refused the credentials; fix HATS_INFLUX_USERNAME/PASSWORD or its grants")
            metrics.INFLUX_ERRORS.labels(kind).inc()
            if not retry:
                raise InfluxUnavailable(f"{kind}: {detail}")
            log.warning("InfluxDB write failed (%s: %s); retrying in %.1f s", kind, detail, delay)
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311 (jitter, not crypto)
            delay = min(delay * 2, BACKOFF_MAX_S)

    async def _answers_ping(self) -> bool:
        """Whether InfluxDB (or the gate in front of it) is up and answering: `/ping`'s 204."""
        try:
            return (await self._client.get("/ping")).status_code == 204
        except httpx.TransportError:
            return False
