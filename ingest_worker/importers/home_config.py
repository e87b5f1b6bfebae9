"""What the WebSocket import reads of the home besides its history: its time zone (`get_config`)."""

from __future__ import annotations

import psycopg

from ingest_worker.ha_client import HaClient
from ingest_worker.store.time_zone import home_time_zone, store_home_time_zone


async def import_time_zone(ha: HaClient, conn: psycopg.AsyncConnection[tuple[object, ...]], tenant: str) -> str | None:
    """Store Home Assistant's time zone for the tenant (never over an operator's); returns it, None if
    HA's is unusable."""
    zone = home_time_zone(await ha.result({"type": "get_config"}))
    if zone is not None:
        async with conn.transaction(), conn.cursor() as cur:
            await store_home_time_zone(cur, tenant, zone)
    return zone
