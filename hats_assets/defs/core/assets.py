"""What the worker learns about devices and entities: PostgreSQL ``core`` (devices, entities, units).

Written by ingest_worker from discovery configs and state attributes, so it is observed, not computed.
The rollups depend on it: an entity's ``state_class`` decides whether it is a gauge (time-weighted mean)
or a meter (consumption), and its canonical unit is what the analyst views print.
"""

import hashlib
from pathlib import Path
from typing import Any

import dagster as dg

from hats_assets.defs.common.resources import PostgresResource
from hats_assets.defs.common.tenants import homes
from hats_assets.defs.rollups.contract import COUNTER_STATE_CLASSES

HERE = Path(__file__).parent
ENTITIES_SQL = (HERE / "entities.sql").read_text()
COUNTERS_SQL = (HERE / "counters.sql").read_text()


def counter_entities(postgres: PostgresResource, tenant: str) -> frozenset[str]:
    """Entity ids whose state_class makes them meters (``total_increasing`` / ``total``)."""
    with postgres.connect() as conn:
        rows = conn.execute(COUNTERS_SQL, {"tenant": tenant, "state_classes": list(COUNTER_STATE_CLASSES)}).fetchall()
    return frozenset(str(row[0]) for row in rows)


@dg.multi_observable_source_asset(
    specs=[dg.AssetSpec(
        "core_metadata",
        deps=["ha_mqtt_feed"],
        description="Devices and entities Home Assistant announced (PostgreSQL core.devices / core.entities): "
                    "measurement, device_class, state_class, original and canonical unit and the conversion "
                    "applied. Kept by ingest_worker; decides gauge vs meter for the rollups.",
        group_name="raw",
        kinds={"postgres"},
        owners=["team:data-platform"],
    )],
)
def core_metadata(postgres: PostgresResource) -> dg.ObserveResult:
    """Entity counts per measurement and state class over every active home, and per home; the data version
    moves when any home's metadata changes."""
    per_home: dict[str, dict[str, Any]] = {}
    table: list[dict[str, Any]] = []
    versions: list[str] = []
    with postgres.connect() as conn:
        for home in homes(postgres, []):
            rows = conn.execute(ENTITIES_SQL, {"tenant": home.tenant_id}).fetchall()
            devices, changed = conn.execute(
                "SELECT (SELECT count(*) FROM core.devices WHERE tenant_id = %(t)s), "
                "(SELECT coalesce(max(last_seen), 'epoch') FROM core.entities WHERE tenant_id = %(t)s)",
                {"t": home.tenant_id}).fetchone() or (0, None)
            mine = [{"measurement": m, "state_class": sc or None, "entities": int(n), "devices": int(d),
                     "converted": int(c), "units": u} for m, sc, n, d, c, u in rows]
            table += [{"tenant_id": home.tenant_id, **row} for row in mine]
            per_home[home.tenant_id] = {"entities": sum(r["entities"] for r in mine), "devices": int(devices),
                                        "budget": home.series_budget}
            versions.append(f"{home.tenant_id}:{per_home[home.tenant_id]['entities']}:{changed}")
    return dg.ObserveResult(
        asset_key="core_metadata",
        data_version=dg.DataVersion(hashlib.sha256("|".join(versions).encode()).hexdigest()[:16]),
        metadata={
            "tenants": len(per_home),
            "entities": sum(r["entities"] for r in table),
            "devices": sum(h["devices"] for h in per_home.values()),
            "meters": sum(r["entities"] for r in table if r["state_class"] in COUNTER_STATE_CLASSES),
            "unit_conversions": sum(r["converted"] for r in table),
            "per_tenant": dg.MetadataValue.json(per_home),
            "by_measurement": dg.MetadataValue.json(table[:500]),
        },
    )
