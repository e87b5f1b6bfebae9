"""Rollups of the raw points into 1 min, 5 min and 1 h windows, kept in InfluxDB's ``rollup`` policy.

``rollup_1m`` is computed in Python from the raw points (time-weighted, see ``one_minute.py``);
``rollup_5m`` and ``rollup_1h`` are exact re-aggregations of the finer rollup pushed down to InfluxDB
as ``SELECT … INTO`` (sums of ``value_s`` and ``available_s``, min of min, max of max, sum of count,
last of last). Every run first deletes its window, so a re-run replaces exactly that window.
All three share the hourly partitions and a single-run backfill policy: a backfill of any range is
one run that reads the raw data a day at a time.
"""

import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg

from hats_assets.defs.common.resources import InfluxDBResource, PostgresResource
from hats_assets.defs.core.assets import counter_entities
from hats_assets.defs.rollups.contract import KINDS, WINDOWS_NS, measurement
from hats_assets.defs.rollups.one_minute import RollupStats, roll_up
from hats_assets.defs.rollups.raw_reader import read_window
from hats_assets.partitions import chunks, context_window, hourly_partitions
from ingest_worker.contract import ROLLUP_RP

HERE = Path(__file__).parent
DELETE_WINDOW = (HERE / "delete_window.influxql").read_text()
REAGGREGATE = {kind: (HERE / f"reaggregate_{kind}.influxql").read_text() for kind in KINDS}
WATERMARKS_READ = (HERE / "watermarks_read.sql").read_text()
WATERMARKS_WRITE = (HERE / "watermarks_write.sql").read_text()
# Raw data read per query in a backfill: a day of 1,000 entities at 10 s is 8.64 M points (~0.5 GB).
RAW_CHUNK = timedelta(days=1)
TRIGGER_TAG = "hats/trigger"
ROLLUP_TAGS = {"layer": "rollup"}
OWNERS = ["team:data-platform"]


def _metadata(start: datetime, end: datetime, began: float, **values: Any) -> dict[str, Any]:
    return {
        "window_start": dg.MetadataValue.timestamp(start),
        "window_end": dg.MetadataValue.timestamp(end),
        "hours": int((end - start) / timedelta(hours=1)),
        **values,
        "duration_s": round(time.monotonic() - began, 3),
    }


def _params(start: datetime, end: datetime) -> dict[str, str]:
    return {"start": start.isoformat(), "end": end.isoformat()}


def _delete_window(influxdb: InfluxDBResource, names: list[str], start: datetime, end: datetime) -> None:
    for name in names:
        influxdb.query(DELETE_WINDOW.format(measurement=f'"{name}"'), _params(start, end))


