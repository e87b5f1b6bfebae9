"""A real Home Assistant (2024.3 and 2025.4) publishing mqtt_statestream and mqtt_eventstream into the
stack's broker, read by the real worker: every state change Home Assistant's own history reports is in
InfluxDB exactly once, in canonical units, at its `last_updated`, in ONE measurement per entity from its
very first state — with either source alone and with both on.

Fresh entities (new ids per test, posted over REST with their attributes in the order HA's own entities
carry them: state_class, unit, device_class, name) have no retained attribute topics on the broker, so
their first state meets its description only through the worker's wait for the attribute burst. The
configured template sensors add what only integrations produce: a template `availability`, a unit
changed by an `input_select`, a meter reset, a door, a switch and an enum sensor.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import httpx
import psycopg
import pytest

from devstack.home_assistant import config
from devstack.profile import Profile
from hats_assets.defs.quality.rollup_checks import rollup_checks
from hats_assets.defs.quality.warehouse_checks import warehouse_rows_match_rollups
from hats_assets.defs.rollups.assets import rollups
from hats_assets.defs.warehouse.assets import daily_rollup, hourly_rollup
from ingest_worker.contract import Point
from ingest_worker.lineprotocol import encode
from ingest_worker.tls import client_context
from tests.conftest import Tenant, WorkerProcess, new_tenant, wait_for
from tests.ha_peer import HaPeer
from tests.homeassistant import asset_resources
from tests.runs import failures

pytestmark = pytest.mark.integration

Start = Callable[[dict[str, str]], WorkerProcess]
MODES = {"statestream": "statestream", "eventstream": "eventstream", "both": "statestream,eventstream"}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The test's own reference for units (independent of ingest_worker/units.py).
TO_CANONICAL: dict[str, Callable[[float], float]] = {
    "°F": lambda v: (v - 32.0) * 5.0 / 9.0, "kW": lambda v: v * 1000.0, "Wh": lambda v: v / 1000.0,
}
QUANTITY_OF_UNIT = {"W": "power", "kW": "power", "°C": "temperature", "°F": "temperature", "kWh": "energy",
                    "Wh": "energy"}
BINARY_DOMAINS = {"binary_sensor", "switch", "input_boolean"}
AVAILABILITY = {"unavailable", "unknown"}


def ns(text: str) -> int:
    delta = datetime.fromisoformat(text) - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def expected_point(entity_id: str, state: dict[str, Any]) -> tuple[int, str, float | str]:
    """(time, measurement, value or text) as the data contract says this recorded state must land."""
    attributes = state["attributes"]
    domain = entity_id.split(".")[0]
    unit = attributes.get("unit_of_measurement")
    if domain in BINARY_DOMAINS:
        measurement = "binary"
    else:
        measurement = attributes.get("device_class") or QUANTITY_OF_UNIT.get(unit or "") or "state"
    raw = state["state"]
    value: float | str
    if raw in AVAILABILITY:
        value = raw
    elif domain in BINARY_DOMAINS:
        value = {"on": 1.0, "off": 0.0}[raw]
    else:
        try:
            number = float(raw)
            convert = TO_CANONICAL.get(unit or "")
            value = convert(number) if convert else number
        except ValueError:
            value = raw
    return ns(state["last_updated"]), measurement, value


def same(got: float | str, want: float | str) -> bool:
    if isinstance(got, float) and isinstance(want, float):
        return math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-12)
    return got == want


def recorded(peer: HaPeer, entity_ids: Iterable[str], start: datetime,
             end: datetime) -> dict[str, list[dict[str, Any]]]:
    """Home Assistant's history of every change in [start, end], attributes included (the reference)."""
    ids = sorted(entity_ids)
    answer: list[list[dict[str, Any]]] = peer.api.get(
        f"/api/history/period/{start.isoformat()}",
        {"filter_entity_id": ",".join(ids), "end_time": end.isoformat(), "significant_changes_only": "0",
         "skip_initial_state": ""})
    found: dict[str, list[dict[str, Any]]] = {entity: [] for entity in ids}
    for states in answer:
        for state in states:
            if ns(state["last_updated"]) >= ns(start.isoformat()):
                found[state["entity_id"]].append(state)
    return found


