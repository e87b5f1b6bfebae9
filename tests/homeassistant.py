"""What tests publish as Home Assistant and how they point Dagster assets at a test tenant."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import dagster as dg

from ha_simulator.publish import Publisher, Target
from hats_assets.defs.common.influx_retention import InfluxRetentionResource
from hats_assets.defs.common.resources import InfluxDBResource, PostgresResource
from hats_assets.defs.common.tenants import TenantSelection
from hats_assets.defs.retention.assets import RetentionSettings
from ingest_worker.tls import mqtt_context
from tests.conftest import Tenant


def state_changed(entity_id: str, state: str, at: datetime, **attributes: object) -> bytes:
    """An eventstream `state_changed` event whose new state was last updated at `at`."""
    new_state = {"entity_id": entity_id, "state": state, "attributes": attributes,
                 "last_changed": at.isoformat(), "last_updated": at.isoformat(), "context": {"id": "x"}}
    return json.dumps({"event_type": "state_changed",
                       "event_data": {"entity_id": entity_id, "old_state": None, "new_state": new_state}}).encode()


def publish(tenant: Tenant, payloads: list[bytes]) -> None:
    env = tenant.env
    publisher = Publisher(Target("127.0.0.1", int(env["HATS_MQTT_PORT"]), env["HATS_MQTT_PUBLISHER_USERNAME"],
                                 env["HATS_MQTT_PUBLISHER_PASSWORD"], tenant.topic, tls=mqtt_context(env)))
    try:
        for payload in payloads:
            publisher.publish(payload)
    finally:
        publisher.close()


def asset_resources(tenant: Tenant) -> dict[str, object]:
    """The code location's resources, its runs and sensors serving the test tenant alone (the shared test
    stack holds every other test's tenants too)."""
    env = tenant.env
    return {
        "influxdb": InfluxDBResource(url=env["HATS_INFLUX_URL"], username=env["HATS_INFLUX_DAGSTER_USERNAME"],
                                     password=env["HATS_INFLUX_DAGSTER_PASSWORD"], ca_file=env["HATS_INFLUX_CA_FILE"]),
        # The write gate's retention endpoint (the code location holds no InfluxDB admin credential).
        "influxdb_retention": InfluxRetentionResource(url=env["HATS_INFLUX_RETENTION_URL"],
                                                      username=env["HATS_INFLUX_RETENTION_USERNAME"],
                                                      password=env["HATS_INFLUX_RETENTION_PASSWORD"],
                                                      ca_file=env["HATS_INFLUX_CA_FILE"]),
        "postgres": PostgresResource(dsn=env["HATS_DAGSTER_DSN"]),
        "tenant_selection": TenantSelection(tenants=[tenant.name]),
        "retention_settings": RetentionSettings(),  # the defaults: raw points kept 30 days
    }


def metadata_of(result: dg.ExecuteInProcessResult, asset: str) -> Mapping[str, Any]:
    """The metadata of one asset's materialisation in a run (a multi-asset reports several assets; a
    single-run backfill reports the same metadata once per partition)."""
    events = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(asset)]
    assert events, f"{asset} was not materialised"
    materialization = events[0].materialization
    assert materialization is not None
    return materialization.metadata
