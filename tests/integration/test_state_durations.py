"""Time in each state through the real stack: worker → InfluxDB raw → rollup state_1h → PostgreSQL hours
and LOCAL days (a Europe/Amsterdam home) → the analyst view, against an independent reference.

A door opens and shuts across an hour boundary and across local midnight (with a repeated state and an
unavailable gap), a cover says open/closed/opening, a thermostat's HVAC mode goes heat/off/unknown/cool,
an enum sensor runs a washer's phases, a free-text sensor sends 15 texts in one hour (bounded to 10 +
"(other)"), and a temperature sensor (numbers only) must not appear. Every duration and entry is
compared exactly with ``tests/rollup_reference.py`` computed from what was published.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import httpx
import psycopg
import pytest

from devstack.home_assistant import config
from devstack.profile import Profile
from hats_assets.definitions import defs
from hats_assets.defs.rollups.assets import rollups
from hats_assets.defs.rollups.contract import MAX_STATES_PER_HOUR, OTHER_STATE
from hats_assets.defs.warehouse.states import state_hourly, state_local_daily
from ingest_worker.tls import client_context
from tests.conftest import Tenant, WorkerProcess, new_tenant, wait_for
from tests.ha_peer import HaPeer
from tests.homeassistant import asset_resources, metadata_of, publish, state_changed
from tests.integration.test_home_assistant_mqtt import SHIFT, copy_shifted, recorded, written
from tests.integration.test_home_assistant_mqtt import ns as iso_ns
from tests.rollup_reference import NS, StateRows, bound_reference, state_reference

pytestmark = pytest.mark.integration

ZONE = ZoneInfo("Europe/Amsterdam")
H = 3600 * NS
# Two whole UTC days, the day before yesterday and yesterday; local midnight between them is the boundary.
DAY = (datetime.now(UTC) - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
END = DAY + timedelta(days=2)
MIDNIGHT = datetime.combine((DAY + timedelta(days=1)).date(), time(), ZONE).astimezone(UTC)
ROLLUP_RANGE = {"dagster/asset_partition_range_start": f"{DAY:%Y-%m-%d}-00:00",
                "dagster/asset_partition_range_end": f"{END - timedelta(hours=1):%Y-%m-%d-%H}:00"}
DAYS_RANGE = {"dagster/asset_partition_range_start": f"{DAY:%Y-%m-%d}",
              "dagster/asset_partition_range_end": f"{DAY + timedelta(days=1):%Y-%m-%d}"}
STATE_ASSETS = [state_hourly, state_local_daily]


def at(minutes: float) -> datetime:
    """An instant relative to local midnight, to the millisecond (what the worker keeps exactly)."""
    return MIDNIGHT + timedelta(milliseconds=round(minutes * 60_000))


def ns(moment: datetime) -> int:
    return round(moment.timestamp() * 1000) * 1_000_000


class Home:
    """Published states and, per entity, the states the reference is computed from (binary states travel as
    1/0 and come back as the domain's words, on/off and open/closed: the same words as published)."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.events: dict[str, list[tuple[int, str]]] = {}
        self.quantity: dict[str, str] = {}

    def state(self, entity: str, minutes: float, state: str, quantity: str, **attributes: object) -> None:
        when = at(minutes)
        self.messages.append(state_changed(entity, state, when, **attributes))
        self.events.setdefault(entity, []).append((ns(when), state))
        self.quantity[entity] = quantity


def build_home() -> Home:
    home = Home()
    door = {"device_class": "door", "friendly_name": "Front door"}
    for minutes, state in [(-70, "on"), (-50, "off"), (-5, "on"), (20, "off"), (20 + 0.5 / 60, "off"),
                           (40, "unavailable"), (45, "off"), (90, "on"), (130, "off"), (180, "on"),
                           (182.25, "off")]:
        home.state("binary_sensor.front_door", minutes, state, "binary", **door)
    for minutes, state in [(-30, "open"), (-10, "closing"), (-9, "closed"), (10, "opening"), (11, "open")]:
        home.state("cover.garage", minutes, state, "binary")
    for minutes, state in [(-100, "heat"), (-20, "off"), (15, "heat"), (50, "unknown"), (55, "cool")]:
        home.state("climate.living", minutes, state, "state", hvac_modes=["off", "heat", "cool"])
    for minutes, state in [(-180, "idle"), (-120, "washing"), (-60, "rinsing"), (-40, "spinning"), (30, "idle")]:
        home.state("sensor.washer_phase", minutes, state, "enum", device_class="enum",
                   options=["idle", "washing", "rinsing", "spinning"])
    home.state("sensor.last_message", -10, "hello", "state")
    for i in range(15):  # 15 texts in the hour after midnight, each held a different time
        home.state("sensor.last_message", 2 + 3.7 * i + i * i / 10, f"message {i}", "state")
    for minutes in (-60, -1, 30):  # numbers only: no state durations
        home.messages.append(state_changed("sensor.room_temp", "21.5", at(minutes), unit_of_measurement="°C",
                                           device_class="temperature", state_class="measurement"))
    return home


def hourly_reference(home: Home) -> dict[str, StateRows]:
    return {entity: state_reference(events, ns(DAY), ns(END), H, None, MAX_STATES_PER_HOUR, OTHER_STATE)
            for entity, events in home.events.items()}


def local_reference(hours: dict[str, StateRows]) -> dict[tuple[str, Any], tuple[StateRows, int]]:
    """Per entity and local day (the local date of each hour's start): the bounded sums and hours loaded."""
    out: dict[tuple[str, Any], tuple[StateRows, int]] = {}
    for entity, rows in hours.items():
        days: dict[Any, dict[tuple[int, str], tuple[int, int]]] = {}
        for (hour, state), (duration, entries) in rows.items():
            local_day = datetime.fromtimestamp(hour // NS, tz=UTC).astimezone(ZONE).date()
            summed = days.setdefault(local_day, {})
            d, n = summed.get((0, state), (0, 0))
            summed[(0, state)] = (d + duration, n + entries)
        for local_day, summed in days.items():
            loaded = len({hour for hour, _ in rows if
                          datetime.fromtimestamp(hour // NS, tz=UTC).astimezone(ZONE).date() == local_day})
            out[(entity, local_day)] = (bound_reference(summed, MAX_STATES_PER_HOUR, OTHER_STATE), loaded)
    return out


def influx_states(tenant: Tenant) -> dict[str, StateRows]:
    got: dict[str, StateRows] = {}
    for series in tenant.influx(f'SELECT * FROM "rollup"."state_1h" WHERE time >= {ns(DAY)} AND time < {ns(END)} '
                                'GROUP BY "entity_id"'):
        columns = series["columns"]
        assert sorted(columns) == ["duration_ns", "entries", "quantity", "rank", "state", "time"]
        rows = [dict(zip(columns, values, strict=True)) for values in series["values"]]
        entity = series["tags"]["entity_id"]
        got[entity] = {(r["time"], r["state"]): (r["duration_ns"], r["entries"]) for r in rows}
        assert len(got[entity]) == len(rows)  # one row per hour and state
        for hour in {r["time"] for r in rows}:  # rank: the hour's states by time held, longest first
            ranked = sorted((r for r in rows if r["time"] == hour), key=lambda r: int(r["rank"]))
            assert [int(r["rank"]) for r in ranked] == list(range(len(ranked)))
            real = [r["duration_ns"] for r in ranked if r["state"] != OTHER_STATE]
            assert real == sorted(real, reverse=True), (entity, hour)
    return got


def day_hours(local_day: Any) -> int:
    start = datetime.combine(local_day, time(), ZONE)
    return round((datetime.combine(local_day + timedelta(days=1), time(), ZONE) - start).total_seconds() / 3600)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as ephemeral:
        yield ephemeral


def test_time_in_each_state_per_hour_and_local_day_exactly(
    tenant: Tenant, start_worker: Callable[[dict[str, str]], WorkerProcess], instance: dg.DagsterInstance
) -> None:
    home = build_home()
    with psycopg.connect(tenant.env["HATS_PG_DSN"], autocommit=True) as conn:
        conn.execute("UPDATE core.tenants SET time_zone = 'Europe/Amsterdam', time_zone_source = 'operator' "
                     "WHERE tenant_id = %s", (tenant.name,))
    worker = start_worker(tenant.env)
    publish(tenant, home.messages)
    points = len(home.messages)
    wait_for(lambda: sum(int(s["values"][0][1]) for field in ("value", "state") for s in tenant.influx(
        f'SELECT count("{field}") FROM "raw"./.*/')) == points, f"{points} raw points")
    resources = asset_resources(tenant)

    result = dg.materialize([rollups], instance=instance, resources=resources, tags=ROLLUP_RANGE)
    assert result.success
    meta = metadata_of(result, "rollup_states_1h")
    assert meta["series_named_states"].value == len(home.events)
    want = hourly_reference(home)
    assert meta["rows_written"].value == sum(len(rows) for rows in want.values())
    got = influx_states(tenant)
    assert set(got) == set(home.events)  # the temperature sensor has no state durations
    for entity in home.events:
        assert got[entity] == want[entity], entity
    # The free text is bounded: 10 states and (other) in the hour after midnight.
    after = [state for (hour, state) in got["sensor.last_message"] if hour == ns(MIDNIGHT)]
    assert len(after) == MAX_STATES_PER_HOUR + 1
    assert OTHER_STATE in after
    # Spot checks in words: the door, the hour after local midnight.
    door = {state: value for (hour, state), value in got["binary_sensor.front_door"].items() if hour == ns(MIDNIGHT)}
    assert door == {"on": (20 * 60 * NS, 0), "off": (35 * 60 * NS, 2), "unavailable": (5 * 60 * NS, 1)}
    assert {s for (_, s) in got["cover.garage"]} == {"open", "closed", "closing", "opening"}

    # Re-running the midnight hour replaces exactly its rows.
    assert dg.materialize([rollups], instance=instance, resources=resources,
                          partition_key=f"{MIDNIGHT:%Y-%m-%d-%H}:00").success
    assert influx_states(tenant) == got

    # PostgreSQL: the hours, then the local days through the analyst's view.
    assert dg.materialize(STATE_ASSETS, instance=instance, resources=resources, tags=DAYS_RANGE).success
    with psycopg.connect(tenant.env["HATS_PG_DSN"]) as conn:
        hourly = conn.execute("SELECT entity_id, hour, state, duration_s, entries FROM analytics.state_hourly "
                              "WHERE tenant_id = %s", (tenant.name,)).fetchall()
    assert {(e, ns(h), s, d, n) for e, h, s, d, n in hourly} == {
        (e, hour, s, Decimal(d).scaleb(-9), n) for e, rows in want.items() for (hour, s), (d, n) in rows.items()}
    with psycopg.connect(tenant.env["HATS_ANALYST_DSN"]) as conn:
        daily = conn.execute(
            "SELECT entity_id, local_day, state, duration_s, duration, entries, time_zone, day_hours, hours_loaded, "
            "complete, friendly_name FROM analytics.state_daily WHERE tenant_id = %s", (tenant.name,)).fetchall()
    local = local_reference(want)
    expected = set()
    for (entity, local_day), (rows, loaded) in local.items():
        length = day_hours(local_day)
        for (_, state), (duration, entries) in rows.items():
            expected.add((entity, local_day, state, Decimal(duration).scaleb(-9),
                          timedelta(microseconds=duration // 1000), entries, "Europe/Amsterdam", length, loaded,
                          loaded == length, "Front door" if entity == "binary_sensor.front_door" else None))
    assert set(daily) == expected
    assert len(daily) == len(expected)
    # The local day after midnight is whole (its 24 hours were all rolled up) and sums to the day for the door.
    first_local = MIDNIGHT.astimezone(ZONE).date()
    door_day = [r for r in daily if r[0] == "binary_sensor.front_door" and r[1] == first_local]
    assert {r[9] for r in door_day} == {True}
    assert sum(r[3] for r in door_day) == 3600 * day_hours(first_local)
    assert {r[2]: r[5] for r in door_day}["on"] == 2  # two openings after midnight: 01:30 and 03:00 local
    # 16 texts that day (hello, message 0…14): bounded again per day, not only per hour.
    texts_day = [r for r in daily if r[0] == "sensor.last_message" and r[1] == first_local]
    assert len(texts_day) == MAX_STATES_PER_HOUR + 1
    assert OTHER_STATE in {r[2] for r in texts_day}

    # A re-load replaces, never duplicates; late data re-rolled asks for the day again.
    evaluate = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert dg.materialize(STATE_ASSETS, instance=instance, resources=resources, tags=DAYS_RANGE).success
    with psycopg.connect(tenant.env["HATS_ANALYST_DSN"]) as conn:
        assert set(conn.execute(
            "SELECT entity_id, local_day, state, duration_s, duration, entries, time_zone, day_hours, hours_loaded, "
            "complete, friendly_name FROM analytics.state_daily WHERE tenant_id = %s", (tenant.name,)).fetchall()
        ) == expected
    # (a tick between: a reload and a rollup in one tick count as handled, as the daemon would see it)
    evaluate = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=evaluate.cursor)
    assert dg.materialize([rollups], instance=instance, resources=resources,
                          partition_key=f"{MIDNIGHT:%Y-%m-%d-%H}:00").success
    evaluate = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=evaluate.cursor)
    assert sorted(str(k) for k in evaluate.get_requested_partitions(dg.AssetKey("state_hourly"))) == [
        f"{MIDNIGHT:%Y-%m-%d}"]
    assert worker.stop() == 0


# -- a real Home Assistant's door, switch and mode, against its own history API -----------------------------
HA_ENTITIES = (config.DOOR, config.SWITCH, config.MODE)


def make_ha_changes(peer: HaPeer) -> None:
    """Open and shut the door twice, step the mode twice, switch the heater on and off; ``restore_ha``
    then puts the mode back (a third change of it)."""
    for _ in range(2):
        peer.call_service("input_boolean", "turn_on", {"entity_id": config.DOOR_INPUT})
        peer.call_service("input_select", "select_next", {"entity_id": config.MODE_INPUT})
        peer.call_service("input_boolean", "turn_off", {"entity_id": config.DOOR_INPUT})
    peer.call_service("switch", "turn_on", {"entity_id": config.SWITCH})
    peer.call_service("switch", "turn_off", {"entity_id": config.SWITCH})


def restore_ha(peer: HaPeer) -> None:
    """The instance serves the whole session: the door shut, the heater off, the mode back to its first."""
    peer.call_service("input_boolean", "turn_off", {"entity_id": config.DOOR_INPUT})
    peer.call_service("switch", "turn_off", {"entity_id": config.SWITCH})
    peer.call_service("input_select", "select_option", {"entity_id": config.MODE_INPUT,
                                                        "option": config.MODE_OPTIONS[0]})


def test_a_real_home_assistants_states_match_its_history(
    home_assistant: HaPeer, ha_tenant: Tenant, start_worker: Callable[[dict[str, str]], WorkerProcess],
    profile: Profile, stack_env: dict[str, str], secrets: dict[str, str], instance: dg.DagsterInstance
) -> None:
    worker = start_worker({**ha_tenant.env, "HATS_SOURCES": "eventstream"})
    start = datetime.now(UTC)
    try:
        make_ha_changes(home_assistant)
    finally:
        restore_ha(home_assistant)  # also when a call failed half-way
    end = datetime.now(UTC) + timedelta(seconds=1)
    # HA's own history is the reference: 4 door changes, 2 of the heater, 3 of the mode.
    counts = {config.DOOR: 4, config.SWITCH: 2, config.MODE: 3}
    def complete_history() -> dict[str, list[dict[str, Any]]] | None:
        history = recorded(home_assistant, HA_ENTITIES, start, end)
        return history if all(len(history[e]) == n for e, n in counts.items()) else None

    history = wait_for(complete_history, "HA's history of the changes")
    since = iso_ns(start.isoformat())
    wait_for(lambda: all(len([r for r in written(ha_tenant, e) if r["time"] >= since]) == n
                         for e, n in counts.items()), "every change in InfluxDB", interval=0.5)
    assert worker.stop() == 0

    past = new_tenant(profile, stack_env, secrets)  # HA cannot backdate: the points go SHIFT back
    copy_shifted(ha_tenant, past)
    shift_ns = SHIFT // timedelta(microseconds=1) * 1_000
    events = {e: [(iso_ns(s["last_updated"]) - shift_ns, s["state"]) for s in states] for e, states in history.items()}
    first = min(t for points in events.values() for t, _ in points) // H * H
    last = max(t for points in events.values() for t, _ in points) // H * H
    hour_keys = {"dagster/asset_partition_range_start": f"{datetime.fromtimestamp(first // NS, UTC):%Y-%m-%d-%H}:00",
                 "dagster/asset_partition_range_end": f"{datetime.fromtimestamp(last // NS, UTC):%Y-%m-%d-%H}:00"}
    resources = asset_resources(past)
    assert dg.materialize([rollups], instance=instance, resources=resources, tags=hour_keys).success
    query = (f'SELECT * FROM "rollup"."state_1h" WHERE time >= {first} AND time < {last + H} '
             'GROUP BY "entity_id"')
    got = {s["tags"]["entity_id"]: {(r[0], r[s["columns"].index("state")]): (
        r[s["columns"].index("duration_ns")], r[s["columns"].index("entries")]) for r in s["values"]}
        for s in past.influx(query)}
    for entity in HA_ENTITIES:  # the first change is the first point ever: not an entry
        assert got[entity] == state_reference(events[entity], first, last + H, H, None, MAX_STATES_PER_HOUR,
                                              OTHER_STATE), entity
    door_opened = sum(n for (_, state), (_, n) in got[config.DOOR].items() if state == "on")
    assert door_opened == 1  # opened twice; the first opening is where its history begins
    assert {state for _, state in got[config.MODE]} <= set(config.MODE_OPTIONS)


@pytest.mark.parametrize(("local_day", "hours"), [("2026-03-29", 23), ("2026-10-25", 25)])
def test_a_local_day_with_a_clock_change_has_its_own_length(
    tenant: Tenant, instance: dg.DagsterInstance, local_day: str, hours: int
) -> None:
    """Rows of state_1h (as a rollup run writes them) for every hour of a DST day in Amsterdam: the local
    day has 23 or 25 hours, all loaded, and sums them (raw points that old are past the raw policy)."""
    with psycopg.connect(tenant.env["HATS_PG_DSN"], autocommit=True) as conn:
        conn.execute("UPDATE core.tenants SET time_zone = 'Europe/Amsterdam' WHERE tenant_id = %s", (tenant.name,))
    day = datetime.fromisoformat(local_day).date()
    start = datetime.combine(day, time(), ZONE).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(), ZONE).astimezone(UTC)
    starts = [ns(start) + i * H for i in range(round((end - start) / timedelta(hours=1)))]
    assert len(starts) == hours
    lines = [f'state_1h,entity_id=switch.heater,quantity=binary,rank={rank} state="{state}",'
             f"duration_ns={seconds * NS}i,entries=1i {hour}"
             for hour in starts for rank, (state, seconds) in enumerate((("on", 2400), ("off", 1200)))]
    response = httpx.post(f"{tenant.env['HATS_INFLUX_WRITE_URL']}/write",
                          params={"db": tenant.database, "rp": "rollup"},
                          content="\n".join(lines).encode(),
                          auth=(tenant.env["HATS_INFLUX_USERNAME"], tenant.env["HATS_INFLUX_PASSWORD"]), timeout=30,
                          verify=client_context(tenant.env["HATS_INFLUX_CA_FILE"]))
    assert response.status_code == 204, response.text
    utc_days = {"dagster/asset_partition_range_start": f"{start:%Y-%m-%d}",
                "dagster/asset_partition_range_end": f"{end - timedelta(hours=1):%Y-%m-%d}"}
    assert dg.materialize(STATE_ASSETS, instance=instance, resources=asset_resources(tenant), tags=utc_days).success
    with psycopg.connect(tenant.env["HATS_ANALYST_DSN"]) as conn:
        rows = conn.execute("SELECT local_day, state, duration_s, entries, day_hours, hours_loaded, complete, "
                            "share_pct FROM analytics.state_daily WHERE tenant_id = %s ORDER BY state",
                            (tenant.name,)).fetchall()
    assert rows == [(day, "off", Decimal(1200 * hours), hours, hours, hours, True, Decimal("33.33")),
                    (day, "on", Decimal(2400 * hours), hours, hours, hours, True, Decimal("66.67"))]
