"""The PostgreSQL connection a pipeline's flushes (and its outbox replayer) commit on.

One transaction at a time per connection (the lock). A single-tenant worker owns one; in registry mode
many homes' pipelines share a few (`HATS_PG_CONNECTIONS`), so 1,000 homes do not hold 1,000 server
connections. While PostgreSQL is away, the flush that noticed reconnects it for everyone sharing it.
"""

from __future__ import annotations

import asyncio
import contextlib

import psycopg


class OpsConnection:
    def __init__(self, conn: psycopg.AsyncConnection[tuple[object, ...]], dsn: str) -> None:
        self.conn = conn
        self.lock = asyncio.Lock()
        self._dsn = dsn

    @classmethod
    async def open(cls, dsn: str) -> OpsConnection:
        return cls(await psycopg.AsyncConnection.connect(dsn, autocommit=True), dsn)

    async def reconnect(self) -> None:
        """Replace a connection PostgreSQL dropped; a failed attempt leaves the old one for the next retry."""
        with contextlib.suppress(psycopg.Error):
            await self.conn.close()
        with contextlib.suppress(psycopg.OperationalError):
            self.conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)

    async def close(self) -> None:
        await self.conn.close()
