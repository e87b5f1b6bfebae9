"""Each home's time zone, as Home Assistant says it (`get_config` → `time_zone`): `core.tenants`.

The warehouse counts a home's local days in `core.tenants.time_zone` (migration 0008). The live link's
registry sync and the WebSocket import both read HA's zone and store it with `time_zone_source =
'home_assistant'`, never over one an operator set. A name Python's zone database does not know is not
written (a warning says so); one PostgreSQL does not know (its CHECK would refuse it, and with it the
whole flush) is left out by the UPDATE's own condition.
"""

from __future__ import annotations

import logging
import zoneinfo

import psycopg

log = logging.getLogger(__name__)

UPDATE = ("UPDATE core.tenants SET time_zone = %(zone)s, time_zone_source = 'home_assistant' "
          "WHERE tenant_id = %(tenant)s AND time_zone_source <> 'operator' AND core.is_time_zone(%(zone)s) "
          "AND (time_zone <> %(zone)s OR time_zone_source <> 'home_assistant')")
MAX_ZONE_CHARS = 64


def home_time_zone(config: object) -> str | None:
    """The IANA zone of a `get_config` result, validated with zoneinfo; None (and a warning) if unusable."""
    zone = config.get("time_zone") if isinstance(config, dict) else None
    if not isinstance(zone, str) or not zone or len(zone) > MAX_ZONE_CHARS:
        log.warning("Home Assistant's get_config has no usable time_zone (%r); the home's zone is left as it is",
                    str(zone)[:80])
        return None
    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        log.warning("Home Assistant's time zone %r is not a known IANA zone; the home's zone is left as it is",
                    zone)
        return None
    return zone


async def store_home_time_zone(cur: psycopg.AsyncCursor[tuple[object, ...]], tenant: str, zone: str) -> bool:
    """Inside the caller's transaction; True when the tenant's zone (or its source) changed."""
    await cur.execute(UPDATE, {"zone": zone, "tenant": tenant})
    changed = cur.rowcount > 0
    if changed:
        log.info("time zone of tenant %s set to %s (from Home Assistant)", tenant, zone)
    return changed
