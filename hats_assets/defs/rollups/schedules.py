"""When the rollups run: a few minutes after each hour, and again for any hour whose raw points are not
all rolled up.

The schedule rolls up the hour that just ended. Points that arrive later are found by the late-data
sensor through the worker's per-hour ingest versions (``ops.ingest_hours`` vs ``ops.rollup_watermarks``):
points for an hour already rolled up (a device that buffered offline, a broker queue drained after an
outage, an outbox replayed), however old the hour, and hours holding raw points that were never rolled
up at all (stamped before the first rollup, or the schedule's run failed), within raw retention.
"""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg

from hats_assets.defs.common.resources import InfluxDBResource, PostgresResource
from hats_assets.defs.retention.assets import RetentionSettings
from hats_assets.defs.rollups.assets import TRIGGER_TAG, rollups
from hats_assets.defs.rollups.catch_up import covered_keys, parse_rows, plan
from hats_assets.partitions import PARTITIONS_START, hourly_partitions

OWED_HOURS_SQL = (Path(__file__).parent / "owed_hours.sql").read_text()
ROLLUP_MINUTE_OF_HOUR = 5
LATE_DATA_INTERVAL_S = 60
OWED_HOURS_PER_TICK = 48  # a tick never floods the queue (with carry-ins ≤ 96 runs); the rest follow next ticks
# A never-rolled hour is the sensor's only once it ended this long ago: until then it is the :05 schedule's
# (a slower scheduled run is still seen as pending and waited for).
UNROLLED_GRACE = timedelta(minutes=15)
PENDING_STATUSES = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                    dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]

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
    description="Rolls up every hour whose raw points are not all rolled up, with the next hour (whose "
                "carried-in state it may change): late data, written after the hour's rollup read it "
                "(ops.ingest_hours version newer than ops.rollup_watermarks), and hours with raw points never "
                f"rolled up (ended ≥ {UNROLLED_GRACE.seconds // 60} min ago, within raw retention). "
                f"Oldest first, at most {OWED_HOURS_PER_TICK} hours a tick; an hour with a run pending waits.",
)
def late_data_sensor(
    context: dg.SensorEvaluationContext, postgres: PostgresResource, influxdb: InfluxDBResource,
    retention_settings: RetentionSettings,
) -> dg.SensorResult:
    now = datetime.now(UTC)
    with postgres.connect() as conn:
        rows = conn.execute(OWED_HOURS_SQL, {
            "tenant": influxdb.tenant, "limit": OWED_HOURS_PER_TICK, "ended_by": now - UNROLLED_GRACE,
            "partitions_start": hourly_partitions.start,
            "retention_start": now - timedelta(days=retention_settings.raw_days),
        }).fetchall()
    owed, left_out = parse_rows(rows)
    pending: set[str] = set()
    if owed:
        runs = context.instance.get_runs(filters=dg.RunsFilter(job_name=rollup_job.name, statuses=PENDING_STATUSES))
        pending = {key for run in runs for key in covered_keys(run.tags)}
    decided = plan(owed, left_out, PARTITIONS_START, hourly_partitions.get_last_partition_key(), pending,
                   retention_settings.raw_days)
    waiting = ([f"{len(decided.waiting)} owed hour(s) wait for a pending rollup run: {', '.join(decided.waiting)}"]
               if decided.waiting else [])
    if not decided.requests:
        return dg.SensorResult(skip_reason="; ".join([*(waiting or [
            "nothing to roll up: every hour with raw points within the partitions and raw retention is rolled up "
            f"and current (hours that ended under {UNROLLED_GRACE.seconds // 60} min ago are the schedule's)"]),
            *decided.notes]))
    late = sum(hour.kind == "late" for hour in owed)
    context.log.info("rollups owed: %d hour(s) of late data, %d never rolled up; requesting %s%s", late,
                     len(owed) - late, ", ".join(r.partition_key for r in decided.requests),
                     "".join(f"; {note}" for note in [*waiting, *decided.notes]))
    return dg.SensorResult(run_requests=[
        dg.RunRequest(run_key=r.run_key, partition_key=r.partition_key, tags={TRIGGER_TAG: r.reason})
        for r in decided.requests
    ])
