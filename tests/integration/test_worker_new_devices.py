"""A device discovered while it publishes: zigbee2mqtt sends a new device's retained discovery configs and,
right behind them, its states. A worker that subscribes to a state topic only once it has handled the
config asks the broker too late: every state the broker routed before the SUBSCRIBE arrived is gone (the
demo lost 2–6 readings per run this way, `hats run` then waited for them for ever). The worker subscribes
to zigbee2mqtt's device topics from the start (`HATS_DISCOVERY_STATE_FILTERS`), and one publisher's
messages reach it in order, so the config is handled before the states it explains. A report resent
(QoS 1 after a broker restart) is one point, as it is one state in Home Assistant."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Tenant, wait_for
from tests.integration.test_worker_durability import Start, publisher
from tests.integration.test_worker_formats import DISCOVERY, pg_rows, sample, select, topic

pytestmark = pytest.mark.integration

DEVICES = 40
READINGS = 3  # per device, published back to back right after its configs
KEYS = ("temperature", "humidity")


def config(tenant: Tenant, device: int, key: str) -> tuple[str, bytes]:
    state_topic = topic(tenant, f"zigbee2mqtt/new_sensor_{device:03d}")
    body = {"state_topic": state_topic, "value_template": f"{{{{ value_json.{key} }}}}",
            "unit_of_measurement": "°C" if key == "temperature" else "%", "device_class": key,
            "state_class": "measurement", "object_id": f"new_sensor_{device:03d}_{key}",
            "unique_id": f"0x00158d00{device:08x}_{key}_zigbee2mqtt",
            "device": {"identifiers": [f"zigbee2mqtt_0x00158d00{device:08x}"], "name": f"new_sensor_{device:03d}"}}
    return topic(tenant, f"{DISCOVERY}/sensor/0x00158d00{device:08x}/{key}/config"), json.dumps(body).encode()


def reading(device: int, n: int) -> dict[str, float]:
    return {"temperature": round(15 + device * 0.1 + n * 0.01, 2), "humidity": float(40 + n)}


def test_a_new_devices_first_states_right_behind_its_configs_all_land(tenant: Tenant, start_worker: Start) -> None:
    worker = start_worker(tenant.env)
    pub = publisher(tenant)
    for device in range(DEVICES):
        for key in KEYS:
            config_topic, body = config(tenant, device, key)
            pub.publish(body, topic=config_topic, retain=True)
        state_topic = topic(tenant, f"zigbee2mqtt/new_sensor_{device:03d}")
        for n in range(READINGS):  # not retained, as zigbee2mqtt publishes device states by default
            pub.publish(json.dumps(reading(device, n)).encode(), topic=state_topic)
        # The last report again, as a QoS 1 publisher resends it after a broker restart: not a second point.
        pub.publish(json.dumps(reading(device, READINGS - 1)).encode(), topic=state_topic)
    # A device zigbee2mqtt does not expose to Home Assistant publishes there too: no config explains it.
    pub.publish(b'{"temperature":99.9}', topic=topic(tenant, "zigbee2mqtt/not_in_home_assistant"))
    pub.close()

    expected = {(f"sensor.new_sensor_{device:03d}_{key}", reading(device, n)[key])
                for device in range(DEVICES) for n in range(READINGS) for key in KEYS}
    wait_for(lambda: len(select(tenant, "SELECT * FROM raw./.*/")) >= len(expected),
             f"all {len(expected)} values of {DEVICES} new devices", timeout=60)
    wait_for(lambda: sample(worker, "hats_messages_ignored_total", source="discovery", why="repeated_payload")
             == DEVICES, "each device's resent report, counted as ignored")
    found = select(tenant, "SELECT * FROM raw./.*/")
    assert sorted((row["entity_id"], row["value"]) for row in found) == sorted(expected)
    assert {row["measurement"] for row in found} == set(KEYS)
    assert worker.stop() == 0
    # The state no config explains is kept, with its reason, to be replayed should its config come.
    assert worker.counters()["dead_lettered"] == 1
    assert pg_rows(tenant, "SELECT topic, reason FROM ops.dead_letters WHERE tenant_id = %s", tenant.name) == [
        (topic(tenant, "zigbee2mqtt/not_in_home_assistant"), "schema")]
