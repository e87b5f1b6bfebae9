"""The WebSocket source's durable resume point per tenant: `ops.websocket_resume`.

Home Assistant's WebSocket API has no replay: what happened while the worker was not connected is
fetched from the recorder (`history/history_during_period`) from this point on. It is the newest
`last_updated` (µs, Home Assistant's clock) such that every state Home Assistant changed up to it is
durable here (InfluxDB, the outbox or a dead letter). So it only moves:

* once the connection's gap is closed (`close()`: the history since the previous point, and the tail
  the recorder had not committed yet, are queued), and
* to the newest `last_updated` of the items the pipeline has taken (`taken()`), stored by the flush that
  makes those items durable, in the same transaction as its dead letters and ingest hours (`FlushHook`).

A disconnect (`reopen()`) freezes it until the next connection's gap is closed. The upsert never moves it
back. The link starts each fill a little before it (`OVERLAP_US`): a duplicate is harmless (same series
and timestamp in InfluxDB), a state lost to a clock step is not.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

UPSERT = ("INSERT INTO ops.websocket_resume (tenant_id, resume_at) VALUES (%s, %s) "
          "ON CONFLICT (tenant_id) DO UPDATE SET resume_at = GREATEST(ops.websocket_resume.resume_at, "
          "EXCLUDED.resume_at), updated_at = now()")


def us_to_datetime(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


def datetime_to_us(moment: datetime) -> int:
    delta = moment.astimezone(UTC) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class ResumePoint:
    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self.committed_us: int | None = None  # the stored point (None: this tenant never connected)
        # Entities this tenant has had: a gap fill also asks for those Home Assistant no longer has (an
        # entity removed, or one set through the REST API, which a restart does not bring back).
        self.known_entities: set[str] = set()
        self._newest_taken_us: int | None = None
        self._closed = False

    async def load(self, conn: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        cur = await conn.execute("SELECT resume_at FROM ops.websocket_resume WHERE tenant_id = %s", (self.tenant,))
        row = await cur.fetchone()
        if row is not None and isinstance(row[0], datetime):
            self.committed_us = datetime_to_us(row[0])
        cur = await conn.execute("SELECT entity_id FROM core.entities WHERE tenant_id = %s", (self.tenant,))
        self.known_entities = {str(entity[0]) for entity in await cur.fetchall()}

    # -- the link's side ----------------------------------------------------------------------------
    def taken(self, newest_us: int | None, close: bool = False) -> None:
        """The pipeline took items up to `newest_us`; with `close`, the gap fill's last ones among them."""
        if newest_us is not None and (self._newest_taken_us is None or newest_us > self._newest_taken_us):
            self._newest_taken_us = newest_us
        if close:
            self._closed = True

    def reopen(self) -> None:
        """The connection is gone: no advance until the next one has filled its gap."""
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    # -- FlushHook ----------------------------------------------------------------------------------
    def snapshot(self) -> int | None:
        newest = self._newest_taken_us
        if not self._closed or newest is None:
            return None
        if self.committed_us is not None and newest <= self.committed_us:
            return None
        return newest

    async def store(self, cur: psycopg.AsyncCursor[tuple[object, ...]], snapshot: object) -> None:
        assert isinstance(snapshot, int)
        await cur.execute(UPSERT, (self.tenant, us_to_datetime(snapshot)))
        # Optimistic: a transaction that fails is retried with this same snapshot; a crash before it
        # commits leaves the older point in PostgreSQL, which only re-fetches more.
        if self.committed_us is None or snapshot > self.committed_us:
            self.committed_us = snapshot
