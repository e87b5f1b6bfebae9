"""Rollups of the raw points into 1 min, 5 min and 1 h windows, kept in InfluxDB's ``rollup`` policy.

One step computes all three (``compute.py``): the 1 min rows need the raw points, and the 5 min and
1 h rows are exact re-aggregations of them already in memory. They stay three assets with lineage
``rollup_1m → rollup_5m → rollup_1h`` so the UI shows each window's own metadata, and they are always
materialised together (``can_subset=False``). The same read of the raw points also gives the time in
each state per hour of two-state and text-state entities (``rollup_states_1h``, ``state_durations.py``):
a fourth asset of the same step, so the raw data is never read twice. Every run first deletes its window
in all four, so a re-run replaces exactly that window. Hourly partitions with a single-run backfill policy: a backfill
of any range is one run that reads the raw data a day at a time.

Every home the run serves (``common/tenants.py``) is rolled up on its own, in its own database. A home whose
rollup fails (InfluxDB refused a write, a query timed out) is recorded — ``ops.dq_results`` check
``rollup_stored`` failed for its hours, which holds them out of the warehouse, and its watermarks for them
are removed, so the late-data sensor asks for those hours again for that home only — and the other homes go
on; the materialisation's metadata lists per home what was done.

A store gone in the middle (``common/faults.py``) stops the step, which is retried. Nothing can be left
half-written by it: before a home's window is deleted in InfluxDB, its watermarks are removed and its hours
marked ``rollup_stored`` failed ("interrupted") in one committed transaction; only once every line is
written do the watermarks and the passing ``rollup_stored`` land, again together. Wherever it stops, an
hour is either complete and marked, or unmarked and held out of the warehouse until a run rolls it again.
"""

import functools
import itertools
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg

from hats_assets.defs.common import tracing
from hats_assets.defs.common.faults import STEP_RETRY_POLICY, step_faults, store_addresses
from hats_assets.defs.common.resources import (
    WRITE_CHUNK_LINES,
    InfluxDBResource,
    PostgresResource,
    TenantInflux,
    quote_ident,
    window_params,
)
from hats_assets.defs.common.tenants import Home, Outcomes, TenantSelection, run_homes
from hats_assets.defs.core.assets import counter_entities
from hats_assets.defs.quality.results import Verdict, record
from hats_assets.defs.rollups.compute import WINDOWS, RollupStats, compute, lines, state_lines
from hats_assets.defs.rollups.contract import KINDS, STATE_MEASUREMENT, measurement
from hats_assets.defs.rollups.raw_reader import RAW_CHUNK, read_window_for_run
from hats_assets.partitions import chunks, context_window, epoch_ns, hour_key, hourly_partitions
from ingest_worker.contract import ROLLUP_RP

HERE = Path(__file__).parent
DELETE_WINDOW = (HERE / "delete_window.influxql").read_text()
WATERMARKS_READ = (HERE / "watermarks_read.sql").read_text()
WATERMARKS_WRITE = (HERE / "watermarks_write.sql").read_text()
INTERRUPTED_CLEAR = (HERE / "interrupted_clear.sql").read_text()
WATERMARKS_FORGET = ("DELETE FROM ops.rollup_watermarks WHERE tenant_id = %(tenant)s AND hour >= %(start)s "
                     "AND hour < %(end)s")
ROLLUP_MEASUREMENTS = (*(measurement(kind, name) for name, _ in WINDOWS for kind in KINDS), STATE_MEASUREMENT)
STORED_CHECK = "rollup_stored"  # the rollup's own per-home result in ops.dq_results (a gate, like a check)
WRITERS = 2  # measured: 1.44 M lines in 6.7 s from one thread, 4.9 s from two
TRIGGER_TAG = "hats/trigger"
# What an hour marked before its window is replaced says until the rollup finishes (it stays if it never does).
INTERRUPTED_ERROR = "rollup interrupted: its window was being replaced when the run stopped; it is rolled up again"
INTERRUPTED_LEAVES = ("the home's hours being rolled up are left unmarked (no watermark, rollup_stored failed: the "
                      "warehouse holds them out) and are rolled up again by the retry or the late-data sensor; "
                      "homes and hours before them are complete")
ROLLUP_TAGS = {"layer": "rollup"}
OWNERS = ["team:data-platform"]
DESCRIPTIONS = {
    "rollup_1m": "Per entity and UTC minute (InfluxDB rollup.gauge_1m / counter_1m). Gauges: time-weighted "
                 "mean of the state over the time the entity was available (unavailable time excluded, never "
                 "counted as zero), min, max, raw point count, last value, available seconds. Meters "
                 "(state_class total / total_increasing): consumption with meter resets handled as Home "
                 "Assistant's statistics do, never negative. Canonical units (°C, W, kWh…).",
    "rollup_5m": "Per entity and 5 minutes (rollup.gauge_5m / counter_5m): the 1 min rows re-aggregated exactly "
                 "(mean weighted by available time, min of mins, max of maxes, summed counts and consumption).",
    "rollup_1h": "Per entity and UTC hour (rollup.gauge_1h / counter_1h): exact re-aggregation of the 5 min rows; "
                 "the source of the PostgreSQL warehouse.",
    "rollup_states_1h": "Per entity, UTC hour and state (rollup.state_1h) of two-state entities (on/off, open/"
                        "closed…) and text-state entities (enum sensors, input_select, climate modes): time held "
                        "(exact ns) and entries into the state (a change from another state; unavailable/unknown "
                        "count as states). At most 10 states an hour per entity, the rest as '(other)'.",
}


