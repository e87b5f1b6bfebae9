"""The WebSocket source against a real Home Assistant (2024.3 and 2025.4, tests/ha_peer.py).

The reference is Home Assistant's own history API (`/api/history/period`, every change): each state
change it reports for a test's entities must be in InfluxDB exactly once, in canonical units, at its
`last_updated`, in one measurement per entity — also across a worker SIGKILL and a Home Assistant
restart, which the worker bridges with its resume point and the recorder's history.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx
import psycopg
import pytest

from devstack.profile import PROJECT_ROOT
from ingest_worker.ha_history import recorded_request, row_us
from ingest_worker.normalise import parse_time_ns
from tests.conftest import Tenant, WorkerProcess, wait_for
from tests.ha_peer import HaPeer
from tests.mqtt import Session, session

pytestmark = pytest.mark.integration

SUBSCRIBED = "subscribed to Home Assistant"
RECONNECT_S = 120.0  # HA's restart plus the worker's backoff (at most 30 s, jittered)


class Start(Protocol):
    def __call__(self, env: dict[str, str], ready_line: str | None = ...) -> WorkerProcess: ...


def ws_env(tenant: Tenant, ha: HaPeer, **extra: str) -> dict[str, str]:
    # The test HA's recorder commits at once (commit_interval 0): the fill's tail pass waits 1 s.
    return {**tenant.env, "HATS_SOURCES": "websocket", "HATS_HA_URL": ha.url, "HATS_HA_TOKEN": ha.token,
            "HATS_HA_RECORDER_COMMIT_S": "0", **extra}


# entity suffix → (attributes, states to cycle through, canonical value of a state)
KINDS: dict[str, tuple[dict[str, Any], list[str], Callable[[str], float | str]]] = {
    "temp_f": ({"unit_of_measurement": "°F", "device_class": "temperature", "state_class": "measurement"},
               ["68.0", "70.7", "72.5", "59.9"], lambda s: (float(s) - 32) * 5 / 9),
    "power_kw": ({"unit_of_measurement": "kW", "device_class": "power", "state_class": "measurement"},
                 ["1.5", "0.25", "3.125", "0"], lambda s: float(s) * 1000),
    "energy_wh": ({"unit_of_measurement": "Wh", "device_class": "energy", "state_class": "total_increasing"},
                  ["5000", "5250", "5600", "6001"], lambda s: float(s) / 1000),
    "mode": ({"device_class": "enum"}, ["eco", "comfort", "away", "eco2"], lambda s: s),
}


def entity_ids(tenant: Tenant) -> dict[str, str]:
    return {kind: f"sensor.ws_{tenant.name}_{kind}" for kind in KINDS}


def change_all(ha: HaPeer, tenant: Tenant, step: int) -> None:
    """Give every test entity its next state (distinct from the previous one)."""
    for kind, entity in entity_ids(tenant).items():
        attributes, states, _ = KINDS[kind]
        ha.set_state(entity, states[step % len(states)], attributes)


def expected_points(ha: HaPeer, tenant: Tenant, start: datetime) -> dict[str, set[tuple[int, float | str]]]:
    """Per entity, (last_updated ns, canonical value) of every change HA's history API reports."""
    ids = entity_ids(tenant)
    history = ha.history(ids.values(), start, datetime.now(UTC) + timedelta(seconds=1))
    expected: dict[str, set[tuple[int, float | str]]] = {}
    for kind, entity in ids.items():
        canonical = KINDS[kind][2]
        # minimal_response: the first row is a full state, the others carry last_updated as last_changed
        expected[entity] = {(parse_time_ns(row.get("last_updated") or row["last_changed"]),
                             _round(canonical(row["state"])))
                            for row in history[entity] if row["state"] not in ("unavailable", "unknown")}
    return expected


def _round(value: float | str) -> float | str:
    return round(value, 6) if isinstance(value, float) else value


def stored_points(tenant: Tenant, entity: str) -> tuple[set[str], list[tuple[int, float | str]]]:
    """The entity's measurements and every (time, value or state) point InfluxDB holds for it."""
    series = tenant.influx(f"SELECT value, state FROM /.*/ WHERE entity_id = '{entity}'")
    points: list[tuple[int, float | str]] = []
    for s in series:
        value_at, state_at = s["columns"].index("value"), s["columns"].index("state")
        points += [(row[0], _round(row[value_at]) if row[value_at] is not None else row[state_at])
                   for row in s["values"]]
    return {s["name"] for s in series}, points


def all_stored(tenant: Tenant, expected: dict[str, set[tuple[int, float | str]]]) -> bool:
    return all(expected[entity] <= set(stored_points(tenant, entity)[1]) for entity in expected)


