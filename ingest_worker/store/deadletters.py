"""The dead-letter store: every message that could not become a point, with its reason, in PostgreSQL.

Written in batches on the same cadence as InfluxDB writes, so a flood of bad input costs one
round trip per batch, not one per message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg


@dataclass(frozen=True, slots=True)
class DeadLetter:
    received_at: datetime
    tenant: str
    topic: str
    payload: bytes
    reason: str
    detail: str


class DeadLetterStore:
    def __init__(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        self._conn = conn

    @classmethod
    async def connect(cls, dsn: str) -> DeadLetterStore:
        return cls(await psycopg.AsyncConnection.connect(dsn, autocommit=True))

    async def aclose(self) -> None:
        await self._conn.close()

    async def add(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        async with self._conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO ops.dead_letters (received_at, tenant_id, topic, payload, reason, detail) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                [(d.received_at, d.tenant, d.topic, d.payload, d.reason, d.detail) for d in letters],
            )