def written(tenant: Tenant, entity_id: str) -> list[dict[str, Any]]:
    """Every raw point of one entity, whichever measurement it landed in, oldest first."""
    rows = []
    for series in tenant.influx(f"SELECT value, state FROM raw./.*/ WHERE entity_id = '{entity_id}'"):
        for values in series["values"]:
            rows.append({"measurement": series["name"], **dict(zip(series["columns"], values, strict=True))})
    return sorted(rows, key=lambda row: row["time"])


class Changes:
    """The state changes a test makes in Home Assistant, and the entities they touch."""

    def __init__(self, peer: HaPeer) -> None:
        self.peer = peer
        self.fresh = f"hats{uuid.uuid4().hex[:8]}"
        self.entities: set[str] = set()

    def post(self, object_id: str, state: str, **attributes: object) -> None:
        entity_id = f"{object_id.split('.')[0]}.{self.fresh}_{object_id.split('.')[1]}"
        self.entities.add(entity_id)
        self.peer.set_state(entity_id, state, dict(attributes))

    def number(self, number: config.Number, value: float) -> None:
        self.entities.add(number.sensor_entity)
        self.peer.set_number(number.input_entity, value)

    def service(self, affected: str, domain: str, service: str, **data: object) -> None:
        """Call a service; `affected` is the entity whose state it changes."""
        self.entities.add(affected)
        self.peer.call_service(domain, service, dict(data))


def make_changes(changes: Changes) -> None:
    numbers = {n.key: n for n in config.NUMBERS}
    meter = {"state_class": "total_increasing", "unit_of_measurement": "Wh", "device_class": "energy",
             "friendly_name": "Grid"}
    porch = {"state_class": "measurement", "unit_of_measurement": "°F", "device_class": "temperature",
             "friendly_name": "Porch"}
    kilowatts = {"state_class": "measurement", "unit_of_measurement": "kW", "device_class": "power",
                 "friendly_name": "Heat pump"}
    for i, (porch_f, pump_kw, meter_wh) in enumerate(((70.7, 1.5, 5000), (71.3, 0.25, 5250), (72.5, 2.0, 12))):
        changes.post("sensor.porch", f"{porch_f}", **porch)
        changes.post("sensor.heat_pump", f"{pump_kw}", **kilowatts)
        changes.post("sensor.grid", f"{meter_wh}", **meter)  # the third is a meter reset
        changes.post("binary_sensor.back_door", ["on", "off", "on"][i], device_class="door", friendly_name="Back")
        changes.post("sensor.washer", ["idle", "washing", "spinning"][i], friendly_name="Washer")
        changes.number(numbers["temperature_f"], 68.5 + i)
        changes.number(numbers["power_kw"], 0.5 + i)
        changes.number(numbers["energy_wh"], [7000, 7300, 40][i])
        if i == 1:
            changes.post("sensor.porch", "unavailable", friendly_name="Porch")  # no unit: known from before
            changes.service(numbers["flaky_temperature"].sensor_entity, "input_boolean", "turn_off",
                            entity_id=config.FLAKY_AVAILABLE)
    changes.service(numbers["flaky_temperature"].sensor_entity, "input_boolean", "turn_on",
                    entity_id=config.FLAKY_AVAILABLE)
    changes.service(config.DOOR, "input_boolean", "toggle", entity_id=config.DOOR_INPUT)
    changes.service(config.SWITCH, "switch", "toggle", entity_id=config.SWITCH)
    changes.service(config.MODE, "input_select", "select_next", entity_id=config.MODE_INPUT)
    variable = numbers["variable_power"]
    changes.number(variable, 750)
    changes.service(variable.sensor_entity, "input_select", "select_option", entity_id=config.UNIT_INPUT,
                    option=config.UNIT_OPTIONS[1])  # the same number, now in kW
    changes.number(variable, 1.25)
    changes.service(variable.sensor_entity, "input_select", "select_option", entity_id=config.UNIT_INPUT,
                    option=config.UNIT_OPTIONS[0])
    # The instance serves the whole session: the door, the switch and the mode are put back (two more changes).
    changes.service(config.DOOR, "input_boolean", "toggle", entity_id=config.DOOR_INPUT)
    changes.service(config.SWITCH, "switch", "toggle", entity_id=config.SWITCH)
    changes.service(config.MODE, "input_select", "select_option", entity_id=config.MODE_INPUT,
                    option=config.MODE_OPTIONS[0])