def _spec(name: str, deps: list[str]) -> dg.AssetSpec:
    return dg.AssetSpec(name, deps=deps, description=DESCRIPTIONS[name], group_name="rollups",
                        kinds={"influxdb", "python"}, owners=OWNERS, tags=ROLLUP_TAGS)


@functools.cache
def _writers() -> ThreadPoolExecutor:
    """The process's writer threads (a pool per home started threads for every home)."""
    return ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="rollup-write")


def _write(influxdb: TenantInflux, encoded: Iterator[str]) -> int:
    """Encode here while up to ``WRITERS`` earlier batches are written: InfluxDB parses each on a core."""
    written = 0
    pending: deque[Future[int]] = deque()
    try:
        while batch := list(itertools.islice(encoded, WRITE_CHUNK_LINES)):
            if len(pending) == WRITERS:
                written += pending.popleft().result()
            pending.append(_writers().submit(influxdb.write, batch, ROLLUP_RP))
        while pending:
            written += pending.popleft().result()
    finally:
        for future in pending:  # an error above: let the batches in flight finish before the caller goes on
            future.exception()
    return written


@dg.multi_asset(
    specs=[_spec("rollup_1m", ["raw_points", "core_metadata"]), _spec("rollup_5m", ["rollup_1m"]),
           _spec("rollup_1h", ["rollup_5m"]), _spec("rollup_states_1h", ["raw_points", "core_metadata"])],
    partitions_def=hourly_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    can_subset=False,
    retry_policy=STEP_RETRY_POLICY,
)
def rollups(
    context: dg.AssetExecutionContext, influxdb: InfluxDBResource, postgres: PostgresResource,
    tenant_selection: TenantSelection,
) -> Any:
    began = time.monotonic()
    if _checks_follow(context):  # the checks run next in this process: import GX meanwhile
        from hats_assets.defs.quality.expectations import warm_up

        warm_up()
    start, end = context_window(context)
    outcomes = Outcomes(context.log)
    total = RollupStats()
    with (step_faults(context, "the rollup (rollup_1m, rollup_5m, rollup_1h, rollup_states_1h)",
                      store_addresses(influxdb.url, postgres.dsn)) as progress,
          tracing.step(context), postgres.session()):  # one connection for every home of the step
        for home, outcome in outcomes.each(run_homes(context, postgres, tenant_selection)):
            stats = RollupStats()
            for chunk_start, chunk_end in chunks(start, end, RAW_CHUNK):
                progress.at(f"home {home.tenant_id}, hours {hour_key(chunk_start)} to {hour_key(chunk_end)} UTC "
                            "(end exclusive)", INTERRUPTED_LEAVES)

                def roll(home: Home = home, chunk: tuple[datetime, datetime] = (chunk_start, chunk_end),
                         stats: RollupStats = stats) -> dict[str, Any]:
                    return _roll_home(context, influxdb.for_tenant(home.tenant_id), postgres, *chunk, stats)

                if not outcomes.guard(home, outcome, roll):
                    hours = _hour_keys(chunk_start, chunk_end)
                    _forget_watermarks(postgres, home.tenant_id, chunk_start, chunk_end)
                    record(postgres, context.run.run_id, home.tenant_id, "rollup_1m", STORED_CHECK,
                           (chunk_start, chunk_end), Verdict([{"error": outcome.error, "hours": hours}], len(hours)))
                    break  # this home's later days wait for the targeted retry; the other homes go on
            total.add(stats)
    series = len(total.series["gauge"]) + len(total.series["counter"])
    per_home = outcomes.metadata()
    common: dict[str, Any] = {
        "window_start": dg.MetadataValue.timestamp(start),
        "window_end": dg.MetadataValue.timestamp(end),
        "hours": int((end - start) / timedelta(hours=1)),
        "series_gauges": len(total.series["gauge"]),
        "series_meters": len(total.series["counter"]),
        "trigger": context.run.tags.get(TRIGGER_TAG, "schedule, backfill or manual"),
        "tenants": per_home["tenants"], "tenants_ok": per_home["tenants_ok"],
        "tenants_failed": per_home["tenants_failed"],
        "duration_s": round(time.monotonic() - began, 3),
    }
    yield dg.MaterializeResult(asset_key="rollup_1m", metadata={
        **common,
        "points_read": per_home.get("points_read", 0),
        "rows_written": total.rows.get("1m", 0),
        "series_carried_only": total.carried_only,
        "duplicates_dropped": per_home.get("duplicates_dropped", 0),
        "meter_resets": total.resets,
        "coverage_pct": round(100 * total.available_s / ((end - start).total_seconds() * series), 2) if series else 0.0,
        "per_tenant": per_home["per_tenant"],
    })
    for name in ("5m", "1h"):
        yield dg.MaterializeResult(asset_key=f"rollup_{name}",
                                   metadata={**common, "rows_written": total.rows.get(name, 0)})
    yield dg.MaterializeResult(asset_key="rollup_states_1h", metadata={
        **common, "series_named_states": len(total.named), "rows_written": total.state_rows})


