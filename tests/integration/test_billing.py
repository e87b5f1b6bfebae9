"""billing.usage_daily on the real stores, against an independent count: two homes' points, entities, dead
letters and InfluxDB storage of one UTC day, each only its own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import httpx
import psycopg
import pytest

from hats_assets.defs.billing.assets import usage_daily
from hats_assets.defs.common.tenants import TenantSelection
from ingest_worker.tls import client_context
from tests.conftest import Tenant
from tests.homeassistant import asset_resources, metadata_of

pytestmark = pytest.mark.integration

DAY = (datetime.now(UTC) - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)


def plant(home: Tenant, entities: int, points_per_hour: dict[int, int], dead: int) -> None:
    """Raw points of ``entities`` numeric entities and one text-only entity on DAY, the worker's per-hour
    counts beside them (one the day before and after, which must not count), and ``dead`` dead letters."""
    lines = [f"temperature,entity_id=sensor.t{e},source=t value={20 + e} {int((DAY + timedelta(hours=h)).timestamp())}"
             f"{e:03d}000000" for e in range(entities) for h in range(3)]
    lines.append(f'state,entity_id=sensor.mode,source=t state="eco" {int((DAY + timedelta(hours=5)).timestamp())}'
                 "000000000")
    response = httpx.post(f"{home.env['HATS_INFLUX_URL']}/write", params={"db": home.database, "rp": "raw"},
                          content="\n".join(lines),
                          auth=(home.env["HATS_INFLUX_ADMIN_USERNAME"], home.env["HATS_INFLUX_ADMIN_PASSWORD"]),
                          verify=client_context(home.env["HATS_INFLUX_CA_FILE"]))
    assert response.status_code == 204, response.text
    with psycopg.connect(home.env["HATS_PG_DSN"], autocommit=True) as conn:
        for hour, points in {**points_per_hour, -1: 1000, 24: 1000}.items():
            conn.execute("INSERT INTO ops.ingest_hours (tenant_id, hour, points) VALUES (%s, %s, %s)",
                         (home.name, DAY + timedelta(hours=hour), points))
        for i in range(dead):
            conn.execute("INSERT INTO ops.dead_letters (received_at, tenant_id, topic, payload, reason) "
                         "VALUES (%s, %s, 'x', 'y', 'test')", (DAY + timedelta(hours=i % 24, minutes=i), home.name))
        conn.execute("INSERT INTO ops.dead_letters (received_at, tenant_id, topic, payload, reason) "
                     "VALUES (%s, %s, 'x', 'y', 'test')", (DAY + timedelta(days=1), home.name))  # the next day


def admin_query(home: Tenant, query: str) -> list[dict[str, Any]]:
    body = httpx.post(f"{home.env['HATS_INFLUX_URL']}/query", data={"q": query}, timeout=30,
                      auth=(home.env["HATS_INFLUX_ADMIN_USERNAME"], home.env["HATS_INFLUX_ADMIN_PASSWORD"]),
                      verify=client_context(home.env["HATS_INFLUX_CA_FILE"])).json()
    return [series for result in body["results"] for series in result.get("series", [])]


def stored_bytes(home: Tenant, rp: str) -> int:
    """The reference: diskBytes of the home's shards in ``rp``, each weighted by its share of DAY."""
    sizes = {s["tags"]["id"]: dict(zip(s["columns"], s["values"][0], strict=True))["diskBytes"]
             for s in admin_query(home, "SHOW STATS FOR 'shard'") if s["tags"]["database"] == home.database}
    total = 0.0
    for series in admin_query(home, "SHOW SHARDS"):
        for row in series.get("values") or []:
            shard = dict(zip(series["columns"], row, strict=True))
            start = datetime.fromisoformat(shard["start_time"])
            end = datetime.fromisoformat(shard["end_time"])
            overlap = min(end, DAY + timedelta(days=1)) - max(start, DAY)
            if shard["database"] == home.database and shard["retention_policy"] == rp and overlap > timedelta(0):
                total += sizes.get(str(shard["id"]), 0) * (overlap / (end - start))
    return round(total)


def usage(home: Tenant) -> tuple[Any, ...] | None:
    with psycopg.connect(home.env["HATS_PG_DSN"]) as conn:
        return conn.execute("SELECT points_ingested, series, dead_letters, raw_bytes, rollup_bytes "
                            "FROM billing.usage_daily WHERE tenant_id = %s AND day = %s",
                            (home.name, DAY.date())).fetchone()


def test_usage_per_home_and_day_matches_an_independent_count(two_homes: tuple[Tenant, Tenant]) -> None:
    big, small = two_homes
    plant(big, entities=4, points_per_hour={0: 120, 7: 80, 23: 5}, dead=3)
    plant(small, entities=1, points_per_hour={12: 9}, dead=0)
    resources = {**asset_resources(big), "tenant_selection": TenantSelection(tenants=[big.name, small.name])}
    result = dg.materialize([usage_daily], partition_key=f"{DAY:%Y-%m-%d}", resources=resources)
    assert usage(big) == (205, 5, 3, stored_bytes(big, "raw"), stored_bytes(big, "rollup"))
    assert usage(small) == (9, 2, 0, stored_bytes(small, "raw"), stored_bytes(small, "rollup"))
    measured = usage(big)
    assert measured is not None
    assert measured[3] > 0  # a raw shard with the day's points holds bytes
    per_home: Any = metadata_of(result, "usage_daily")["per_tenant"].value
    assert {name: row["points_ingested"] for name, row in per_home.items()} == {big.name: 205, small.name: 9}
    # A re-run replaces the day's row: still one row per home and day.
    dg.materialize([usage_daily], partition_key=f"{DAY:%Y-%m-%d}", resources=resources)
    with psycopg.connect(big.env["HATS_PG_DSN"]) as conn:
        assert conn.execute("SELECT count(*) FROM billing.usage_daily WHERE tenant_id = ANY(%s) AND day = %s",
                            ([big.name, small.name], DAY.date())).fetchone() == (2,)
