"""Local calendar days of a home in Europe/Amsterdam across both DST changes of 2026, on the real stack.

1 h rollup rows (ours, ``gauge_1h``/``counter_1h``) and imported Home Assistant statistics
(``imported_*_1h``) are written straight into the tenant's InfluxDB for the UTC days around the last
Sunday of March (a 23-hour local day) and of October (25 hours), with hours of both kinds for the same
entity, hours where both exist (ours must win) and a missing hour. The warehouse loads them; the analyst
views are compared with a computation here that groups the same rows by the Amsterdam date of each hour's
start with ``zoneinfo`` (Home Assistant's rule for daily statistics).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import psycopg
import pytest

from hats_assets.defs.common.resources import InfluxDBResource
from hats_assets.defs.quality.warehouse_checks import warehouse_rows_match_rollups
from hats_assets.defs.warehouse.assets import daily_rollup, hourly_rollup, local_daily_rollup
from tests.conftest import Tenant
from tests.homeassistant import asset_resources, metadata_of

pytestmark = pytest.mark.integration

ZONE = "Europe/Amsterdam"
HOUR = timedelta(hours=1)
WAREHOUSE = [hourly_rollup, daily_rollup, local_daily_rollup, warehouse_rows_match_rollups]
METER, THERMOMETER = "sensor.grid_energy", "sensor.living_temp"
# (first UTC day, last UTC day) of each single-run load: around 2026-03-29 and 2026-10-25.
RANGES = [(date(2026, 3, 28), date(2026, 3, 30)), (date(2026, 10, 24), date(2026, 10, 26))]
MISSING_HOUR = datetime(2026, 10, 25, 13, tzinfo=UTC)  # no row at all: that local day is incomplete


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as ephemeral:
        yield ephemeral


Row = dict[str, Any]


def hours_of(first: date, last: date) -> list[datetime]:
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    return [start + i * HOUR for i in range(((last - first).days + 1) * 24)]


def make_rows(rng: random.Random) -> tuple[dict[tuple[str, datetime], Row], dict[tuple[str, datetime], Row]]:
    """Ours and imported rows per (entity, hour): ours on 2 hours in 3, imported on 3 in 4, some on both."""
    computed: dict[tuple[str, datetime], Row] = {}
    imported: dict[tuple[str, datetime], Row] = {}
    for first, last in RANGES:
        for i, hour in enumerate(hours_of(first, last)):
            if hour == MISSING_HOUR:
                continue
            ours, theirs = i % 3 != 0, i % 4 != 1
            if not ours and not theirs:
                theirs = True
            if ours:
                available = rng.choice([3600.0, 1800.0, 2700.0])
                mean = round(rng.uniform(18, 23), 3)
                computed[(THERMOMETER, hour)] = {"mean": mean, "min": mean - 1, "max": mean + 1, "count": 12,
                                                 "last": mean, "available_s": available,
                                                 "last_seen_s": hour.timestamp() + 3000}
                computed[(METER, hour)] = {"consumption": round(rng.uniform(0.1, 0.9), 4), "count": 6, "resets": 0,
                                           "last": 100.0 + i, "available_s": 3600.0,
                                           "last_seen_s": hour.timestamp() + 3300}
            if theirs:
                mean = round(rng.uniform(10, 15), 3)  # other values: an imported row loaded where ours exists shows
                imported[(THERMOMETER, hour)] = {"mean": mean, "min": mean - 2, "max": mean + 2, "count": 0,
                                                 "available_s": 3600.0}
                imported[(METER, hour)] = {"consumption": round(rng.uniform(1.0, 2.0), 4), "count": 0, "resets": 0,
                                           "last": 500.0 + i, "sum": 1000.0 + i, "available_s": 3600.0}
    return computed, imported


def line(measurement: str, entity: str, hour: datetime, fields: Row) -> str:
    quantity = "energy" if entity == METER else "temperature"
    encoded = ",".join(f"{k}={v}i" if k in ("count", "resets") else f"{k}={float(v)!r}" for k, v in fields.items())
    return f"{measurement},entity_id={entity},quantity={quantity} {encoded} {int(hour.timestamp()) * 1_000_000_000}"


def write_rows(influxdb: InfluxDBResource, tenant: str, computed: dict[tuple[str, datetime], Row],
               imported: dict[tuple[str, datetime], Row]) -> None:
    lines = [line(("counter" if e == METER else "gauge") + "_1h", e, h, f) for (e, h), f in computed.items()]
    lines += [line(("imported_counter" if e == METER else "imported_gauge") + "_1h", e, h, f)
              for (e, h), f in imported.items()]
    assert influxdb.for_tenant(tenant).write(lines, "rollup") == len(lines)


def local_hours(zone: str, first_day: date, end_day: date) -> int:
    """UTC hours whose start falls on a local date in ``[first_day, end_day)`` of ``zone``."""
    tz, count = ZoneInfo(zone), 0
    moment = datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC) - timedelta(days=1)
    while moment < datetime(end_day.year, end_day.month, end_day.day, tzinfo=UTC) + timedelta(days=1):
        count += first_day <= moment.astimezone(tz).date() < end_day
        moment += HOUR
    return count


def expected_local_days(computed: dict[tuple[str, datetime], Row], imported: dict[tuple[str, datetime], Row],
                        zone: str, first_day: date, last_day: date) -> dict[tuple[str, date], Row]:
    """Per entity and local date (of each hour's start, in ``zone``): what the views must show."""
    tz = ZoneInfo(zone)
    days: dict[tuple[str, date], Row] = {}
    for (entity, hour) in sorted(computed.keys() | imported.keys()):
        row, origin = (computed[(entity, hour)], "computed") if (entity, hour) in computed else (
            imported[(entity, hour)], "imported")
        local = hour.astimezone(tz).date()
        if not first_day <= local <= last_day:
            continue
        day = days.setdefault((entity, local), {"day_hours": local_hours(zone, local, local + timedelta(days=1)),
                                                "hours_loaded": 0, "imported_hours": 0,
                                                "value_s": 0.0, "available_s": 0.0, "kwh": 0.0, "min": None,
                                                "max": None})
        day["hours_loaded"] += 1
        day["imported_hours"] += origin == "imported"
        if entity == METER:
            day["kwh"] += row["consumption"]
        else:
            day["value_s"] += row["mean"] * row["available_s"]
            day["available_s"] += row["available_s"]
            day["min"] = row["min"] if day["min"] is None else min(day["min"], row["min"])
            day["max"] = row["max"] if day["max"] is None else max(day["max"], row["max"])
    return days


def analyst(tenant: Tenant, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(tenant.env["HATS_ANALYST_DSN"]) as conn:
        return conn.execute(query, {"tenant": tenant.name}).fetchall()


def load(instance: dg.DagsterInstance, resources: dict[str, object], first: date, last: date,
         assets: list[Any] = WAREHOUSE) -> dg.ExecuteInProcessResult:
    result = dg.materialize(assets, instance=instance, resources=resources, tags={
        "dagster/asset_partition_range_start": f"{first}", "dagster/asset_partition_range_end": f"{last}"})
    assert result.success
    return result


def assert_local_days(tenant: Tenant, expected: dict[tuple[str, date], Row], zone: str) -> None:
    got = analyst(tenant, "SELECT entity_id, local_day, time_zone, day_hours, hours_loaded, complete, imported_hours, "
                          "mean, min, max, consumption, coverage_pct FROM analytics.entity_daily "
                          "WHERE tenant_id = %(tenant)s ORDER BY entity_id, local_day")
    assert [(r[0], r[1]) for r in got] == sorted(expected)
    for entity, day, time_zone, day_hours, loaded, complete, imported_hours, mean, low, high, kwh, coverage in got:
        want = expected[(entity, day)]
        assert (time_zone, day_hours, loaded, complete, imported_hours) == (
            zone, want["day_hours"], want["hours_loaded"], want["hours_loaded"] == want["day_hours"],
            want["imported_hours"]), (entity, day)
        if entity == METER:
            assert kwh == pytest.approx(want["kwh"], rel=1e-12), (entity, day)
        else:
            assert mean == pytest.approx(want["value_s"] / want["available_s"], rel=1e-12), (entity, day)
            assert (low, high) == (want["min"], want["max"])
            share = 100 * want["available_s"] / (3600 * want["day_hours"])
            assert float(coverage) == pytest.approx(share, abs=0.0051)  # numeric round() of a half goes up
    energy = analyst(tenant, "SELECT local_day, kwh, day_hours, complete FROM analytics.energy_daily "
                             "WHERE tenant_id = %(tenant)s ORDER BY local_day")
    assert energy == [(day, pytest.approx(want["kwh"], rel=1e-12), want["day_hours"],
                       want["hours_loaded"] == want["day_hours"])
                      for (entity, day), want in sorted(expected.items()) if entity == METER]


def test_local_days_across_both_dst_changes(tenant: Tenant, instance: dg.DagsterInstance) -> None:
    resources = asset_resources(tenant)
    influxdb = resources["influxdb"]
    assert isinstance(influxdb, InfluxDBResource)
    computed, imported = make_rows(random.Random(20260329))
    write_rows(influxdb, tenant.name, computed, imported)
    with psycopg.connect(tenant.env["HATS_PG_DSN"], autocommit=True) as conn:
        conn.execute("UPDATE core.tenants SET time_zone = %s, time_zone_source = 'operator' WHERE tenant_id = %s",
                     (ZONE, tenant.name))
        conn.execute("INSERT INTO core.entities (tenant_id, entity_id, domain, measurement, friendly_name, "
                     "unit_canonical, source) VALUES (%s, %s, 'sensor', 'energy', 'Grid', 'kWh', 'statestream'), "
                     "(%s, %s, 'sensor', 'temperature', 'Living', '°C', 'statestream')",
                     (tenant.name, METER, tenant.name, THERMOMETER))

    for first, last in RANGES:
        result = load(instance, resources, first, last)
        [check] = result.get_asset_check_evaluations()
        assert check.passed, check.metadata
        per_home: Any = check.metadata["per_tenant"].value
        assert per_home[tenant.name]["imported_rows_expected"] == sum(
            1 for (e, h) in imported if (e, h) not in computed and first <= h.date() <= last)

    # Ours win: for every hour, the row loaded is ours where we have one, else the imported one.
    hourly = analyst(tenant, "SELECT entity_id, hour, origin, coalesce(mean, consumption) FROM analytics.entity_hourly "
                             "WHERE tenant_id = %(tenant)s")
    assert len(hourly) == len(computed.keys() | imported.keys())
    for entity, hour, origin, value in hourly:
        mine = computed.get((entity, hour))
        assert origin == ("computed" if mine else "imported")
        row = mine or imported[(entity, hour)]
        assert value == row["mean" if entity == THERMOMETER else "consumption"]

    # Local days: every day with an hour in the loaded UTC days (the ranges' edge days are partial).
    expected: dict[tuple[str, date], Row] = {}
    for first, last in RANGES:
        expected |= expected_local_days(computed, imported, ZONE, first, last + timedelta(days=1))
    assert local_hours(ZONE, date(2026, 3, 23), date(2026, 3, 30)) == 167
    assert expected[(METER, date(2026, 3, 29))]["day_hours"] == 23
    assert expected[(METER, date(2026, 10, 25))]["day_hours"] == 25
    assert expected[(METER, date(2026, 3, 29))]["hours_loaded"] == 23  # complete
    assert expected[(METER, date(2026, 10, 25))]["hours_loaded"] == 24  # the missing hour
    assert_local_days(tenant, expected, ZONE)

    # UTC days stay in their own views, with how many hours were imported.
    utc = analyst(tenant, "SELECT utc_day, kwh, imported_hours FROM analytics.energy_daily_utc "
                          "WHERE tenant_id = %(tenant)s ORDER BY utc_day")
    want_utc: dict[date, list[float]] = defaultdict(lambda: [0.0, 0])
    for (entity, hour) in computed.keys() | imported.keys():
        if entity == METER:
            ours = (entity, hour) in computed
            want_utc[hour.date()][0] += (computed if ours else imported)[(entity, hour)]["consumption"]
            want_utc[hour.date()][1] += not ours
    assert utc == [(day, pytest.approx(kwh, rel=1e-12), n) for day, (kwh, n) in sorted(want_utc.items())]

    # Weeks (ISO, from the local Monday) and months of local days: sums of the days, and how long they are.
    weekly = analyst(tenant, "SELECT week_start, week, period_hours, hours_loaded, complete, kwh "
                             "FROM analytics.energy_weekly WHERE tenant_id = %(tenant)s ORDER BY week_start")
    weeks: dict[date, list[float]] = defaultdict(lambda: [0, 0.0])
    for (entity, day), want in expected.items():
        if entity == METER:
            weeks[day - timedelta(days=day.weekday())][0] += want["hours_loaded"]
            weeks[day - timedelta(days=day.weekday())][1] += want["kwh"]
    assert weekly == [(monday, f"{monday.isocalendar().year}-W{monday.isocalendar().week:02d}",
                       local_hours(ZONE, monday, monday + timedelta(days=7)), loaded, False,
                       pytest.approx(kwh, rel=1e-12)) for monday, (loaded, kwh) in sorted(weeks.items())]
    monthly = analyst(tenant, "SELECT month, period_hours, complete FROM analytics.energy_monthly "
                              "WHERE tenant_id = %(tenant)s ORDER BY month")
    assert monthly == [("2026-03", 31 * 24 - 1, False), ("2026-10", 31 * 24 + 1, False)]

    # Idempotent: re-running one UTC day re-computes the local days it touches to the same rows.
    before = analyst(tenant, "SELECT * FROM analytics.entity_daily WHERE tenant_id = %(tenant)s ORDER BY 2, 8")
    load(instance, resources, date(2026, 3, 29), date(2026, 3, 29), [local_daily_rollup])
    assert analyst(tenant, "SELECT * FROM analytics.entity_daily WHERE tenant_id = %(tenant)s ORDER BY 2, 8") == before

    # The zone is read at run time: after a change, the next run (of any day) re-computes every local day
    # counted in the old zone (a half-hour zone: a day is the UTC hours starting on that local date).
    with psycopg.connect(tenant.env["HATS_PG_DSN"], autocommit=True) as conn:
        conn.execute("UPDATE core.tenants SET time_zone = 'Asia/Kolkata' WHERE tenant_id = %s", (tenant.name,))
    rerun = load(instance, resources, date(2026, 11, 1), date(2026, 11, 1), [local_daily_rollup])
    recomputed: Any = metadata_of(rerun, "local_daily_rollup")["per_tenant"].value
    assert recomputed[tenant.name]["recomputed_from_zone"] == ZONE
    expected = {}
    for first, last in RANGES:
        expected |= expected_local_days(computed, imported, "Asia/Kolkata", first, last + timedelta(days=1))
    assert_local_days(tenant, expected, "Asia/Kolkata")
