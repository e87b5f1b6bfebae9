"""Local days equal Home Assistant's own days, across both DST changes, with a real Home Assistant.

Home Assistant's zone is set to Europe/Amsterdam (``config/core/update``, restored after). A meter's hourly
statistics around the last Sundays of March and October 2026 are seeded with ``recorder/import_statistics``,
imported into the tenant (``import_time_zone`` then ``import_statistics`` over the WebSocket API, as
``hats import`` does) and loaded into the warehouse. ``analytics.energy_daily`` per local day must equal
``recorder/statistics_during_period(period="day", types=["change"])`` for the same meter: HA's energy
dashboard's numbers, 23- and 25-hour days included.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import psycopg
import pytest

from hats_assets.defs.warehouse.assets import daily_rollup, hourly_rollup, local_daily_rollup
from ingest_worker.ha_client import HaClient, HaLinkSettings
from ingest_worker.importers.home_config import import_time_zone
from ingest_worker.importers.statistics_ws import WebsocketStatistics
from tests.conftest import Tenant, wait_for
from tests.ha_peer import HaPeer
from tests.homeassistant import asset_resources
from tests.integration.test_statistics_import import run_import

pytestmark = pytest.mark.integration

ZONE = "Europe/Amsterdam"
HOUR = timedelta(hours=1)
RETENTION_S = 730 * 86_400
# Seeded UTC days (first, last) around 2026-03-29 (23 h) and 2026-10-25 (25 h); compared: the local days
# strictly inside, whose every hour was seeded.
SEEDED = [(date(2026, 3, 26), date(2026, 3, 31)), (date(2026, 10, 22), date(2026, 10, 27))]


@pytest.fixture
def amsterdam(home_assistant: HaPeer) -> Iterator[str]:
    """Home Assistant's zone set to Europe/Amsterdam for the test, then back to what it was."""
    before = home_assistant.ws_call("get_config")["time_zone"]
    home_assistant.ws_call("config/core/update", time_zone=ZONE)
    try:
        yield ZONE
    finally:
        home_assistant.ws_call("config/core/update", time_zone=before)


def utc(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def seed_meter(ha: HaPeer, statistic_id: str) -> int:
    """Hourly kWh statistics of a meter over the seeded days; returns how many rows."""
    rows: list[dict[str, Any]] = []
    total = 0.0
    for first, last in SEEDED:
        hour = utc(first)
        while hour < utc(last) + timedelta(days=1):
            total += 0.125 + (len(rows) * 7 % 13) / 16  # exact in binary: sums compare exactly
            rows.append({"start": hour.isoformat(), "state": 1_000.0 + total, "sum": total})
            hour += HOUR
    ha.ws_call("recorder/import_statistics", metadata={
        "has_mean": False, "has_sum": True, "name": None, "source": "recorder", "statistic_id": statistic_id,
        "unit_of_measurement": "kWh"}, stats=rows)
    return len(rows)


def test_energy_daily_equals_home_assistants_days(tenant: Tenant, home_assistant: HaPeer, amsterdam: str) -> None:
    meter = f"sensor.dst_{uuid.uuid4().hex[:8]}_energy"
    seeded = seed_meter(home_assistant, meter)

    def stored() -> bool:
        found = home_assistant.ws_call("recorder/statistics_during_period", start_time=utc(SEEDED[0][0]).isoformat(),
                                       statistic_ids=[meter], period="hour", types=["sum"])
        return len(found.get(meter, [])) == seeded
    wait_for(stored, "Home Assistant's recorder to hold the seeded statistics", timeout=120)
    with psycopg.connect(tenant.env["HATS_PG_DSN"], autocommit=True) as conn:
        conn.execute("INSERT INTO core.entities (tenant_id, entity_id, domain, measurement, unit_canonical, source) "
                     "VALUES (%s, %s, 'sensor', 'energy', 'kWh', 'websocket')", (tenant.name, meter))

    async def run() -> None:
        async with HaClient(HaLinkSettings(home_assistant.url, home_assistant.token)) as ha:
            conn = await psycopg.AsyncConnection.connect(tenant.env["HATS_INGEST_DSN"], autocommit=True)
            try:
                assert await import_time_zone(ha, conn, tenant.name) == ZONE
            finally:
                await conn.close()
            await run_import(tenant, WebsocketStatistics(ha), f"websocket-{tenant.name}", RETENTION_S)
    asyncio.run(run())

    resources = asset_resources(tenant)
    for first, last in SEEDED:
        assert dg.materialize([hourly_rollup, daily_rollup, local_daily_rollup], resources=resources, tags={
            "dagster/asset_partition_range_start": f"{first}",
            "dagster/asset_partition_range_end": f"{last}"}).success
    with psycopg.connect(tenant.env["HATS_ANALYST_DSN"]) as conn:
        ours = {row[0]: row[1:] for row in conn.execute(
            "SELECT local_day, kwh, time_zone, day_hours, complete, imported_hours FROM analytics.energy_daily "
            "WHERE tenant_id = %s AND entity_id = %s", (tenant.name, meter)).fetchall()}

    tz = ZoneInfo(ZONE)
    compared = 0
    for first, last in SEEDED:
        start = datetime(first.year, first.month, first.day, tzinfo=tz) + timedelta(days=1)
        end = datetime(last.year, last.month, last.day, tzinfo=tz)
        answer = home_assistant.ws_call("recorder/statistics_during_period", start_time=start.isoformat(),
                                        end_time=end.isoformat(), statistic_ids=[meter], period="day",
                                        types=["change"], units={"energy": "kWh"})
        # HA also returns the period starting at end_time (cut there): only the days before it are compared.
        days = {datetime.fromtimestamp(row["start"] / 1000, tz).date(): row for row in answer[meter]
                if row["start"] < end.timestamp() * 1000}
        assert sorted(days) == [start.date() + timedelta(days=i) for i in range((end.date() - start.date()).days)]
        for day, row in days.items():
            hours = {date(2026, 3, 29): 23, date(2026, 10, 25): 25}.get(day, 24)
            assert ours[day] == (pytest.approx(row["change"], rel=1e-12, abs=1e-9), ZONE, hours, True, hours), day
            compared += 1
    assert compared == 8