def assert_exactly_once(tenant: Tenant, expected: dict[str, set[tuple[int, float | str]]]) -> None:
    for entity, points in expected.items():
        measurements, stored = stored_points(tenant, entity)
        assert len(measurements) == 1, f"{entity} in {measurements}"
        assert sorted(stored) == sorted(points), entity  # each change once, nothing else


def test_every_change_in_home_assistants_history_is_in_influxdb_once(home_assistant: HaPeer, tenant: Tenant,
                                                                       start_worker: Start) -> None:
    worker = start_worker(ws_env(tenant, home_assistant), ready_line=SUBSCRIBED)
    start = datetime.now(UTC) - timedelta(seconds=1)
    for step in range(6):
        change_all(home_assistant, tenant, step)
    expected = expected_points(home_assistant, tenant, start)
    assert all(len(points) == 6 for points in expected.values()), expected
    wait_for(lambda: all_stored(tenant, expected), "every change of HA's history in InfluxDB")
    assert_exactly_once(tenant, expected)
    ids = entity_ids(tenant)
    measurements = {kind: stored_points(tenant, entity)[0] for kind, entity in ids.items()}
    assert measurements == {"temp_f": {"temperature"}, "power_kw": {"power"}, "energy_wh": {"energy"},
                            "mode": {"enum"}}
    assert worker.metric('hats_messages_received_total{source="websocket"}') >= 24
    # What the worker cannot take from Home Assistant is a dead letter with its reason, like MQTT input.
    bad = f"sensor.ws_{tenant.name}_bad"
    home_assistant.set_state(bad, "not-a-number", {"unit_of_measurement": "W", "device_class": "power"})
    with psycopg.connect(tenant.env["HATS_PG_DSN"]) as conn:
        letters = wait_for(lambda: conn.execute(
            "SELECT topic, reason, detail FROM ops.dead_letters WHERE tenant_id = %s AND detail LIKE %s",
            (tenant.name, f"{bad}%")).fetchall(), "the dead letter")
    assert letters == [("websocket:event", "non_numeric_value",
                        f"{bad} declares a unit or state_class but its state 'not-a-number' is not a number")]
    assert worker.metric("hats_ha_connected") == 1
    with psycopg.connect(tenant.env["HATS_PG_DSN"]) as conn:
        rows = conn.execute("SELECT entity_id, unit_canonical, conversion, source FROM core.entities "
                            "WHERE tenant_id = %s AND entity_id = ANY(%s) ORDER BY entity_id",
                            (tenant.name, list(ids.values()))).fetchall()
    assert [(r[1], r[2], r[3]) for r in rows] == [(("kWh", "Wh->kWh", "websocket")), (None, None, "websocket"),
                                                  ("W", "kW->W", "websocket"), ("°C", "degF->degC", "websocket")]


def resume_point(tenant: Tenant) -> datetime | None:
    with psycopg.connect(tenant.env["HATS_PG_DSN"]) as conn:
        row = conn.execute("SELECT resume_at FROM ops.websocket_resume WHERE tenant_id = %s", (tenant.name,)).fetchone()
    return row[0] if row else None


def ready(worker: WorkerProcess) -> tuple[int, str]:
    try:
        answer = httpx.get(f"{worker.url}/readyz", timeout=5)
    except httpx.HTTPError as exc:
        return 0, str(exc)
    return answer.status_code, answer.text.strip()


