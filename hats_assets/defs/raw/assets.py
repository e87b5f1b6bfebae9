"""What the ingest worker lands: Home Assistant's MQTT feed and the raw points in InfluxDB.

Neither is computed by Dagster, so they appear as an external asset and an observable source asset:
observing the raw points records how fresh and how wide the data is, which answers "is the feed
alive?" in the UI before anyone opens a rollup.
"""


from datetime import UTC, datetime
from typing import Any

import dagster as dg

from hats_assets.defs.common.resources import InfluxDBResource, InfluxQueryError, PostgresResource, quote_ident
from hats_assets.defs.common.tenants import homes

ha_mqtt_feed = dg.AssetSpec(
    "ha_mqtt_feed",
    description="Home Assistant state changes published to Mosquitto (statestream, eventstream, "
                "discovery devices); consumed by the always-on ingest_worker, not by Dagster.",
    group_name="raw",
    kinds={"mqtt"},
    owners=["team:data-platform"],
)


@dg.multi_observable_source_asset(
    specs=[dg.AssetSpec(
        "raw_points",
        deps=[ha_mqtt_feed],
        description="Normalised sensor points written by ingest_worker into each home's InfluxDB hats_<tenant>, "
                    "retention policy raw: one series per entity, float `value` in canonical units, "
                    "`state` for non-numeric and availability states.",
        group_name="raw",
        kinds={"influxdb"},
        owners=["team:data-platform"],
    )],
)
def raw_points(influxdb: InfluxDBResource, postgres: PostgresResource) -> dg.ObserveResult:
    """Newest point and series count per measurement of every active home; the data version changes when
    new data lands in any of them. A home whose database cannot be read is listed, not fatal."""
    newest_overall = 0
    per_home: dict[str, dict[str, Any]] = {}
    for home in homes(postgres, []):
        db = influxdb.for_tenant(home.tenant_id)
        try:
            newest = 0
            for field in ("value", "state"):
                for series in db.query(f"SELECT last({quote_ident(field)}) FROM /.*/"):
                    newest = max(newest, int(series["values"][0][0]))
            series_per_measurement: dict[str, int] = {}
            for listing in db.query("SHOW MEASUREMENTS"):
                for (name,) in listing["values"]:
                    rows = db.query(f"SHOW SERIES CARDINALITY FROM {quote_ident(name)}")
                    series_per_measurement[name] = int(rows[0]["values"][0][0]) if rows else 0
        except InfluxQueryError as exc:
            per_home[home.tenant_id] = {"error": str(exc)[:300]}
            continue
        newest_overall = max(newest_overall, newest)
        per_home[home.tenant_id] = {
            "newest_point": datetime.fromtimestamp(newest / 1e9, tz=UTC).isoformat() if newest else None,
            "series_total": sum(series_per_measurement.values()),
            "series_per_measurement": dict(sorted(series_per_measurement.items()))}
    newest_at = datetime.fromtimestamp(newest_overall / 1e9, tz=UTC) if newest_overall else None
    return dg.ObserveResult(
        asset_key="raw_points",
        data_version=dg.DataVersion(str(newest_overall)),
        metadata={
            "newest_point": dg.MetadataValue.timestamp(newest_at) if newest_at else dg.MetadataValue.text("none"),
            "tenants": len(per_home),
            "series_total": sum(h.get("series_total", 0) for h in per_home.values()),
            "per_tenant": dg.MetadataValue.json(per_home),
        },
    )


observe_raw_points_job = dg.define_asset_job(
    "observe_raw_points", selection=dg.AssetSelection.assets("raw_points"),
    description="Observe raw_points: each home's newest raw point and series per measurement, so a stalled feed "
                "shows in the UI.")
observe_raw_points_schedule = dg.ScheduleDefinition(
    job=observe_raw_points_job, cron_schedule="*/5 * * * *", default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every 5 minutes: record the newest raw point and the series counts, so a stalled feed shows.",
)
