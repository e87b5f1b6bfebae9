"""What the ingest worker lands: Home Assistant's MQTT feed and the raw points in InfluxDB.

Neither is computed by Dagster, so they appear as an external asset and an observable source asset:
observing the raw points records how fresh and how wide the data is, which answers "is the feed
alive?" in the UI before anyone opens a rollup.
"""


from datetime import UTC, datetime

import dagster as dg

from hats_assets.defs.common.resources import InfluxDBResource, quote_ident

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
        description="Normalised sensor points written by ingest_worker into InfluxDB hats_<tenant>, "
                    "retention policy raw: one series per entity, float `value` in canonical units, "
                    "`state` for non-numeric and availability states.",
        group_name="raw",
        kinds={"influxdb"},
        owners=["team:data-platform"],
    )],
)
def raw_points(influxdb: InfluxDBResource) -> dg.ObserveResult:
    """Newest point and series count per measurement; the data version changes when new data lands."""
    newest = 0
    for field in ("value", "state"):
        for series in influxdb.query(f'SELECT last("{field}") FROM /.*/'):
            newest = max(newest, int(series["values"][0][0]))
    series_per_measurement: dict[str, int] = {}
    for listing in influxdb.query("SHOW MEASUREMENTS"):
        for (name,) in listing["values"]:
            rows = influxdb.query(f"SHOW SERIES CARDINALITY FROM {quote_ident(name)}")
            series_per_measurement[name] = int(rows[0]["values"][0][0]) if rows else 0
    newest_at = datetime.fromtimestamp(newest / 1e9, tz=UTC) if newest else None
    return dg.ObserveResult(
        asset_key="raw_points",
        data_version=dg.DataVersion(str(newest)),
        metadata={
            "newest_point": dg.MetadataValue.timestamp(newest_at) if newest_at else dg.MetadataValue.text("none"),
            "series_total": sum(series_per_measurement.values()),
            "series_per_measurement": dg.MetadataValue.json(dict(sorted(series_per_measurement.items()))),
        },
    )


observe_raw_points_job = dg.define_asset_job("observe_raw_points", selection=dg.AssetSelection.assets("raw_points"))
observe_raw_points_schedule = dg.ScheduleDefinition(
    job=observe_raw_points_job, cron_schedule="*/5 * * * *", default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every 5 minutes: record the newest raw point and the series counts, so a stalled feed shows.",
)
