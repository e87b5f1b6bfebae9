"""Rollups and the warehouse on the real stack, against an independent reference.

A day of Home Assistant states with known answers — °F, kW and Wh inputs, an unavailable stretch, a
gap, a quiet sensor whose only point is before the rolled-up hours, a door, meters with a dip and a
reset, duplicates (re-published and from a second source) — goes through Mosquitto and the real
worker into InfluxDB. The day is rolled up in one single-run backfill, loaded into PostgreSQL, read
by the analyst and compared with ``tests/rollup_reference.py`` computed from what was published.
Then late points arrive: the sensor asks for exactly the hours they touch, the re-run matches the
new reference, and the warehouse's automation condition asks for the day again.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import httpx
import pandas as pd
import psycopg
import pytest

from hats_assets.definitions import defs
from hats_assets.defs.common.tenants import TENANTS_TAG, tenants_run_config
from hats_assets.defs.rollups.assets import TRIGGER_TAG, rollups
from hats_assets.defs.rollups.contract import WINDOWS_NS
from hats_assets.defs.rollups.schedules import late_data_sensor
from hats_assets.defs.warehouse.assets import daily_rollup, hourly_rollup, local_daily_rollup
from ingest_worker.tls import client_context
from tests.conftest import Tenant, WorkerProcess, wait_for
from tests.homeassistant import asset_resources, metadata_of, publish, state_changed
from tests.rollup_reference import NS, Event, counter_reference, gauge_reference

pytestmark = pytest.mark.integration

REL = 1e-9
DAY = (datetime.now(UTC) - timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
DAY_KEY = DAY.strftime("%Y-%m-%d")
ROLLUPS = [rollups]
WAREHOUSE = [hourly_rollup, daily_rollup, local_daily_rollup]
RANGE_TAGS = {"dagster/asset_partition_range_start": f"{DAY_KEY}-00:00",
              "dagster/asset_partition_range_end": f"{DAY_KEY}-23:00"}


def at(hours: float) -> datetime:
    """A millisecond-precise instant on DAY (ms: what survives the worker's timestamp parsing exactly)."""
    return DAY + timedelta(milliseconds=round(hours * 3_600_000))


def ns(moment: datetime) -> int:
    return round(moment.timestamp() * 1000) * 1_000_000


class Fleet:
    """Published messages and, per entity, the canonical-unit events the reference is computed from."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.events: dict[str, list[Event]] = {}
        self.kind: dict[str, str] = {}
        self.quantity: dict[str, str] = {}

    def state(self, entity: str, when: datetime, state: str, value: float, quantity: str, kind: str = "gauge",
              **attributes: object) -> None:
        self.messages.append(state_changed(entity, state, when, **attributes))
        self.events.setdefault(entity, []).append((ns(when), value))
        self.kind[entity], self.quantity[entity] = kind, quantity

    def unavailable(self, entity: str, when: datetime, **attributes: object) -> None:
        self.messages.append(state_changed(entity, "unavailable", when, **attributes))
        self.events[entity].append((ns(when), math.nan))


def build_fleet() -> Fleet:
    rng = random.Random(20261126)
    fleet = Fleet()
    temp = {"device_class": "temperature", "state_class": "measurement"}
    # Living room, °C, irregular cadence, unavailable 10:20–10:35.
    hour = 9.0
    while hour < 13.0:
        if 10 + 20 / 60 <= hour < 10 + 35 / 60:
            fleet.unavailable("sensor.living_temp", at(10 + 20 / 60), unit_of_measurement="°C", **temp)
            hour = 10 + 35 / 60 + 10 / 3600
        value = round(rng.uniform(18, 24), 2)
        fleet.state("sensor.living_temp", at(hour), f"{value}", value, "temperature", unit_of_measurement="°C", **temp)
        hour += rng.uniform(37, 120) / 3600
    # Porch in °F every ~5 min.
    for i in range(48):
        fahrenheit = round(rng.uniform(40, 80), 1)
        fleet.state("sensor.porch_temp", at(9 + i / 12 + rng.uniform(0, 60) / 3600), f"{fahrenheit}",
                    (fahrenheit - 32.0) * 5.0 / 9.0, "temperature", unit_of_measurement="°F", **temp)
    # A plug in W with a 45 min gap (its value holds), a heater in kW.
    for minute in [*range(540, 670, 7), *range(715, 780, 4)]:
        watts = round(rng.uniform(0, 1800), 1)
        fleet.state("sensor.plug_power", at(minute / 60 + 0.0001), f"{watts}", watts, "power",
                    unit_of_measurement="W", device_class="power", state_class="measurement")
    for minute in range(540, 780, 3):
        kw = round(rng.uniform(0, 2.5), 3)
        fleet.state("sensor.heater_power", at(minute / 60 + 0.0002), f"{kw}", kw * 1000.0, "power",
                    unit_of_measurement="kW", device_class="power", state_class="measurement")
    # A kWh grid meter: a dip and its recovery at 10:20–10:25, a reset at 11:30, unavailable 12:10–12:20.
    meter = {"unit_of_measurement": "kWh", "device_class": "energy", "state_class": "total_increasing"}
    reading = 1520.0
    for minute in range(540, 780):
        when = at(minute / 60 + 0.0003)
        if minute == 620:
            fleet.state("sensor.grid_energy", when, f"{reading - 0.3:.3f}", round(reading - 0.3, 3), "energy",
                        "counter", **meter)
            continue
        if minute == 690:
            reading = 0.2
        elif 730 <= minute < 740:
            if minute == 730:
                fleet.unavailable("sensor.grid_energy", when, **meter)
            continue
        else:
            reading = round(reading + rng.uniform(0.01, 0.05), 3)
        fleet.state("sensor.grid_energy", when, f"{reading:.3f}", reading, "energy", "counter", **meter)
    # A solar meter in Wh (→ kWh), every 10 min.
    wh = 500_000.0
    for minute in range(540, 780, 10):
        wh += round(rng.uniform(0, 900))
        fleet.state("sensor.solar_energy", at(minute / 60 + 0.0004), f"{wh}", wh / 1000.0, "energy", "counter",
                    unit_of_measurement="Wh", device_class="energy", state_class="total_increasing")
    # A door (on = 1) and a battery that reported once, before the rolled-up hours.
    for i, hour in enumerate(sorted(rng.uniform(9, 13) for _ in range(14))):
        state = "on" if i % 2 == 0 else "off"
        fleet.state("binary_sensor.front_door", at(hour), state, 1.0 if state == "on" else 0.0, "binary",
                    device_class="door")
    fleet.state("sensor.quiet_battery", at(8.5), "87", 87.0, "battery", unit_of_measurement="%",
                device_class="battery", state_class="measurement")
    return fleet


def reference(fleet: Fleet, entity: str, window_ns: int, start: datetime = DAY,
              end: datetime | None = None) -> pd.DataFrame:
    end = end or DAY + timedelta(days=1)
    compute = counter_reference if fleet.kind[entity] == "counter" else gauge_reference
    return compute(fleet.events[entity], ns(start), ns(end), window_ns)


def influx_frame(tenant: Tenant, kind: str, window: str, start: datetime, end: datetime) -> dict[str, pd.DataFrame]:
    frames: dict[str, pd.DataFrame] = {}
    query = (f'SELECT * FROM "rollup"."{kind}_{window}" WHERE time >= {ns(start)} AND time < {ns(end)} '
             'GROUP BY "entity_id"')
    for series in tenant.influx(query):
        frame = pd.DataFrame(series["values"], columns=series["columns"]).rename(columns={"time": "window_start"})
        frames[series["tags"]["entity_id"]] = frame
    return frames


# A percentage the views round to 2 decimals is within half a hundredth of the exact one (and float noise:
# 16.665 computed two ways may round either way).
ROUNDED_PCT = 0.005 + 1e-9
# Compared for equality: integers, and instants (the float nearest to the point's nanoseconds).
EXACT = frozenset({"count", "resets", "last_seen_s"})


def assert_frames_equal(got: pd.DataFrame, want: pd.DataFrame, what: str) -> None:
    """Every field InfluxDB holds, and no other (the ``quantity`` tag comes back as a column too)."""
    assert set(got.columns) == {*want.columns, "quantity"}, what
    assert got["window_start"].tolist() == want["window_start"].tolist(), what
    for column in want.columns:
        if column == "window_start":
            continue
        for index, (g, w) in enumerate(zip(got[column].tolist(), want[column].tolist(), strict=True)):
            if isinstance(w, float) and math.isnan(w):
                assert g is None or (isinstance(g, float) and math.isnan(g)), (what, column, index)
            elif column in EXACT:
                assert g == w, (what, column, index, g, w)
            else:
                assert g == pytest.approx(w, rel=REL, abs=1e-9), (what, column, index, g, w)


def assert_rollups_match(tenant: Tenant, fleet: Fleet, start: datetime, end: datetime) -> None:
    for window, window_ns in WINDOWS_NS.items():
        for kind in ("gauge", "counter"):
            got = influx_frame(tenant, kind, window, start, end)
            entities = {e for e in fleet.events if fleet.kind[e] == kind}
            assert set(got) == entities, (kind, window)
            for entity in entities:
                want = reference(fleet, entity, window_ns, start, end)
                assert_frames_equal(got[entity], want, f"{kind}_{window} {entity}")


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as ephemeral:
        yield ephemeral


def write_direct_duplicates(tenant: Tenant, fleet: Fleet) -> int:
    """The same states again under another `source` tag (an entity seen by two integrations)."""
    lines = [f"temperature,entity_id=sensor.living_temp,source=statestream value={v!r} {t}"
             for t, v in fleet.events["sensor.living_temp"][:30] if not math.isnan(v)]
    response = httpx.post(f"{tenant.env['HATS_INFLUX_WRITE_URL']}/write", params={"db": tenant.database, "rp": "raw"},
                          content="\n".join(lines),
                          auth=(tenant.env["HATS_INFLUX_USERNAME"], tenant.env["HATS_INFLUX_PASSWORD"]),
                          verify=client_context(tenant.env["HATS_INFLUX_CA_FILE"]))
    assert response.status_code == 204, response.text
    return len(lines)


def _instant(epoch_s: float) -> datetime:
    """The millisecond instant a ``last_seen_s`` float stands for (the test's points are ms-precise), as
    PostgreSQL's microsecond timestamptz holds it."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=round(epoch_s * 1000))


def raw_count(tenant: Tenant) -> int:
    total = 0
    for field in ("value", "state"):
        total += sum(int(s["values"][0][1]) for s in tenant.influx(f'SELECT count("{field}") FROM "raw"./.*/'))
    return total


def points_counted(payloads: list[bytes]) -> int:
    """How many points the worker writes for `payloads` published in order: one per message, except a
    message equal to the entity's previous one (the worker's duplicate rule); this fleet has one series
    per entity, so equal messages are equal points."""
    last: dict[str, bytes] = {}
    counted = 0
    for payload in payloads:
        entity = json.loads(payload)["event_data"]["entity_id"]
        if last.get(entity) != payload:
            counted += 1
        last[entity] = payload
    return counted


def ingest_points(tenant: Tenant) -> int:
    """The points the worker has counted in ops.ingest_hours. It commits them after InfluxDB took the
    points, and they are what the rollups' watermarks and the late-data sensor read: a test that starts
    a rollup or asks the sensor once the points are in InfluxDB races that commit."""
    with psycopg.connect(tenant.env["HATS_PG_DSN"]) as conn:
        row = conn.execute("SELECT coalesce(sum(points), 0) FROM ops.ingest_hours WHERE tenant_id = %s",
                           (tenant.name,)).fetchone()
    assert row is not None
    return int(row[0])


def analyst(tenant: Tenant, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(tenant.env["HATS_ANALYST_DSN"]) as conn:
        return conn.execute(query, {"tenant": tenant.name}).fetchall()


def test_a_day_rolls_up_exactly_and_late_data_re_rolls_its_hours(
    tenant: Tenant, start_worker: Callable[[dict[str, str]], WorkerProcess], instance: dg.DagsterInstance
) -> None:
    fleet = build_fleet()
    worker = start_worker(tenant.env)
    unique = sum(len(events) for events in fleet.events.values())
    published = fleet.messages + fleet.messages[::7]  # every 7th message twice: duplicates
    publish(tenant, published)
    counted = points_counted(published)
    wait_for(lambda: raw_count(tenant) == unique and ingest_points(tenant) == counted,
             f"{unique} raw points in InfluxDB and the worker's {counted} in ops.ingest_hours")
    duplicated = write_direct_duplicates(tenant, fleet)
    resources = asset_resources(tenant)

    result = dg.materialize(ROLLUPS, instance=instance, resources=resources, tags=RANGE_TAGS)
    assert result.success
    assert len(instance.get_runs()) == 1  # the whole day in one run (single-run backfill)…
    for asset in ("rollup_1m", "rollup_5m", "rollup_1h"):  # …that records each of its 24 partitions
        partitions = [e.partition for e in result.get_asset_materialization_events()
                      if e.asset_key == dg.AssetKey(asset)]
        assert partitions == [f"{DAY_KEY}-{hour:02d}:00" for hour in range(24)]
    meta = metadata_of(result, "rollup_1m")
    assert meta["points_read"].value == unique + duplicated
    assert meta["duplicates_dropped"].value == duplicated
    assert meta["series_gauges"].value == 6
    assert meta["series_meters"].value == 2
    assert meta["meter_resets"].value == 1
    available_s = sum(gauge_reference(events, ns(DAY), ns(DAY + timedelta(days=1)), 86_400 * NS)["available_s"].sum()
                      for events in fleet.events.values())
    assert meta["coverage_pct"].value == round(100 * available_s / (86_400 * len(fleet.events)), 2)
    assert metadata_of(result, "rollup_states_1h")["series_named_states"].value == 1  # the door
    assert_rollups_match(tenant, fleet, DAY, DAY + timedelta(days=1))

    # Re-running an hour replaces exactly its windows: nothing duplicated, nothing lost.
    assert dg.materialize(ROLLUPS, instance=instance, resources=resources, partition_key=f"{DAY_KEY}-10:00").success
    assert_rollups_match(tenant, fleet, DAY, DAY + timedelta(days=1))

    # The warehouse, read by the analyst through the views.
    assert dg.materialize(WAREHOUSE, instance=instance, resources=resources, partition_key=DAY_KEY).success
    hourly = analyst(tenant, "SELECT entity_id, hour, mean, min, max, count, last, consumption, coverage_pct, "
                             "resets, last_seen FROM analytics.entity_hourly WHERE tenant_id = %(tenant)s "
                             "ORDER BY entity_id, hour")
    expected_hourly: list[tuple[Any, ...]] = []
    for entity in sorted(fleet.events):
        for row in reference(fleet, entity, WINDOWS_NS["1h"]).to_dict("records"):
            hour = datetime.fromtimestamp(row["window_start"] / NS, tz=UTC)
            coverage = 100 * row["available_s"] / 3600
            seen = None if math.isnan(row["last_seen_s"]) else _instant(row["last_seen_s"])
            if fleet.kind[entity] == "counter":
                expected_hourly.append((entity, hour, None, None, None, row["count"], row["last"], row["consumption"],
                                        coverage, row["resets"], seen))
            else:
                expected_hourly.append((entity, hour, row["mean"], row["min"], row["max"], row["count"], row["last"],
                                        None, coverage, None, seen))
    assert [r[:2] for r in hourly] == [r[:2] for r in expected_hourly]
    for got, want in zip(hourly, expected_hourly, strict=True):
        assert (got[5], got[9], got[10]) == (want[5], want[9], want[10]), (got, want)
        for g, w in zip(got[2:8], want[2:8], strict=True):
            assert g == w if w is None else g == pytest.approx(w, rel=REL, abs=1e-9), (got, want)
        assert float(got[8]) == pytest.approx(want[8], abs=ROUNDED_PCT), (got, want)

    day_s = 86_400 * NS
    # The tenant's zone is UTC (the default): its local days are the UTC days, in both views.
    columns = "entity_id, mean, min, max, count, coverage_pct, consumption"
    daily = analyst(tenant, f"SELECT {columns} FROM analytics.entity_daily WHERE tenant_id = %(tenant)s "
                            "ORDER BY entity_id")
    assert analyst(tenant, f"SELECT {columns} FROM analytics.entity_daily_utc WHERE tenant_id = %(tenant)s "
                           "ORDER BY entity_id") == daily
    hours_of = {e: sum(1 for r in hourly if r[0] == e) for e in fleet.events}
    assert analyst(tenant, "SELECT entity_id, local_day, time_zone, day_hours, hours_loaded, complete, "
                           "imported_hours FROM analytics.entity_daily WHERE tenant_id = %(tenant)s "
                           "ORDER BY entity_id") == [
        (e, DAY.date(), "UTC", 24, hours_of[e], hours_of[e] == 24, 0) for e in sorted(fleet.events)]
    assert [r[0] for r in daily] == sorted(fleet.events)
    for entity, mean, low, high, count, coverage, consumption in daily:
        day: Any = reference(fleet, entity, day_s).iloc[0]
        assert count == day["count"]
        # A meter's rows are its hours with readings (an hour it only held its value has none, so Home
        # Assistant's imported statistics can fill an outage): its day covers those hours' available time.
        hours: Any = reference(fleet, entity, WINDOWS_NS["1h"])
        available = day["available_s"] if fleet.kind[entity] == "gauge" else hours["available_s"].sum()
        assert float(coverage) == pytest.approx(100 * available / 86_400, abs=ROUNDED_PCT)
        if fleet.kind[entity] == "gauge":
            assert (mean, low, high) == pytest.approx((day["mean"], day["min"], day["max"]), rel=REL)
        else:
            assert consumption == pytest.approx(day["consumption"], rel=REL)
    energy = analyst(tenant, "SELECT entity_id, local_day, kwh, meter_resets FROM analytics.energy_daily "
                             "WHERE tenant_id = %(tenant)s ORDER BY entity_id")
    assert [(e, d, r) for e, d, _, r in energy] == [("sensor.grid_energy", DAY.date(), 1),
                                                    ("sensor.solar_energy", DAY.date(), 0)]
    for entity, _, kwh, _ in energy:
        assert kwh == pytest.approx(reference(fleet, entity, day_s).iloc[0]["consumption"], rel=REL)

    # A device: the living-room sensor and the battery belong to it (metadata normally from discovery).
    with psycopg.connect(tenant.env["HATS_PG_DSN"], autocommit=True) as conn:
        conn.execute("INSERT INTO core.devices (tenant_id, device_id, name) VALUES (%s, 'dev-living', 'Living')",
                     (tenant.name,))
        conn.execute("UPDATE core.entities SET device_id = 'dev-living' WHERE tenant_id = %s AND entity_id IN "
                     "('sensor.living_temp', 'sensor.quiet_battery')", (tenant.name,))
    [device] = analyst(tenant, "SELECT device_id, last_seen, battery_pct, availability_pct_7d "
                               "FROM analytics.device_last_seen WHERE tenant_id = %(tenant)s")
    living = reference(fleet, "sensor.living_temp", day_s).iloc[0]
    battery = reference(fleet, "sensor.quiet_battery", day_s).iloc[0]
    assert device[0] == "dev-living"
    assert device[1] == _instant(living["last_seen_s"])
    assert device[2] == 87.0
    available = (living["available_s"] + battery["available_s"]) / (2 * 7 * 86_400)
    assert float(device[3]) == pytest.approx(100 * available, abs=ROUNDED_PCT)

    # Late data: the worker writes points for 11:xx after that hour was rolled up.
    evaluate = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert evaluate.total_requested == 0  # nothing changed since the load
    late_porch, late_living = at(11 + 47 / 60 + 13.5 / 3600), at(11 + 59 / 60 + 59.9 / 3600)
    late = [state_changed("sensor.porch_temp", "104.0", late_porch, unit_of_measurement="°F", **_TEMP),
            state_changed("sensor.living_temp", "30.5", late_living, unit_of_measurement="°C", **_TEMP)]
    fleet.events["sensor.porch_temp"].append((ns(late_porch), 40.0))
    fleet.events["sensor.living_temp"].append((ns(late_living), 30.5))
    publish(tenant, late)
    wait_for(lambda: raw_count(tenant) == unique + duplicated + 2 and ingest_points(tenant) == counted + 2,
             "the late points in InfluxDB and in ops.ingest_hours")

    context = dg.build_sensor_context(instance=instance, resources=resources, definitions=defs)
    sensed = late_data_sensor(context)
    assert isinstance(sensed, dg.SensorResult)
    requests = sensed.run_requests or []
    assert [r.partition_key for r in requests] == [f"{DAY_KEY}-11:00", f"{DAY_KEY}-12:00"]
    assert requests[0].tags[TRIGGER_TAG].startswith(f"{tenant.name}: late data: 2 point(s)")
    assert requests[1].tags[TRIGGER_TAG].startswith(f"{tenant.name}: carry-in of late data")
    # Each request serves exactly the home the late points belong to (run config and tag).
    assert all(r.tags[TENANTS_TAG] == tenant.name and r.run_config == tenants_run_config([tenant.name])
               for r in requests)
    for request in requests:
        rerun = dg.materialize(ROLLUPS, instance=instance, resources=resources, partition_key=request.partition_key,
                               tags=request.tags)
        trigger = metadata_of(rerun, "rollup_1m")["trigger"].value
        assert trigger == request.tags[TRIGGER_TAG]
    assert_rollups_match(tenant, fleet, DAY, DAY + timedelta(days=1))
    again = late_data_sensor(dg.build_sensor_context(instance=instance, resources=resources, definitions=defs))
    assert isinstance(again, dg.SensorResult)
    assert not again.run_requests  # the watermarks caught up: no loop

    evaluate = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=evaluate.cursor)
    requested = {key.to_user_string(): sorted(str(k) for k in evaluate.get_requested_partitions(key))
                 for key in (dg.AssetKey("hourly_rollup"),)}
    assert requested == {"hourly_rollup": [DAY_KEY]}

    assert worker.stop() == 0


_TEMP = {"device_class": "temperature", "state_class": "measurement"}