def reference_points(peer: HaPeer, changes: Changes, start: datetime) -> dict[str, list[tuple[int, str, float | str]]]:
    """What HA's history says each changed entity must have in InfluxDB since `start`."""
    end = datetime.now(UTC) + timedelta(seconds=1)
    last = f"sensor.{changes.fresh}_washer"
    wait_for(lambda: len(recorded(peer, [last], start, end)[last]) == 3, "HA's history of the changes")
    reference = recorded(peer, changes.entities, start, end)
    assert all(reference.values()), f"entities without recorded changes: {[e for e, s in reference.items() if not s]}"
    return {entity: [expected_point(entity, state) for state in states] for entity, states in reference.items()}


def in_window(tenant: Tenant, entity: str, start: datetime) -> list[dict[str, Any]]:
    return [row for row in written(tenant, entity) if row["time"] >= ns(start.isoformat())]


def wait_for_points(tenant: Tenant, expected: dict[str, list[tuple[int, str, float | str]]], start: datetime) -> None:
    wait_for(lambda: all(len(in_window(tenant, e, start)) >= len(points) for e, points in expected.items()),
             f"every recorded change of {len(expected)} entities in InfluxDB", interval=0.5)


def differences(tenant: Tenant, expected: dict[str, list[tuple[int, str, float | str]]], start: datetime) -> list[str]:
    """Where InfluxDB differs from HA's history: points not exactly once, other values, a second series."""
    problems = []
    for entity, points in sorted(expected.items()):
        measurements = sorted({row["measurement"] for row in written(tenant, entity)})
        if measurements != [points[0][1]]:
            problems.append(f"{entity}: measurements {measurements}, expected only {points[0][1]!r}")
        got = [(row["time"], row["state"] if row["value"] is None else row["value"])
               for row in in_window(tenant, entity, start)]
        want = [(time, value) for time, _, value in points]
        if [time for time, _ in got] != [time for time, _ in want]:
            problems.append(f"{entity}: {len(got)} point(s) at {[t for t, _ in got]}, HA recorded {len(want)} "
                            f"at {[t for t, _ in want]}")
        elif not all(same(g, w) for (_, g), (_, w) in zip(got, want, strict=True)):
            problems.append(f"{entity}: values {[v for _, v in got]}, expected {[v for _, v in want]}")
    return problems


@pytest.mark.parametrize("mode", list(MODES))
def test_every_recorded_state_change_is_one_point_in_one_series(mode: str, home_assistant: HaPeer,
                                                                 ha_tenant: Tenant, start_worker: Start) -> None:
    worker = start_worker({**ha_tenant.env, "HATS_SOURCES": MODES[mode]})
    start = datetime.now(UTC)
    changes = Changes(home_assistant)
    make_changes(changes)
    expected = reference_points(home_assistant, changes, start)
    wait_for_points(ha_tenant, expected, start)
    assert worker.stop() == 0  # drained: nothing more can arrive
    problems = differences(ha_tenant, expected, start)
    assert not problems, (f"{len(problems)} of {len(expected)} entities differ from HA's history:\n"
                          + "\n".join(problems))
    counters = worker.counters()
    assert counters["dead_lettered"] == 0
    if mode == "both":
        assert counters["ignored"] > 0  # the second copies, counted as duplicate_state


def test_eventstream_changes_made_while_the_worker_is_stopped_all_land(home_assistant: HaPeer, ha_tenant: Tenant,
                                                                       start_worker: Start) -> None:
    """HA publishes eventstream at QoS 0; the broker queues it for the stopped worker's session."""
    env = {**ha_tenant.env, "HATS_SOURCES": "eventstream"}
    assert start_worker(env).stop() == 0  # the persistent session exists, its worker is gone
    start = datetime.now(UTC)
    changes = Changes(home_assistant)
    make_changes(changes)
    expected = reference_points(home_assistant, changes, start)
    worker = start_worker(env)
    wait_for_points(ha_tenant, expected, start)
    assert worker.stop() == 0
    problems = differences(ha_tenant, expected, start)
    assert not problems, "changes made while the worker was stopped:\n" + "\n".join(problems)


# -- the rollups and the warehouse over what a real Home Assistant sent --------------------------------------
# Home Assistant stamps every state with the present and no REST call can backdate one, while only complete
# hours are partitions. So the raw points the worker wrote from the real HA (every series, tag and value as
# written) are copied into a second tenant exactly SHIFT earlier, with the entities' `core` rows, and that
# tenant's past hour is rolled up, checked and loaded as the schedule would.
SHIFT = timedelta(hours=3)
NS_PER_HOUR = 3_600_000_000_000


