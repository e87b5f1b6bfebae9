"""Batched writes to the InfluxDB v1 `/write` API (served by 1.x and by 2.x/3.x compatibility).

A 400 means some lines are bad: the batch is bisected so that every good line lands and each bad
line comes back with InfluxDB's own error text for the dead-letter store. Timeouts and 5xx are
retried with jittered exponential backoff; the batch is never dropped.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from ingest_worker.contract import RAW_RP

log = logging.getLogger(__name__)

BACKOFF_INITIAL_S = 0.2
BACKOFF_MAX_S = 30.0
REQUEST_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class LineError:
    line: str
    error: str


class InfluxWriter:
    def __init__(self, url: str, database: str, username: str, password: str) -> None:
        self._client = httpx.AsyncClient(base_url=url, auth=(username, password), timeout=REQUEST_TIMEOUT_S)
        self._params = {"db": database, "rp": RAW_RP, "precision": "ns"}

    async def aclose(self) -> None:
        await self._client.aclose()

    async def write(self, lines: Sequence[str]) -> list[LineError]:
        """Write every line that InfluxDB accepts; return the ones it rejects, with its reason."""
        if not lines:
            return []
        status, text = await self._post(lines)
        if status == 204:
            return []
        if len(lines) == 1:
            return [LineError(lines[0], text)]
        middle = len(lines) // 2
        return [*await self.write(lines[:middle]), *await self.write(lines[middle:])]

    async def _post(self, lines: Sequence[str]) -> tuple[int, str]:
        body = gzip.compress("\n".join(lines).encode(), compresslevel=1)
        headers = {"Content-Encoding": "gzip", "Content-Type": "text/plain; charset=utf-8"}
        delay = BACKOFF_INITIAL_S
        while True:
            try:
                response = await self._client.post("/write", params=self._params, content=body, headers=headers)
            except httpx.TransportError as exc:
                log.warning("influxdb unreachable, retrying in %.1f s: %s", delay, exc)
            else:
                if response.status_code in (204, 400):
                    return response.status_code, response.text
                if response.status_code in (401, 403):
                    log.error("influxdb refused the credentials (%s); fix HATS_INFLUX_USERNAME/PASSWORD",
                              response.status_code)
                else:
                    log.warning("influxdb answered %s, retrying in %.1f s: %s", response.status_code, delay,
                                response.text[:200])
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))  # noqa: S311 (jitter, not crypto)
            delay = min(delay * 2, BACKOFF_MAX_S)
