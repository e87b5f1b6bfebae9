"""When the rollups run: a few minutes after each hour, and again for any hour whose raw points are not
all rolled up.

The schedule rolls up the hour that just ended. Points that arrive later are found by the late-data
sensor through the worker's per-hour ingest versions (``ops.ingest_hours`` vs ``ops.rollup_watermarks``):
points for an hour already rolled up (a device that buffered offline, a broker queue drained after an
outage, an outbox replayed), however old the hour, and hours holding raw points that were never rolled
up at all (stamped before the first rollup, or the schedule's run failed), within raw retention.
"""

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg

from hats_assets.defs.common.faults import RUN_RETRY_TAGS
from hats_assets.defs.common.resources import PostgresResource
from hats_assets.defs.common.tenants import TENANTS_TAG, TenantSelection, homes, tenants_run_config, tenants_tag
from hats_assets.defs.rollups.assets import TRIGGER_TAG, rollups
from hats_assets.defs.rollups.catch_up import Plan, Request, covered_keys, parse_rows, plan
from hats_assets.partitions import PARTITIONS_START, hourly_partitions

OWED_HOURS_SQL = (Path(__file__).parent / "owed_hours.sql").read_text()
ROLLUP_MINUTE_OF_HOUR = 5
LATE_DATA_INTERVAL_S = 60
OWED_HOURS_PER_TICK = 48  # per home: with carry-ins ≤ 96 hourly keys; the rest follow next ticks
REQUESTS_PER_TICK = 96  # runs a tick asks for (each serves every home owing its hour); the rest follow
TRIGGER_CHARS = 500
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
    tags=RUN_RETRY_TAGS,
)

rollup_schedule = dg.build_schedule_from_partitioned_job(
    rollup_job, minute_of_hour=ROLLUP_MINUTE_OF_HOUR, default_status=dg.DefaultScheduleStatus.RUNNING,
    description=f"Each hour at :{ROLLUP_MINUTE_OF_HOUR:02d} UTC, roll up the hour that just ended "
                "(later arrivals are picked up by the late_data_sensor).",
)


def _pending(context: dg.SensorEvaluationContext) -> dict[str | None, set[str]]:
    """Hourly keys with a rollup run queued or in progress, per home it serves (None: a run of every home)."""
    pending: dict[str | None, set[str]] = {}
    for run in context.instance.get_runs(filters=dg.RunsFilter(job_name=rollup_job.name, statuses=PENDING_STATUSES)):
        named: list[str | None] = [t for t in run.tags.get(TENANTS_TAG, "").split(",") if t]
        for tenant in named or [None]:
            pending.setdefault(tenant, set()).update(covered_keys(run.tags))
    return pending


def merge(decided: Mapping[str, Plan], limit: int = REQUESTS_PER_TICK) -> list[dg.RunRequest]:
    """One run per hourly key for every home that owes it: the key's homes ride in run config and the
    ``hats/tenants`` tag, so a late point re-rolls only its home's hours. The run key names every
    (home, version) it covers, so a repeated tick asks for nothing new."""
    by_key: dict[str, list[tuple[str, Request]]] = {}
    for tenant, planned in sorted(decided.items()):
        for request in planned.requests:
            by_key.setdefault(request.partition_key, []).append((tenant, request))
    out = []
    for key, owed in sorted(by_key.items())[:limit]:
        tenants = [tenant for tenant, _ in owed]
        pieces = ";".join(f"{t}={r.run_key}" for t, r in owed)  # one home: readable; many: their digest
        identity = pieces if len(owed) == 1 else hashlib.sha256(pieces.encode()).hexdigest()[:16]
        first = f"{owed[0][0]}: {owed[0][1].reason}"
        why = first if len(owed) == 1 else f"{len(owed)} homes ({', '.join(tenants[:5])}…): {first}"
        out.append(dg.RunRequest(run_key=f"{key}:{identity}", partition_key=key, run_config=tenants_run_config(tenants),
                                 tags={TRIGGER_TAG: why[:TRIGGER_CHARS], **tenants_tag(tenants)}))
    return out


@dg.sensor(
    job=rollup_job,
    minimum_interval_seconds=LATE_DATA_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Rolls up, for each active home, every hour whose raw points are not all rolled up, with the next "
                "hour (whose carried-in state it may change): late data, written after the hour's rollup read it "
                "(ops.ingest_hours version newer than ops.rollup_watermarks), and hours with raw points never "
                f"rolled up or whose rollup failed (ended ≥ {UNROLLED_GRACE.seconds // 60} min ago, within the "
                "home's raw retention). One run per hour for exactly the homes that owe it (run config "
                f"tenant_selection.tenants, tag hats/tenants); oldest first, at most {OWED_HOURS_PER_TICK} hours "
                "a home a tick; an hour with a run pending for that home waits.",
)
def late_data_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource,
                     tenant_selection: TenantSelection) -> dg.SensorResult:
    now = datetime.now(UTC)
    active = {home.tenant_id: home for home in homes(postgres, tenant_selection.tenants)}
    with postgres.connect() as conn:
        rows = conn.execute(OWED_HOURS_SQL, {
            "tenants": list(active), "limit": OWED_HOURS_PER_TICK, "ended_by": now - UNROLLED_GRACE,
            "partitions_start": hourly_partitions.start, "now": now,
        }).fetchall()
    per_home: dict[str, list[Any]] = {}
    for tenant, *row in rows:
        per_home.setdefault(tenant, []).append(row)
    pending = _pending(context) if rows else {}
    last_key = hourly_partitions.get_last_partition_key()
    decided: dict[str, Plan] = {}
    waiting: list[str] = []
    notes: list[str] = []
    owed_total = late = 0
    for tenant, home_rows in sorted(per_home.items()):
        owed, left_out = parse_rows(home_rows)
        owed_total += len(owed)
        late += sum(hour.kind == "late" for hour in owed)
        decided[tenant] = plan(owed, left_out, PARTITIONS_START, last_key,
                               pending.get(None, set()) | pending.get(tenant, set()), active[tenant].raw_days)
        if decided[tenant].waiting:
            waiting.append(f"{tenant}: {len(decided[tenant].waiting)} owed hour(s) wait for a pending rollup run: "
                           f"{', '.join(decided[tenant].waiting)}")
        notes += [f"{tenant}: {note}" for note in decided[tenant].notes]
    requests = merge(decided)
    if not requests:
        return dg.SensorResult(skip_reason="; ".join([*(waiting or [
            "nothing to roll up: every hour with raw points within the partitions and each home's raw retention "
            f"is rolled up and current (hours that ended under {UNROLLED_GRACE.seconds // 60} min ago are the "
            "schedule's)"]), *notes]))
    context.log.info("rollups owed: %d hour(s) of late data, %d never rolled up, in %d home(s); requesting %s%s",
                     late, owed_total - late, len(decided), ", ".join(r.partition_key or "" for r in requests),
                     "".join(f"; {note}" for note in [*waiting, *notes][:20]))
    return dg.SensorResult(run_requests=requests)
