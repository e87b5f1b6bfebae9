"""When the rollups run: a few minutes after each hour, and again for any hour that received late data.

The schedule rolls up the hour that just ended; points stamped in an hour that was already rolled up
(a device that buffered offline, a broker queue drained after an outage, an outbox replayed) are found
by the late-data sensor through the worker's per-hour ingest versions, however old the hour is.
"""

from datetime import timedelta
from pathlib import Path

import dagster as dg

from hats_assets.defs.common.resources import InfluxDBResource, PostgresResource
from hats_assets.defs.rollups.assets import TRIGGER_TAG, rollups
from hats_assets.partitions import hour_key, hourly_partitions

LATE_HOURS_SQL = (Path(__file__).parent / "late_hours.sql").read_text()
ROLLUP_MINUTE_OF_HOUR = 5
LATE_DATA_INTERVAL_S = 60
LATE_HOURS_PER_TICK = 48  # a tick never floods the queue; the rest follow on the next ticks

rollup_job = dg.define_asset_job(
    "rollup_hourly_job",
    selection=[rollups],
    description="Raw points → 1 min → 5 min → 1 h rollups for one hour (or a range, in one run).",
    executor_def=dg.in_process_executor,  # three short sequential steps: one process, no per-step start-up
)

rollup_schedule = dg.build_schedule_from_partitioned_job(
    rollup_job, minute_of_hour=ROLLUP_MINUTE_OF_HOUR, default_status=dg.DefaultScheduleStatus.RUNNING,
    description=f"Each hour at :{ROLLUP_MINUTE_OF_HOUR:02d} UTC, roll up the hour that just ended "
                "(later arrivals are picked up by the late_data_sensor).",
)


@dg.sensor(
    job=rollup_job,
    minimum_interval_seconds=LATE_DATA_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Re-rolls an hour (and the next, whose carried-in state it may change) when the worker "
                "has written points for it after its rollup read it (ops.ingest_hours vs ops.rollup_watermarks).",
)
def late_data_sensor(
    context: dg.SensorEvaluationContext, postgres: PostgresResource, influxdb: InfluxDBResource
) -> dg.SensorResult:
    with postgres.connect() as conn:
        late = conn.execute(LATE_HOURS_SQL, {"tenant": influxdb.tenant, "limit": LATE_HOURS_PER_TICK}).fetchall()
    if not late:
        return dg.SensorResult(skip_reason="no points arrived for an hour after it was rolled up")
    last_key = hourly_partitions.get_last_partition_key()
    requests: dict[str, dg.RunRequest] = {}
    for hour, version, late_points, rolled_at in late:
        reason = (f"late data: {late_points} point(s) for {hour_key(hour)} written after its rollup at "
                  f"{rolled_at:%Y-%m-%d %H:%M:%S} UTC (ingest version {version})")
        for key, why in ((hour_key(hour), reason), (hour_key(hour + timedelta(hours=1)), f"carry-in of {reason}")):
            if key in requests or last_key is None or key > last_key:
                continue
            requests[key] = dg.RunRequest(
                run_key=f"late:{key}:{version}", partition_key=key,
                tags={TRIGGER_TAG: why},
            )
    context.log.info("late data in %d hour(s): requesting %s", len(late), ", ".join(requests))
    return dg.SensorResult(run_requests=list(requests.values()))