def test_nothing_is_lost_across_a_worker_sigkill_and_a_home_assistant_restart(
        home_assistant: HaPeer, tenant: Tenant, start_worker: Start) -> None:
    env = ws_env(tenant, home_assistant)
    start = datetime.now(UTC) - timedelta(seconds=1)
    worker = start_worker(env, ready_line=SUBSCRIBED)
    for step in range(2):
        change_all(home_assistant, tenant, step)
    first = expected_points(home_assistant, tenant, start)
    wait_for(lambda: all_stored(tenant, first), "the first changes")
    point = wait_for(lambda: resume_point(tenant), "a resume point")

    worker.kill()  # SIGKILL: whatever it held is not durable, and the resume point says so
    for step in range(2, 6):  # while no worker is connected: only the recorder has these
        change_all(home_assistant, tenant, step)
    worker = start_worker(env, ready_line="gap since")
    filled = re.search(r"gap since \S+ filled: (\d+) state", worker.output())
    assert filled is not None
    assert int(filled.group(1)) >= 4 * len(KINDS)  # the four changes nobody was connected for, from the recorder
    change_all(home_assistant, tenant, 6)  # live again

    change_all(home_assistant, tenant, 7)  # right before Home Assistant goes away
    home_assistant.stop()
    wait_for(lambda: ready(worker)[0] == 503, "the worker to notice Home Assistant is gone")
    assert "not connected to Home Assistant" in ready(worker)[1]
    home_assistant.restart()  # REST-set entities are gone after it: their history is in the recorder only
    for step in range(8, 10):  # right after the start, likely before the worker reconnects
        change_all(home_assistant, tenant, step)
    wait_for(lambda: ready(worker) == (200, "ready"), "the worker back on Home Assistant", timeout=RECONNECT_S)
    wait_for(lambda: worker.output().count("gap since") >= 2, "the second gap fill", timeout=RECONNECT_S)

    expected = expected_points(home_assistant, tenant, start)
    assert all(len(points) == 10 for points in expected.values()), expected
    wait_for(lambda: all_stored(tenant, expected), "every change of the outage windows in InfluxDB")
    assert_exactly_once(tenant, expected)
    assert worker.metric("hats_ha_history_rows_total") >= 4 * len(KINDS)
    later = resume_point(tenant)
    assert later is not None
    assert later > point


def test_the_recorder_probe_sees_a_change_of_attributes_only(home_assistant: HaPeer, tenant: Tenant) -> None:
    """The gap fill's tail waits until the first live change is in the recorder. When that change moved
    only attributes, a probe without them is answered `{}` from HA's state machine, forever (CI saw the
    second gap fill wait out its deadline): the probe must ask with the attributes."""
    entity = f"sensor.ws_{tenant.name}_probe"
    attributes = {"unit_of_measurement": "W", "device_class": "power", "state_class": "measurement"}
    home_assistant.set_state(entity, "7", {**attributes, "friendly_name": "before"})
    changed = home_assistant.set_state(entity, "7", {**attributes, "friendly_name": "after"})
    assert changed["last_changed"] != changed["last_updated"]  # the change moved attributes only
    stamp = parse_time_ns(changed["last_updated"]) // 1_000
    probe = recorded_request(entity, stamp)

    def ask(command: dict[str, object]) -> Any:
        payload = dict(command)
        return home_assistant.ws_call(str(payload.pop("type")), **payload)

    def recorded() -> bool:
        rows = ask(probe).get(entity, [])
        return any(row_us(row) == stamp for row in rows)

    wait_for(recorded, "the probe to find the attribute change in the recorder")
    without = ask({**probe, "no_attributes": True})
    assert without == {}, without  # what the old probe got: why it must carry the attributes


def discovery_config(tenant: Tenant) -> tuple[str, dict[str, Any]]:
    node = f"hats_{tenant.name}"
    return f"homeassistant/sensor/{node}/temperature/config", {
        "name": "Temperature", "unique_id": f"{node}_temperature", "object_id": f"{node}_temperature",
        "state_topic": f"hats/{tenant.name}/homeassistant/probe/state", "unit_of_measurement": "°C",
        "device_class": "temperature", "state_class": "measurement",
        "device": {"identifiers": [node], "name": f"Probe {tenant.name}", "manufacturer": "Acme",
                   "model": "WS-1"}}


def registry_device(ha: HaPeer, identifier: str) -> dict[str, Any] | None:
    devices: list[dict[str, Any]] = ha.ws_call("config/device_registry/list")
    return next((d for d in devices if ["mqtt", identifier] in d.get("identifiers", [])), None)


def publish_retained(pub: Session, topic: str, payload: bytes) -> None:
    info = pub.client.publish(topic, payload, qos=1, retain=True)
    pub.wait(lambda: info.mid in pub.acks, f"PUBACK for {topic}")


def set_probe(ha: HaPeer, pub: Session, topic: str, entity: str, value: str) -> None:
    """Retained, so HA gets it even if its (debounced) subscription to the state topic is not active yet."""
    publish_retained(pub, topic, value.encode())
    wait_for(lambda: (ha.state(entity) or {}).get("state") == value, f"HA's {entity} at {value}")