def _hour_keys(start: datetime, end: datetime) -> list[str]:
    return [hour_key(hour) for hour, _ in chunks(start, end, timedelta(hours=1))]


def _forget_watermarks(postgres: PostgresResource, tenant: str, start: datetime, end: datetime) -> None:
    """A home's hours whose rollup failed are owed again: without a watermark the late-data sensor sees them
    (``owed_hours.sql``, kind unrolled) and asks for a run of that home alone."""
    with postgres.connect() as conn:
        conn.execute(WATERMARKS_FORGET, {"tenant": tenant, "start": start, "end": end})


def _roll_home(context: dg.AssetExecutionContext, db: TenantInflux, postgres: PostgresResource,
               chunk_start: datetime, chunk_end: datetime, stats: RollupStats) -> dict[str, Any]:
    """One home's rollup of one chunk (a day at most): read, compute, replace the window, watermark it."""
    counters = counter_entities(postgres, db.tenant)
    with postgres.connect() as conn:
        watermarks = conn.execute(WATERMARKS_READ, {"tenant": db.tenant,
                                                    **window_params(chunk_start, chunk_end)}).fetchall()
    window = read_window_for_run(db, chunk_start, chunk_end, context.run.run_id)
    result = compute(window, counters, epoch_ns(chunk_start), epoch_ns(chunk_end))
    hours = _hour_keys(chunk_start, chunk_end)
    with postgres.connect():  # committed before the window is touched: no mark may outlive its data
        _forget_watermarks(postgres, db.tenant, chunk_start, chunk_end)
        record(postgres, context.run.run_id, db.tenant, "rollup_1m", STORED_CHECK, (chunk_start, chunk_end),
               Verdict([{"error": INTERRUPTED_ERROR, "hours": hours}], len(hours)))
    # One request deletes the window in all seven measurements, then every window's lines travel together
    # (one write per home instead of four: each write request is an fsync of InfluxDB's WAL).
    db.queries([DELETE_WINDOW.format(measurement=quote_ident(name)) for name in ROLLUP_MEASUREMENTS],
               window_params(chunk_start, chunk_end))
    _write(db, itertools.chain(*(lines(result, name) for name, _ in WINDOWS), state_lines(result)))
    with postgres.connect() as conn, conn.cursor() as cur:  # the watermarks and the passing mark, together
        # Every hour gets a watermark, data or not: a first point arriving later is late data too.
        seen = {hour: (version, n) for hour, version, n in watermarks}
        cur.executemany(WATERMARKS_WRITE, [
            {"tenant": db.tenant, "hour": hour, "version": seen.get(hour, (0, 0))[0],
             "points": seen.get(hour, (0, 0))[1], "run_id": context.run.run_id}
            for hour, _ in chunks(chunk_start, chunk_end, timedelta(hours=1))
        ])
        cur.execute(INTERRUPTED_CLEAR, {"tenant": db.tenant, "check": STORED_CHECK, "start": chunk_start,
                                        "end": chunk_end, "error": INTERRUPTED_ERROR})
        record(postgres, context.run.run_id, db.tenant, "rollup_1m", STORED_CHECK, (chunk_start, chunk_end),
               Verdict([], len(hours)))
    context.log.debug("%s %s → %s: %d raw points, %d gauges, %d meters → %s rows", db.tenant, chunk_start,
                      chunk_end, window.points_read, len(result.stats.series["gauge"]),
                      len(result.stats.series["counter"]), result.stats.rows)
    stats.add(result.stats)
    return {"points_read": window.points_read, "duplicates_dropped": window.duplicates_dropped,
            "rows_written": result.stats.rows.get("1m", 0), "hours": len(_hour_keys(chunk_start, chunk_end)),
            "series": len(result.stats.series["gauge"]) + len(result.stats.series["counter"])}


def _checks_follow(context: dg.AssetExecutionContext) -> bool:
    """Whether this run's job also holds the rollups' data-quality checks (the scheduled job does)."""
    checks = context.job_def.asset_layer.asset_graph.asset_check_keys
    return any(key.asset_key.path[0].startswith("rollup_") for key in checks)
