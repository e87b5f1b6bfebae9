"""The dead-letter store: every message that could not become a point, with its reason, in PostgreSQL.

Written in the same transaction as the batch's metadata, once per flush, so a flood of bad input
costs one round trip per batch, not one per message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg

INSERT = ("INSERT INTO ops.dead_letters (received_at, tenant_id, topic, payload, reason, detail) "
          "VALUES (%s, %s, %s, %s, %s, %s)")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    received_at: datetime
    tenant: str
    topic: str
    payload: bytes
    reason: str
    detail: str


async def insert(cur: psycopg.AsyncCursor[tuple[object, ...]], letters: Sequence[DeadLetter]) -> None:
    if letters:
        await cur.executemany(INSERT, [(d.received_at, d.tenant, d.topic, d.payload, d.reason, d.detail[:2000])
                                       for d in letters])
