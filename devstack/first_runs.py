"""Materialise the demo's first partitions into the Dagster instance the UI shows.

Runs as its own process with DAGSTER_HOME set, so the runs land in the PostgreSQL-backed instance:
the replayed hours are rolled up in one single-run backfill (as the UI's "backfill" would), then their
UTC days (yesterday complete, today so far) are loaded into the warehouse so the views have rows at once.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

from hats_assets.definitions import defs
from hats_assets.partitions import hour_key


def _check(result: dg.ExecuteInProcessResult, what: str) -> None:
    if not result.success:
        raise SystemExit(f"materialising {what} failed; see the run in the Dagster UI")


def _report_checks(result: dg.ExecuteInProcessResult) -> None:
    """Data-quality findings are the platform working, not the demo failing: list them and go on."""
    evaluations = result.get_asset_check_evaluations()
    failed = sorted({f"{e.check_name} ({e.severity.value})" for e in evaluations if not e.passed})
    print(f"  - {len(evaluations)} data-quality check results; failing: {', '.join(failed) or 'none'}"
          + (" (Dagster UI → Assets → Checks; analytics.data_quality_daily)" if failed else ""), flush=True)



def _meta(result: dg.ExecuteInProcessResult, asset: str) -> Any:
    return next(e.materialization.metadata for e in result.get_asset_materialization_events()
                if e.asset_key == dg.AssetKey(asset) and e.materialization is not None)


def main(hours: int) -> None:
    instance = dg.DagsterInstance.get()
    _check(defs.resolve_job_def("observe_raw_points").execute_in_process(instance=instance), "raw_points")
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    first, last = now - timedelta(hours=hours), now - timedelta(hours=1)
    rollups = defs.resolve_job_def("rollup_hourly_job").execute_in_process(
        instance=instance, raise_on_error=False,
        tags={"dagster/asset_partition_range_start": hour_key(first),
              "dagster/asset_partition_range_end": hour_key(last)},
    )
    if not rollups.get_asset_materialization_events():
        _check(rollups, f"the rollups {hour_key(first)} … {hour_key(last)}")
    meta = _meta(rollups, "rollup_1m")
    print(f"  - rollups {hour_key(first)} … {hour_key(last)}: {meta['points_read'].value} raw points → "
          f"{meta['rows_written'].value} 1 min rows", flush=True)
    _report_checks(rollups)
    days = sorted({first.strftime("%Y-%m-%d"), last.strftime("%Y-%m-%d")})
    loaded = defs.resolve_job_def("warehouse_daily_job").execute_in_process(
        instance=instance, raise_on_error=False,
        tags={"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]},
    )
    if not loaded.success and not loaded.get_asset_materialization_events():
        print(f"  - warehouse {days[0]} … {days[-1]}: not loaded — see the run in the Dagster UI (a day is refused "
              "while one of its rollup hours fails a blocking data-quality check)", flush=True)
        return
    rows = _meta(loaded, "hourly_rollup")["rows_upserted"].value
    print(f"  - warehouse {days[0]} … {days[-1]}: {rows} hourly rows", flush=True)
    _report_checks(loaded)
    states = defs.resolve_job_def("warehouse_states_job").execute_in_process(
        instance=instance, raise_on_error=False,
        tags={"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]},
    )
    if states.get_asset_materialization_events():
        rows = _meta(states, "state_hourly")["rows_upserted"].value
        print(f"  - time in each state {days[0]} … {days[-1]}: {rows} hourly rows", flush=True)
    else:
        print(f"  - time in each state {days[0]} … {days[-1]}: not loaded — see the run in the Dagster UI", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]))