def copy_shifted(source: Tenant, target: Tenant) -> set[int]:
    """Every raw point of `source` into `target`, SHIFT earlier; returns the hours (ns) the copies fill."""
    lines, hours = [], set()
    for series in source.influx("SELECT value, state FROM raw./.*/ GROUP BY *"):
        tags = tuple(sorted((k, v) for k, v in (series.get("tags") or {}).items() if v))
        for time, value, state in series["values"]:
            moved = time - SHIFT // timedelta(microseconds=1) * 1_000
            lines.append(encode(Point(series["name"], tags, moved, value=value, state=state)))
            hours.add(moved // NS_PER_HOUR * NS_PER_HOUR)
    response = httpx.post(f"{target.env['HATS_INFLUX_WRITE_URL']}/write", params={"db": target.database, "rp": "raw"},
                          content="\n".join(lines).encode(),
                          auth=(target.env["HATS_INFLUX_USERNAME"], target.env["HATS_INFLUX_PASSWORD"]), timeout=30,
                          verify=client_context(target.env["HATS_INFLUX_CA_FILE"]))
    assert response.status_code == 204, response.text
    with psycopg.connect(source.env["HATS_PG_DSN"], autocommit=True) as conn:
        columns = [row[0] for row in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'core' "
            "AND table_name = 'entities' AND column_name <> 'tenant_id' ORDER BY ordinal_position")]
        listed = ", ".join(columns)
        conn.execute(f"INSERT INTO core.entities (tenant_id, {listed}) SELECT %s, {listed} FROM core.entities "
                     "WHERE tenant_id = %s", (target.name, source.name))
    return hours


@pytest.mark.parametrize("mode", ["both"])
def test_what_home_assistant_sent_passes_the_rollup_checks_and_loads_the_warehouse(
        mode: str, home_assistant: HaPeer, ha_tenant: Tenant, start_worker: Start, profile: Profile,
        stack_env: dict[str, str], secrets: dict[str, str]) -> None:
    worker = start_worker({**ha_tenant.env, "HATS_SOURCES": MODES[mode]})
    start = datetime.now(UTC)
    changes = Changes(home_assistant)
    make_changes(changes)
    last = f"sensor.{changes.fresh}_washer"
    wait_for(lambda: len([r for r in written(ha_tenant, last) if r["time"] >= ns(start.isoformat())]) == 3,
             "the last entity's three changes in InfluxDB")
    assert worker.stop() == 0

    past = new_tenant(profile, stack_env, secrets)
    hours = copy_shifted(ha_tenant, past)
    resources = asset_resources(past)
    current = (start - SHIFT).replace(minute=0, second=0, microsecond=0)
    partitions = sorted(datetime.fromtimestamp(h / 1e9, UTC) for h in hours if h >= ns(current.isoformat()))
    for hour in partitions:
        result = dg.materialize([rollups, *rollup_checks], partition_key=hour.strftime("%Y-%m-%d-%H:%M"),
                                resources=resources, raise_on_error=False)
        assert result.success, failures(result)
        evaluations = result.get_asset_check_evaluations()
        failed = [(e.check_name, e.metadata) for e in evaluations
                  if not e.passed and e.severity == dg.AssetCheckSeverity.ERROR]
        assert not failed, f"blocking checks failed on {hour:%H:%M} of real HA data: {failed}"
        assert {e.check_name for e in evaluations} >= {"one_series_per_entity", "raw_points_all_rolled_up",
                                                       "plausible_ranges"}
    for day in sorted({hour.strftime("%Y-%m-%d") for hour in partitions}):
        loaded = dg.materialize([hourly_rollup, daily_rollup, warehouse_rows_match_rollups], partition_key=day,
                                resources=resources)
        assert all(e.passed for e in loaded.get_asset_check_evaluations())
    with psycopg.connect(stack_env["HATS_PG_DSN"]) as conn:
        entities = {row[0] for row in conn.execute(
            "SELECT DISTINCT entity_id FROM analytics.hourly_rollup WHERE tenant_id = %s", (past.name,))}
    text = {last, config.MODE}  # states that are words have no numeric rollup
    assert changes.entities - text <= entities  # every numeric entity HA changed reached the warehouse
    assert not text & entities
