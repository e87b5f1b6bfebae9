"""Every reject is a dead letter: whatever topic, detail and payload a letter carries, the real dead-letter
store (PostgreSQL `ops.dead_letters`, as the worker's role writes it) keeps it — the payload byte for byte,
topic and detail as text PostgreSQL can hold — and never fails the flush that writes it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import psycopg
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ingest_worker.rejections import Reason
from ingest_worker.store import deadletters
from ingest_worker.store.deadletters import MAX_DETAIL_CHARS, DeadLetter
from ingest_worker.store.metadata import column_text
from tests.conftest import Tenant
from tests.ha_strategies import any_text, examples

pytestmark = pytest.mark.integration


def test_any_letter_is_stored(tenant: Tenant) -> None:
    dsn = tenant.env["HATS_INGEST_DSN"]

    async def store(letter: DeadLetter) -> tuple[object, ...] | None:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            async with conn.transaction(), conn.cursor() as cur:
                await deadletters.insert(cur, [letter])
            cur = await conn.execute("SELECT topic, payload, reason, detail FROM ops.dead_letters "
                                     "WHERE tenant_id = %s ORDER BY id DESC LIMIT 1", (tenant.name,))
            return await cur.fetchone()

    # Inside the test, so that a failure prints the example, never the tenant's credentials.
    @examples(60)
    @given(any_text, any_text | st.text(max_size=3_000), st.binary(max_size=200), st.sampled_from(sorted(Reason)))
    @example("websocket:history:sensor.a\x00b", "history row of sensor.a\x00b", b"\x00", Reason.BAD_ENTITY_ID)
    @example("websocket:history:\ud800", "\udfff", b"{}", Reason.SCHEMA)
    def stored(topic: str, detail: str, payload: bytes, reason: Reason) -> None:
        row = asyncio.run(store(DeadLetter(datetime.now(UTC), tenant.name, topic, payload, reason, detail or "x")))
        assert row is not None
        assert row == (column_text(topic, None) or "", payload, reason.value,
                       column_text(detail or "x", MAX_DETAIL_CHARS) or "")

    stored()