@dg.asset(
    partitions_def=hourly_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["raw_points", "core_metadata"],
    group_name="rollups",
    kinds={"influxdb", "python"},
    owners=OWNERS,
    tags=ROLLUP_TAGS,
)
def rollup_1m(
    context: dg.AssetExecutionContext, influxdb: InfluxDBResource, postgres: PostgresResource
) -> dg.MaterializeResult:
    """Per entity and UTC minute (InfluxDB rollup.gauge_1m / counter_1m). Gauges: time-weighted mean of
    the state over the time the entity was available (unavailable time excluded, never counted as
    zero), min, max, raw point count, last value, available seconds. Meters (state_class total /
    total_increasing): consumption in the minute with meter resets handled as Home Assistant's
    statistics do, never negative. Values are in canonical units (°C, W, kWh…)."""
    began = time.monotonic()
    start, end = context_window(context)
    counters = counter_entities(postgres, influxdb.tenant)
    total = RollupStats()
    points = duplicates = 0
    for chunk_start, chunk_end in chunks(start, end, RAW_CHUNK):
        with postgres.connect() as conn:
            versions = conn.execute(WATERMARKS_READ, {"tenant": influxdb.tenant, **_params(chunk_start, chunk_end)})
            watermarks = versions.fetchall()
        window = read_window(influxdb, chunk_start, chunk_end)
        lines, stats = roll_up(window, counters, _ns(chunk_start), _ns(chunk_end), WINDOWS_NS["1m"], "1m")
        _delete_window(influxdb, [measurement(kind, "1m") for kind in KINDS], chunk_start, chunk_end)
        influxdb.write(lines, ROLLUP_RP)
        with postgres.connect() as conn, conn.cursor() as cur:
            # Every hour gets a watermark, data or not: a first point arriving later is late data too.
            seen = {hour: (version, n) for hour, version, n in watermarks}
            cur.executemany(WATERMARKS_WRITE, [
                {"tenant": influxdb.tenant, "hour": hour, "version": seen.get(hour, (0, 0))[0],
                 "points": seen.get(hour, (0, 0))[1], "run_id": context.run.run_id}
                for hour, _ in chunks(chunk_start, chunk_end, timedelta(hours=1))
            ])
        context.log.info("%s → %s: %d raw points, %d gauges, %d meters → %d rows", chunk_start, chunk_end,
                         window.points_read, stats.series["gauge"], stats.series["counter"], stats.rows)
        points += window.points_read
        duplicates += window.duplicates_dropped
        total.rows += stats.rows
        total.resets += stats.resets
        total.carried_only += stats.carried_only
        total.available_s += stats.available_s
        for kind in KINDS:
            total.series[kind] += stats.series[kind]
    series = total.series["gauge"] + total.series["counter"]
    return dg.MaterializeResult(metadata=_metadata(
        start, end, began,
        points_read=points,
        rows_written=total.rows,
        series_gauges=total.series["gauge"],
        series_meters=total.series["counter"],
        series_carried_only=total.carried_only,
        duplicates_dropped=duplicates,
        meter_resets=total.resets,
        coverage_pct=round(100 * total.available_s / ((end - start).total_seconds() * series), 2) if series else 0.0,
        trigger=context.run.tags.get(TRIGGER_TAG, "schedule, backfill or manual"),
    ))


def _reaggregate(
    context: dg.AssetExecutionContext, influxdb: InfluxDBResource, source: str, target: str
) -> dg.MaterializeResult:
    began = time.monotonic()
    start, end = context_window(context)
    written = 0
    for chunk_start, chunk_end in chunks(start, end, RAW_CHUNK):
        _delete_window(influxdb, [measurement(kind, target) for kind in KINDS], chunk_start, chunk_end)
        for kind in KINDS:
            statement = REAGGREGATE[kind].format(source=f'"{measurement(kind, source)}"',
                                                 target=f'"{measurement(kind, target)}"', window=target)
            for result in influxdb.query(statement, _params(chunk_start, chunk_end)):
                written += int(result["values"][0][1])
    context.log.info("%s → %s: %d %s rows from %s", start, end, written, target, source)
    return dg.MaterializeResult(metadata=_metadata(start, end, began, rows_written=written, source=f"rollup_{source}"))


@dg.asset(
    partitions_def=hourly_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[rollup_1m],
    group_name="rollups",
    kinds={"influxdb"},
    owners=OWNERS,
    tags=ROLLUP_TAGS,
)
def rollup_5m(context: dg.AssetExecutionContext, influxdb: InfluxDBResource) -> dg.MaterializeResult:
    """Per entity and 5 minutes (rollup.gauge_5m / counter_5m): the 1 min rollup re-aggregated exactly
    inside InfluxDB — mean weighted by available time, min of mins, max of maxes, summed counts and
    consumption, last value."""
    return _reaggregate(context, influxdb, "1m", "5m")


@dg.asset(
    partitions_def=hourly_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[rollup_5m],
    group_name="rollups",
    kinds={"influxdb"},
    owners=OWNERS,
    tags=ROLLUP_TAGS,
)
def rollup_1h(context: dg.AssetExecutionContext, influxdb: InfluxDBResource) -> dg.MaterializeResult:
    """Per entity and UTC hour (rollup.gauge_1h / counter_1h): the 5 min rollup re-aggregated exactly in
    InfluxDB; the source of the PostgreSQL warehouse."""
    return _reaggregate(context, influxdb, "5m", "1h")


def _ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000
