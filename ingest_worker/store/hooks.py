"""What the pipeline's flush also commits, in its own PostgreSQL transaction, for parts beside the points.

A hook's `snapshot()` is taken when a flush starts (synchronously, before anything awaits), so it covers
exactly the messages whose points that flush makes durable; `store()` runs inside the flush's transaction,
after the dead letters, metadata and ingest hours, and again if PostgreSQL makes the transaction retry.
The WebSocket source uses it for its resume point (advanced only with the states before it) and for
Home Assistant's registries.
"""

from __future__ import annotations

from typing import Protocol

import psycopg


class FlushHook(Protocol):
    def snapshot(self) -> object | None:
        """What the flush starting now should store; None for nothing."""
        ...

    async def store(self, cur: psycopg.AsyncCursor[tuple[object, ...]], snapshot: object) -> None:
        """Write a non-None snapshot inside the flush's transaction."""
        ...
