"""How far an import of one recorder stream is durable: `ops.import_progress` (migration 0008).

A position is the keyset `(last_ts, last_id)` of the last row whose points InfluxDB has accepted (or
that became a dead letter); everything at or before it is done. It is advanced in the transaction that
also commits what the rows produced in PostgreSQL, and only after InfluxDB took their points, so a run
that is killed continues from it and a second run with nothing new reads nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import psycopg

SELECT = ("SELECT last_ts, last_id, rows_done FROM ops.import_progress "
          "WHERE tenant_id = %s AND source_key = %s AND stream = %s")
UPSERT = ("INSERT INTO ops.import_progress (tenant_id, source_key, stream, last_ts, last_id, rows_done) "
          "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (tenant_id, source_key, stream) DO UPDATE SET "
          "last_ts = EXCLUDED.last_ts, last_id = EXCLUDED.last_id, "
          "rows_done = ops.import_progress.rows_done + EXCLUDED.rows_done, updated_at = now()")


@dataclass(frozen=True, slots=True)
class Position:
    last_ts: float
    last_id: int


async def load(conn: psycopg.AsyncConnection[tuple[object, ...]], tenant: str, source_key: str,
               stream: str) -> Position | None:
    cur = await conn.execute(SELECT, (tenant, source_key, stream))
    row = await cur.fetchone()
    if row is None:
        return None
    last_ts, last_id, _ = row
    return Position(cast(float, last_ts), cast(int, last_id))


async def advance(cur: psycopg.AsyncCursor[tuple[object, ...]], tenant: str, source_key: str, stream: str,
                  position: Position, rows: int) -> None:
    """Inside the caller's transaction: the stream is done up to `position`, `rows` more rows than before."""
    await cur.execute(UPSERT, (tenant, source_key, stream, position.last_ts, position.last_id, rows))