def test_registries_reach_core_and_the_analyst_sees_the_area(home_assistant: HaPeer, tenant: Tenant,
                                                            start_worker: Start, stack_env: dict[str, str]) -> None:
    ha = home_assistant
    area = ha.ws_call("config/area_registry/create", name=f"Room {tenant.name}")
    topic, config = discovery_config(tenant)
    # The device announces itself on Home Assistant's own (unprefixed) discovery topics, which only the
    # Home Assistant peer's account may write besides its `hats/+/homeassistant/#` (devstack/mosquitto.py).
    publisher = session(int(stack_env["HATS_MQTT_PORT"]), stack_env["HATS_MQTT_HOMEASSISTANT_USERNAME"],
                        stack_env["HATS_MQTT_HOMEASSISTANT_PASSWORD"], client_id=f"pub-{uuid.uuid4().hex[:8]}")
    with publisher as pub:
        try:
            def discovered() -> dict[str, Any] | None:
                # Again until HA has it: a config published before its (debounced) discovery subscription
                # is active reaches nobody, and retained it would outlive a crashed test for every session.
                pub.publish(topic, json.dumps(config).encode())
                return registry_device(ha, f"hats_{tenant.name}")
            device = wait_for(discovered, "HA's MQTT device", interval=1.0)
            ha.ws_call("config/device_registry/update", device_id=device["id"], area_id=area["area_id"])
            entity = f"sensor.hats_{tenant.name}_temperature"
            wait_for(lambda: ha.state(entity), "the discovered entity in HA")

            start_worker(ws_env(tenant, ha), ready_line=SUBSCRIBED)
            set_probe(ha, pub, config["state_topic"], entity, "21.5")
            with psycopg.connect(tenant.env["HATS_PG_DSN"], autocommit=True) as conn:
                def core_rows() -> tuple[Any, ...] | None:
                    return conn.execute(
                        "SELECT d.name, d.manufacturer, d.model, d.area_id, a.name, e.device_id, e.registry_name "
                        "FROM core.entities e JOIN core.devices d USING (tenant_id, device_id) "
                        "JOIN core.areas a ON a.tenant_id = d.tenant_id AND a.area_id = d.area_id "
                        "WHERE e.tenant_id = %s AND e.entity_id = %s", (tenant.name, entity)).fetchone()
                found = wait_for(core_rows, "the device, its area and the entity in core")
                assert found == (f"Probe {tenant.name}", "Acme", "WS-1", area["area_id"], f"Room {tenant.name}",
                                 device["id"], "Temperature")
                # A renamed area reaches core through area_registry_updated (and the next flush).
                ha.ws_call("config/area_registry/update", area_id=area["area_id"], name=f"Attic {tenant.name}")
                set_probe(ha, pub, config["state_topic"], entity, "21.7")
                wait_for(lambda: (core_rows() or ())[4] == f"Attic {tenant.name}", "the renamed area in core")
            with psycopg.connect(stack_env["HATS_ANALYST_DSN"]) as analyst:
                rows = analyst.execute("SELECT name, manufacturer, model, area FROM analytics.device_last_seen "
                                       "WHERE tenant_id = %s", (tenant.name,)).fetchall()
            assert (f"Probe {tenant.name}", "Acme", "WS-1", f"Attic {tenant.name}") in rows
            points = tenant.influx(f"SELECT value FROM temperature WHERE entity_id = '{entity}'")
            assert [row[1] for row in points[0]["values"]][-2:] == [21.5, 21.7]
        finally:
            publish_retained(pub, config["state_topic"], b"")
            pub.publish(topic, b"")  # HA removes the entity, and the device with its last entity
            ha.ws_call("config/area_registry/delete", area_id=area["area_id"])


def run_worker(env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ingest_worker"], env={**os.environ, **env, "HATS_HTTP_PORT": "0"},
                          capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=timeout, check=False)


def test_a_bad_token_stops_the_worker_naming_the_setting(home_assistant: HaPeer, tenant: Tenant) -> None:
    started = time.monotonic()
    result = run_worker(ws_env(tenant, home_assistant, HATS_HA_TOKEN="not-a-token"))
    assert result.returncode == 2, result.stderr
    assert "HATS_HA_TOKEN" in result.stderr
    assert "refused the access token" in result.stderr
    assert time.monotonic() - started < 30  # no retry loop against a wrong token


def test_home_assistant_down_at_start_is_not_ready_until_it_is_up(home_assistant: HaPeer, tenant: Tenant,
                                                                   start_worker: Start) -> None:
    home_assistant.stop()
    try:
        worker = start_worker(ws_env(tenant, home_assistant), ready_line=None)
        wait_for(lambda: ready(worker)[0] == 503 and "retrying in" in ready(worker)[1], "the not-ready reason")
        reason = ready(worker)[1]
        assert reason.startswith(f"not connected to Home Assistant at {home_assistant.url}")
        assert worker.metric("hats_ha_reconnects_total") >= 1
    finally:
        home_assistant.restart()
    wait_for(lambda: ready(worker) == (200, "ready"), "ready once Home Assistant is up", timeout=RECONNECT_S)
    assert worker.metric("hats_ha_connected") == 1
