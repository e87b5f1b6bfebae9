"""The dead-letter store: every message that could not become a point, with its reason, in PostgreSQL.

Written in the same transaction as the batch's metadata, once per flush, so a flood of bad input
costs one round trip per batch, not one per message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg

from ingest_worker.store.metadata import column_text

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


MAX_DETAIL_CHARS = 2_000


async def insert(cur: psycopg.AsyncCursor[tuple[object, ...]], letters: Sequence[DeadLetter]) -> None:
    """The topic and detail as text PostgreSQL can hold (a topic or entity id from a WebSocket answer or a
    recorder file may carry a NUL or a lone surrogate): a letter that cannot be stored would fail the
    flush, and every retry of it, instead of keeping the message. The payload is kept byte for byte."""
    if letters:
        await cur.executemany(INSERT, [(d.received_at, d.tenant, column_text(d.topic, None) or "", d.payload,
                                        d.reason, column_text(d.detail, MAX_DETAIL_CHARS) or "")
                                       for d in letters])
